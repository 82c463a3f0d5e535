package cudastep

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// commLines are the host program's lines that order the streams and issue the NCCL calls
// in moec_run_ops, each under the header of its op.
func commLines(host string) string {
	start := strings.Index(host, "static int moec_run_ops(")
	end := strings.Index(host[max(start, 0):], "\n}\n")
	if start < 0 || end < 0 {
		return ""
	}
	var out []string
	header := ""
	for _, line := range strings.Split(host[start:start+end], "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "// op "):
			header = line
		case strings.Contains(t, "s->nccl.") || strings.Contains(t, "cuEventRecord") || strings.Contains(t, "cuStreamWaitEvent") ||
			strings.HasPrefix(t, "// received in op"):
			if header != "" {
				out = append(out, header)
				header = ""
			}
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// pipelineModel is hunyuan_tiny's dense stage cut to two layers, its attention weights not
// shared (pipeline stages refuse sharing).
func pipelineModel(t *testing.T) *program.Model {
	m := tinyStage(t, 2, 1)
	m.Attention.ShareWeights = 1
	return m
}

// lowerAll lowers every rank's program of layout l.
func lowerAll(t *testing.T, m *program.Model, b step.Batch, l step.Layout) []*Lowered {
	t.Helper()
	progs, err := step.Lower(m, b, l)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Lowered
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		out = append(out, low)
	}
	return out
}

// TestPipelineGroupsPair: on two pipeline stages, for one to four micro-batches, the two
// ranks issue the same sequence of NCCL groups and the k-th group of one holds, in order,
// the receives of the other's k-th group's sends to it (and the same all-reduces): the
// rule the emulated NCCL holds every meeting to, and what keeps real NCCL's blocking
// sends from waiting on each other (a send and the receive from the same peer right
// after it, where the peer's order crosses them, are one group on both stages).
func TestPipelineGroupsPair(t *testing.T) {
	m := pipelineModel(t)
	for micro := 1; micro <= 4; micro++ {
		lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: micro}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2})
		groups := make([][][]NCCLCall, 2)
		grouped := 0
		for r, low := range lows {
			for _, ol := range low.Ops {
				if c := ol.Collective; c != nil && len(c.Calls) > 0 {
					groups[r] = append(groups[r], c.Calls)
					if len(c.Calls) > 1 {
						grouped++
					}
				}
			}
		}
		if len(groups[0]) != len(groups[1]) {
			t.Fatalf("%d micro-batches: rank 0 issues %d NCCL groups, rank 1 %d", micro, len(groups[0]), len(groups[1]))
		}
		if want := 2 * (micro - 1); grouped != want {
			t.Errorf("%d micro-batches: %d groups of a send and a receive, want %d", micro, grouped, want)
		}
		for k := range groups[0] {
			for r := 0; r < 2; r++ {
				var sends, recvs []int64
				for _, c := range groups[r][k] {
					if c.Func == "ncclSend" {
						sends = append(sends, c.Count)
					}
				}
				for _, c := range groups[1-r][k] {
					if c.Func == "ncclRecv" {
						recvs = append(recvs, c.Count)
					}
				}
				if fmt.Sprint(sends) != fmt.Sprint(recvs) {
					t.Errorf("%d micro-batches, group %d: rank %d sends %v, rank %d receives %v", micro, k, r, sends, 1-r, recvs)
				}
				if a, b := groups[r][k][0].Func, groups[1-r][k][0].Func; (a == "ncclAllReduce") != (b == "ncclAllReduce") {
					t.Errorf("%d micro-batches, group %d: rank %d calls %s, rank %d %s", micro, k, r, a, 1-r, b)
				}
			}
		}
	}
}

// TestPipelineStreamsAndEvents holds both stages' NCCL calls and the streams' events and
// waits (two micro-batches) to testdata/collective_pp2.txtar (go test -update rewrites
// it): each send after an event of the compute stream, stage 0's second activations'
// send grouped with the first gradient's receive (stage 1: the first gradient's send with
// the second activations' receive), and the compute stream waiting for a receive before
// the op that reads it and for a send before an op that writes over its range.
func TestPipelineStreamsAndEvents(t *testing.T) {
	lows := lowerAll(t, pipelineModel(t), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2})
	golden.Archive(t, "testdata/collective_pp2.txtar", &txtar.Archive{
		Comment: []byte("The NCCL calls and the streams' events and waits of hunyuan_tiny's dense stage cut to two layers\n(its attention weights not shared) on two pipeline stages, two micro-batches of 8 tokens, each under its op's header.\nRegenerate with go test ./codegen/cudastep -run TestPipelineStreamsAndEvents -update.\n"),
		Files:   pipelineStreams(t, lows),
	}, *update)
}

// TestFourStagesStreamsAndEvents: the same listing of four pipeline stages (one layer
// each) and four micro-batches in testdata/collective_pp4.txtar: each pair of neighbours
// over its own communicator, the warm-up's sends and the cool-down's receives alone, and
// in each stage's steady state a forward send grouped with the gradient's receive from
// the stage below and a backward send with the next activations' receive from the stage
// above.
func TestFourStagesStreamsAndEvents(t *testing.T) {
	m := tinyStage(t, 4, 1)
	m.Attention.ShareWeights = 1
	lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 4}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 4})
	golden.Archive(t, "testdata/collective_pp4.txtar", &txtar.Archive{
		Comment: []byte("The NCCL calls and the streams' events and waits of hunyuan_tiny's dense stage cut to four layers\n(its attention weights not shared) on four pipeline stages, four micro-batches of 8 tokens, each under its op's header.\nRegenerate with go test ./codegen/cudastep -run TestFourStagesStreamsAndEvents -update.\n"),
		Files:   pipelineStreams(t, lows),
	}, *update)
}

// pipelineStreams checks each rank's host program (its NCCL calls grouped, every
// receive waited for before the op that reads it) and returns its commLines, one file a
// rank.
func pipelineStreams(t *testing.T, lows []*Lowered) []txtar.File {
	t.Helper()
	var files []txtar.File
	for r, low := range lows {
		host, err := HostProgram(low)
		if err != nil {
			t.Fatal(err)
		}
		lines := commLines(host)
		for _, want := range []string{"ncclGroupStart()", "ncclSend(", "ncclRecv(", "ncclGroupEnd()", "// received in op "} {
			if !strings.Contains(lines, want) {
				t.Errorf("rank %d: the host program has no %q", r, want)
			}
		}
		// Every receive's output is waited for before the op after it reads it.
		p := low.Program
		for i, op := range p.Ops {
			if op.Kind != step.OpRecv {
				continue
			}
			g := i // the op whose group receives it
			if c := low.Ops[i].Collective; c != nil && c.Joined {
				g = c.JoinedOp
			}
			at := strings.Index(host, "  // op "+strconv.Itoa(g)+" (")
			use := -1
			for j := i + 1; j < len(p.Ops) && use < 0; j++ {
				if containsBuf(p.Ops[j].In, op.Out[0]) {
					use = j
				}
			}
			next := strings.Index(host, "  // op "+strconv.Itoa(use)+" (")
			if at < 0 || use < 0 || next < at {
				t.Fatalf("rank %d: no section from op %d to op %d", r, g, use)
			}
			sec := host[at:next]
			ev := ""
			if k := strings.Index(sec, "cuEventRecord(s->done["); k >= 0 {
				ev = sec[k+len("cuEventRecord(") : k+strings.Index(sec[k:], "]")+1]
			}
			if ev == "" || !strings.Contains(sec, "cuStreamWaitEvent(s->stream, "+ev+", 0)") {
				t.Errorf("rank %d: op %d's receive (op %d's group, event %q) is not waited for before op %d reads it", r, i, g, ev, use)
			}
		}
		files = append(files, txtar.File{Name: fmt.Sprintf("rank%d", r), Data: []byte(lines)})
	}
	return files
}

// TestZeRO3GatherStreamsAndEvents: on two data-parallel ranks under ZeRO 3, layer 1's
// gather (prefetched before layer 0's compute, which runs beside it) copies the rank's own part of each tensor on the compute stream before the event
// the communication stream waits for, then sends its parts and receives the other's in
// one group, and the compute stream waits for it before the first op that reads a
// gathered tensor. testdata/collective_zero3.txtar holds rank 0's host program from the
// gather to that op (go test -update rewrites it).
func TestZeRO3GatherStreamsAndEvents(t *testing.T) {
	m := tinyStage(t, 2, 1)
	lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3})
	low := lows[0]
	p := low.Program
	gather, use := -1, -1
	for i, op := range p.Ops {
		if op.Kind == step.OpAllGather && op.Layer == 1 && gather < 0 {
			gather = i
		}
		if gather >= 0 && i > gather && use < 0 {
			for _, b := range op.In {
				if containsBuf(p.Ops[gather].Out, b) {
					use = i
				}
			}
		}
	}
	if gather < 0 || use < 0 {
		t.Fatalf("no layer 0 gather (op %d) or no reader of it (op %d)", gather, use)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(host, "  // op "+strconv.Itoa(gather)+" (")
	end := strings.Index(host, "  // op "+strconv.Itoa(use+1)+" (")
	if start < 0 || end < start {
		t.Fatalf("no section for ops %d to %d in the host program", gather, use)
	}
	section := host[start:end]
	exchange := []string{"ncclSend(", "ncclRecv("}
	if strings.Contains(section, "moec_p2p_run(") {
		// p2pTableMin calls or more: a table of sends and receives (collective_host.go).
		exchange = []string{"moec_p2p_run(s, moec_p2p_"}
		if !strings.Contains(host, "static const moec_p2p moec_p2p_") || !strings.Contains(host, " {1, ") || !strings.Contains(host, " {0, ") {
			t.Fatalf("the host program runs a table of sends and receives but holds no such table")
		}
	}
	order := slices.Concat([]string{
		"// params[dense] 0/2 + ", // rank 0's part of a tensor, copied from its shard
		"cuEventRecord(s->ready, s->stream)",
		"cuStreamWaitEvent(s->comm_stream, s->ready, 0)",
		"ncclGroupStart()"}, exchange, []string{
		"ncclGroupEnd()",
		"cuEventRecord(s->done[",
		"cuStreamWaitEvent(s->stream, s->done[",
		"// op " + strconv.Itoa(use) + " (",
	})
	at := 0
	for _, want := range order {
		i := strings.Index(section[at:], want)
		if i < 0 {
			t.Fatalf("the host program from op %d to op %d has no %q after %q:\n%s", gather, use, want, section[:at], section)
		}
		at += i + len(want)
	}
	// Both ranks issue the same gathers: rank 0's sends are rank 1's receives.
	for i := range p.Ops {
		c0, c1 := low.Ops[i].Collective, lows[1].Ops[i].Collective
		if p.Ops[i].Kind != step.OpAllGather || c0 == nil || c1 == nil {
			continue
		}
		var sent, got []int64
		for _, c := range c0.Calls {
			if c.Func == "ncclSend" {
				sent = append(sent, c.Count)
			}
		}
		for _, c := range c1.Calls {
			if c.Func == "ncclRecv" {
				got = append(got, c.Count)
			}
		}
		if fmt.Sprint(sent) != fmt.Sprint(got) {
			t.Errorf("op %d: rank 0 sends %v, rank 1 receives %v", i, sent, got)
		}
	}
	golden.Archive(t, "testdata/collective_zero3.txtar", &txtar.Archive{
		Comment: []byte("The host program of hunyuan_tiny's dense stage cut to two layers on two data-parallel ranks under\nZeRO 3 (rank 0), from layer 1's gather of its weights to the first op that reads them.\nRegenerate with go test ./codegen/cudastep -run TestZeRO3GatherStreamsAndEvents -update.\n"),
		Files:   []txtar.File{{Name: HostName, Data: []byte(section)}},
	}, *update)
}

// TestPipelineReceiveOverSentBuffer: where the memory plan puts a grouped receive's buffer
// over the buffer the same group sends (the send's last use and the receive's first are
// adjacent ops; the tiny stages' plans happen not to, so the test moves the receive's
// buffer there), the receive lands in a workspace and its op copies it into place after
// the compute stream waited for the group: the send never reads values the receive
// wrote.
func TestPipelineReceiveOverSentBuffer(t *testing.T) {
	m := pipelineModel(t)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[1] // stage 1: the first gradient's send, then the second activations' receive
	send := -1
	for i := 0; i+1 < len(p.Ops); i++ {
		if p.Ops[i].Kind == step.OpSend && p.Ops[i+1].Kind == step.OpRecv {
			send = i
			break
		}
	}
	if send < 0 {
		t.Fatal("stage 1 has no send followed by a receive")
	}
	sent, got := p.Buffers[p.Ops[send].In[0]], p.Buffers[p.Ops[send+1].Out[0]]
	if sent.Bytes() != got.Bytes() {
		t.Fatalf("the send moves %d bytes, the receive %d", sent.Bytes(), got.Bytes())
	}
	got.Offset = sent.Offset
	low, err := Lower(p, m)
	if err != nil {
		t.Fatal(err)
	}
	c := low.Ops[send].Collective
	if c == nil || len(c.Calls) != 2 || c.Calls[1].Func != "ncclRecv" || c.Calls[1].Work != ppRecvWork {
		t.Fatalf("op %d's group: %+v, want its send and the receive into %s", send, c, ppRecvWork)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	section := host[strings.Index(host, "  // op "+strconv.Itoa(send)+" ("):strings.Index(host, "  // op "+strconv.Itoa(send+2)+" (")]
	order := []string{
		"ncclGroupStart()",
		"ncclSend(moec_at(s, " + strconv.FormatInt(sent.Offset, 10) + "ULL)",
		"ncclRecv(moec_at(s, ", // the workspace, past the arena
		"ncclGroupEnd()",
		"cuEventRecord(s->done[",
		"cuStreamWaitEvent(s->stream, s->done[",
		"// op " + strconv.Itoa(send+1) + " (",
		"// " + got.Name, // the copy into place
		"// " + ppRecvWork,
	}
	at := 0
	for _, want := range order {
		i := strings.Index(section[at:], want)
		if i < 0 {
			t.Fatalf("no %q after %q in:\n%s", want, section[:at], section)
		}
		at += i + len(want)
	}
	// The receive's address is the workspace's, past the arena.
	arena, _, _ := low.Memory()
	k := strings.Index(section, "ncclRecv(moec_at(s, ") + len("ncclRecv(moec_at(s, ")
	addr, err := strconv.ParseInt(section[k:k+strings.Index(section[k:], "ULL")], 10, 64)
	if err != nil || addr < arena {
		t.Errorf("the receive lands at %d (%v), inside the arena of %d bytes", addr, err, arena)
	}
}

// TestPipelineRefusesUngroupedCrossing: a send followed by another micro-batch's receive
// with an op between them cannot be one NCCL group, so lowering stops with an error
// rather than issue two sends that would wait on each other.
func TestPipelineRefusesUngroupedCrossing(t *testing.T) {
	m := pipelineModel(t)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	send, norm := -1, -1
	for i := range p.Ops {
		if p.Ops[i].Kind == step.OpNorm && norm < 0 {
			norm = i
		}
		if i+1 < len(p.Ops) && p.Ops[i].Kind == step.OpSend && p.Ops[i+1].Kind == step.OpRecv && send < 0 {
			send = i
		}
	}
	if send < 0 || norm < 0 {
		t.Fatalf("stage 0 has no send followed by a receive (%d) or no norm (%d)", send, norm)
	}
	if _, err := Lower(p, m); err != nil {
		t.Fatalf("before the change: %v", err)
	}
	p.Ops = append(p.Ops[:send+1], append([]step.Op{p.Ops[norm]}, p.Ops[send+1:]...)...) // a norm between them
	_, err = Lower(p, m)
	if err == nil || !strings.Contains(err.Error(), "cannot be one NCCL group") {
		t.Errorf("a send and another micro-batch's receive with an op between them: %v", err)
	}
}

// TestPipelineBesideDataParallel: under dp 2 × pp 2 the stages' sends and receives go over
// each pipeline pair's own communicator with the peer named by its place in it, and on
// every communicator its members issue the same sequence of NCCL groups with matching
// calls (a send of n floats to place q where q receives n floats from the sender's place;
// the same collective with the same count on both), so no rank waits on a call its peer
// never makes.
func TestPipelineBesideDataParallel(t *testing.T) {
	m := pipelineModel(t)
	l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 2}
	lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, l)
	// Each rank's groups per communicator, by the communicator's ranks.
	type call struct {
		fn    string
		count int64
		peer  int // the peer's world rank; -1 for a collective
	}
	seqs := map[string]map[int][][]call{}
	for r, low := range lows {
		for _, ol := range low.Ops {
			c := ol.Collective
			if c == nil || len(c.Calls) == 0 {
				continue
			}
			comm := low.Comms[c.Calls[0].Comm]
			var group []call
			for _, nc := range c.Calls {
				if nc.Comm != c.Calls[0].Comm {
					t.Fatalf("rank %d: one NCCL group over two communicators: %+v", r, c.Calls)
				}
				cl := call{fn: nc.Func, count: nc.Count, peer: -1}
				if nc.Func == "ncclSend" || nc.Func == "ncclRecv" {
					cl.peer = low.Comms[nc.Comm].Ranks[nc.Peer]
					if cl.peer == r {
						t.Fatalf("rank %d: %s to itself (place %d of %v)", r, nc.Func, nc.Peer, comm.Ranks)
					}
				}
				group = append(group, cl)
			}
			key := comm.Key()
			if seqs[key] == nil {
				seqs[key] = map[int][][]call{}
			}
			seqs[key][r] = append(seqs[key][r], group)
		}
	}
	pipes := 0
	for key, byRank := range seqs {
		var ranks []int
		for r := range byRank {
			ranks = append(ranks, r)
		}
		if len(ranks) != 2 {
			t.Fatalf("communicator %s: groups from ranks %v, want its two members", key, ranks)
		}
		a, b := ranks[0], ranks[1]
		if len(byRank[a]) != len(byRank[b]) {
			t.Fatalf("communicator %s: rank %d issues %d groups, rank %d %d", key, a, len(byRank[a]), b, len(byRank[b]))
		}
		for k := range byRank[a] {
			for _, pair := range [][2]int{{a, b}, {b, a}} {
				for _, c := range byRank[pair[0]][k] {
					var want call
					switch c.fn {
					case "ncclSend":
						pipes++
						want = call{fn: "ncclRecv", count: c.count, peer: pair[0]}
					case "ncclRecv":
						want = call{fn: "ncclSend", count: c.count, peer: pair[0]}
					default:
						want = c
					}
					if !slices.Contains(byRank[pair[1]][k], want) {
						t.Errorf("communicator %s group %d: rank %d's %+v has no match on rank %d: %+v", key, k, pair[0], c, pair[1], byRank[pair[1]][k])
					}
				}
			}
		}
	}
	if pipes == 0 {
		t.Fatal("no ncclSend between the stages")
	}
}
