package plan

import (
	"fmt"
	"strings"
)

// Summary is the table's figures for a terminal, one line each: the seed's claim beside
// moec's planned value and whether they agree (the report's table says how each is
// computed and what moves it).
func (r SeedResult) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the seed's figures beside moec's for %s on %s (report.md says how each is computed):\n", r.Model, r.Cluster)
	width := 0
	for _, row := range r.Rows {
		width = max(width, len(row.Figure))
	}
	for i, row := range r.Rows {
		seed := summaryNumber(row.Seed) + " " + row.Unit
		verdict := "off by more than 15%"
		switch {
		case row.Bound && row.Within:
			seed, verdict = "over "+seed, "bound met"
		case row.Bound:
			seed, verdict = "over "+seed, "bound missed"
		case row.Within:
			verdict = "within 15%"
		}
		ours := summaryNumber(row.Ours) + " " + row.Unit
		if row.Ours == 0 && row.Note != "" && !row.Within {
			ours, verdict = "—", "not planned: "+row.Note
		}
		fmt.Fprintf(&b, "  %2d. %-*s  seed %-16s moec %-16s %s\n", i+1, width, row.Figure, seed, ours, verdict)
	}
	return b.String()
}

// summaryNumber writes v with four significant digits, whole numbers from 1000 up.
func summaryNumber(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.4g", v)
}
