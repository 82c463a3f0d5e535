package hf

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// transformersFamilies are the MoE families transformers ships whose weights moec imports,
// by model_type: testdata/hf_tiny.py builds each one's tiny checkpoint with transformers'
// own classes. A row with a skip reason is ready for the day its weights import.
var transformersFamilies = []struct{ family, skip string }{
	{"mixtral", ""},
	{"qwen2_moe", ""},
	{"qwen3_moe", ""},
	{"olmoe", ""},
	{"llama4_text", ""},
	{"gpt_oss", ""},
	{"deepseek_v3", ""},
	{"deepseek_v2", ""},
	{"dbrx", ""},
	{"phimoe", ""},
	{"hunyuan_v1_moe", ""},
}

// configFieldsThatDoNotCompute are the transformers config fields an export may write
// differently from the checkpoint it came from without changing a single logit: training
// settings and bookkeeping. The special ids are not among them: the import records them
// in the checkpoint and the export writes them back.
var configFieldsThatDoNotCompute = map[string]bool{
	"transformers_version": true, "initializer_range": true,
	"use_cache": true, "output_router_logits": true, "router_aux_loss_coef": true,
	"router_jitter_noise": true, "attention_dropout": true, "max_position_embeddings": true,
}

// configFieldsResolved are, by family, the config fields moec's import resolves into the
// numbers they stand for, which the export then writes plainly: the same computation,
// another spelling (the logits are checked as well).
var configFieldsResolved = map[string]map[string]string{
	// HunYuan's dynamic NTK alpha is resolved once into the base rope_theta·α^(d/(d−2)),
	// as transformers' HunYuan rotary embedding computes it up to max_position_embeddings.
	"hunyuan_v1_moe": {"rope_parameters": "the dynamic NTK alpha resolved into its base"},
}

// TestTransformersRoundTrip takes every family through transformers itself (the current
// release, from the .venv-bench environment make test builds): a tiny checkpoint made and
// saved by transformers' own model class is imported by moec, whose logits must equal
// transformers' forward; exported back, where every tensor must equal transformers' saved
// one bit for bit, with the same name, shape and dtype; and loaded again with
// AutoModelForCausalLM, whose logits and config must be the first model's.
func TestTransformersRoundTrip(t *testing.T) {
	ref := startTiny(t, currentTransformersPython(t))
	t.Cleanup(ref.close) // after the parallel subtests
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	for _, tc := range transformersFamilies {
		t.Run(tc.family, func(t *testing.T) {
			if _, imports := weightLayouts[tc.family]; tc.skip != "" && imports {
				t.Skipf("%s (they import now: remove this row's skip to run it)", tc.skip)
			} else if tc.skip != "" {
				t.Skip(tc.skip)
			}
			t.Parallel()
			work := t.TempDir()
			hfDir := filepath.Join(work, "transformers")
			first := ref.build(t, tc.family, hfDir, ids)

			imp, err := ImportCheckpoint(hfDir, filepath.Join(work, "imported"), Options{})
			if err != nil {
				t.Fatalf("moec import hf: %v", err)
			}
			net, _, err := train.LoadNet(imp.Checkpoint, nil)
			if err != nil {
				t.Fatal(err)
			}
			model, ok := net.(*nn.Model)
			if !ok {
				t.Fatalf("loaded a %T, want *nn.Model", net)
			}
			moec, err := model.Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			agree(t, "moec against transformers", first.Logits, moec)

			out := filepath.Join(work, "export")
			man, err := Export(imp.Checkpoint, out)
			if err != nil {
				t.Fatalf("moec export: %v", err)
			}
			if man.Layout == LayoutMoec {
				t.Fatalf("exported in moec's layout, no transformers class: %s", strings.Join(man.Unsupported, "; "))
			}
			sameTensors(t, hfDir, out)
			again := ref.load(t, tc.family, out)
			agree(t, "the export loaded by AutoModelForCausalLM", again.Logits, moec)
			if len(again.ConfigExtra) > 0 {
				t.Logf("config fields %s of the export are no fields of the transformers class", strings.Join(again.ConfigExtra, ", "))
			}
			fields := make([]string, 0, len(again.ConfigDiff))
			for k := range again.ConfigDiff {
				fields = append(fields, k)
			}
			sort.Strings(fields)
			for _, k := range fields {
				v := again.ConfigDiff[k]
				if configFieldsThatDoNotCompute[k] {
					t.Logf("config %s: saved %s, export %s (does not change the computation)", k, v[0], v[1])
				} else if why := configFieldsResolved[tc.family][k]; why != "" {
					t.Logf("config %s: saved %s, export %s (%s)", k, v[0], v[1], why)
				} else {
					t.Errorf("config %s: saved %s, export %s", k, v[0], v[1])
				}
			}
		})
	}
}

// currentTransformersPython is .venv-bench's interpreter (scripts/venv-torch.sh, which
// make test runs), or $MOEC_TRANSFORMERS_PYTHON; the test skips, saying why, when neither
// imports a transformers release (startTiny says so when it does not; a family whose class
// the release lacks skips).
func currentTransformersPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("MOEC_TRANSFORMERS_PYTHON")
	if py == "" {
		py = filepath.Join("..", "..", ".venv-bench", "bin", "python")
		if _, err := os.Stat(py); err != nil {
			t.Skipf("the current transformers is not installed: %s is missing (make test builds it with scripts/venv-torch.sh; the build failed or has not run)", py)
		}
	}
	return py
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// tinyReference is the running testdata/hf_tiny.py: it builds and saves each family's
// checkpoint and loads the folders moec exports from them. One process serves every family
// (torch and transformers imported once); the parallel subtests take turns (mu).
type tinyReference struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *bytes.Buffer
}

type tinyReply struct {
	Transformers string                        `json:"transformers"`
	Skip         string                        `json:"skip"`
	Logits       []float64                     `json:"logits"`
	ConfigDiff   map[string][2]json.RawMessage `json:"config_diff"`
	ConfigExtra  []string                      `json:"config_extra"`
}

// startTiny starts hf_tiny.py under py and reads its first line; the test skips, saying
// why, when py cannot import torch and transformers.
func startTiny(t *testing.T, py string) *tinyReference {
	t.Helper()
	cmd := exec.Command(py, filepath.Join("testdata", "hf_tiny.py"))
	// One thread: tiny products gain nothing from more, and moec's side runs beside it.
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1", "TOKENIZERS_PARALLELISM=false")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("hf_tiny.py: %v", err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<24)
	r := &tinyReference{cmd: cmd, stdin: stdin, lines: lines, stderr: &stderr}
	if !lines.Scan() {
		r.close()
		t.Skipf("%s cannot import torch and transformers (rebuild with scripts/venv-torch.sh): %s", py, lastLine(stderr.Bytes()))
	}
	var hello tinyReply
	if err := json.Unmarshal(lines.Bytes(), &hello); err != nil || hello.Transformers == "" {
		r.close()
		t.Fatalf("hf_tiny.py's first line %q: %v", lines.Text(), err)
	}
	t.Logf("transformers %s", hello.Transformers)
	return r
}

// build asks the script to build family's tiny checkpoint into folder and returns the
// logits of ids; the test skips when the installed transformers has no class for family.
func (r *tinyReference) build(t *testing.T, family, folder string, ids []int32) tinyReply {
	t.Helper()
	rep := r.ask(t, map[string]any{"op": "build", "family": family, "folder": folder, "ids": ids})
	if rep.Skip != "" {
		t.Skip(rep.Skip)
	}
	return rep
}

// load asks the script to load folder, exported from family's build, with
// AutoModelForCausalLM.
func (r *tinyReference) load(t *testing.T, family, folder string) tinyReply {
	t.Helper()
	return r.ask(t, map[string]any{"op": "load", "family": family, "folder": folder})
}

// ask sends one request and reads its answer.
func (r *tinyReference) ask(t *testing.T, req map[string]any) tinyReply {
	t.Helper()
	line, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := fmt.Fprintf(r.stdin, "%s\n", line); err != nil {
		t.Fatalf("hf_tiny.py %s: %v\n%s", line, err, r.stderr.String())
	}
	if !r.lines.Scan() {
		t.Fatalf("hf_tiny.py gave no answer to %s (%v):\n%s", line, r.lines.Err(), r.stderr.String())
	}
	var rep tinyReply
	if err := json.Unmarshal(r.lines.Bytes(), &rep); err != nil {
		t.Fatalf("hf_tiny.py %s: %v", line, err)
	}
	return rep
}

func (r *tinyReference) close() {
	r.stdin.Close()
	_ = r.cmd.Wait()
}

// agree checks moec's float32 logits against transformers' (float64 on the same float32
// weights) relative to the logits' scale, as compareLogits does.
func agree(t *testing.T, what string, ref []float64, got []float32) {
	t.Helper()
	if len(ref) != len(got) {
		t.Fatalf("%s: %d logits, moec %d", what, len(ref), len(got))
	}
	scale, worst := 0.0, 0.0
	for i := range ref {
		scale = math.Max(scale, math.Abs(ref[i]))
		worst = math.Max(worst, math.Abs(ref[i]-float64(got[i])))
	}
	if scale == 0 || worst > 1e-5*scale {
		t.Errorf("%s: logits differ: worst %.3g at scale %.3g", what, worst, scale)
		return
	}
	t.Logf("%s: %d logits agree within %.2g of %.2g", what, len(ref), worst, scale)
}

// sameTensors checks that the export holds exactly the tensors transformers saved: the same
// names, shapes and dtypes, and the same bytes.
func sameTensors(t *testing.T, saved, exported string) {
	t.Helper()
	want, got := rawTensors(t, saved), rawTensors(t, exported)
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	same := 0
	for _, name := range names {
		w := want[name]
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("transformers saved %s %s%v; the export has no such tensor", name, w.DType, w.Shape)
		case g.DType != w.DType || !slices.Equal(g.Shape, w.Shape):
			t.Errorf("%s: transformers saved %s%v, the export %s%v", name, w.DType, w.Shape, g.DType, g.Shape)
		case !bytes.Equal(g.Bytes, w.Bytes):
			t.Errorf("%s: the export's values differ from transformers'", name)
		default:
			same++
		}
	}
	for name, g := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the export has %s %s%v, which transformers did not save", name, g.DType, g.Shape)
		}
	}
	t.Logf("%d tensors equal transformers' bit for bit", same)
}

// rawTensors reads every *.safetensors file of folder as stored.
func rawTensors(t *testing.T, folder string) map[string]safetensors.RawTensor {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(folder, "*.safetensors"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s has no safetensors file (%v)", folder, err)
	}
	out := map[string]safetensors.RawTensor{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw, _, err := safetensors.DecodeRaw(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range raw {
			out[r.Name] = r
		}
	}
	return out
}
