// Package report writes the build report a person reads after `moec build`: per model the
// exact parameter counts by component (total and active, each headline number with its
// convention), a compressed per-layer summary, FLOPs per token, and per train block each
// curriculum stage's model and training compute; then any sections later phases add (the
// planner adds the plan).
//
// In: a checked program.Program, the source name, and extra Sections.
// Out: report.md (Markdown for people) and report.json (the same numbers under stable
// field names, byte-for-byte deterministic), both written atomically into the output
// directory. Build and Markdown/JSON are exported separately so callers and tests can
// render without touching the disk.
package report
