package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/lang/diag"
)

func newPlanCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		opt          plan.Options
		train, stage string
		serve        string
		asJSON       bool
		compare      string
	)
	cmd := &cobra.Command{
		Use:   "plan FILE.moe --stage S [--gpus N | --nodes N] [--memory M] [--objective O]",
		Short: "Plan a stage (or a serve block) as a what-if, printed to the terminal",
		Long: "Plan searches data x expert x tensor x pipeline parallel sizes, ZeRO stage, offload,\n" +
			"micro-batch and recompute for one stage, and prints the chosen layout, the per-device\n" +
			"memory table, communication, predicted step time and the runners-up.\n" +
			"--memory: " + strings.Join(plan.MemoryOptions(), ", ") + ".\n" +
			"--objective: time, gpus or cost.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.GPUs > 0 && opt.Nodes > 0 {
				return usageCode(diag.CodeConflictingFlags, "plan: give --gpus or --nodes, not both")
			}
			loaded, err := loadChecked(args[0], stderr)
			if err != nil {
				return err
			}
			if compare != "" && (serve != "" || asJSON) {
				return usageCode(diag.CodeConflictingFlags, "plan: --compare compares two strategies of a stage, on the terminal: not with --serve or --json")
			}
			if serve == "" {
				if err := needTrain(loaded.Program, args[0], "plan lays out a stage of a train block (or a serve block, with --serve)"); err != nil {
					return err
				}
			}
			p, diags, err := driver.Plan(loaded, driver.PlanRequest{Train: train, Stage: stage, Serve: serve, Options: opt})
			loaded.RenderList(stderr, diags)
			if err != nil {
				return err
			}
			if diags.HasErrors() || p == nil {
				return errDiagnostics
			}
			if compare != "" {
				return printComparison(stdout, stderr, loaded, driver.PlanRequest{Train: train, Stage: stage, Options: opt}, p, compare)
			}
			if asJSON {
				js, err := p.JSON()
				if err != nil {
					return err
				}
				_, err = stdout.Write(js)
				return err
			}
			fmt.Fprintf(stdout, "# %s\n\n%s", p.Title(), p.Markdown())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stage, "stage", "", "the stage to plan (required unless the train block has one stage or --serve is given)")
	f.StringVar(&train, "train", "", "the train block (default: the file's only one)")
	f.StringVar(&serve, "serve", "", "plan this serve block instead of a stage")
	f.IntVar(&opt.GPUs, "gpus", 0, "plan for at most N devices")
	f.IntVar(&opt.Nodes, "nodes", 0, "plan for N nodes of the cluster's kind")
	f.StringVar(&opt.Memory, "memory", "", "memory strategy (default: as the file declares)")
	f.StringVar((*string)(&opt.Objective), "objective", "", "time, gpus or cost")
	f.IntVar(&opt.Alternatives, "alternatives", 3, "runners-up to show")
	f.BoolVar(&opt.DelayedUpdate, "delayed-update", false, "update host-held weights one step late (ZeRO-Offload's DPU): overlaps the CPU optimizer with the next step but changes the training algorithm")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	f.StringVar(&compare, "compare", "", "print the plan side by side with the same stage planned with this memory strategy")
	return cmd
}

// printComparison plans the request again with memory strategy other and prints the two
// plans side by side.
func printComparison(stdout, stderr io.Writer, loaded *driver.Loaded, req driver.PlanRequest, p *plan.Plan, other string) error {
	req.Options.Memory = other
	q, diags, err := driver.Plan(loaded, req)
	loaded.RenderList(stderr, diags)
	if err != nil {
		return err
	}
	if diags.HasErrors() || q == nil {
		return errDiagnostics
	}
	fmt.Fprintf(stdout, "# %s: %s against --memory %s\n\n%s", p.Title(), plan.StrategyName(p.Layout), other, plan.Compare(p, q))
	return nil
}
