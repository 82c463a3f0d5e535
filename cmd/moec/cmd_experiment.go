package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

func newExperimentCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "experiment",
		Short:  "experiment (not available yet)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("experiment is not available yet")
		},
	}
}
