package train

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestStepProgramsOverComm runs step-program layouts the way mpirun does, one rank per
// Run with Options.Comm, over dist.Local (which behaves like MPI: every rank its own
// buffers, the collectives as messages), and holds rank 0's log and checkpoint to the
// in-process run of the same layout; the other ranks write no files.
func TestStepProgramsOverComm(t *testing.T) {
	p := shardProgram(6)
	for _, l := range []Sharding{
		{Ranks: 2, EP: 1, TP: 2},
		{Ranks: 4, EP: 1, TP: 2, PP: 2},
	} {
		t.Run(fmt.Sprintf("tp%d-pp%d", max(l.TP, 1), max(l.PP, 1)), func(t *testing.T) {
			want, wantW := trainLayout(t, p, &l)
			comms, err := dist.Local(l.Ranks, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			results := make([]*Result, len(comms))
			errs := make([]error, len(comms))
			roots := make([]string, len(comms))
			var wg sync.WaitGroup
			for r, c := range comms {
				roots[r] = t.TempDir()
				wg.Go(func() {
					layout := l
					results[r], errs[r] = Run(context.Background(), Options{Program: p, OutRoot: roots[r], Layout: &layout, Comm: c, ValWindows: 4})
					if errs[r] != nil {
						c.Abort(errs[r])
					}
				})
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			got, err := ReadLog(results[0].LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d steps over the comm, %d in-process", len(got), len(want))
			}
			for i := range want {
				if !close(want[i].Loss, got[i].Loss, 1e-5) || want[i].Dropped != got[i].Dropped {
					t.Errorf("step %d: loss %.7f dropped %d over the comm, %.7f %d in-process", i+1, got[i].Loss, got[i].Dropped, want[i].Loss, want[i].Dropped)
				}
			}
			if worst := worstWeightDiff(t, wantW, finalWeightsOf(t, results[0].Checkpoint)); worst > 1e-5 {
				t.Errorf("final weights differ from the in-process run's by up to %g", worst)
			}
			if results[0].ValLoss == 0 {
				t.Error("rank 0 did not validate")
			}
			for r := 1; r < len(results); r++ {
				if results[r].Checkpoint != "" {
					t.Errorf("rank %d wrote checkpoint %s", r, results[r].Checkpoint)
				}
			}
		})
	}
}

func finalWeightsOf(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	w := map[string][]float32{}
	for _, ts := range c.Model {
		w[ts.Name] = ts.Data
	}
	return w
}
