package cudastep

import (
	"strings"
	"testing"
)

// exchange is an expert exchange's calls over peers ranks with local experts each: a send
// of each expert's slots from send and a receive into recv, C floats a call.
func exchange(peers, local int, send, recv int64, comm int) []NCCLCall {
	var calls []NCCLCall
	const C = 96
	for p := 0; p < peers; p++ {
		for le := 0; le < local; le++ {
			k := int64(p*local + le)
			calls = append(calls,
				NCCLCall{Func: "ncclSend", Comm: comm, Send: send + 4*C*k, Recv: -1, Count: C, Peer: p},
				NCCLCall{Func: "ncclRecv", Comm: comm, Send: -1, Recv: recv + 4*C*(int64(le*peers+p)), Count: C, Peer: p})
		}
	}
	return calls
}

// TestP2PTablesAreShared: a collective of p2pTableMin sends and receives or more becomes a
// table its copies at other offsets share (every layer's exchange of one shape), with
// the rows relative to the lowest send and receive offsets; fewer calls, another
// communicator among them or a reduction stay calls of their own.
func TestP2PTablesAreShared(t *testing.T) {
	var ce commEmitter
	t0, s0, r0, ok := ce.p2pTable(exchange(4, 2, 1000, 50000, 0))
	if !ok || t0 != 0 || s0 != 1000 || r0 != 50000 {
		t.Fatalf("the first exchange: table %d, bases %d and %d, ok %v; want table 0 at 1000 and 50000", t0, s0, r0, ok)
	}
	t1, s1, r1, ok := ce.p2pTable(exchange(4, 2, 7000, 90000, 0))
	if !ok || t1 != t0 || s1 != 7000 || r1 != 90000 {
		t.Fatalf("the same exchange elsewhere: table %d (want %d), bases %d and %d", t1, t0, s1, r1)
	}
	if t2, _, _, ok := ce.p2pTable(exchange(2, 4, 0, 4096, 0)); !ok || t2 == t0 {
		t.Fatalf("another exchange's shape took table %d (ok %v); want a table of its own", t2, ok)
	}
	if len(ce.tables) != 2 {
		t.Fatalf("%d tables; want 2", len(ce.tables))
	}
	// The rows: the first send at 0, the first receive at 0, the last receive 4·96·(1·4+3).
	if tab := ce.tables[0]; !strings.Contains(tab, "moec_p2p_0[16]") || !strings.Contains(tab, "{1, 0LL, 96LL, 0}") ||
		!strings.Contains(tab, "{0, 0LL, 96LL, 0}") || !strings.Contains(tab, "{0, 2688LL, 96LL, 3}") {
		t.Fatalf("table 0 is not the exchange's rows:\n%s", tab)
	}
	mixed := exchange(4, 2, 0, 0, 0)
	mixed[3].Comm = 1
	reduce := append(exchange(4, 2, 0, 0, 0), NCCLCall{Func: "ncclAllReduce", Send: 0, Recv: 0, Count: 8})
	for name, calls := range map[string][]NCCLCall{
		"fewer calls":     exchange(2, 1, 0, 0, 0),
		"two comms":       mixed,
		"with a reduce":   reduce,
		"no calls at all": nil,
	} {
		if _, _, _, ok := ce.p2pTable(calls); ok {
			t.Errorf("%s: made a table", name)
		}
	}
}
