package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestLaunchTableRows: a run of launchTableMin launches or more is one table whose rows
// hold each launch's grid, block, argument count, op label and die, and whose cells spell
// every kind of argument (a buffer's arena offset plus its element offset, a workspace, a
// null address, an int, a long long, a float, an optimizer scalar and a loss-scaled
// constant); a shorter run writes nothing; a bad argument fails naming its op.
func TestLaunchTableRows(t *testing.T) {
	p := &step.Program{Buffers: []*step.Buffer{{Name: "x", Shape: []int{64}, Elem: 4, Tier: step.Device, Offset: 4096}}}
	lt := &launchTables{p: p, idx: map[string]int{"k0": 0, "k1": 1}, workAt: map[string]int64{"scratch": 9000}, opt: "opt", dice: "dice"}
	first := Launch{Kernel: "k0", Grid: [3]int{2, 1, 1}, Block: [3]int{128, 1, 1}, Args: []Arg{
		{Kind: PtrF32, Buf: 0, Offset: 3}, WorkArg(PtrF32, "scratch", 64), NullArg(PtrI32), IntArg(I32, -7), IntArg(I64, 1<<40),
		FloatArg(0.5), HostFloatArg(HostAdamLRBC1), LossScaledArg(0.25)}}
	other := Launch{Kernel: "k1", Grid: [3]int{1, 1, 4}, Block: [3]int{16, 16, 1}, Shared: 4096}
	var w strings.Builder
	if done, err := lt.emit(&w, "  ", "", opRows([]Launch{first, other}, nil, -1, "op 1")); done || err != nil || w.Len() > 0 {
		t.Fatalf("a run of 2 launches: tabled %v, %v, wrote %q", done, err, w.String())
	}
	rows := append(opRows([]Launch{first}, nil, -1, "op 1"), opRows([]Launch{other, other}, []Launch{first}, 3, "op 2")...)
	done, err := lt.emit(&w, "    ", "update", rows)
	if !done || err != nil {
		t.Fatalf("a run of 4 launches: tabled %v, %v", done, err)
	}
	call := "    if (update && !moec_launch_run(s, opt, dice, moec_launches_0, moec_args_0, 4)) return 0; // 4 launches: op 1 … op 2\n"
	if w.String() != call {
		t.Errorf("the call:\n%q\nwant\n%q", w.String(), call)
	}
	table := lt.tables[0]
	cells := "    P(4108), P(9000), Z, I(-7), L(1099511627776), F(0.5f), H(8), S(0.25f),\n"
	for _, want := range []string{
		"moec_launches_0[4] = {\n",
		"    {0, 2, 1, 1, 128, 1, 1, 0, 8, 0, 0}, // k0\n",    // op 1's launch, always
		"    {1, 1, 1, 4, 16, 16, 1, 4096, 0, 1, 4}, // k1\n", // op 2's, when layer 3 recomputes
		"    {0, 2, 1, 1, 128, 1, 1, 0, 8, 1, -4}, // k0\n",   // op 2's reuse launch
		"moec_args_0[16] = {\n" + cells + cells + "};\n",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table has no %q:\n%s", want, table)
		}
	}
	if len(lt.labels) != 2 || lt.labels[0] != "op 1" || lt.labels[1] != "op 2" || lt.maxArgs != 8 {
		t.Errorf("labels %q, at most %d arguments; want op 1 and op 2, 8", lt.labels, lt.maxArgs)
	}
	var out strings.Builder
	lt.writeTables(&out)
	for _, want := range []string{"static const char *const moec_launch_labels[2] = {\n    \"op 1\",\n    \"op 2\",\n};", "#define MOEC_MAX_ARGS 8\n",
		"(opt[9] > 0 ? opt[9] : 1.0)", "#define P(off) {(off), 0.0f, 'P'}", table, "#undef S\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the tables' text has no %q", want)
		}
	}
	bad := Launch{Kernel: "k1", Args: []Arg{IntArg(I32, 1<<40)}}
	if _, err := lt.emit(&w, "  ", "", opRows([]Launch{other, other, other, bad}, nil, -1, "op 9 (fwd x)")); err == nil ||
		!strings.Contains(err.Error(), "op 9 (fwd x)") || !strings.Contains(err.Error(), "overflows an int") {
		t.Errorf("an int argument past 32 bits: %v; want an error naming op 9", err)
	}
}
