package plot

import (
	"bytes"
	"flag"
	"image/color"
	"image/png"
	"math"
	"os"
	"testing"
)

var keep = flag.String("keep", "", "also write the test chart to this PNG path, to look at it")

func curve(n int, f func(i int) float64) Series {
	var s Series
	for i := 1; i <= n; i++ {
		s.X = append(s.X, float64(i))
		s.Y = append(s.Y, f(i))
	}
	return s
}

func TestChart(t *testing.T) {
	loss := curve(300, func(i int) float64 { return 1.4 + 4.2*math.Exp(-float64(i)/40) + 0.05*math.Sin(float64(i)) })
	loss.Name = "loss"
	ce := curve(300, func(i int) float64 { return 1.35 + 4.2*math.Exp(-float64(i)/40) })
	ce.Name = "cross-entropy"
	ce.Y[10] = math.NaN() // gaps are skipped, not drawn
	c := Chart{Title: "hunyuan_tiny / dense", XLabel: "step", YLabel: "loss (nats/token)", Series: []Series{loss, ce}}
	var buf bytes.Buffer
	if err := Encode(&buf, c); err != nil {
		t.Fatal(err)
	}
	if *keep != "" {
		os.WriteFile(*keep, buf.Bytes(), 0o644)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 560 {
		t.Errorf("size %v", b)
	}
	// Both series' colours appear, and the image is mostly background.
	counts := map[color.RGBA]int{}
	for y := 0; y < 560; y++ {
		for x := 0; x < 960; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 255}]++
		}
	}
	if counts[palette[0]] < 300 || counts[palette[1]] < 300 {
		t.Errorf("line pixels: %d and %d", counts[palette[0]], counts[palette[1]])
	}
	if counts[white] < 960*560/2 {
		t.Errorf("background pixels: %d", counts[white])
	}
	if counts[ink] < 1000 {
		t.Errorf("text/axis pixels: %d", counts[ink])
	}
}

func TestChartErrors(t *testing.T) {
	for _, c := range []Chart{
		{},
		{Series: []Series{{X: []float64{1}, Y: []float64{math.NaN()}}}},
		{Series: []Series{{X: []float64{1, 2}, Y: []float64{1}}}},
		{Width: 50, Height: 50, Series: []Series{{X: []float64{1}, Y: []float64{1}}}},
	} {
		if _, err := c.Image(); err == nil {
			t.Errorf("chart %+v drew", c)
		}
	}
	// One point and a flat line still draw.
	for _, c := range []Chart{
		{Series: []Series{{X: []float64{1}, Y: []float64{1}}}},
		{Series: []Series{{X: []float64{1, 2, 3}, Y: []float64{2, 2, 2}}}, LogY: true},
	} {
		if _, err := c.Image(); err != nil {
			t.Errorf("chart %+v: %v", c, err)
		}
	}
}

func TestTicks(t *testing.T) {
	tk := niceTicks(1.37, 5.62, 6)
	if tk.step != 1 || tk.lo != 1 || tk.hi != 6 || len(tk.values) != 6 {
		t.Errorf("niceTicks(1.37, 5.62) = %+v", tk)
	}
	tk = niceTicks(0, 300, 8)
	if tk.step != 100 || tk.hi != 300 || len(tk.values) != 4 {
		t.Errorf("niceTicks(0, 300) = %+v", tk)
	}
	for _, c := range []struct {
		v, step float64
		want    string
	}{{2.5, 0.5, "2.5"}, {3, 1, "3"}, {0.25, 0.05, "0.25"}, {1e-17, 0.1, "0.0"}, {2e6, 1e6, "2e+06"}} {
		if got := formatTick(c.v, c.step); got != c.want {
			t.Errorf("formatTick(%g, %g) = %q, want %q", c.v, c.step, got, c.want)
		}
	}
}
