package plot

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"
)

// Series is one line of a chart.
type Series struct {
	Name string
	X, Y []float64
	// Low and High, when set (same length as X), draw a translucent band around the line:
	// the spread over seeds, for example.
	Low, High []float64
}

// Chart describes a line chart.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	Width, Height         int  // pixels [960×560]
	LogY                  bool // logarithmic y axis (all y must be positive)
}

// palette holds distinguishable line colours (Tableau 10).
var palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
	{188, 189, 34, 255}, {23, 190, 207, 255},
}

var (
	white = color.RGBA{255, 255, 255, 255}
	ink   = color.RGBA{40, 40, 40, 255}
	grid  = color.RGBA{228, 228, 228, 255}
)

// Image draws the chart.
func (c Chart) Image() (*image.RGBA, error) {
	w, h := c.Width, c.Height
	if w <= 0 {
		w = 960
	}
	if h <= 0 {
		h = 560
	}
	if w < 200 || h < 150 {
		return nil, fmt.Errorf("plot: %d×%d is too small for a chart", w, h)
	}
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	points := 0
	for _, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("plot: series %q has %d x values and %d y values", s.Name, len(s.X), len(s.Y))
		}
		if (s.Low != nil || s.High != nil) && (len(s.Low) != len(s.X) || len(s.High) != len(s.X)) {
			return nil, fmt.Errorf("plot: series %q has a band of %d/%d values for %d points", s.Name, len(s.Low), len(s.High), len(s.X))
		}
		for i := range s.X {
			x := s.X[i]
			ys := []float64{s.Y[i]}
			if s.Low != nil {
				ys = append(ys, s.Low[i], s.High[i])
			}
			for _, y := range ys {
				if !finite(x) || !finite(y) || (c.LogY && y <= 0) {
					continue // a diverged value is left out rather than flattening the chart
				}
				if c.LogY {
					y = math.Log10(y)
				}
				xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
				ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
				points++
			}
		}
	}
	if points == 0 {
		return nil, errors.New("plot: no finite points to draw")
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	if ymax == ymin {
		ymin, ymax = ymin-1, ymax+1
	}
	xt := niceTicks(xmin, xmax, 8)
	yt := niceTicks(ymin, ymax, 6)
	xmin, xmax = math.Min(xmin, xt.lo), math.Max(xmax, xt.hi)
	ymin, ymax = math.Min(ymin, yt.lo), math.Max(ymax, yt.hi)

	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fillRect(img, 0, 0, w, h, white)
	const scale = 2
	ylabels := make([]string, len(yt.values))
	maxLabel := 0
	for i, v := range yt.values {
		if c.LogY {
			ylabels[i] = formatTick(math.Pow(10, v), 0)
		} else {
			ylabels[i] = formatTick(v, yt.step)
		}
		maxLabel = max(maxLabel, textWidth(ylabels[i], scale))
	}
	left := 24 + maxLabel + 16
	if c.YLabel != "" {
		left += glyphH*scale + 12
	}
	right, top, bottom := w-24, 24+glyphH*scale+20, h-(glyphH*scale*2+40)
	if c.Title == "" {
		top = 24
	}
	if right-left < 50 || bottom-top < 50 {
		return nil, fmt.Errorf("plot: %d×%d leaves no room for the plot area", w, h)
	}
	px := func(x float64) float64 { return float64(left) + (x-xmin)/(xmax-xmin)*float64(right-left) }
	py := func(y float64) float64 { return float64(bottom) - (y-ymin)/(ymax-ymin)*float64(bottom-top) }

	// Grid, ticks and labels.
	for i, v := range yt.values {
		y := int(math.Round(py(v)))
		fillRect(img, left, y, right-left, 1, grid)
		fillRect(img, left-6, y, 6, 1, ink)
		drawText(img, left-10-textWidth(ylabels[i], scale), y-glyphH*scale/2, ylabels[i], scale, ink)
	}
	for _, v := range xt.values {
		x := int(math.Round(px(v)))
		fillRect(img, x, top, 1, bottom-top, grid)
		fillRect(img, x, bottom, 1, 6, ink)
		l := formatTick(v, xt.step)
		drawText(img, x-textWidth(l, scale)/2, bottom+12, l, scale, ink)
	}
	fillRect(img, left, top, 1, bottom-top+1, ink)
	fillRect(img, left, bottom, right-left+1, 1, ink)
	if c.Title != "" {
		drawText(img, (left+right-textWidth(c.Title, scale))/2, 16, c.Title, scale, ink)
	}
	if c.XLabel != "" {
		drawText(img, (left+right-textWidth(c.XLabel, scale))/2, h-glyphH*scale-12, c.XLabel, scale, ink)
	}
	if c.YLabel != "" {
		drawTextVertical(img, 16, (top+bottom+textWidth(c.YLabel, scale))/2, c.YLabel, scale, ink)
	}

	// Bands first, so every line stays visible on top of them.
	area := image.Rect(left+1, top, right+1, bottom)
	yOf := func(v float64) (float64, bool) {
		if !finite(v) || (c.LogY && v <= 0) {
			return 0, false
		}
		if c.LogY {
			v = math.Log10(v)
		}
		return py(v), true
	}
	for si, s := range c.Series {
		if s.Low == nil {
			continue
		}
		band := newBandRaster(area)
		for i := 0; i+1 < len(s.X); i++ {
			lo0, ok0 := yOf(s.Low[i])
			hi0, ok1 := yOf(s.High[i])
			lo1, ok2 := yOf(s.Low[i+1])
			hi1, ok3 := yOf(s.High[i+1])
			if !ok0 || !ok1 || !ok2 || !ok3 || !finite(s.X[i]) || !finite(s.X[i+1]) {
				continue
			}
			band.add(px(s.X[i]), px(s.X[i+1]), lo0, hi0, lo1, hi1)
		}
		band.fill(img, palette[si%len(palette)])
	}

	// Lines, clipped to the plot area.
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		havePrev := false
		var x0, y0 float64
		for i := range s.X {
			x, y := s.X[i], s.Y[i]
			if !finite(x) || !finite(y) || (c.LogY && y <= 0) {
				havePrev = false
				continue
			}
			if c.LogY {
				y = math.Log10(y)
			}
			x1, y1 := px(x), py(y)
			if havePrev {
				drawLine(img, area, x0, y0, x1, y1, col)
			} else if len(s.X) == 1 {
				fillRect(img, int(x1)-2, int(y1)-2, 5, 5, col)
			}
			x0, y0, havePrev = x1, y1, true
		}
	}

	// Legend, top right inside the plot area.
	if len(c.Series) > 1 || (len(c.Series) == 1 && c.Series[0].Name != "") {
		lw := 0
		for _, s := range c.Series {
			lw = max(lw, textWidth(s.Name, scale))
		}
		boxW, lineH := lw+24+30, glyphH*scale+10
		bx, by := right-boxW-12, top+12
		fillRect(img, bx, by, boxW, lineH*len(c.Series)+10, white)
		for i, s := range c.Series {
			col := palette[i%len(palette)]
			y := by + 10 + i*lineH
			fillRect(img, bx+10, y+glyphH*scale/2-1, 24, 3, col)
			drawText(img, bx+42, y, s.Name, scale, ink)
		}
		outline(img, image.Rect(bx, by, bx+boxW, by+lineH*len(c.Series)+10), grid)
	}
	return img, nil
}

// Encode writes the chart as PNG.
func Encode(w io.Writer, c Chart) error {
	img, err := c.Image()
	if err != nil {
		return err
	}
	return png.Encode(w, img)
}

// WriteFile writes the chart as a PNG file.
func WriteFile(path string, c Chart) error {
	var buf bytes.Buffer
	if err := Encode(&buf, c); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func outline(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	fillRect(img, r.Min.X, r.Min.Y, r.Dx(), 1, c)
	fillRect(img, r.Min.X, r.Max.Y-1, r.Dx(), 1, c)
	fillRect(img, r.Min.X, r.Min.Y, 1, r.Dy(), c)
	fillRect(img, r.Max.X-1, r.Min.Y, 1, r.Dy(), c)
}

type ticks struct {
	lo, hi, step float64
	values       []float64
}

// niceTicks picks about n round tick values (1, 2 or 5 times a power of ten apart)
// covering [lo, hi].
func niceTicks(lo, hi float64, n int) ticks {
	span := niceNum(hi-lo, false)
	step := niceNum(span/float64(n-1), true)
	t := ticks{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step, step: step}
	for v := t.lo; v <= t.hi+step/2; v += step {
		t.values = append(t.values, v)
	}
	return t
}

func niceNum(x float64, round bool) float64 {
	exp := math.Floor(math.Log10(x))
	f := x / math.Pow(10, exp)
	var nf float64
	switch {
	case round && f < 1.5, !round && f <= 1:
		nf = 1
	case round && f < 3, !round && f <= 2:
		nf = 2
	case round && f < 7, !round && f <= 5:
		nf = 5
	default:
		nf = 10
	}
	return nf * math.Pow(10, exp)
}

// formatTick prints v with as many decimals as the tick step needs.
func formatTick(v, step float64) string {
	if math.Abs(v) < step*1e-9 {
		v = 0
	}
	if math.Abs(v) >= 1e6 || (v != 0 && math.Abs(v) < 1e-3) {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	dec := 0
	if step > 0 && step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// drawLine draws an anti-aliased line about two pixels wide (Xiaolin Wu's algorithm,
// drawn twice one pixel apart) inside clip.
func drawLine(img *image.RGBA, clip image.Rectangle, x0, y0, x1, y1 float64, c color.RGBA) {
	steep := math.Abs(y1-y0) > math.Abs(x1-x0)
	if steep {
		x0, y0, x1, y1 = y0, x0, y1, x1
	}
	if x0 > x1 {
		x0, x1, y0, y1 = x1, x0, y1, y0
	}
	dx, dy := x1-x0, y1-y0
	grad := 1.0
	if dx != 0 {
		grad = dy / dx
	}
	plot := func(x, y int, a float64) {
		if steep {
			x, y = y, x
		}
		if !(image.Point{x, y}).In(clip) {
			return
		}
		blend(img, x, y, c, a)
	}
	y := y0 + grad*(math.Round(x0)-x0)
	for x := int(math.Round(x0)); x <= int(math.Round(x1)); x++ {
		fy := math.Floor(y)
		frac := y - fy
		plot(x, int(fy)-1, 1-frac)
		plot(x, int(fy), 1)
		plot(x, int(fy)+1, frac)
		y += grad
	}
}

func blend(img *image.RGBA, x, y int, c color.RGBA, a float64) {
	if a <= 0 {
		return
	}
	a = math.Min(a, 1)
	o := img.RGBAAt(x, y)
	mix := func(dst, src uint8) uint8 { return uint8(math.Round(float64(dst)*(1-a) + float64(src)*a)) }
	img.SetRGBA(x, y, color.RGBA{mix(o.R, c.R), mix(o.G, c.G), mix(o.B, c.B), 255})
}

// bandRaster collects, per pixel column, the lowest and highest y a band reaches, so that
// each column is shaded once however many segments touch it.
type bandRaster struct {
	clip   image.Rectangle
	lo, hi []float64
}

func newBandRaster(clip image.Rectangle) *bandRaster {
	b := &bandRaster{clip: clip, lo: make([]float64, clip.Dx()), hi: make([]float64, clip.Dx())}
	for i := range b.lo {
		b.lo[i], b.hi[i] = math.Inf(1), math.Inf(-1)
	}
	return b
}

// add widens the columns a segment from (xa, loA..hiA) to (xb, loB..hiB) covers.
func (b *bandRaster) add(xa, xb, loA, hiA, loB, hiB float64) {
	if xb < xa {
		xa, xb, loA, loB, hiA, hiB = xb, xa, loB, loA, hiB, hiA
	}
	for x := int(math.Floor(xa)); x <= int(math.Ceil(xb)); x++ {
		col := x - b.clip.Min.X
		if col < 0 || col >= len(b.lo) {
			continue
		}
		t := 0.0
		if xb > xa {
			t = math.Min(1, math.Max(0, (float64(x)-xa)/(xb-xa)))
		}
		y0, y1 := loA+t*(loB-loA), hiA+t*(hiB-hiA)
		b.lo[col] = math.Min(b.lo[col], math.Min(y0, y1))
		b.hi[col] = math.Max(b.hi[col], math.Max(y0, y1))
	}
}

// fill blends col at a quarter of its strength into every covered pixel, so overlapping
// bands of different series stay readable.
func (b *bandRaster) fill(img *image.RGBA, col color.RGBA) {
	blend := func(o, n uint8) uint8 { return uint8((3*int(o) + int(n)) / 4) }
	for i := range b.lo {
		if b.lo[i] > b.hi[i] {
			continue
		}
		x := b.clip.Min.X + i
		for y := max(b.clip.Min.Y, int(math.Floor(b.lo[i]))); y <= min(b.clip.Max.Y-1, int(math.Ceil(b.hi[i]))); y++ {
			old := img.RGBAAt(x, y)
			img.SetRGBA(x, y, color.RGBA{blend(old.R, col.R), blend(old.G, col.G), blend(old.B, col.B), 255})
		}
	}
}
