// Package driver strings moec's phases together for the CLI: load and check a file, then
// count, plan, generate code and write the build output. Each function here is what one
// command does, so the CLI stays a thin layer of flags and the same code is testable
// without a process. RunLayout and ResumeLayout are the bridge from a plan to the runtime:
// the sharding a run (or every arm of an experiment) uses, from the file's cluster and
// memory block, the plan for those ranks and what the user asked (LayoutRequest).
//
// In: paths and options from the command line.
// Out: diagnostics, reports and files under the output folder.
package driver
