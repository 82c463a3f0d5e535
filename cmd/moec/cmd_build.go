package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
)

func newBuildCommand(stdout, stderr io.Writer) *cobra.Command {
	var opt driver.BuildOptions
	cmd := &cobra.Command{
		Use:   "build FILE.moe",
		Short: "Check, count, plan and generate code into out/<name>/",
		Long: "Build checks the file, counts parameters and FLOPs, plans every train stage and serve\n" +
			"block on its cluster, generates code for every stage, and writes into out/<name>/:\n" +
			"report.md and report.html (for people), report.json (for programs), and per stage\n" +
			"<stage>/plan.json, program.txt (rank 0's step program), cuda/ (CUDA kernels and host\n" +
			"API), cuda-step/ (the step program lowered to CUDA, with a Makefile), llvm/ (LLVM IR, compiled with\n" +
			"clang when present) and go/ (a Go program that trains the stage and generates; its\n" +
			"relative data globs are taken from the .moe file's folder). --no-code writes only the\n" +
			"reports and plans.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			loaded, err := loadChecked(args[0], stderr)
			if err != nil {
				return err
			}
			res, diags, err := driver.Build(loaded, opt)
			loaded.RenderList(stderr, diags)
			if err != nil {
				return err
			}
			for _, note := range res.Notes {
				fmt.Fprintf(stderr, "note: %s\n", note)
			}
			for _, seed := range res.Seed {
				fmt.Fprint(stdout, seed.Summary())
			}
			fmt.Fprintf(stdout, "wrote %d files to %s (report: %s)\n", len(res.Files), res.OutDir, res.Report)
			if diags.HasErrors() {
				return errDiagnostics
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&opt.OutRoot, "out", "o", "out", "output root; files go to OUT/<file name>/")
	cmd.Flags().BoolVar(&opt.NoCode, "no-code", false, "skip code generation (cuda/, llvm/ and go/)")
	return cmd
}
