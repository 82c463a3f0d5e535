package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/runtime/nn"
)

// peerTolerance is the most a logit of the PyTorch peer may differ from moec's float32
// decoder's before it is timed: the two must compute the same function.
const peerTolerance = 1e-4

// torchPeer is bench/peer/hunyuan_peer.py run by one interpreter whose torch imports: the
// tiny HunYuan in PyTorch, float32 and after quantize_dynamic, decoding as compressbench
// times moec. compressbench runs one per interpreter of --python.
type torchPeer struct {
	python, script, ckpt string
	torch                string
	settings             json.RawMessage        // tune's fastest setting per workload, passed back to gen
	best                 map[string]peerSetting // the same, decoded
	maxDiff              float64
	checked              int
	tps                  map[string][]float64 // per workload (peerKeys), one rate per repetition
}

// peerKeys are the workloads the peer times, as its JSON names them.
var peerKeys = []string{"fp32_1", "fp32_16", "int8_1", "int8_16"}

// peerSetting is how tune ran one workload fastest.
type peerSetting struct {
	Threads int    `json:"threads"`
	Grad    string `json:"grad"`
	QEngine string `json:"qengine"`
}

func (s peerSetting) String() string {
	out := fmt.Sprintf("%d thread(s), %s", s.Threads, s.Grad)
	if s.QEngine != "" {
		out += ", " + s.QEngine
	}
	return out
}

func newTorchPeer(python, script, ckpt string) *torchPeer {
	return &torchPeer{python: python, script: script, ckpt: ckpt, tps: map[string][]float64{}}
}

// name is how the tables name the peer: its torch.
func (p *torchPeer) name() string { return "torch " + p.torch }

// run runs the peer in mode and decodes its last line of output.
func (p *torchPeer) run(out any, args ...string) error {
	cmd := exec.Command(p.python, append([]string{p.script}, args...)...)
	// Passive OpenMP waits: on a shared machine spinning threads cost the peer most of its time.
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE", "TORCH_CPP_LOG_LEVEL=ERROR")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s %s: %w\n%s", p.python, p.script, args[0], err, lastLines(stderr.String(), 5))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), out); err != nil {
		return fmt.Errorf("%s %s %s printed %q: %w", p.python, p.script, args[0], lines[len(lines)-1], err)
	}
	return nil
}

// peerReference is moec's float32 decoding of a text, written for the peers' check: the
// token ids (int32) and the logits after each ([steps, vocab] float32), little-endian.
type peerReference struct {
	tokens, logits string
}

// writePeerReference feeds text to m's float32 decoder and writes what the peers' check
// compares with into tmp.
func writePeerReference(m *nn.Model, text []byte, tmp string) (peerReference, error) {
	vocab := int(m.Config().PaddedVocab())
	steps := min(len(text), int(m.Config().SeqLen))
	dec := m.NewDecoder(1, steps)
	var toks, logits bytes.Buffer
	for _, b := range text[:steps] {
		l, err := dec.Step([]int32{int32(b)})
		if err != nil {
			return peerReference{}, fmt.Errorf("decoding the peers' reference: %w", err)
		}
		binary.Write(&toks, binary.LittleEndian, int32(b))
		binary.Write(&logits, binary.LittleEndian, l[:vocab])
	}
	ref := peerReference{tokens: filepath.Join(tmp, "peer-tokens.bin"), logits: filepath.Join(tmp, "peer-logits.bin")}
	if err := os.WriteFile(ref.tokens, toks.Bytes(), 0o644); err != nil {
		return peerReference{}, err
	}
	if err := os.WriteFile(ref.logits, logits.Bytes(), 0o644); err != nil {
		return peerReference{}, err
	}
	return ref, nil
}

// check has the peer decode the reference's tokens and fails unless every logit agrees
// with moec's within peerTolerance.
func (p *torchPeer) check(ref peerReference) error {
	var r struct {
		Torch   string  `json:"torch"`
		MaxDiff float64 `json:"max_abs_diff"`
		Steps   int     `json:"steps"`
	}
	if err := p.run(&r, "check", "--checkpoint", p.ckpt, "--tokens", ref.tokens, "--logits", ref.logits); err != nil {
		return err
	}
	p.torch, p.maxDiff, p.checked = r.Torch, r.MaxDiff, r.Steps
	if math.IsNaN(r.MaxDiff) || r.MaxDiff > peerTolerance {
		return fmt.Errorf("the PyTorch peer %s (%s) differs from moec's logits by up to %g over %d positions (tolerance %g): it does not compute the same model",
			p.name(), p.python, r.MaxDiff, r.Steps, peerTolerance)
	}
	return nil
}

// tune asks the peer for its fastest setting of each workload (threads among 1 and
// maxThreads, grad mode, quantised engine).
func (p *torchPeer) tune(maxThreads int) error {
	var r struct {
		Best json.RawMessage `json:"best"`
	}
	threads := "1"
	if maxThreads > 1 {
		threads += "," + strconv.Itoa(maxThreads)
	}
	if err := p.run(&r, "tune", "--checkpoint", p.ckpt, "--threads", threads); err != nil {
		return err
	}
	if err := json.Unmarshal(r.Best, &p.best); err != nil {
		return fmt.Errorf("%s's tuning printed %s: %w", p.name(), r.Best, err)
	}
	p.settings = r.Best
	return nil
}

// measure times each workload under the tuned settings: generations of tokens repeated
// for at least seconds after one to warm up, as moec's are.
func (p *torchPeer) measure(tokens int, seconds float64) error {
	r := map[string]any{}
	if err := p.run(&r, "gen", "--checkpoint", p.ckpt, "--steps", fmt.Sprint(tokens), "--seconds", fmt.Sprint(seconds), "--settings", string(p.settings)); err != nil {
		return err
	}
	for _, k := range peerKeys {
		v, ok := r[k].(float64)
		if !ok {
			return fmt.Errorf("%s's gen printed no %s", p.name(), k)
		}
		p.tps[k] = append(p.tps[k], v)
	}
	return nil
}

// describe is the line the table prints about the peer.
func (p *torchPeer) describe() string {
	var parts []string
	for _, k := range peerKeys {
		parts = append(parts, fmt.Sprintf("%s: %s", workloadName(k), p.best[k]))
	}
	return fmt.Sprintf("PyTorch peer: torch %s (%s), its logits within %.1e of moec's float32 decoder over %d positions; fastest settings (tuned in the run) %s",
		p.torch, p.python, p.maxDiff, p.checked, strings.Join(parts, "; "))
}

// workloadName is a peer key in words: "int8_16" is "int8, batch 16".
func workloadName(key string) string {
	precision, batch, _ := strings.Cut(key, "_")
	return precision + ", batch " + batch
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
