package features

import (
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// Row is one feature a model uses with its verdict on every backend, as the report shows it.
type Row struct {
	Key   string             `json:"key"`
	Name  string             `json:"name"`
	Cells map[string]Verdict `json:"cells"` // keyed by Backend
}

// Rows are the rows of the features m uses, evaluated under l.
func Rows(m *program.Model, l Layout) []Row {
	var out []Row
	for _, f := range Used(m) {
		r := Row{Key: f.Key, Name: f.Name, Cells: map[string]Verdict{}}
		for _, b := range Backends() {
			r.Cells[string(b)] = f.On(b, m, l)
		}
		out = append(out, r)
	}
	return out
}

// Mark is a verdict's short form in a table cell: "yes", "approx.", "no", "—".
func (v Verdict) Mark() string {
	switch v.Status {
	case Honoured:
		return "yes"
	case Approximated:
		return "approx."
	case Refused:
		return "**no**"
	}
	return "—"
}

// Markdown writes rows as a Markdown table, one row per feature and one column per
// backend, followed by a numbered list of why each refused or approximated cell is so
// (the numbers are footnotes in the cells; cells with the same reason share one). No
// rows writes nothing.
func Markdown(rows []Row) string {
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| Feature |")
	for _, be := range Backends() {
		b.WriteString(" " + be.Title() + " |")
	}
	b.WriteString("\n|---|")
	for range Backends() {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	var notes []string
	index := map[string]int{}
	for _, r := range rows {
		b.WriteString("| " + r.Name + " |")
		for _, be := range Backends() {
			v := r.Cells[string(be)]
			cell := v.Mark()
			if v.Status == Refused || v.Status == Approximated {
				note := r.Name + ": " + v.Reason
				n, ok := index[note]
				if !ok {
					notes = append(notes, note)
					n = len(notes)
					index[note] = n
				}
				cell += " [" + strconv.Itoa(n) + "]"
			}
			b.WriteString(" " + cell + " |")
		}
		b.WriteString("\n")
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for i, n := range notes {
			b.WriteString(strconv.Itoa(i+1) + ". " + n + "\n")
		}
	}
	return b.String()
}
