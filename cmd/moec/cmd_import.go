package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/interop/hf"
	"github.com/moec-dev/moec/lang/diag"
)

func newImportCommand(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Import a model from another framework",
	}
	cmd.AddCommand(newImportHFCommand(stdout, stderr))
	return cmd
}

func newImportHFCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		out, name, ckpt string
		drop            []string
	)
	cmd := &cobra.Command{
		Use:   "hf [CONFIG.json] [-o model.moe] | hf --checkpoint HFDIR -o OUTDIR",
		Short: "Turn a Hugging Face config.json (or a whole checkpoint folder) into a .moe model",
		Long: "With a config.json (transformers v4 or v5), hf writes the .moe model it describes (Mixtral,\n" +
			"Qwen2-MoE, Qwen3-MoE, DeepSeek-MoE/V2/V3, Hunyuan-Large, Hunyuan-A13B, Phi-3.5-MoE, DBRX,\n" +
			"OLMoE, or a dense Llama-style model) to -o or standard output; the model has exactly the\n" +
			"checkpoint's parameters. Fields moec cannot express are errors, all listed; --drop\n" +
			"FIELD,... imports without those whose absence leaves the numbers the same (dropout, jitter)\n" +
			"and notes each in the header; any other is refused with the reason.\n" +
			"With --checkpoint HFDIR (config.json and *.safetensors), hf converts the weights too:\n" +
			"OUTDIR/NAME.moe and a moec checkpoint under OUTDIR/checkpoints that eval, generate and\n" +
			"export read (Llama, Mistral, Qwen2/3, Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, Arctic, gpt-oss\n" +
			"(MXFP4 experts decoded), Llama 4 text, DeepSeek-V2/V3, Hunyuan-A13B, Hunyuan-Large, DBRX\n" +
			"and Phi-3.5-MoE weights).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt := hf.Options{Name: name, Drop: drop}
			if ckpt != "" {
				if len(args) > 0 {
					return usageCode(diag.CodeConflictingFlags, "import hf: give either CONFIG.json or --checkpoint HFDIR, not both")
				}
				if out == "" {
					return usageCode(diag.CodeMissingFlag, "import hf --checkpoint: say where the checkpoint goes with -o OUTDIR")
				}
				opt.Source = filepath.Join(ckpt, hf.ConfigFile)
				res, err := hf.ImportCheckpoint(ckpt, out, opt)
				if err != nil {
					return importFailed(stderr, err)
				}
				summarize(stderr, res.Result)
				fmt.Fprintf(stdout, "wrote %s and checkpoint %s (%d tensors)\n", res.SourceFile, res.Checkpoint, res.Tensors)
				keepImportedTokenizer(ckpt, out, stdout, stderr)
				return nil
			}
			if len(args) != 1 {
				return usageCode(diag.CodeWrongArguments, "import hf: name a config.json, or a folder with --checkpoint")
			}
			src, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			opt.Source = args[0]
			res, err := hf.ImportConfig(src, opt)
			if err != nil {
				return importFailed(stderr, err)
			}
			summarize(stderr, res)
			if out == "" {
				_, err := stdout.Write(res.Source)
				return err
			}
			if err := os.WriteFile(out, res.Source, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the .moe file to write (default standard output), or with --checkpoint the output folder")
	cmd.Flags().StringVar(&name, "name", "", "the model's name in the .moe file (default: the config's model_type)")
	cmd.Flags().StringSliceVar(&drop, "drop", nil, "config fields that do not change the numbers to import without (each is noted in the header)")
	cmd.Flags().StringVar(&ckpt, "checkpoint", "", "a Hugging Face folder (config.json and *.safetensors) whose weights to convert")
	return cmd
}

// summarize says what was imported, on stderr so that stdout stays the .moe text.
func summarize(w io.Writer, res *hf.Result) {
	c := res.Counts
	fmt.Fprintf(w, "imported %s: %s parameters, %s active per token", res.Class, commas(c.TotalAll), commas(c.ActiveAll))
	if res.ParamDelta != 0 {
		fmt.Fprintf(w, " (the checkpoint has %s more: dropped fields)", commas(res.ParamDelta))
	}
	fmt.Fprintln(w)
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// importFailed prints a coded refusal as a diagnostic; other errors go up. Both exit 1.
func importFailed(w io.Writer, err error) error {
	// A list of refused config fields (*hf.Error) unwraps to its diagnostics too.
	if diag.CodeOf(err) != "" {
		fmt.Fprintln(w, err)
		return errDiagnostics
	}
	return err
}

// commas writes n with thousands separators.
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
