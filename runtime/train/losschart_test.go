package train

import (
	"math"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/plot"
)

// loss.png shows each step's loss faintly under its moving average, cross-entropy when
// auxiliary losses make it differ, and the validation loss as a marker at its step.
func TestLossChart(t *testing.T) {
	var recs []StepRecord
	for i := int64(1); i <= 200; i++ {
		l := 2 + 3*math.Exp(-float64(i)/30) + 0.2*math.Sin(float64(i))
		recs = append(recs, StepRecord{Step: i, Loss: l, CE: l - 0.4})
	}
	c := lossChart(recs, "m / s", 200, 2.1)
	var names []string
	for _, s := range c.Series {
		names = append(names, s.Name)
	}
	want := []string{"loss", "loss, EMA over 10 steps", "cross-entropy, EMA over 10 steps", "validation cross-entropy"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Fatalf("series %q, want %q", names, want)
	}
	raw, smooth, val := c.Series[0], c.Series[1], c.Series[3]
	if !raw.Faint || smooth.Faint {
		t.Errorf("the raw loss should be faint under a solid average (faint: %v, %v)", raw.Faint, smooth.Faint)
	}
	// The average is smoother: its step-to-step changes are far smaller than the raw ones.
	wiggle := func(y []float64) (sum float64) {
		for i := 101; i < len(y); i++ {
			sum += math.Abs(y[i] - y[i-1])
		}
		return sum
	}
	if w0, w1 := wiggle(raw.Y), wiggle(smooth.Y); w1 > w0/3 {
		t.Errorf("EMA wiggles %.3g over the last 100 steps, the raw loss %.3g", w1, w0)
	}
	if !val.Points || len(val.X) != 1 || val.X[0] != 200 || val.Y[0] != 2.1 {
		t.Errorf("validation series %+v, want one marker at step 200, loss 2.1", val)
	}
	// Drawn: the average's colour and the validation marker's are in the picture.
	img, err := c.Image()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for i := 0; i < len(img.Pix); i += 4 {
		for si := 1; si <= 3; si++ {
			if col := plot.Colour(si); img.Pix[i] == col.R && img.Pix[i+1] == col.G && img.Pix[i+2] == col.B {
				seen[si]++
			}
		}
	}
	for si, min := range map[int]int{1: 300, 2: 300, 3: 40} {
		if seen[si] < min {
			t.Errorf("%s: %d pixels of its colour, want at least %d", c.Series[si].Name, seen[si], min)
		}
	}

	// Before validation there is no marker; without auxiliary losses, no cross-entropy line.
	for i := range recs {
		recs[i].CE = recs[i].Loss
	}
	if c := lossChart(recs, "m / s", 0, 0); len(c.Series) != 2 {
		t.Errorf("unvalidated run without auxiliary losses: %d series, want loss and its average", len(c.Series))
	}
}
