// Package human writes quantities for people: parameter and token counts with a
// decimal suffix (46.7B), sizes in binary units (461 MiB) and exact integers with
// thousands separators (46,702,792,704). Every report moec prints (the plan, report.md and
// report.html, a run's progress and memory table, experiment summaries) writes numbers
// through it, so one quantity reads the same everywhere.
package human
