package program

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestRopeFrequenciesMatchTransformers holds RopeFrequencies to reference values written
// from transformers' ROPE_INIT_FUNCTIONS (testdata/rope_reference.py, float32 op by op as
// torch computes): the default, linear, dynamic NTK within and beyond seq_len, llama3
// (Llama 3.1's parameters) and yarn (DeepSeek-V2-Lite's parameters, a Qwen-style one
// without mscale, and one with fractional ramp bounds).
func TestRopeFrequenciesMatchTransformers(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "rope_reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name, Type      string
		Base            float64
		Dim             int
		SeqLen          int64   `json:"seq_len"`
		Positions       int     `json:"positions"`
		Factor          float64 `json:"factor"`
		Original        int64   `json:"original"`
		BetaFast        float64 `json:"beta_fast"`
		BetaSlow        float64 `json:"beta_slow"`
		Mscale          float64 `json:"mscale"`
		MscaleAllDim    float64 `json:"mscale_all_dim"`
		Truncate        *bool   `json:"truncate"`
		Low, High       float64
		Short, Long     []float64
		AttentionFactor float64 `json:"attention_factor"`
		Inv             []float64
		Attention       float64
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		// Literals here: package program's own tests cannot import programtest (it imports the checker, which imports program).
		m := &Model{RopeBase: c.Base, SeqLen: c.SeqLen}
		if c.Type != "" {
			m.RopeScaling = &RopeScaling{Type: RopeType(c.Type), Factor: c.Factor, OriginalSeqLen: c.Original,
				BetaFast: c.BetaFast, BetaSlow: c.BetaSlow, Mscale: c.Mscale, MscaleAllDim: c.MscaleAllDim,
				NoTruncate: c.Truncate != nil && !*c.Truncate, LowFreqFactor: c.Low, HighFreqFactor: c.High,
				ShortFactor: c.Short, LongFactor: c.Long, AttentionFactor: c.AttentionFactor}
		}
		positions := c.Positions
		if positions == 0 {
			positions = int(c.SeqLen)
		}
		inv, att := m.RopeFrequencies(c.Dim, positions)
		if len(inv) != len(c.Inv) {
			t.Fatalf("%s: %d frequencies, want %d", c.Name, len(inv), len(c.Inv))
		}
		for i, want := range c.Inv {
			// A few float32 roundings apart at most: torch raises the base to the power in
			// float32, moec (as it always has) in float64 rounded once, and llama3's smooth
			// band carries that last-bit difference through three more operations.
			if got := float64(inv[i]); math.Abs(got-want) > 5e-7*math.Abs(want) {
				t.Errorf("%s: inv_freq[%d] = %.9g, want %.9g", c.Name, i, got, want)
			}
		}
		if math.Abs(att-c.Attention) > 1e-12 {
			t.Errorf("%s: attention factor %v, want %v", c.Name, att, c.Attention)
		}
	}
}

// TestRopeTableWithoutScaling: without a scaling the table is the one moec always
// rotated by (the frequency rounded to float32, the angle in float32), bit for bit.
func TestRopeTableWithoutScaling(t *testing.T) {
	m := &Model{RopeBase: 1e6, SeqLen: 16}
	cos, sin := m.RopeTable(8, 3, 5)
	for p := 3; p < 5; p++ {
		for i := 0; i < 4; i++ {
			inv := float32(1 / math.Pow(1e6, float64(2*i)/8))
			ang := float64(float32(p) * inv)
			if cos[(p-3)*4+i] != math.Cos(ang) || sin[(p-3)*4+i] != math.Sin(ang) {
				t.Fatalf("position %d pair %d differs", p, i)
			}
		}
	}
}
