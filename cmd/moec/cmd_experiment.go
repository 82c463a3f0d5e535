package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/experiment"
)

func newExperimentCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		opt   experiment.Options
		quiet bool
		rf    rankFlags
	)
	cmd := &cobra.Command{
		Use:   "experiment FILE.moe",
		Short: "Run the experiments a file declares and write results.md with tables and plots",
		Long: "Experiment runs every `experiment` block of FILE.moe (or those named by --only): each arm\n" +
			"(the baseline and every variant, written into the train and its model as overrides) once\n" +
			"per seed, each stage chain grown stage by stage. It then writes results.md in the output\n" +
			"folder: per experiment a table of validation loss and step time (mean ± spread over\n" +
			"seeds, and whether a difference from the baseline is beyond the spread), routing\n" +
			"stability per MoE layer, a scaling table when the arms vary one number, and PNG plots of\n" +
			"loss against tokens, wall-clock time and training FLOPs.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Out-of-range flags are refused before anything is loaded. A flag left out keeps
			// the experiment's value; one given must be usable, so --tokens 0 is an error
			// rather than "the experiment's budget".
			f := cmd.Flags()
			switch {
			case f.Changed("tokens") && opt.Tokens < 1:
				return usage(diag.Runtimef(diag.CodeBadRunOption, "--tokens %d: want a budget of at least 1 token per baseline run; leave it out for each experiment's", opt.Tokens))
			case f.Changed("val-windows") && opt.ValWindows < 1:
				return usage(diag.Runtimef(diag.CodeBadRunOption, "--val-windows %d: want at least 1 validation window; leave it out for 64", opt.ValWindows))
			}
			loaded, err := loadChecked(args[0], stderr)
			if err != nil {
				return err
			}
			files, diags := experiment.ParseSources(loaded.Sources)
			if diags.HasErrors() {
				loaded.RenderList(stderr, diags)
				return errDiagnostics
			}
			opt.Program, opt.Files, opt.BaseDir = loaded.Program, files, filepath.Dir(args[0])
			if layoutFlagsChanged(cmd) {
				// Every arm at the layout the flags ask for (no plan: the arms differ).
				l, _, err := driver.RunLayout(nil, "", "", 0, 0, rf.request(), stderr)
				if err != nil {
					return asUsage(err)
				}
				opt.Layout = l
			}
			if !quiet {
				opt.Progress = stderr
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := experiment.Run(ctx, opt)
			if err != nil {
				return err
			}
			path, err := experiment.Report(res, opt.OutDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%d experiments, results in %s\n", len(res.Experiments), path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&opt.Only, "only", nil, "run only these experiments (comma-separated)")
	f.StringVar(&opt.OutDir, "out", "out/experiments", "folder for the runs, results.md and the plots")
	f.Int64Var(&opt.Tokens, "tokens", 0, "token budget per baseline run, at least 1, replacing each experiment's (a reduced run)")
	f.Int64SliceVar(&opt.Seeds, "seeds", nil, "seeds, replacing each experiment's (comma-separated)")
	f.IntVar(&opt.ValWindows, "val-windows", 0, "validation windows for the final loss and routing stability, at least 1 (default 64)")
	f.StringToStringVar(&opt.Set, "set", nil, "override PATH=VALUE in every arm, as an experiment block would (e.g. data='\"small/*.txt\"')")
	f.BoolVar(&opt.Fresh, "fresh", false, "retrain every run (default: continue or reuse runs an earlier invocation left with the same configuration)")
	f.BoolVar(&quiet, "quiet", false, "no line per finished run")
	f.IntVar(&rf.ranks, "ranks", 0, "run every arm on N in-process ranks")
	f.IntVar(&rf.ep, "ep", 0, "expert-parallel size of every run")
	f.IntVar(&rf.zero, "zero", 0, "ZeRO stage 0-3 of every run")
	f.BoolVar(&rf.offload, "offload", false, "keep optimizer states in the host tier")
	f.IntVar(&rf.tp, "tp", 0, "tensor-parallel size of every run (through step programs)")
	f.IntVar(&rf.pp, "pp", 0, "pipeline-parallel size of every run (through step programs)")
	f.BoolVar(&rf.program, "step-programs", false, "run every arm through step programs")
	return cmd
}
