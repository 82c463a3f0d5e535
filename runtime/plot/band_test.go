package plot

import (
	"image/color"
	"testing"
)

func TestBandShadesBetweenLowAndHigh(t *testing.T) {
	x := []float64{0, 1, 2, 3}
	c := Chart{Title: "band", Series: []Series{{
		Name: "mean", X: x, Y: []float64{2, 2, 2, 2},
		Low: []float64{1, 1, 1, 1}, High: []float64{3, 3, 3, 3},
	}}}
	img, err := c.Image()
	if err != nil {
		t.Fatal(err)
	}
	plain := c
	plain.Series = []Series{{Name: "mean", X: x, Y: []float64{2, 2, 2, 2}}}
	// The reference has no band but spans the same y range (through a second series), so
	// both charts map values to the same pixels; only the shaded band may differ.
	plain.Series = append(plain.Series, Series{Name: "", X: []float64{0, 3}, Y: []float64{1, 3}})
	ref, err := plain.Image()
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	shaded := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if img.RGBAAt(x, y) != ref.RGBAAt(x, y) && img.RGBAAt(x, y) != (color.RGBA{255, 255, 255, 255}) {
				shaded++
			}
		}
	}
	if shaded < 1000 {
		t.Fatalf("band shaded only %d pixels", shaded)
	}
}

func TestBandMustMatchPoints(t *testing.T) {
	c := Chart{Series: []Series{{Name: "s", X: []float64{0, 1}, Y: []float64{1, 2}, Low: []float64{0}, High: []float64{2, 3}}}}
	if _, err := c.Image(); err == nil {
		t.Fatal("a band shorter than the series was accepted")
	}
}
