package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/interop/hf"
	"github.com/moec-dev/moec/interop/megatron"
	"github.com/moec-dev/moec/lang/diag"
)

func newExportCommand(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export a checkpoint or a training plan to another framework",
	}
	cmd.AddCommand(newExportHFCommand(stdout, stderr), newExportMegatronCommand(stdout, stderr))
	return cmd
}

func newExportHFCommand(stdout, stderr io.Writer) *cobra.Command {
	var ckpt, out, dtype, shardSize string
	cmd := &cobra.Command{
		Use:   "hf --checkpoint DIR -o OUT [--dtype fp32|bf16|fp16] [--max-shard-size 5GB]",
		Short: "Write a checkpoint as a Hugging Face folder (config.json + model.safetensors)",
		Long: "hf writes the checkpoint (a checkpoint directory, or a run directory whose newest\n" +
			"checkpoint is taken) in the layout the matching transformers class loads: Mixtral for a\n" +
			"Mixtral-shaped model, Qwen3-MoE for per-head q/k norms, OLMoE for whole-projection q/k\n" +
			"norms (qk_norm = full), Qwen2-MoE for one gated shared expert, Llama (or Qwen3) for a\n" +
			"dense one.\n" +
			"A model with features no such class has is written in moec's layout, and hf says which\n" +
			"features. export_manifest.json records every tensor's hash and each expert's tensors.\n" +
			"--dtype stores the weights as bf16 or fp16 (rounded to nearest) instead of fp32;\n" +
			"weights past --max-shard-size go in several files with model.safetensors.index.json.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" || out == "" {
				return usageCode(diag.CodeMissingFlag, "export hf needs --checkpoint DIR and -o OUT")
			}
			opt := hf.ExportOptions{DType: dtype}
			if shardSize != "" {
				n, err := driver.ParseBytes(shardSize)
				if err != nil || n <= 0 {
					return usageCode(diag.CodeBadRunOption, "--max-shard-size %s: want a positive size such as 5GB or 512MiB", shardSize)
				}
				opt.MaxShardBytes = n
			}
			man, err := hf.ExportWith(ckpt, out, opt)
			if err != nil {
				return importFailed(stderr, err)
			}
			if _, err := hf.VerifyExport(out); err != nil {
				return fmt.Errorf("the export in %s does not verify: %w", out, err)
			}
			if man.Layout == hf.LayoutMoec {
				fmt.Fprintf(stderr, "no transformers class holds this model; wrote moec's layout (%s, %s) instead. It uses:\n", hf.WeightsFile, hf.MoecConfigFile)
				for _, u := range man.Unsupported {
					fmt.Fprintf(stderr, "  - %s\n", u)
				}
			}
			for _, n := range man.Notes {
				fmt.Fprintf(stderr, "note: %s\n", n)
			}
			class := man.Class
			if class == "" {
				class = "moec layout"
			}
			fmt.Fprintf(stdout, "wrote %s: %s, %d tensors, %d expert tensor sets each carried once\n", out, class, len(man.Tensors), len(man.Experts))
			return nil
		},
	}
	cmd.Flags().StringVar(&ckpt, "checkpoint", "", "a checkpoint directory or a run directory")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the folder to write (absent or empty)")
	cmd.Flags().StringVar(&dtype, "dtype", "fp32", "the stored precision of the weights: "+hf.ExportDTypes())
	cmd.Flags().StringVar(&shardSize, "max-shard-size", "", "split the weights into files of at most this size, with an index (default 5GB, as transformers)")
	return cmd
}

func newExportMegatronCommand(stdout, stderr io.Writer) *cobra.Command {
	var trainName, stage string
	cmd := &cobra.Command{
		Use:   "megatron FILE.moe --stage S [--train MODEL]",
		Short: "Print the Megatron-Core launch arguments that realise moec's plan for a stage",
		Long: "megatron plans the stage as `moec plan` does and prints a torchrun command for\n" +
			"Megatron-LM's pretrain_gpt.py with the model, MoE routing, parallel sizes, recompute,\n" +
			"optimizer, batch and checkpoints of that plan. Run the same command on every node: it\n" +
			"starts the plan's world size (a last node with fewer ranks when it is not a whole\n" +
			"number of nodes) and reads NODE_RANK, MASTER_ADDR, DATA_PATH, TOKENIZER_MODEL,\n" +
			"SAVE_DIR (and FROM_CHECKPOINT for a stage that starts from another) from the\n" +
			"environment, stopping with a message when one is unset. What moec trains that Megatron\n" +
			"cannot is listed in comments above the command, never dropped silently.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			loaded, err := loadChecked(args[0], stderr)
			if err != nil {
				return err
			}
			if err := needTrain(loaded.Program, args[0], "export megatron writes the launch arguments of a training plan, so it needs the train block (data, batch, optimizer, stages) to plan"); err != nil {
				return err
			}
			p, ds, err := driver.Plan(loaded, driver.PlanRequest{Train: trainName, Stage: stage, Options: plan.Options{}})
			if err != nil {
				return err
			}
			loaded.RenderList(stderr, ds)
			if ds.HasErrors() || p == nil {
				return errDiagnostics
			}
			prog := loaded.Program
			tr := prog.Trains[p.Train]
			for _, st := range tr.Stages {
				if st.Name == p.Stage {
					l, err := megatron.ForStage(prog, tr, st, p)
					if err != nil {
						return err
					}
					return l.Write(stdout)
				}
			}
			return fmt.Errorf("internal error: planned stage %s not in train %s", p.Stage, p.Train)
		},
	}
	cmd.Flags().StringVar(&trainName, "train", "", "the train block (its model's name), when the file has several")
	cmd.Flags().StringVar(&stage, "stage", "", "the curriculum stage")
	return cmd
}
