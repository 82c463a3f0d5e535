package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

func newExportCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "export",
		Short:  "export (not available yet)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("export is not available yet")
		},
	}
}
