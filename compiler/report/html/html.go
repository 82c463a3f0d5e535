package html

import (
	"bytes"
	"fmt"
	stdhtml "html"
	"os"
	"path/filepath"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	gmhtml "github.com/yuin/goldmark/renderer/html"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/report"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/internal/human"
)

// Page is what report.html shows.
type Page struct {
	Report *report.Report
	Plans  []*plan.Plan // train stages in curriculum order, then serve blocks
	// Sections are further parts of report.md shown at the end under their titles, as
	// report.md shows them (the seed's figures: memory, GPU count, cost and speed).
	Sections []report.Section
}

// Write plans every train stage and serve block of prog as `moec build` does and writes
// report.html into outDir. Stages or serve blocks that do not fit are left out: their
// diagnostics are the build's to report.
func Write(outDir string, prog *program.Program, srcName string) error {
	var pg Page
	for _, tn := range prog.TrainOrder {
		tr := prog.Trains[tn]
		for _, st := range tr.Stages {
			if p, _ := plan.ForStage(prog, tr, st, plan.Options{Alternatives: 3}); p != nil {
				pg.Plans = append(pg.Plans, p)
			}
		}
	}
	for _, sn := range prog.ServeOrder {
		if p, _ := plan.ForServe(prog, prog.Serves[sn], plan.Options{Alternatives: 3}); p != nil {
			pg.Plans = append(pg.Plans, p)
		}
	}
	// The seed's table, for each train block on a multi-device cluster, as report.md has it.
	for _, tn := range prog.TrainOrder {
		tr := prog.Trains[tn]
		if cl, ok := prog.Clusters[tr.Cluster]; ok && cl.GPUs() > 1 {
			seed, err := plan.SeedTable(prog, tr, cl)
			if err != nil {
				return fmt.Errorf("report.html: %w", err)
			}
			pg.Sections = append(pg.Sections, report.Section{Title: "The seed's figures: memory, GPU count, cost and speed", Markdown: seed.Markdown()})
		}
	}
	// The curriculum's steps are counted at the batch each stage's plan runs.
	pg.Report = report.BuildPlanned(prog, srcName, pg.Plans)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(outDir, "report.html"), Render(pg), 0o644); err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	return nil
}

// palette colours memory components and pipeline stages; chosen to stay apart in print.
func palette(i int) string {
	colors := [...]string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
		"#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}
	return colors[i%len(colors)]
}

const style = `body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.legend span{display:inline-block;margin-right:1em}.sw{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
.exposed{color:#b00}.muted{color:#777}svg{display:block;margin:.5em 0;max-width:100%}svg text{font:11px system-ui,sans-serif}
.plan{border:1px solid #e4e4e4;border-radius:6px;padding:0 1em 1em;margin:1.2em 0}`

// Render writes the page. Everything the source or the plans name is escaped.
func Render(pg Page) []byte {
	var b bytes.Buffer
	r := pg.Report
	title := "moec report"
	if r != nil && r.Source != "" {
		title += ": " + filepath.Base(r.Source)
	}
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n<h1>%s</h1>\n",
		esc(title), style, esc(title))
	md := newMarkdown()
	if r != nil {
		models(&b, md, r)
		for _, t := range r.Trains {
			curriculum(&b, md, t)
		}
	}
	if len(pg.Plans) > 0 {
		b.WriteString("<h2>Plans</h2>\n")
	}
	for _, p := range pg.Plans {
		planSection(&b, md, p)
	}
	for _, s := range pg.Sections {
		fmt.Fprintf(&b, "<h2>%s</h2>\n", esc(s.Title))
		md.render(&b, s.Markdown)
	}
	b.WriteString("</body>\n</html>\n")
	return b.Bytes()
}

func esc(s string) string { return stdhtml.EscapeString(s) }

// markdown renders the parts of report.md that report.html shows as text and tables, so
// the two reports say the same thing in the same words. It writes XHTML-style void
// elements (the page stays well-formed XML) and leaves out raw HTML in the source.
type markdown struct{ md goldmark.Markdown }

func newMarkdown() markdown {
	return markdown{goldmark.New(
		goldmark.WithExtensions(extension.NewTable(extension.WithTableCellAlignMethod(extension.TableCellAlignStyle))),
		goldmark.WithRendererOptions(gmhtml.WithXHTML()),
	)}
}

func (m markdown) render(b *bytes.Buffer, src string) {
	if err := m.md.Convert([]byte(src), b); err != nil {
		// Convert fails only when the writer does; a bytes.Buffer does not.
		panic(fmt.Sprintf("report.html: rendering Markdown: %v", err))
	}
}

// plural is "1 expert", "8 experts".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// subsections splits a plan's Markdown at its "### " headings: the text before the first
// one under "", each subsection (heading included) under its heading's text.
func subsections(md string) (intro string, parts map[string]string, order []string) {
	parts = map[string]string{}
	chunks := strings.Split("\n"+md, "\n### ")
	intro = strings.TrimPrefix(chunks[0], "\n")
	for _, c := range chunks[1:] {
		title, _, _ := strings.Cut(c, "\n")
		parts[title] = "### " + c
		order = append(order, title)
	}
	return intro, parts, order
}

// models writes a summary table of the models, then each model's section of report.md:
// conventions, parameters by component, layers and FLOPs per token.
func models(b *bytes.Buffer, md markdown, r *report.Report) {
	if len(r.Models) == 0 {
		return
	}
	b.WriteString("<h2>Models</h2>\n<table>\n<tr><th>model</th><th>total parameters</th><th>active per token</th><th>train FLOPs per token</th></tr>\n")
	for _, m := range r.Models {
		var total, active int64
		if len(m.Conventions) > 0 {
			total, active = m.Conventions[0].Total, m.Conventions[0].Active
		}
		fmt.Fprintf(b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", esc(m.Name), human.Count(float64(total)), human.Count(float64(active)), human.SI(m.FLOPs.Train, "FLOP"))
	}
	b.WriteString("</table>\n")
	for i := range r.Models {
		md.render(b, report.ModelMarkdown(&r.Models[i]))
	}
}

func seconds(s float64) string {
	switch {
	case s == 0:
		return "0"
	case s < 1e-3:
		return fmt.Sprintf("%.3g µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.3g ms", s*1e3)
	}
	return fmt.Sprintf("%.3g s", s)
}

// planSection shows one plan: its title, the pictures (memory per tier, the device mesh,
// communication with a bar per collective) and the rest of the plan's section of report.md
// (cluster, model and layout, the memory table, time, alternatives, notes, assumptions).
// The layout sentence is the plan's own, so a serving plan shows no training fields and an
// unified-cache plan no "offload none" beside its PCIe traffic.
func planSection(b *bytes.Buffer, md markdown, p *plan.Plan) {
	what := p.Model
	switch {
	case p.Serve != "":
		what = "serve " + p.Serve
	case p.Train != "":
		what = fmt.Sprintf("%s, stage %s", p.Train, p.Stage)
	}
	fmt.Fprintf(b, "<div class=\"plan\">\n<h3>%s</h3>\n", esc(what))
	// The plan's subsections sit under this h3.
	intro, parts, order := subsections(p.Markdown())
	md.render(b, intro)
	memoryChart(b, p)
	if m, ok := parts["Memory"]; ok {
		// The exact figures under the chart, which is their heading.
		_, table, _ := strings.Cut(m, "\n")
		md.render(b, table)
	}
	meshPicture(b, p)
	commTable(b, p)
	for _, title := range order {
		switch {
		case title == "Memory":
		case strings.HasPrefix(title, "Communication"):
			// commTable above shows the rows; keep what the section says about overlap.
			for _, line := range strings.Split(parts[title], "\n") {
				if strings.HasPrefix(line, "Overlap:") {
					md.render(b, line)
				}
			}
		default:
			md.render(b, "#"+parts[title])
		}
	}
	b.WriteString("</div>\n")
}

// memoryChart draws one horizontal bar per tier, its components stacked, against a
// dashed line at the tier's capacity.
func memoryChart(b *bytes.Buffer, p *plan.Plan) {
	if len(p.Memory) == 0 {
		return
	}
	b.WriteString("<h4>Memory per device (GPU) and per node (host, NVMe)</h4>\n")
	const left, width, barH, gap, right = 110, 620, 26, 14, 230
	h := len(p.Memory)*(barH+gap) + 20
	fmt.Fprintf(b, "<svg role=\"img\" aria-label=\"memory per tier\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", left+width+right, h, left+width+right, h)
	names := map[string]int{}
	var order []string
	for ti, t := range p.Memory {
		scale := float64(max(t.Capacity, t.Used))
		if scale <= 0 {
			scale = 1
		}
		y := 10 + ti*(barH+gap)
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s per %s</text>\n", left-8, y+barH/2+4, esc(t.Tier), esc(t.Per))
		x := float64(left)
		for _, c := range t.Components {
			if c.Bytes <= 0 {
				continue
			}
			ci, ok := names[c.Name]
			if !ok {
				ci = len(order)
				names[c.Name] = ci
				order = append(order, c.Name)
			}
			w := float64(c.Bytes) / scale * width
			fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%s: %s</title></rect>\n",
				x, y, w, barH, palette(ci), esc(c.Name), human.Bytes(int64(float64(c.Bytes))))
			x += w
		}
		if t.Capacity > 0 {
			cx := float64(left) + float64(t.Capacity)/scale*width
			fmt.Fprintf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#000\" stroke-dasharray=\"4 3\"><title>capacity %s</title></line>\n",
				cx, cx, y-4, y+barH+4, human.Bytes(int64(float64(t.Capacity))))
		}
		label := human.Bytes(int64(float64(t.Used)))
		if t.Capacity > 0 {
			label += fmt.Sprintf(" of %s (%.0f%%)", human.Bytes(int64(float64(t.Capacity))), 100*float64(t.Used)/float64(t.Capacity))
		}
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\">%s</text>\n", left+width+6, y+barH/2+4, esc(label))
	}
	b.WriteString("</svg>\n<div class=\"legend\">")
	for i, n := range order {
		fmt.Fprintf(b, "<span><i class=\"sw\" style=\"background:%s\"></i>%s</span>", palette(i), esc(n))
	}
	b.WriteString("</div>\n")
}

// meshPicture draws the devices as a grid, one row per node, coloured by pipeline stage,
// with each tensor-parallel group outlined. Ranks are numbered tp fastest, then dp, then
// pp (Megatron's order), so a node holds consecutive ranks. Past maxNodes rows the
// picture stops and says how many nodes it left out.
func meshPicture(b *bytes.Buffer, p *plan.Plan) {
	per := max(p.Cluster.GPUsPerNode, 1)
	l := p.Layout
	world := max(l.DP*l.TP*l.PP, 1)
	nodes := (world + per - 1) / per
	const maxNodes, cell, pad, left = 8, 22, 3, 70
	shown := min(nodes, maxNodes)
	fmt.Fprintf(b, "<h4>Device mesh: %s on %s of %d</h4>\n", plural(world, "device"), plural(nodes, "node"), per)
	w := left + per*(cell+pad) + 10
	h := shown*(cell+pad) + 10
	fmt.Fprintf(b, "<svg role=\"img\" aria-label=\"device mesh\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", w, h, w, h)
	tp, dp := max(l.TP, 1), max(l.DP, 1)
	ep := max(l.EP, 1)
	for n := 0; n < shown; n++ {
		y := 5 + n*(cell+pad)
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">node %d</text>\n", left-6, y+cell/2+4, n)
		for g := 0; g < per; g++ {
			rank := n*per + g
			if rank >= world {
				break
			}
			tpRank := rank % tp
			dpRank := (rank / tp) % dp
			ppRank := rank / (tp * dp)
			x := left + g*(cell+pad)
			fmt.Fprintf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"3\" fill=\"%s\" fill-opacity=\"%.2f\"><title>rank %d: pp %d, dp %d (ep %d), tp %d</title></rect>\n",
				x, y, cell, cell, palette(ppRank), 0.45+0.55*float64(dpRank%ep+1)/float64(ep), rank, ppRank, dpRank, dpRank%ep, tpRank)
		}
		if tp > 1 {
			for g := 0; g+tp <= per; g += tp {
				if n*per+g >= world {
					break
				}
				fmt.Fprintf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"4\" fill=\"none\" stroke=\"#222\" stroke-width=\"1.5\"/>\n",
					left+g*(cell+pad)-2, y-1, tp*(cell+pad)-pad+4, cell+2)
			}
		}
	}
	b.WriteString("</svg>\n")
	fmt.Fprintf(b, "<p class=\"muted\">Colour: pipeline stage (%d); shade: position in the expert-parallel group of %d (each holds %s of the experts); outlines: tensor-parallel groups of %d. Ranks run tp fastest, then dp, then pp.",
		l.PP, ep, expertShare(p, ep), tp)
	if nodes > shown {
		fmt.Fprintf(b, " The picture shows %d of %d nodes; the rest repeat the pattern.", shown, nodes)
	}
	b.WriteString("</p>\n")
}

func expertShare(p *plan.Plan, ep int) string {
	if p.Workload.Experts > 0 {
		return fmt.Sprintf("%d of %d", p.Workload.Experts/ep, p.Workload.Experts)
	}
	return "all"
}

// commTable lists the collectives of one step with a bar for each one's time.
func commTable(b *bytes.Buffer, p *plan.Plan) {
	if len(p.Comm) == 0 {
		b.WriteString("<p class=\"muted\">No communication per step.</p>\n")
		return
	}
	var longest float64
	for _, c := range p.Comm {
		longest = max(longest, c.Seconds)
	}
	if longest <= 0 {
		longest = 1
	}
	b.WriteString("<h4>Communication per step</h4>\n<table>\n<tr><th>collective</th><th>purpose</th><th>group</th><th>link</th><th>bytes per device</th><th>time</th><th></th></tr>\n")
	for _, c := range p.Comm {
		cls, fill := "", "#76b7b2"
		if c.Exposed {
			cls, fill = " class=\"exposed\"", "#e15759"
		}
		fmt.Fprintf(b, "<tr%s><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td><svg width=\"160\" height=\"12\"><rect width=\"%.1f\" height=\"12\" fill=\"%s\"/></svg></td></tr>\n",
			cls, esc(c.Collective), esc(c.Purpose), c.GroupText(), esc(c.Tier), human.Bytes(int64(c.Bytes)), seconds(c.Seconds), 160*c.Seconds/longest, fill)
	}
	b.WriteString("</table>\n<p class=\"muted\">Red rows are on the critical path (not hidden behind compute).</p>\n")
}

// curriculum draws a train block's stages along the token axis, each labelled with its
// experts and parameters, arrows for the `from` edges that grow experts.
func curriculum(b *bytes.Buffer, md markdown, t report.TrainReport) {
	if len(t.Stages) == 0 || t.Tokens <= 0 {
		return
	}
	fmt.Fprintf(b, "<h2>Curriculum: %s on %s</h2>\n<p>%s tokens in %s, %s training FLOPs.</p>\n",
		esc(t.Model), esc(t.Cluster), human.Count(float64(t.Tokens)), plural(len(t.Stages), "stage"), report.Sci(t.TrainFLOPs))
	const left, width, barY, barH = 10, 1000, 30, 34
	fmt.Fprintf(b, "<svg role=\"img\" aria-label=\"curriculum timeline\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", left+width+10, 120, left+width+10, 120)
	x := float64(left)
	for i, s := range t.Stages {
		w := float64(s.Tokens) / float64(t.Tokens) * width
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\" stroke=\"#fff\"><title>%s: %s tokens, %s, %s (top-%d), %s parameters, %s active</title></rect>\n",
			x, barY, max(w, 2), barH, palette(i), esc(s.Name), human.Count(float64(s.Tokens)), plural(int(s.Steps), "step"), plural(s.Experts, "expert"), s.TopK, human.Count(float64(s.Total)), human.Count(float64(s.Active)))
		// Labels alternate above and below so narrow stages stay readable.
		ly := barY - 8
		if i%2 == 1 {
			ly = barY + barH + 16
		}
		// A label wider than its stage would run into the next one: the table below names it.
		if label := fmt.Sprintf("%s: %s, %s params", s.Name, plural(s.Experts, "expert"), human.Count(float64(s.Total))); float64(len(label))*6.2 < w {
			fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\">%s</text>\n", x+2, ly, esc(label))
		} else if float64(len(s.Name))*6.2 < w {
			fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\">%s</text>\n", x+2, ly, esc(s.Name))
		}
		x += w
	}
	fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" class=\"muted\">0</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s tokens</text>\n",
		left, barY+barH+34, left+width, barY+barH+34, human.Count(float64(t.Tokens)))
	b.WriteString("</svg>\n")
	// The stages as report.md tables them: experts, parameters, tokens, batch, steps, FLOPs.
	md.render(b, report.TrainMarkdown(&t))
}
