// Package plot draws line charts as PNG images, through gonum.org/v1/plot.
//
// In: a Chart: a title, axis labels and one or more series of (x, y) points, each drawn
// as a line (optionally faint, under a smoothed copy), as markers, or with a shaded band
// (Low..High) around it.
// Out: an RGBA image or its PNG encoding with axes, tick labels and a legend in a real
// (Liberation) font, grid lines and anti-aliased lines. EMA smooths a noisy curve.
//
// Training writes its loss curve with it; experiments reuse it for their plots.
package plot
