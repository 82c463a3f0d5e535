package cudastep

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// meetingCall is one NCCL call of a rank's group as the rendezvous below sees it: the
// communicator (its ranks), the entry point, the floats and, for a send or a receive, the
// peer's world rank (-1 for a collective).
type meetingCall struct {
	comm  string
	fn    string
	count int64
	peer  int
}

// ncclGroups lists each rank's NCCL groups in program order (one per op that issues
// calls: a collective, or a send with the receive grouped into it).
func ncclGroups(t *testing.T, lows []*Lowered) [][][]meetingCall {
	t.Helper()
	out := make([][][]meetingCall, len(lows))
	for r, low := range lows {
		for _, ol := range low.Ops {
			c := ol.Collective
			if c == nil || len(c.Calls) == 0 {
				continue
			}
			var g []meetingCall
			for _, nc := range c.Calls {
				comm := low.Comms[nc.Comm]
				mc := meetingCall{comm: comm.Key(), fn: nc.Func, count: nc.Count, peer: -1}
				if nc.Func == "ncclSend" || nc.Func == "ncclRecv" {
					mc.peer = comm.Ranks[nc.Peer]
				}
				g = append(g, mc)
			}
			out[r] = append(out[r], g)
		}
	}
	return out
}

// rendezvous plays the ranks' groups under NCCL's blocking semantics: a rank waits in its
// current group until every call of it is met (a send by the peer's receive from it of
// the same order and count, a receive by the peer's send; a collective by the same
// collective of the same order on every member of its communicator) by a call the other
// rank has reached, then moves to its next group. It returns an error naming where the
// ranks wait on each other, or where the calls cannot match at all.
func rendezvous(groups [][][]meetingCall) error {
	type at struct{ rank, group int }
	// match[r][g][i]: the groups of the other ranks that meet call i of rank r's group g.
	match := make([][][][]at, len(groups))
	type link struct{ from, to int }
	sends, recvs := map[link][]at{}, map[link][]at{}
	sendCount, recvCount := map[link][]int64{}, map[link][]int64{}
	colls := map[string]map[int][]at{} // comm → rank → its collectives' groups in order
	collWhat := map[string]map[int][]string{}
	for r, gs := range groups {
		match[r] = make([][][]at, len(gs))
		for g, calls := range gs {
			match[r][g] = make([][]at, len(calls))
			for _, c := range calls {
				switch c.fn {
				case "ncclSend":
					k := link{r, c.peer}
					sends[k], sendCount[k] = append(sends[k], at{r, g}), append(sendCount[k], c.count)
				case "ncclRecv":
					k := link{c.peer, r}
					recvs[k], recvCount[k] = append(recvs[k], at{r, g}), append(recvCount[k], c.count)
				default:
					if colls[c.comm] == nil {
						colls[c.comm], collWhat[c.comm] = map[int][]at{}, map[int][]string{}
					}
					colls[c.comm][r] = append(colls[c.comm][r], at{r, g})
					collWhat[c.comm][r] = append(collWhat[c.comm][r], fmt.Sprintf("%s of %d", c.fn, c.count))
				}
			}
		}
	}
	for k, s := range sendCount {
		if fmt.Sprint(s) != fmt.Sprint(recvCount[k]) {
			return fmt.Errorf("rank %d sends %v floats to rank %d, which receives %v", k.from, s, k.to, recvCount[k])
		}
	}
	for k, r := range recvCount {
		if _, ok := sendCount[k]; !ok {
			return fmt.Errorf("rank %d receives %v floats from rank %d, which sends nothing", k.to, r, k.from)
		}
	}
	for comm, byRank := range collWhat {
		var ref []string
		first := -1
		for r, w := range byRank {
			if first < 0 || r < first {
				first, ref = r, w
			}
		}
		for r, w := range byRank {
			if !slices.Equal(w, ref) {
				return fmt.Errorf("communicator %s: rank %d calls %v, rank %d %v", comm, r, w, first, ref)
			}
		}
	}
	// Each call's partners.
	for r, gs := range groups {
		seen := map[string]int{}
		for g, calls := range gs {
			for i, c := range calls {
				switch c.fn {
				case "ncclSend":
					k := link{r, c.peer}
					n := seen["s"+fmt.Sprint(k)]
					seen["s"+fmt.Sprint(k)]++
					match[r][g][i] = []at{recvs[k][n]}
				case "ncclRecv":
					k := link{c.peer, r}
					n := seen["r"+fmt.Sprint(k)]
					seen["r"+fmt.Sprint(k)]++
					match[r][g][i] = []at{sends[k][n]}
				default:
					n := seen["c"+c.comm]
					seen["c"+c.comm]++
					for q, list := range colls[c.comm] {
						if q != r {
							match[r][g][i] = append(match[r][g][i], list[n])
						}
					}
				}
			}
		}
	}
	cur := make([]int, len(groups))
	for moved := true; moved; {
		moved = false
		for r := range groups {
			for cur[r] < len(groups[r]) {
				g := cur[r]
				ready := true
				for _, partners := range match[r][g] {
					for _, p := range partners {
						if cur[p.rank] < p.group {
							ready = false
						}
					}
				}
				if !ready {
					break
				}
				cur[r]++
				moved = true
			}
		}
	}
	var stuck []string
	for r := range groups {
		if cur[r] < len(groups[r]) {
			stuck = append(stuck, fmt.Sprintf("rank %d in group %d of %d %v", r, cur[r], len(groups[r]), groups[r][cur[r]]))
		}
	}
	if len(stuck) > 0 {
		return fmt.Errorf("the ranks wait on each other: %s", strings.Join(stuck, "; "))
	}
	return nil
}

// checkMeetings holds the emulated NCCL's rule: on every communicator its members issue
// the same sequence of groups, and the k-th group of each holds, for every send of
// another member's k-th group to it, the receive of the same count from that member (a
// collective: the same call on all).
func checkMeetings(t *testing.T, groups [][][]meetingCall) {
	t.Helper()
	seqs := map[string]map[int][][]meetingCall{}
	for r, gs := range groups {
		for _, g := range gs {
			if slices.ContainsFunc(g, func(c meetingCall) bool { return c.comm != g[0].comm }) {
				t.Fatalf("rank %d: one NCCL group over two communicators: %+v", r, g)
			}
			if seqs[g[0].comm] == nil {
				seqs[g[0].comm] = map[int][][]meetingCall{}
			}
			seqs[g[0].comm][r] = append(seqs[g[0].comm][r], g)
		}
	}
	for comm, byRank := range seqs {
		for a, ga := range byRank {
			for b, gb := range byRank {
				if len(ga) != len(gb) {
					t.Fatalf("communicator %s: rank %d issues %d groups, rank %d %d", comm, a, len(ga), b, len(gb))
				}
				for k := range ga {
					for _, c := range ga[k] {
						want := c
						switch {
						case c.fn == "ncclSend" && c.peer == b:
							want = meetingCall{comm: comm, fn: "ncclRecv", count: c.count, peer: a}
						case c.fn == "ncclRecv" && c.peer == b:
							want = meetingCall{comm: comm, fn: "ncclSend", count: c.count, peer: a}
						case c.peer >= 0:
							continue
						}
						if a != b && !slices.Contains(gb[k], want) {
							t.Errorf("communicator %s group %d: rank %d's %+v has no match on rank %d: %+v", comm, k, a, c, b, gb[k])
						}
					}
				}
			}
		}
	}
}

// TestPipelineStagesNeverWaitOnEachOther: on two to four pipeline stages (one layer each;
// dp 2 × pp 3 too), for one to six micro-batches, every rank's NCCL groups played against
// NCCL's blocking semantics run to the end (no cycle of stages waiting on each other), the
// members of each communicator meet group for group as the emulated NCCL requires, each
// pair of neighbouring stages talks over its own communicator, and the steady state's
// crossing messages are grouped. The same calls issued one by one in program order do
// wait on each other once a stage has a steady state (the check can fail).
func TestPipelineStagesNeverWaitOnEachOther(t *testing.T) {
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 1, EP: 1, TP: 1, PP: 3},
		{DP: 1, EP: 1, TP: 1, PP: 4},
		{DP: 2, EP: 1, TP: 1, PP: 3},
	} {
		m := tinyStage(t, l.PP, 1)
		m.Attention.ShareWeights = 1
		for micro := 1; micro <= 6; micro++ {
			lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: micro}, l)
			groups := ncclGroups(t, lows)
			if err := rendezvous(groups); err != nil {
				t.Errorf("%s, %d micro-batches: %v", l, micro, err)
			}
			checkMeetings(t, groups)
			grouped := 0
			for r, gs := range groups {
				for _, g := range gs {
					if g[0].peer >= 0 && len(strings.Fields(g[0].comm)) != 2 {
						t.Errorf("%s: rank %d's %s goes over communicator %s, not its pair's", l, r, g[0].fn, g[0].comm)
					}
					if len(g) > 1 && g[0].peer >= 0 {
						grouped++
					}
				}
			}
			// Stage s's steady state turns from a forward to a backward micro−(pp−s−1) times
			// (where positive): each turn is its activations' send grouped with the
			// gradient's receive from s+1, mirrored on s+1 by the gradient's send grouped
			// with the next activations' receive.
			want := 0
			for s := 0; s < l.PP-1; s++ {
				want += 2 * max(0, micro-(l.PP-s-1)) * l.DP
			}
			if grouped != want {
				t.Errorf("%s, %d micro-batches: %d groups of a send and a receive, want %d", l, micro, grouped, want)
			}
			if micro >= l.PP {
				// One by one, in program order: the crossings wait on each other.
				var single [][][]meetingCall
				for _, gs := range groups {
					var one [][]meetingCall
					for _, g := range gs {
						for _, c := range g {
							one = append(one, []meetingCall{c})
						}
					}
					single = append(single, one)
				}
				if err := rendezvous(single); err == nil || !strings.Contains(err.Error(), "wait on each other") {
					t.Errorf("%s, %d micro-batches: the calls one by one: %v, want the ranks waiting on each other", l, micro, err)
				}
			}
		}
	}
}
