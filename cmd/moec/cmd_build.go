package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/internal/driver"
)

func newBuildCommand(stdout, stderr io.Writer) *cobra.Command {
	var opt driver.BuildOptions
	cmd := &cobra.Command{
		Use:   "build FILE.moe",
		Short: "Check, count, plan and generate code into out/<name>/",
		Long: "Build checks the file, counts parameters and FLOPs, plans every train stage and serve\n" +
			"block on its cluster, generates CUDA and LLVM kernels for every stage, and writes\n" +
			"out/<name>/report.md (for people), report.json and <stage>/plan.json (for programs).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			loaded := driver.Load(args[0])
			loaded.Render(stderr)
			if loaded.Diags.HasErrors() {
				return errDiagnostics
			}
			res, diags, err := driver.Build(loaded, opt)
			loaded.RenderList(stderr, diags)
			if err != nil {
				return err
			}
			for _, note := range res.Notes {
				fmt.Fprintf(stderr, "note: %s\n", note)
			}
			fmt.Fprintf(stdout, "wrote %d files to %s (report: %s)\n", len(res.Files), res.OutDir, res.Report)
			if diags.HasErrors() {
				return errDiagnostics
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&opt.OutRoot, "out", "o", "out", "output root; files go to OUT/<file name>/")
	cmd.Flags().BoolVar(&opt.NoCode, "no-code", false, "skip CUDA and LLVM code generation")
	return cmd
}
