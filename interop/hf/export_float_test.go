package hf

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestConfigFloatsAreFloats: a float field of an exported config.json is written with a
// fraction even when whole (router_jitter_noise 0.0, rope_theta 500000.0): transformers
// 5's strict configs refuse an int for a float field, and Go's encoding writes 0.0 as 0.
func TestConfigFloatsAreFloats(t *testing.T) {
	for _, name := range []string{"tiny_mixtral", "tiny_llama4"} {
		dir, _ := saveCheckpoint(t, tinyModel(t, name))
		out := filepath.Join(t.TempDir(), "hf")
		if _, err := Export(dir, out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"router_jitter_noise", "attention_dropout", "rope_theta", "rms_norm_eps"} {
			m := regexp.MustCompile(`"` + key + `": ([^,\n]+)`).FindSubmatch(b)
			if m == nil {
				t.Errorf("%s: config.json has no %s", name, key)
				continue
			}
			if !regexp.MustCompile(`[.eE]`).Match(m[1]) {
				t.Errorf("%s: %s is written %s, an int to transformers 5", name, key, m[1])
			}
		}
	}
}
