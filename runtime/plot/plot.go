package plot

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	stddraw "image/draw"
	"image/png"
	"io"
	"math"
	"strconv"

	gonum "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/moec-dev/moec/internal/atomicfile"
)

// Series is one line of a chart.
type Series struct {
	Name string
	X, Y []float64
	// Low and High, when set (same length as X), draw a translucent band around the line:
	// the spread over seeds, for example.
	Low, High []float64
	// Points draws each point as a marker and no line: measurements taken now and then
	// (validation losses) among a curve's every step.
	Points bool
	// Faint draws the line thin and translucent: the raw values under their smoothed
	// curve, present but not in the way.
	Faint bool
}

// Chart describes a line chart.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	Width, Height         int  // pixels [960×560]
	LogY                  bool // logarithmic y axis (all y must be positive)
}

// dpi is the resolution charts are drawn at: a point of text is 96/72 pixels, as in a
// browser at 100%.
const dpi = 96

// palette holds distinguishable line colours (Tableau 10).
var palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
	{188, 189, 34, 255}, {23, 190, 207, 255},
}

var white = color.RGBA{255, 255, 255, 255}

// Colour is the colour series i of a chart is drawn in, so a test or a caption can name it.
func Colour(i int) color.RGBA { return palette[i%len(palette)] }

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
	p := c.newPlot()
	bandPoints, err := c.addBands(p)
	if err != nil {
		return nil, err
	}
	linePoints, err := c.addLines(p)
	if err != nil {
		return nil, err
	}
	if bandPoints+linePoints == 0 {
		return nil, errors.New("plot: no finite points to draw")
	}
	return render(p, w, h), nil
}

// newPlot is the chart's frame: title, labels, fonts, ticks, grid and legend placement.
func (c Chart) newPlot() *gonum.Plot {
	p := gonum.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	// Liberation Sans (metric-compatible with Arial), embedded by gonum: the same glyphs
	// on every machine, so the PNGs are reproducible.
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font,
		&p.X.Tick.Label.Font, &p.Y.Tick.Label.Font, &p.Legend.TextStyle.Font} {
		f.Typeface, f.Variant, f.Size = "Liberation", "Sans", vg.Points(9.5)
	}
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.Title.Padding = vg.Points(6)
	p.X.Label.TextStyle.Font.Size, p.Y.Label.TextStyle.Font.Size = vg.Points(10.5), vg.Points(10.5)
	p.X.Tick.Marker = gonum.TickerFunc(func(lo, hi float64) []gonum.Tick { return niceTicks(lo, hi, 8) })
	p.Y.Tick.Marker = gonum.TickerFunc(func(lo, hi float64) []gonum.Tick { return niceTicks(lo, hi, 7) })
	grid := plotter.NewGrid()
	grid.Vertical.Color, grid.Horizontal.Color = color.Gray{Y: 228}, color.Gray{Y: 228}
	p.Add(grid)
	if c.LogY {
		p.Y.Scale = gonum.LogScale{}
		p.Y.Tick.Marker = gonum.LogTicks{Prec: -1}
	}
	p.Legend.Top = true
	p.Legend.Padding = vg.Points(3)
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), -vg.Points(8)
	return p
}

// usable reports whether a point can be drawn: finite, and positive on a log axis.
func (c Chart) usable(x, y float64) bool { return finite(x) && finite(y) && (!c.LogY || y > 0) }

// addBands draws the series' bands (first, so every line stays visible on top of them)
// and returns how many points they hold; it checks every series' lengths.
func (c Chart) addBands(p *gonum.Plot) (int, error) {
	points := 0
	usable := c.usable
	for si, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return 0, fmt.Errorf("plot: series %q has %d x values and %d y values", s.Name, len(s.X), len(s.Y))
		}
		if (s.Low != nil || s.High != nil) && (len(s.Low) != len(s.X) || len(s.High) != len(s.X)) {
			return 0, fmt.Errorf("plot: series %q has a band of %d/%d values for %d points", s.Name, len(s.Low), len(s.High), len(s.X))
		}
		if s.Low == nil {
			continue
		}
		for _, run := range runs(len(s.X), func(i int) bool { return usable(s.X[i], s.Low[i]) && usable(s.X[i], s.High[i]) }) {
			var ring plotter.XYs
			for _, i := range run {
				ring = append(ring, plotter.XY{X: s.X[i], Y: s.High[i]})
			}
			for k := len(run) - 1; k >= 0; k-- {
				ring = append(ring, plotter.XY{X: s.X[run[k]], Y: s.Low[run[k]]})
			}
			band, err := plotter.NewPolygon(ring)
			if err != nil {
				return 0, fmt.Errorf("plot: band of %q: %w", s.Name, err)
			}
			col := Colour(si)
			band.Color = color.NRGBA{col.R, col.G, col.B, 64}
			band.LineStyle.Width = 0
			p.Add(band)
			points += len(run)
		}
	}
	return points, nil
}

// addLines draws each series as a line (a scatter for points, or a lone point), broken
// where a value is missing or diverged, with its legend entry; it returns the points drawn.
func (c Chart) addLines(p *gonum.Plot) (int, error) {
	points := 0
	usable := c.usable
	for si, s := range c.Series {
		col := Colour(si)
		line := draw.LineStyle{Color: col, Width: vg.Points(1.6)}
		if s.Faint {
			line = draw.LineStyle{Color: color.NRGBA{col.R, col.G, col.B, 90}, Width: vg.Points(0.8)}
		}
		glyph := draw.GlyphStyle{Color: col, Radius: vg.Points(3.2), Shape: draw.CircleGlyph{}}
		var legend []gonum.Thumbnailer
		// A diverged or missing value breaks the line rather than flattening the chart.
		for _, run := range runs(len(s.X), func(i int) bool { return usable(s.X[i], s.Y[i]) }) {
			xys := make(plotter.XYs, len(run))
			for k, i := range run {
				xys[k] = plotter.XY{X: s.X[i], Y: s.Y[i]}
			}
			points += len(run)
			if s.Points || len(xys) == 1 {
				sc, err := plotter.NewScatter(xys)
				if err != nil {
					return 0, fmt.Errorf("plot: series %q: %w", s.Name, err)
				}
				sc.GlyphStyle = glyph
				p.Add(sc)
				legend = []gonum.Thumbnailer{sc}
				continue
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return 0, fmt.Errorf("plot: series %q: %w", s.Name, err)
			}
			l.LineStyle = line
			p.Add(l)
			if !s.Points {
				legend = []gonum.Thumbnailer{l}
			}
		}
		if s.Name != "" && legend != nil {
			p.Legend.Add(s.Name, legend...)
		}
	}
	return points, nil
}

// render draws p on a w×h canvas inside a small margin.
func render(p *gonum.Plot, w, h int) *image.RGBA {
	canvas := vgimg.NewWith(vgimg.UseImage(image.NewRGBA(image.Rect(0, 0, w, h))), vgimg.UseDPI(dpi))
	margin := vg.Points(10)
	p.Draw(draw.Crop(draw.New(canvas), margin, -margin, margin, -margin))
	if img, ok := canvas.Image().(*image.RGBA); ok {
		return img
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	stddraw.Draw(img, img.Bounds(), canvas.Image(), image.Point{}, stddraw.Src)
	return img
}

// runs splits the indices 0..n-1 into maximal stretches where ok holds.
func runs(n int, ok func(int) bool) [][]int {
	var out [][]int
	var cur []int
	for i := 0; i < n; i++ {
		if ok(i) {
			cur = append(cur, i)
			continue
		}
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Encode writes the chart as PNG.
func Encode(w io.Writer, c Chart) error {
	img, err := c.Image()
	if err != nil {
		return err
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("plot: encoding PNG: %w", err)
	}
	return nil
}

// WriteFile writes the chart as a PNG file, replacing it atomically.
func WriteFile(path string, c Chart) error {
	var buf bytes.Buffer
	if err := Encode(&buf, c); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// EMA smooths ys with an exponential moving average of the given span (in points; the
// weight of each new point is 2/(span+1)), bias-corrected as Adam corrects its moments so
// the first values are not pulled towards zero. Non-finite values are skipped: they come
// out NaN and leave the average as it was.
func EMA(ys []float64, span float64) []float64 {
	out := make([]float64, len(ys))
	if span < 1 {
		span = 1
	}
	alpha := 2 / (span + 1)
	avg, weight := 0.0, 0.0
	for i, y := range ys {
		if !finite(y) {
			out[i] = math.NaN()
			continue
		}
		avg = (1-alpha)*avg + alpha*y
		weight = (1-alpha)*weight + alpha
		out[i] = avg / weight
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// niceTicks labels about n round values (1, 2 or 5 times a power of ten apart) within
// [lo, hi], with as many decimals as the step needs.
func niceTicks(lo, hi float64, n int) []gonum.Tick {
	if !(hi > lo) || !finite(lo) || !finite(hi) {
		return []gonum.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	step := niceNum((hi-lo)/float64(n-1), true)
	var out []gonum.Tick
	for v := math.Ceil(lo/step-1e-9) * step; v <= hi+step*1e-9; v += step {
		out = append(out, gonum.Tick{Value: v, Label: formatTick(v, step)})
	}
	return out
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
