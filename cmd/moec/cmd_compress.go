package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/compress"
	"github.com/moec-dev/moec/runtime/weights"
)

func newCompressCommand(stdout, stderr io.Writer) *cobra.Command {
	var ckpt, out, experts, dense, embed, head, pruneArg, pruneBy, calib string
	var group, windows int
	var force bool
	cmd := &cobra.Command{
		Use:   "compress --checkpoint DIR --out DIR [FILE.moe] [--experts int4] [--dense int8] [--embed …] [--head …] [--group 128] [--keep-experts N|FRACTION --calibration FILE]",
		Short: "Quantise (int8, int4) and prune experts of a checkpoint for serving",
		Long: `Compress writes a compressed checkpoint for eval, generate and serve: weight-only
quantisation chosen per kind of matrix (--experts: routed experts; --dense: attention and
dense or shared FFNs; --embed; --head), int8 with one scale per output channel or int4 in
groups of --group input columns, and expert pruning that keeps N experts (or a fraction)
per MoE layer, the ones routed to most often over a calibration text, removing the
router rows of the others. With FILE.moe, the file's compress block for the checkpoint's
model says what to do, and the flags given override it. The quantised matrices run through integer kernels (AVX-512
VNNI or AVX2 where the CPU has them); they are not dequantised at load. A manifest
(compression.json) records what was done and the SHA-256 of the source weights.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" || out == "" {
				return usageCode(diag.CodeMissingFlag, "compress: --checkpoint and --out are required")
			}
			opt := compress.Options{Group: group}
			changed := cmd.Flags().Changed
			if len(args) == 1 {
				// The file's compress block for the checkpoint's model; flags override it.
				loaded, err := loadChecked(args[0], stderr)
				if err != nil {
					return err
				}
				dir, err := weights.ResolveCheckpoint(ckpt)
				if err != nil {
					return err
				}
				m, err := checkpoint.LoadManifest(dir)
				if err != nil {
					return err
				}
				block := loaded.Program.Compresses[m.Model.Name]
				if block == nil {
					return diag.Runtimef(diag.CodeCheckpointMismatch, "%s has no `compress %s { ... }` block for the checkpoint's model", args[0], m.Model.Name)
				}
				opt = compress.OptionsOf(block)
				if !changed("group") && block.Group == 0 {
					opt.Group = group
				}
				if block.Calibration != "" && !changed("calibration") {
					calib = filepath.Join(filepath.Dir(args[0]), block.Calibration)
				}
			}
			opt.Force, opt.CalibrationWindows = force, windows
			if changed("group") {
				opt.Group = group
			}
			for _, f := range []struct {
				flag, v string
				dst     *compress.Scheme
			}{{"experts", experts, &opt.Experts}, {"dense", dense, &opt.Dense}, {"embed", embed, &opt.Embed}, {"head", head, &opt.Head}} {
				if len(args) == 1 && !changed(f.flag) {
					continue
				}
				s, err := compress.ParseScheme(f.v)
				if err != nil {
					return usage(diag.Runtimef(diag.CodeBadRunOption, "--%s %v", f.flag, err))
				}
				*f.dst = s
			}
			if changed("prune-by") || opt.PruneBy == "" {
				opt.PruneBy = pruneBy
			}
			if pruneArg != "" {
				opt.KeepExperts, opt.KeepFraction = 0, 0
				if err := parsePrune(pruneArg, &opt); err != nil {
					return usage(err)
				}
			}
			if opt.KeepExperts > 0 || opt.KeepFraction > 0 {
				if calib == "" {
					return usage(diag.Runtimef(diag.CodeBadRunOption, "--keep-experts needs --calibration FILE (or calibration in the compress block): the text whose routing chooses the experts kept"))
				}
				b, err := os.ReadFile(calib)
				if err != nil {
					return diag.RuntimeWrap(diag.CodeBadDataFile, err, "--calibration")
				}
				opt.Calibration, opt.CalibrationName = b, calib
			}
			man, err := compress.Compress(ckpt, out, opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %d matrices quantised (experts %s, dense %s, embed %s, head %s", out, len(man.Quantized),
				man.Schemes["experts"].Scheme, man.Schemes["dense"].Scheme, man.Schemes["embed"].Scheme, man.Schemes["head"].Scheme)
			for _, s := range []compress.Scheme{opt.Experts, opt.Dense, opt.Embed, opt.Head} {
				if s == compress.Int4 {
					fmt.Fprintf(stdout, ", int4 in groups of %d", opt.Group)
					break
				}
			}
			fmt.Fprintf(stdout, "); weights %s -> %s (%.1f%%)", mib(man.SourceWeightBytes), mib(man.WeightBytes), 100*float64(man.WeightBytes)/float64(max(man.SourceWeightBytes, 1)))
			if p := man.Pruning; p != nil {
				fmt.Fprintf(stdout, "; experts %d -> %d per MoE layer over %d calibration tokens", p.From, p.Keep, p.CalibrationTokens)
			}
			_, err = fmt.Fprintln(stdout)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&ckpt, "checkpoint", "", "the trained checkpoint, or a run folder (its newest checkpoint)")
	f.StringVar(&out, "out", "", "the compressed checkpoint's folder (new, or empty; --force replaces it)")
	f.StringVar(&experts, "experts", "fp32", "routed experts: fp32, int8 or int4")
	f.StringVar(&dense, "dense", "fp32", "attention and dense/shared FFN matrices: fp32, int8 or int4")
	f.StringVar(&embed, "embed", "fp32", "token embedding (and a tied head): fp32, int8 or int4")
	f.StringVar(&head, "head", "fp32", "untied output head: fp32, int8 or int4")
	f.IntVar(&group, "group", 128, "int4 group: input columns per scale, a multiple of 32 that divides each quantised matrix's width (32, 64, 128)")
	f.StringVar(&pruneArg, "keep-experts", "", "keep N experts per MoE layer, or a fraction of them such as 0.5 or 50%, chosen by routing frequency over --calibration")
	f.StringVar(&pruneBy, "prune-by", compress.PruneByFrequency, "rank experts by frequency (assignments received) or gate_mass (combine weights summed) over --calibration")
	f.StringVar(&calib, "calibration", "", "text file whose routing chooses the experts kept (bytes are tokens)")
	f.IntVar(&windows, "calibration-windows", 32, "windows of seq_len tokens of the calibration text to route, at least 1")
	f.BoolVar(&force, "force", false, "replace a non-empty --out folder")
	return cmd
}

// parsePrune reads --keep-experts: a count ("4") or a fraction below 1 ("0.5", "50%").
func parsePrune(s string, opt *compress.Options) error {
	bad := func() error {
		return diag.Runtimef(diag.CodeBadRunOption, "--keep-experts %q: want a count of experts to keep (4) or a fraction of them (0.5 or 50%%)", s)
	}
	if strings.HasSuffix(s, "%") {
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || v <= 0 || v >= 100 {
			return bad()
		}
		opt.KeepFraction = v / 100
		return nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 {
			return bad()
		}
		opt.KeepExperts = n
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v >= 1 {
		return bad()
	}
	opt.KeepFraction = v
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }
