package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

func newServeCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "serve",
		Short:  "serve (not available yet)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("serve is not available yet")
		},
	}
}
