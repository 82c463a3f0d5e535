package serve

import (
	"net/http/httptest"
	"testing"

	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/train"
)

// Load reads a checkpoint as `moec train` writes it and names the model after its stage;
// the loaded model answers exactly as the one that was saved.
func TestLoadCheckpoint(t *testing.T) {
	m := newModel(t)
	dir, err := checkpoint.Writer{}.Save(t.TempDir(), &checkpoint.Checkpoint{
		Manifest: checkpoint.Manifest{Train: "tiny", Stage: "s", Step: 1, Final: true, Model: tinyModel(), Seed: 3},
		Model:    train.ParamTensors(m.Params()),
	})
	if err != nil {
		t.Fatal(err)
	}
	loaded, name, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if name != "tiny/s" {
		t.Errorf("name %q, want tiny/s", name)
	}
	ask := func(s *Server) string {
		ts := httptest.NewServer(s.Handler())
		defer ts.Close()
		_, body := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "abc", "max_tokens": 20, "temperature": 0.8, "seed": 2})
		return decodeCompletion(t, body).Choices[0].Text
	}
	a, _ := startServer(t, m, Options{})
	b, _ := startServer(t, loaded, Options{})
	if x, y := ask(a), ask(b); x != y {
		t.Errorf("saved model says %q, loaded one %q", x, y)
	}
	if _, _, err := Load(t.TempDir()); err == nil {
		t.Error("an empty folder loaded")
	}
}
