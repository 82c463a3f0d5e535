package kernels

import (
	"math"
	"testing"
)

func TestInterpreterMatchesReference(t *testing.T) {
	for name, sh := range SmallShapes() {
		t.Run(name, func(t *testing.T) {
			ks, err := Set(sh)
			if err != nil {
				t.Fatal(err)
			}
			env, err := Fixture(ks, sh, 9, 5, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, reuse := range []float64{0, 1} {
				env.S["reuse"] = reuse
				for _, k := range ks {
					want, got := env.Clone(), env.Clone()
					// Outputs start as NaN / -7 in the IR run, so an element the
					// description forgets to write cannot match by accident.
					for _, p := range k.Outputs() {
						if p.Access != Out {
							continue
						}
						for i := range got.F[p.Name] {
							got.F[p.Name][i] = float32(math.NaN())
						}
						for i := range got.I[p.Name] {
							got.I[p.Name][i] = -7
						}
					}
					if err := k.Ref(want); err != nil {
						t.Fatalf("%s ref: %v", k.Name, err)
					}
					if err := k.Interpret(got); err != nil {
						t.Fatalf("%s: %v", k.Name, err)
					}
					if err := Compare(k, got, want, 1e-5); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

func TestRoutingIsAPermutation(t *testing.T) {
	sh := SmallShapes()["gelu"]
	ks, err := Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Fixture(ks, sh, 11, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	k := int(sh.TopK)
	seen := map[int32]bool{}
	for a, s := range env.I["slot_of"] {
		if seen[s] {
			t.Fatalf("slot %d used twice", s)
		}
		seen[s] = true
		if env.I["slot_token"][s] != int32(a/k) || env.I["slot_expert"][s] != env.I["expert_idx"][a] {
			t.Fatalf("slot %d does not point back at assignment %d", s, a)
		}
	}
	var total int32
	for e := range sh.Experts {
		total += env.I["expert_count"][e]
	}
	if int(total) != 11*k {
		t.Fatalf("counts sum to %d, want %d", total, 11*k)
	}
	for tok := 0; tok < 11; tok++ {
		var sum float32
		for j := 0; j < k; j++ {
			sum += env.F["gate"][tok*k+j]
			if j > 0 && env.F["gate"][tok*k+j] > env.F["gate"][tok*k+j-1] {
				t.Fatalf("token %d: gates not in descending order", tok)
			}
		}
		if math.Abs(float64(sum)-1) > 1e-5 {
			t.Fatalf("token %d: normalised gates sum to %g", tok, sum)
		}
	}
}

func TestCheckRejectsBadKernels(t *testing.T) {
	cases := map[string]*Kernel{
		"undefined": {Name: "bad", Params: []Param{out("o", F32, ic(1))}, Grid: []Dim{dim("i", ic(1))},
			Body: []Stmt{store("o", v("i"), v("nope"))}},
		"float index": {Name: "bad", Params: []Param{out("o", F32, ic(1))}, Grid: []Dim{dim("i", ic(1))},
			Body: []Stmt{store("o", fc(0), fc(1))}},
		"store to input": {Name: "bad", Params: []Param{in("o", F32, ic(1))}, Grid: []Dim{dim("i", ic(1))},
			Body: []Stmt{store("o", v("i"), fc(1))}},
		"hostile name": {Name: "x\"; */", Params: []Param{out("o", F32, ic(1))}, Grid: []Dim{dim("i", ic(1))}},
		"mixed": {Name: "bad", Params: []Param{out("o", F32, ic(1))}, Grid: []Dim{dim("i", ic(1))},
			Body: []Stmt{store("o", v("i"), add(fc(1), v("i")))}},
	}
	for name, k := range cases {
		if err := k.check(); err == nil {
			t.Errorf("%s: check accepted it", name)
		}
	}
}

// TestCompareDetectsDifferences guards the comparison every backend test relies on.
func TestCompareDetectsDifferences(t *testing.T) {
	sh := SmallShapes()["gelu"]
	ks, err := Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Fixture(ks, sh, 3, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		for _, p := range k.Outputs() {
			got := env.Clone()
			if p.Elem == I32 {
				got.I[p.Name][len(got.I[p.Name])-1]++
			} else {
				got.F[p.Name][len(got.F[p.Name])-1] += 0.01
			}
			if err := Compare(k, got, env, 1e-3); err == nil {
				t.Errorf("%s.%s: a changed last element went unnoticed", k.Name, p.Name)
			}
		}
	}
}
