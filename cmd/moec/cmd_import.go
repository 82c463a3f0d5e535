package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

func newImportCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "import",
		Short:  "import (not available yet)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("import is not available yet")
		},
	}
}
