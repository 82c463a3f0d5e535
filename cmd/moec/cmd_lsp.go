package main

import (
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/lsp"
)

func newLSPCommand(stdout io.Writer) *cobra.Command {
	var debounce time.Duration
	cmd := &cobra.Command{
		Use:   "lsp",
		Short: "Run the language server for editors (Language Server Protocol over stdio)",
		Long: "Lsp speaks the Language Server Protocol on standard input and output, for editors:\n" +
			"diagnostics while typing (the codes, ranges and suggestions of moec check), quick\n" +
			"fixes, hover with resolved values, parameter counts and a stage's plan, go to\n" +
			"definition, references, completion of keys and values, symbols and formatting.\n" +
			"Editors start it themselves; see editors/vscode.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lsp.Serve(cmd.Context(), cmd.InOrStdin(), stdout, lsp.Options{Debounce: debounce, Version: version})
		},
	}
	cmd.Flags().DurationVar(&debounce, "debounce", 150*time.Millisecond, "how long after the last change diagnostics are published")
	return cmd
}
