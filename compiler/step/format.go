package step

import (
	"fmt"
	"io"
	"strings"

	"github.com/moec-dev/moec/internal/human"
)

// Format writes p as the listing a person reads (program.txt): a header with the layout,
// the batch and the memory plan, the buffers with their offsets and lifetimes, then one
// line per op.
func Format(w io.Writer, p *Program) error {
	var b strings.Builder
	l := p.Layout
	fmt.Fprintf(&b, "# moec step program: model %s, stage %s, rank %d of %d\n", p.Model, p.Stage, p.Rank, l.World())
	fmt.Fprintf(&b, "# layout: %s; this rank: tp %d, dp %d (ep %d, edp %d), pp %d\n", l, p.Coord.TP, p.Coord.DP, p.Coord.EP, p.Coord.EDP, p.Coord.PP)
	fmt.Fprintf(&b, "# batch: %d micro-batch(es) of %d × %d tokens; layers %d..%d\n", p.Batch.Micro, p.Batch.MicroBatch, p.Batch.SeqLen,
		p.FirstLayer, p.FirstLayer+p.LayerCount-1)
	var flops, comm int64
	phases := map[Phase]int{}
	for _, op := range p.Ops {
		phases[op.Phase]++
		if op.Kind.Collective() || op.Kind.PointToPoint() {
			comm += op.Bytes
		} else {
			flops += op.FLOPs
		}
	}
	fmt.Fprintf(&b, "# ops: %d (fwd %d, bwd %d, reduce %d, update %d); %s FLOPs; %s sent\n", len(p.Ops),
		phases[Forward], phases[Backward], phases[Reduce], phases[Update], human.Exact(flops), human.Bytes(comm))
	if l.Cache.On() {
		b.WriteString(cacheSummary(p))
	}
	m := p.Memory
	fmt.Fprintf(&b, "# memory, device: arena %s, peak live %s at op %d, persistent %s", human.Bytes(m.Arena[Device]), human.Bytes(m.Peak[Device]),
		m.PeakOp, human.Bytes(m.Persistent[Device]))
	if m.Arena[Host] > 0 {
		fmt.Fprintf(&b, "; host: arena %s", human.Bytes(m.Arena[Host]))
	}
	b.WriteString("\n# at the peak:")
	for k := KindInput; k <= KindCache; k++ {
		if v := m.ByKind[k]; v > 0 {
			fmt.Fprintf(&b, " %s %s;", k, human.Bytes(v))
		}
	}
	b.WriteString("\n\n## buffers (tier offset bytes kind name shape [first..last op])\n")
	for i, buf := range p.Buffers {
		lt := m.Lifetime[i]
		fmt.Fprintf(&b, "b%-4d %-6s %10d %10d %-10s %s %v [%d..%d]\n", i, buf.Tier, buf.Offset, buf.Bytes(), buf.Kind, buf.Name, buf.Shape, lt[0], lt[1])
	}
	b.WriteString("\n## ops (index phase micro-batch layer op [group/peer] inputs -> outputs; attributes; FLOPs, bytes)\n")
	for i, op := range p.Ops {
		fmt.Fprintf(&b, "%-5d %-6s m%-2s %-4s %s", i, op.Phase, micro(op.Micro), layer(op.Layer), op.Kind)
		switch {
		case op.Kind.PointToPoint():
			fmt.Fprintf(&b, "[%s rank %d]", op.Group, op.Peer)
		case op.Kind.Collective():
			fmt.Fprintf(&b, "[%s]", op.Group)
		}
		fmt.Fprintf(&b, " %s -> %s", names(p, op.In, nil), names(p, op.Out, op.Acc))
		if op.Attr != "" {
			fmt.Fprintf(&b, "; %s", op.Attr)
		}
		if op.Recomputed {
			b.WriteString("; recomputed")
		}
		fmt.Fprintf(&b, "; %d, %d\n", op.FLOPs, op.Bytes)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func micro(m int) string {
	if m < 0 {
		return "-"
	}
	return fmt.Sprint(m)
}

func layer(l int) string {
	if l < 0 {
		return "-"
	}
	return fmt.Sprintf("L%d", l)
}

// names lists buffers; an output the op adds to is marked "+=".
func names(p *Program, bufs []int, acc []bool) string {
	if len(bufs) == 0 {
		return "()"
	}
	parts := make([]string, len(bufs))
	for i, b := range bufs {
		parts[i] = p.Buffers[b].Name
		if i < len(acc) && acc[i] {
			parts[i] = "+=" + parts[i]
		}
	}
	if len(parts) > 6 {
		return fmt.Sprintf("%s, … %d more, %s", strings.Join(parts[:3], ", "), len(parts)-4, parts[len(parts)-1])
	}
	return strings.Join(parts, ", ")
}
