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
	"strings"

	"github.com/moec-dev/moec/runtime/nn"
)

// peerTolerance is the most a logit of the PyTorch peer may differ from moec's float32
// decoder's before it is timed: the two must compute the same function.
const peerTolerance = 1e-4

// torchPeer is bench/peer/hunyuan_peer.py run by an interpreter whose torch imports: the
// tiny HunYuan in PyTorch, float32 and after quantize_dynamic, decoding as compressbench
// times moec.
type torchPeer struct {
	python, script, ckpt string
	torch                string
	settings             json.RawMessage // tune's fastest setting per workload
	maxDiff              float64
	checked              int
	tps                  map[string][]float64 // fp32_1, fp32_16, int8_1, int8_16
}

// peerKeys are the workloads the peer times, as its JSON names them.
var peerKeys = []string{"fp32_1", "fp32_16", "int8_1", "int8_16"}

func newTorchPeer(python, script, ckpt string) *torchPeer {
	return &torchPeer{python: python, script: script, ckpt: ckpt, tps: map[string][]float64{}}
}

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

// check feeds text to moec's float32 decoder and to the peer and fails unless every logit
// agrees within peerTolerance.
func (p *torchPeer) check(m *nn.Model, text []byte, tmp string) error {
	vocab := int(m.Config().PaddedVocab())
	steps := min(len(text), int(m.Config().SeqLen))
	dec := m.NewDecoder(1, steps)
	var toks, logits bytes.Buffer
	for _, b := range text[:steps] {
		l, err := dec.Step([]int32{int32(b)})
		if err != nil {
			return err
		}
		binary.Write(&toks, binary.LittleEndian, int32(b))
		binary.Write(&logits, binary.LittleEndian, l[:vocab])
	}
	tf, lf := filepath.Join(tmp, "peer-tokens.bin"), filepath.Join(tmp, "peer-logits.bin")
	if err := os.WriteFile(tf, toks.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(lf, logits.Bytes(), 0o644); err != nil {
		return err
	}
	var r struct {
		Torch   string  `json:"torch"`
		MaxDiff float64 `json:"max_abs_diff"`
		Steps   int     `json:"steps"`
	}
	if err := p.run(&r, "check", "--checkpoint", p.ckpt, "--tokens", tf, "--logits", lf); err != nil {
		return err
	}
	p.torch, p.maxDiff, p.checked = r.Torch, r.MaxDiff, r.Steps
	if math.IsNaN(r.MaxDiff) || r.MaxDiff > peerTolerance {
		return fmt.Errorf("the PyTorch peer's logits differ from moec's by up to %g over %d positions (tolerance %g): it does not compute the same model", r.MaxDiff, r.Steps, peerTolerance)
	}
	return nil
}

// tune asks the peer for its fastest setting of each workload (threads, grad mode, engine).
func (p *torchPeer) tune() error {
	var r struct {
		Best json.RawMessage `json:"best"`
	}
	if err := p.run(&r, "tune", "--checkpoint", p.ckpt); err != nil {
		return err
	}
	p.settings = r.Best
	return nil
}

// measure times one generation of each workload under the tuned settings.
func (p *torchPeer) measure(tokens int) error {
	r := map[string]any{}
	if err := p.run(&r, "gen", "--checkpoint", p.ckpt, "--steps", fmt.Sprint(tokens), "--settings", string(p.settings)); err != nil {
		return err
	}
	for _, k := range peerKeys {
		v, ok := r[k].(float64)
		if !ok {
			return fmt.Errorf("the peer's gen printed no %s", k)
		}
		p.tps[k] = append(p.tps[k], v)
	}
	return nil
}

// describe is the line the table prints about the peer.
func (p *torchPeer) describe() string {
	var best map[string]struct {
		Threads int    `json:"threads"`
		Grad    string `json:"grad"`
		QEngine string `json:"qengine"`
	}
	settings := string(p.settings)
	if json.Unmarshal(p.settings, &best) == nil {
		var parts []string
		for _, k := range peerKeys {
			b := best[k]
			precision, batch, _ := strings.Cut(k, "_")
			part := fmt.Sprintf("%s, batch %s: %d thread(s), %s", precision, batch, b.Threads, b.Grad)
			if b.QEngine != "" {
				part += ", " + b.QEngine
			}
			parts = append(parts, part)
		}
		settings = strings.Join(parts, "; ")
	}
	return fmt.Sprintf("PyTorch peer: torch %s (%s), its logits within %.1e of moec's float32 decoder over %d positions; fastest settings (tuned in the run) %s",
		p.torch, p.python, p.maxDiff, p.checked, settings)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
