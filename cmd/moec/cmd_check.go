package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/lang/diag"
)

func newCheckCommand(stdout, stderr io.Writer) *cobra.Command {
	var explain, asJSON bool
	cmd := &cobra.Command{
		Use:   "check [--explain | --json] FILE.moe",
		Short: "Check a .moe file and report every error at once",
		Long: "Check parses and checks a .moe file and its imports, printing every error as\n" +
			"file:line:col: error[CODE]: summary with the source line and a caret under the range.\n" +
			"With --explain it prints the fully resolved program: every value after inheritance,\n" +
			"expressions and defaults, with where it came from.\n" +
			"With --json it prints each diagnostic as one JSON object per line on standard output,\n" +
			"for editors and CI: file, line, col, end_line, end_col (1-based; columns count bytes,\n" +
			"the end is exclusive; line 0 means the whole file), severity, code, message, notes,\n" +
			"suggestion, labels (the related places, each with the same position fields and its\n" +
			"message) and, when there is one, context (the range of the construct around it).\n" +
			"A clean file prints nothing. The exit status is the same as without it.",
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{jsonDiagnosticsFlag: "json"},
		RunE: func(cmd *cobra.Command, args []string) error {
			loaded := driver.Load(args[0])
			if asJSON {
				if err := writeDiagnosticsJSON(stdout, loaded.Diags); err != nil {
					return err
				}
				if loaded.Diags.HasErrors() {
					return errDiagnostics
				}
				return nil
			}
			loaded.Render(stderr)
			if loaded.Diags.HasErrors() {
				return errDiagnostics
			}
			if explain {
				check.Explain(stdout, loaded.Program)
				return nil
			}
			fmt.Fprintf(stdout, "%s: ok\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&explain, "explain", false, "print every resolved value and where it came from")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the diagnostics as JSON lines on standard output")
	cmd.MarkFlagsMutuallyExclusive("explain", "json")
	return cmd
}

// diagnosticJSON is one line of `moec check --json`. The field names are a contract with
// editors and CI scripts: add fields, never rename or remove one.
type diagnosticJSON struct {
	File       string      `json:"file"`
	Line       int         `json:"line"`
	Col        int         `json:"col"`
	EndLine    int         `json:"end_line"`
	EndCol     int         `json:"end_col"`
	Severity   string      `json:"severity"`
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	Notes      []string    `json:"notes"`
	Suggestion string      `json:"suggestion"`
	Labels     []labelJSON `json:"labels"`
	Context    *rangeJSON  `json:"context,omitempty"`
}

// rangeJSON is a range as `moec check --json` writes one, with the diagnostic's own
// field names.
type rangeJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	EndLine int    `json:"end_line"`
	EndCol  int    `json:"end_col"`
}

// labelJSON is a related place of a diagnostic and what it says there.
type labelJSON struct {
	rangeJSON
	Message string `json:"message"`
}

// toRangeJSON is r with an end at its start when it has none.
func toRangeJSON(r diag.Range) rangeJSON {
	end := r.End
	if !end.IsValid() {
		end = r.Start
	}
	return rangeJSON{File: r.File, Line: r.Start.Line, Col: r.Start.Col, EndLine: end.Line, EndCol: end.Col}
}

// writeDiagnosticsJSON writes list as JSON lines, one object per diagnostic, in the order
// the human rendering prints them.
func writeDiagnosticsJSON(w io.Writer, list diag.List) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // keep `<`, `>` and `&` in messages as typed, not \u003c
	for _, d := range list {
		r := toRangeJSON(d.Subject)
		notes := d.Notes
		if notes == nil {
			notes = []string{}
		}
		labels := make([]labelJSON, len(d.Labels))
		for i, l := range d.Labels {
			labels[i] = labelJSON{rangeJSON: toRangeJSON(l.Range), Message: l.Message}
		}
		var context *rangeJSON
		if d.Context != (diag.Range{}) {
			c := toRangeJSON(d.Context)
			context = &c
		}
		message := d.Summary
		if d.Err != nil {
			message += ": " + d.Err.Error()
		}
		if err := enc.Encode(diagnosticJSON{
			File: r.File, Line: r.Line, Col: r.Col, EndLine: r.EndLine, EndCol: r.EndCol,
			Severity: d.Severity.String(), Code: string(d.Code), Message: message,
			Notes: notes, Suggestion: d.Suggestion, Labels: labels, Context: context,
		}); err != nil {
			return fmt.Errorf("check: writing JSON: %w", err)
		}
	}
	return nil
}
