// Package plot draws line charts as PNG images with the standard library only.
//
// In: a Chart: a title, axis labels and one or more series of (x, y) points.
// Out: an RGBA image or its PNG encoding, with axes, "nice" tick marks labelled by a small
// built-in 5×7 bitmap font (upper-case letters, digits and common punctuation; lower-case
// text is drawn in capitals), grid lines, anti-aliased lines and a legend.
//
// Training writes its loss curve with it; experiments reuse it for their plots.
package plot
