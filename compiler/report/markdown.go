package report

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/internal/human"
)

// Markdown renders the report for people. It is deterministic: the same Report gives the
// same bytes.
func Markdown(r *Report, extra []Section) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# moec build report: %s\n", r.Source)
	for i := range r.Models {
		writeModel(&b, &r.Models[i])
	}
	for i := range r.Trains {
		writeTrain(&b, &r.Trains[i])
	}
	if len(r.Serves) > 0 {
		b.WriteString("\n## Serving\n\n")
		b.WriteString("| model | stage | on | precision | parameters | weights | active per token |\n")
		b.WriteString("|---|---|---|---|---:|---:|---:|\n")
		for _, s := range r.Serves {
			stage := s.Stage
			if stage == "" {
				stage = "as declared"
			}
			prec := s.Precision
			if s.Compressed {
				prec += ", compressed"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.Model, stage, s.Cluster, prec,
				count(s.Params), human.Bytes(int64(s.WeightBytes)), count(s.ActiveParams))
		}
	}
	if len(r.Compresses) > 0 {
		b.WriteString("\n## Compression for serving\n\n")
		b.WriteString("| model | experts | dense | embedding | head | int4 group | experts kept | weights fp32 | compressed |\n")
		b.WriteString("|---|---|---|---|---|---:|---:|---:|---:|\n")
		for _, c := range r.Compresses {
			kept, before, after := "all", "-", "-"
			if c.KeepExperts > 0 {
				kept = fmt.Sprint(c.KeepExperts)
			}
			if c.FP32Bytes > 0 {
				before = human.Bytes(c.FP32Bytes)
				after = fmt.Sprintf("%s (%.0f%%)", human.Bytes(c.Bytes), 100*float64(c.Bytes)/float64(c.FP32Bytes))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s | %s | %s |\n", c.Model, c.Experts, c.Dense, c.Embed, c.Head, c.Group, kept, before, after)
		}
	}
	for _, s := range extra {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		b.WriteString(strings.TrimRight(s.Markdown, "\n"))
		b.WriteString("\n")
	}
	return []byte(b.String())
}

func writeModel(b *strings.Builder, m *ModelReport) {
	if len(m.Conventions) == 0 {
		// A model the program does not hold (see Build) has no counts to show.
		fmt.Fprintf(b, "\n## Model `%s`\n\nNo counts: the model is not declared.\n", m.Name)
		return
	}
	fmt.Fprintf(b, "\n## Model `%s`", m.Name)
	if m.Extends != "" {
		fmt.Fprintf(b, " (extends `%s`)", m.Extends)
	}
	b.WriteString("\n\n")
	head := m.Conventions[0]
	fmt.Fprintf(b, "**%s parameters, %s active per token.** Convention: %s.\n\n",
		count(head.Total), count(head.Active), head.Description)
	b.WriteString("| convention | total | active per token |\n|---|---:|---:|\n")
	for _, c := range m.Conventions {
		fmt.Fprintf(b, "| %s | %s | %s |\n", c.Name, both(c.Total), both(c.Active))
	}

	b.WriteString("\n### Parameters by component\n\n")
	b.WriteString("| component | total | active per token |\n|---|---:|---:|\n")
	for _, c := range m.Components {
		fmt.Fprintf(b, "| %s | %s | %s |\n", strings.ReplaceAll(c.Name, "_", " "), both(c.Total), both(c.Active))
	}
	fmt.Fprintf(b, "| **total** | **%s** | **%s** |\n", both(head.Total), both(head.Active))
	if m.MTP > 0 {
		fmt.Fprintf(b, "\nMulti-token-prediction modules: %s parameters (%s active), not in the total; "+
			"they share the embedding and the output head.\n", both(m.MTP), both(m.MTPActive))
	}
	if m.Buffers > 0 {
		fmt.Fprintf(b, "\nBuffers (non-trainable, not counted above): %s auxiliary-loss-free routing biases.\n", human.Exact(m.Buffers))
	}

	b.WriteString("\n### Layers\n\n")
	writeLayerSummary(b, m)
	b.WriteString("\n| stack | layers | kind | per layer | active per layer | attention | dense FFN | experts | shared | router | norms |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, g := range m.Layers {
		kind := g.Kind
		if g.Kind == "moe" {
			kind = fmt.Sprintf("MoE top-%d", g.TopK)
		}
		if g.Cross {
			kind += ", cross-attn"
		}
		if !g.OwnsKV {
			kind += ", shared K/V"
		}
		experts := "-"
		if g.Experts > 0 {
			experts = fmt.Sprintf("%s (%d × %s)", count(g.Experts), g.Experts/max(g.PerExpert, 1), count(g.PerExpert))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			g.Stack, g.Range, kind, both(g.Total), count(g.Active), count(g.Attention), dash(g.DenseFFN),
			experts, dash(g.Shared), dash(g.Router), count(g.Norms))
	}

	f := m.FLOPs
	fmt.Fprintf(b, "\n### FLOPs per token (seq_len %d)\n\n", f.SeqLen)
	b.WriteString("| | FLOPs per token |\n|---|---:|\n")
	fmt.Fprintf(b, "| forward | %s |\n", human.SI(f.Forward, "FLOP"))
	fmt.Fprintf(b, "| &nbsp;&nbsp;matmuls (2 × active weights, head included) | %s |\n", human.SI(f.Matmul, "FLOP"))
	fmt.Fprintf(b, "| &nbsp;&nbsp;&nbsp;&nbsp;of which output head | %s |\n", human.SI(f.Head, "FLOP"))
	if f.Router > 0 {
		fmt.Fprintf(b, "| &nbsp;&nbsp;&nbsp;&nbsp;of which router | %s |\n", human.SI(f.Router, "FLOP"))
	}
	fmt.Fprintf(b, "| &nbsp;&nbsp;attention (QK^T, AV) | %s |\n", human.SI(f.Attention, "FLOP"))
	if f.MTP > 0 {
		fmt.Fprintf(b, "| MTP modules, forward | %s |\n", human.SI(f.MTP, "FLOP"))
	}
	fmt.Fprintf(b, "| train (3 × forward, no recompute) | %s |\n", human.SI(f.Train, "FLOP"))
	b.WriteString("\nCausal attention is counted at the mean context over a sequence, (seq_len+1)/2 keys per query; " +
		"embedding lookups are free; a multiply-add is 2 FLOPs.\n")
	if len(m.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range m.Notes {
			fmt.Fprintf(b, "- %s.\n", n)
		}
	}
	if len(m.Features) > 0 {
		b.WriteString("\n### Features × backends\n\n")
		b.WriteString("What each backend does with each feature this model uses: yes, honoured; approx., computed " +
			"approximately; **no**, not honoured (the CPU runtime, the Go program and the step program refuse the model; " +
			"the generated kernels and the exports are written without the feature); —, the backend computes nothing " +
			"the feature changes. The step program's cells are for one rank; the CUDA step is that program lowered to CUDA " +
			"(`moec run --device cuda`, one rank); `moec build` names what a stage's layout " +
			"cannot lower, and warns (W9501) of what the generated kernels leave out. `moec run --llvm` runs only the " +
			"norm and cross-entropy LLVM kernels and computes the rest in Go, so the CPU runtime's column holds for it.\n\n")
		b.WriteString(features.Markdown(m.Features))
	}
}

// writeLayerSummary says in one line per stack which layers are dense and which are MoE.
func writeLayerSummary(b *strings.Builder, m *ModelReport) {
	for _, stack := range []string{"encoder", "decoder", "mtp"} {
		var dense, moe []int
		n := 0
		for _, g := range m.Layers {
			if g.Stack != stack {
				continue
			}
			n += len(g.Indices)
			if g.Kind == "moe" {
				moe = append(moe, g.Indices...)
			} else {
				dense = append(dense, g.Indices...)
			}
		}
		if n == 0 {
			continue
		}
		slices.Sort(dense)
		slices.Sort(moe)
		var parts []string
		denseText := ""
		if len(dense) > 0 {
			denseText = describeIndices(dense) + " dense"
		}
		moeText := ""
		if len(moe) > 0 {
			moeText = describeIndices(moe) + " MoE"
		}
		if len(moe) > 0 && (len(dense) == 0 || moe[0] < dense[0]) {
			parts = append(parts, moeText, denseText)
		} else {
			parts = append(parts, denseText, moeText)
		}
		name := map[string]string{"encoder": "Encoder", "decoder": "Decoder", "mtp": "MTP modules"}[stack]
		fmt.Fprintf(b, "- %s (%d): layers %s\n", name, n, joinNonEmpty(parts, ", "))
	}
}

// ModelMarkdown is one model's section of report.md, its "## Model" heading first: the
// conventions, the parameters by component, the layers, the FLOPs per token and the notes.
// report.html renders the same text, so the two cannot drift apart.
func ModelMarkdown(m *ModelReport) string {
	var b strings.Builder
	writeModel(&b, m)
	return b.String()
}

// TrainMarkdown is one train block's section of report.md without its heading: the
// sentence on how steps and FLOPs are counted and the table of stages with their totals.
func TrainMarkdown(t *TrainReport) string {
	var b strings.Builder
	writeTrainBody(&b, t)
	return b.String()
}

func writeTrain(b *strings.Builder, t *TrainReport) {
	fmt.Fprintf(b, "\n## Train `%s` on `%s`\n\n", t.Model, t.Cluster)
	writeTrainBody(b, t)
}

func writeTrainBody(b *strings.Builder, t *TrainReport) {
	fmt.Fprintf(b, "Sequence length %d, %s tokens per batch as written (tokens_per_batch). "+
		"Steps = floor(tokens / batch) (at least 1), the batch as the stage's plan runs it where the stage was planned. "+
		"Training FLOPs = train FLOPs per token × tokens.\n\n",
		t.SeqLen, human.Exact(t.TokensPerBatch))
	b.WriteString("| stage | from | experts | top-k | parameters | active | tokens | batch (tokens) | steps | train FLOPs / token | training FLOPs |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range t.Stages {
		from := s.From
		if from == "" {
			from = "-"
		}
		fmt.Fprintf(b, "| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", s.Name, from, s.Experts, s.TopK,
			both(s.Total), count(s.Active), count(s.Tokens), batchCell(s, t.TokensPerBatch), human.Exact(s.Steps),
			human.SI(s.FLOPsPerToken, "FLOP"), sci(s.TrainFLOPs))
	}
	fmt.Fprintf(b, "| **all stages** | | | | | | **%s** | | | | **%s** |\n", count(t.Tokens), sci(t.TrainFLOPs))
}

// batchCell is the batch a stage's steps are counted at, and how far the plan moved it
// from what was written: "1,966,080 (plan, -6.2%)".
func batchCell(s StageReport, written int64) string {
	out := human.Exact(s.BatchTokens)
	switch {
	case s.Planned && s.BatchTokens != written && written > 0:
		out += fmt.Sprintf(" (plan, %+.1f%%)", 100*(float64(s.BatchTokens)/float64(written)-1))
	case s.Planned:
		out += " (plan)"
	}
	return out
}

func dash(n int64) string {
	if n == 0 {
		return "-"
	}
	return count(n)
}

func joinNonEmpty(parts []string, sep string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
