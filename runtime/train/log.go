package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/internal/human"
)

// StepRecord is one line of log.jsonl: one optimizer step.
type StepRecord struct {
	Step     int64   `json:"step"` // steps completed, 1-based
	Loss     float64 `json:"loss"` // CE + weighted auxiliary losses, mean over micro-batches
	CE       float64 `json:"ce"`
	Balance  float64 `json:"balance_loss"` // unscaled, as nn.Stats reports it
	ZLoss    float64 `json:"z_loss"`
	SoftLoss float64 `json:"soft_loss,omitempty"` // a distillation stage's T²·KL(teacher ‖ student)
	GradNorm float64 `json:"grad_norm"`
	Clipped  bool    `json:"clipped,omitempty"`
	// LossScale is the loss scale an fp16 step ran with, and Skipped says its scaled
	// gradients overflowed half, so its update was skipped (no gradient norm then).
	LossScale    float64 `json:"loss_scale,omitempty"`
	Skipped      bool    `json:"skipped,omitempty"`
	LR           float64 `json:"lr"`
	Tokens       int64   `json:"tokens"` // training tokens seen so far
	ExpertTokens [][]int `json:"expert_tokens,omitempty"`
	Dropped      int     `json:"dropped,omitempty"`
	SharedLayers int     `json:"shared_layers,omitempty"`
	StepTime     float64 `json:"step_time"` // seconds
	Elapsed      float64 `json:"elapsed"`   // seconds since this invocation's first step began
	TokensPerSec float64 `json:"tokens_per_s"`
}

// ReadLog parses a log.jsonl. A torn last line (a run killed mid-write) is ignored; any
// other bad line is an error.
func ReadLog(path string) ([]StepRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseLog(b, path)
}

func parseLog(b []byte, path string) ([]StepRecord, error) {
	var out []StepRecord
	lines := bytes.Split(b, []byte{'\n'})
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r StepRecord
		if err := json.Unmarshal(line, &r); err != nil {
			if i == len(lines)-1 {
				break // torn final line: no newline was written after it
			}
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// truncateLog keeps the records of steps <= step, rewriting the file atomically, and
// returns the kept records. A missing log is empty.
func truncateLog(path string, step int64, write bool) ([]StepRecord, error) {
	recs, err := ReadLog(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var buf bytes.Buffer
	var kept []StepRecord
	for _, r := range recs {
		if r.Step > step {
			break
		}
		kept = append(kept, r)
		line, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if !write { // a rank that does not write the run's files only reads them
		return kept, nil
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return nil, err
	}
	return kept, nil
}

func writeFileAtomic(path string, b []byte) error {
	return atomicfile.WriteFile(path, b, 0o644)
}

// progress draws a live bar on a terminal and plain periodic lines elsewhere.
type progress struct {
	w        io.Writer
	tty      bool
	total    int64
	every    time.Duration
	last     time.Time
	lastStep int64
	printed  int64 // the step last shown, so the final line is not repeated
	width    int
}

func newProgress(w io.Writer, total int64) *progress {
	p := &progress{w: w, total: total, every: 10 * time.Second}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
			p.every = 200 * time.Millisecond
		}
	}
	return p
}

func (p *progress) update(r StepRecord, force bool) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	if r.Step == p.printed || (!force && now.Sub(p.last) < p.every && r.Step != p.total) {
		return
	}
	p.last, p.printed = now, r.Step
	eta := "?"
	if r.TokensPerSec > 0 && r.Step > 0 && r.Elapsed > 0 {
		perStep := r.Elapsed / float64(r.Step-p.lastStepAtStart())
		eta = fmtDuration(time.Duration(perStep * float64(p.total-r.Step) * float64(time.Second)))
	}
	frac := float64(r.Step) / float64(max(p.total, 1))
	stats := fmt.Sprintf("step %d/%d  tokens %s  loss %.4f  %s tok/s  ETA %s",
		r.Step, p.total, human.Count(float64(r.Tokens)), r.Loss, human.Count(r.TokensPerSec), eta)
	if p.tty {
		const barWidth = 24
		filled := int(math.Round(frac * barWidth))
		bar := strings.Repeat("█", filled) + strings.Repeat("░", barWidth-filled)
		line := fmt.Sprintf("\r%s %3.0f%%  %s", bar, 100*frac, stats)
		n := utf8.RuneCountInString(line)
		pad := max(p.width-n, 0)
		p.width = n
		fmt.Fprint(p.w, line+strings.Repeat(" ", pad))
		if r.Step == p.total {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, stats)
}

// lastStepAtStart is the step this invocation started from, set by start.
func (p *progress) lastStepAtStart() int64 { return p.lastStep }

func (p *progress) start(step int64) {
	if p != nil {
		p.lastStep = step
	}
}

func (p *progress) printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
	fmt.Fprintf(p.w, format, args...)
}

func fmtDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// writeLine appends one record to the log.
func writeLine(w *bufio.Writer, r StepRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	w.Write(b)
	w.WriteByte('\n')
	return w.Flush()
}
