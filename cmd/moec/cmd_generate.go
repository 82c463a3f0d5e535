package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/generate"
)

func newGenerateCommand(stdout, stderr io.Writer) *cobra.Command {
	opt := generate.Options{MaxTokens: 256, Temperature: 0.8, TopK: 40, Seed: 1}
	var device, precision string
	cmd := &cobra.Command{
		Use:   "generate --checkpoint DIR --prompt TEXT",
		Short: "Stream text from a trained checkpoint (with a KV cache)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.Checkpoint == "" {
				return usageCode(diag.CodeMissingFlag, "generate: --checkpoint is required")
			}
			if err := checkDevice(device); err != nil {
				return err
			}
			bf16, err := checkPrecision(precision, device)
			if err != nil {
				return err
			}
			opt.Device, opt.BF16 = device, bf16
			// Out-of-range flags are refused before the checkpoint is read.
			for _, f := range []struct {
				flag, size string
				v          int
			}{{"tp", "a tensor-parallel", opt.TP}, {"ep", "an expert-parallel", opt.EP}, {"pp", "a pipeline-parallel", opt.PP}} {
				if f.v < 1 {
					return usage(diag.Runtimef(diag.CodeBadRunOption, "--%s %d: want %s size of at least 1", f.flag, f.v, f.size))
				}
			}
			if err := opt.Check(); err != nil {
				return usage(err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			// Run echoes the prompt only once the checkpoint has loaded, so a refusal prints
			// nothing on stdout.
			opt.EchoPrompt = true
			if err := generate.Run(ctx, opt, stdout); err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Checkpoint, "checkpoint", "", "a checkpoint folder, or a run folder (its newest checkpoint)")
	f.StringVar(&opt.Prompt, "prompt", "", "text to continue")
	deviceFlag(f, &device, "decode")
	precisionFlag(f, &precision)
	f.IntVar(&opt.MaxTokens, "max-tokens", opt.MaxTokens, "tokens to generate, at least 1")
	f.Float64Var(&opt.Temperature, "temperature", opt.Temperature, "sampling temperature, at least 0 (0 = greedy)")
	f.IntVar(&opt.TopK, "top-k", opt.TopK, "sample among the k most likely tokens, at least 0 (0 = all)")
	f.Int64Var(&opt.Seed, "seed", opt.Seed, "sampling seed")
	f.BoolVar(&opt.StepPrograms, "step-programs", false, "decode through step programs (a prefill program for the prompt, then a decoding step per token; compiler/step run by runtime/exec) instead of the hand-written model; the same logits")
	f.IntVar(&opt.TP, "tp", 1, "tensor-parallel size of the step programs (in-process ranks; implies --step-programs)")
	f.StringVar(&opt.Tokenizer, "tokenizer", "", "a Hugging Face tokenizer.json (or its folder) for the prompt and the text; default: the one kept with the checkpoint, else bytes")
	f.IntVar(&opt.EP, "ep", 1, "expert-parallel size of the step programs (as many in-process replicas; implies --step-programs)")
	f.IntVar(&opt.PP, "pp", 1, "pipeline-parallel size of the step programs (each in-process stage its layers and their KV caches; implies --step-programs)")
	return cmd
}
