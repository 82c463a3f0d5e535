// Package html renders the build report as one self-contained HTML page, report.html:
// every plan's per-device memory as stacked bars against the capacity, its layout as a
// picture of the device mesh, its communication per step, and each train block's
// curriculum as a timeline. Pictures are inline SVG styled by inline CSS; the page loads
// nothing from the network and runs no script.
//
// In: a checked *program.Program and its source name (Write plans every train stage and
// serve block the way `moec build` does), or a *report.Report and the plans (Render).
//
// Out: report.html in the build's output folder, deterministic byte for byte.
package html
