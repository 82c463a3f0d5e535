package plot

import (
	"bytes"
	"flag"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
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

// lossChart is a training loss falling from the top left to the bottom right, so the top
// right corner, where the legend goes, holds no curve.
func lossChart() Chart {
	loss := curve(300, func(i int) float64 { return 1.4 + 4.2*math.Exp(-float64(i)/40) + 0.05*math.Sin(float64(i)) })
	loss.Name, loss.Faint = "loss", true
	smooth := Series{Name: "loss, EMA", X: loss.X, Y: EMA(loss.Y, 15)}
	val := Series{Name: "validation", X: []float64{100, 200, 300}, Y: []float64{1.9, 1.6, 1.5}, Points: true}
	ce := curve(300, func(i int) float64 { return 1.35 + 4.2*math.Exp(-float64(i)/40) })
	ce.Name = "cross-entropy"
	ce.Y[10] = math.NaN() // gaps are skipped, not drawn
	return Chart{Title: "hunyuan_tiny / dense", XLabel: "step", YLabel: "loss (nats/token)", Series: []Series{loss, smooth, val, ce}}
}

// colourCounts counts the pixels of each colour in r.
func colourCounts(img image.Image, r image.Rectangle) map[color.RGBA]int {
	counts := map[color.RGBA]int{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(cr >> 8), uint8(cg >> 8), uint8(cb >> 8), 255}]++
		}
	}
	return counts
}

// dark counts near-black pixels in r: text, axes and tick marks.
func dark(img image.Image, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr>>8 < 90 && cg>>8 < 90 && cb>>8 < 90 {
				n++
			}
		}
	}
	return n
}

// The PNG decodes to the size asked for, mostly background, with every series' colour, the
// markers of the validation points, text, and a legend in the top right corner.
func TestChart(t *testing.T) {
	c := lossChart()
	var buf bytes.Buffer
	if err := Encode(&buf, c); err != nil {
		t.Fatal(err)
	}
	if *keep != "" {
		if err := os.WriteFile(*keep, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 560 {
		t.Fatalf("size %v, want 960×560", b)
	}
	all := colourCounts(img, img.Bounds())
	// The faint raw loss is translucent: its colour never appears at full strength. The
	// smoothed loss, the validation markers and cross-entropy do.
	for i, min := range map[int]int{1: 300, 2: 60, 3: 300} {
		if all[Colour(i)] < min {
			t.Errorf("series %d (%s): %d pixels of its colour, want at least %d", i, c.Series[i].Name, all[Colour(i)], min)
		}
	}
	if all[white] < 960*560/2 {
		t.Errorf("background pixels: %d, want most of the image", all[white])
	}
	if n := dark(img, img.Bounds()); n < 1000 {
		t.Errorf("text and axis pixels: %d", n)
	}
	// The title is drawn: dark pixels in the top band.
	if n := dark(img, image.Rect(300, 0, 660, 30)); n < 50 {
		t.Errorf("title band has %d dark pixels", n)
	}
	// The legend sits in the top right corner of the plot area, where no curve passes: a
	// sample of each line and marker, and its names.
	corner := image.Rect(700, 20, 950, 160)
	inCorner := colourCounts(img, corner)
	for _, i := range []int{1, 2, 3} {
		if inCorner[Colour(i)] < 10 {
			t.Errorf("legend: %d pixels of series %d's colour in the top right corner", inCorner[Colour(i)], i)
		}
	}
	if n := dark(img, corner); n < 100 {
		t.Errorf("legend: %d dark (text) pixels in the top right corner", n)
	}
	// Without names there is no legend, and the corner is empty.
	for i := range c.Series {
		c.Series[i].Name = ""
	}
	plain, err := c.Image()
	if err != nil {
		t.Fatal(err)
	}
	if n := dark(plain, corner); n > 20 {
		t.Errorf("unnamed series: %d dark pixels in the top right corner, want no legend", n)
	}
}

// Text is set in a real font: lower case is not drawn as capitals.
func TestLowerCaseIsNotCapitals(t *testing.T) {
	draw := func(title string) *image.RGBA {
		img, err := Chart{Title: title, Series: []Series{{X: []float64{1, 2}, Y: []float64{1, 2}}}}.Image()
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	if bytes.Equal(draw("validation loss").Pix, draw("VALIDATION LOSS").Pix) {
		t.Error("\"validation loss\" and \"VALIDATION LOSS\" draw the same pixels")
	}
}

func TestChartErrors(t *testing.T) {
	for _, c := range []Chart{
		{},
		{Series: []Series{{X: []float64{1}, Y: []float64{math.NaN()}}}},
		{Series: []Series{{X: []float64{1, 2}, Y: []float64{1}}}},
		{Width: 50, Height: 50, Series: []Series{{X: []float64{1}, Y: []float64{1}}}},
		{LogY: true, Series: []Series{{X: []float64{1, 2}, Y: []float64{0, -1}}}},
	} {
		if _, err := c.Image(); err == nil {
			t.Errorf("chart %+v drew", c)
		}
	}
	// One point, a flat line and a log axis with a non-positive value left out still draw.
	for _, c := range []Chart{
		{Series: []Series{{X: []float64{1}, Y: []float64{1}}}},
		{Series: []Series{{X: []float64{1, 2, 3}, Y: []float64{2, 2, 2}}}, LogY: true},
		{Series: []Series{{X: []float64{1, 2, 3}, Y: []float64{0, 10, 100}}}, LogY: true},
		{Series: []Series{{X: []float64{1, 2, 3}, Y: []float64{2, 1, 3}, Points: true}}},
	} {
		if _, err := c.Image(); err != nil {
			t.Errorf("chart %+v: %v", c, err)
		}
	}
}

func TestEMA(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name string
		in   []float64
		span float64
		want []float64
	}{
		{"constant stays constant from the first point (bias-corrected)", []float64{3, 3, 3}, 9, []float64{3, 3, 3}},
		{"span 1 is the series itself", []float64{1, 5, 2}, 1, []float64{1, 5, 2}},
		// alpha = 2/3: avg 2/3·1, 2/9·1+2/3·4; weight 2/3, 8/9.
		{"span 2", []float64{1, 4}, 2, []float64{1, (2.0/9 + 8.0/3) / (8.0 / 9)}},
		{"a gap is skipped", []float64{2, nan, 2}, 3, []float64{2, nan, 2}},
	} {
		got := EMA(tc.in, tc.span)
		for i := range tc.want {
			if math.IsNaN(tc.want[i]) != math.IsNaN(got[i]) || (!math.IsNaN(got[i]) && math.Abs(got[i]-tc.want[i]) > 1e-12) {
				t.Errorf("%s: EMA(%v, %g) = %v, want %v", tc.name, tc.in, tc.span, got, tc.want)
				break
			}
		}
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		n      int
		want   []string
	}{
		{1.37, 5.62, 6, []string{"2", "3", "4", "5"}},
		{0, 300, 8, []string{"0", "50", "100", "150", "200", "250", "300"}},
		{1.45, 1.62, 5, []string{"1.45", "1.50", "1.55", "1.60"}},
	} {
		var got []string
		for _, tk := range niceTicks(tc.lo, tc.hi, tc.n) {
			got = append(got, tk.Label)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("niceTicks(%g, %g, %d) = %q, want %q", tc.lo, tc.hi, tc.n, got, tc.want)
		}
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
