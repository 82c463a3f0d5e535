package cudastep

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// hostRopeFill computes a rotary table into the device when the host program opens
// (RopeFill): half frequencies inv, positions rows of cos then of sin, each times
// attention, through a host buffer.
const hostRopeFill = `
// moec_fill_rope writes the rotary table of frequencies inv[half] over positions to the
// device at byte at of the arena: cos(float(p)·inv[i]) in row p, then the sines, each
// times attention, as compiler/program's RopeTable computes them.
static int moec_fill_rope(moec_state *s, unsigned long long at, const float *inv, int half, int positions, double attention,
                          const char *what) {
  size_t rows = (size_t)positions * (size_t)half;
  float *tab = (float *)malloc(2 * rows * sizeof(float));
  if (!tab) return moec_failf(s, "%s: no host memory for a rotary table of %zu floats", what, 2 * rows);
  for (int p = 0; p < positions; p++)
    for (int i = 0; i < half; i++) {
      double ang = (double)((float)p * inv[i]);
      double c = cos(ang), sn = sin(ang);
      if (attention != 1) {
        c *= attention;
        sn *= attention;
      }
      tab[(size_t)p * half + i] = (float)c;
      tab[rows + (size_t)p * half + i] = (float)sn;
    }
  CUresult r = s->cu.cuMemcpyHtoD(s->base + at, tab, 2 * rows * sizeof(float));
  free(tab);
  if (r != 0) return moec_cu_failed(s, r, "cuMemcpyHtoD", what);
  return 1;
}
`

// writeConstFills writes l's constant workspaces for the host program: to w, each table
// Consts holds (symbols moec_const_<prefix><name>) and each rotary table's frequencies
// (moec_rope_inv_<prefix><name>, for moec_fill_rope, which the caller writes once before
// them: hostRopeFill); to fill, the calls of the host program's open that fill each
// workspace (at its byte offset at(name); what names it in errors).
func writeConstFills(w, fill *strings.Builder, l *Lowered, prefix string, at func(string) int64, what string) {
	for _, n := range slices.Sorted(maps.Keys(l.Consts)) {
		sym := fmt.Sprintf("moec_const_%s%s", prefix, n)
		writeFloatTable(w, sym, l.Consts[n])
		fmt.Fprintf(fill, "  MOEC_CU(s, s->cu.cuMemcpyHtoD(s->base + %dULL, %s, sizeof %s), \"filling %s%s\");\n", at(n), sym, sym, what, n)
	}
	for _, n := range slices.Sorted(maps.Keys(l.Ropes)) {
		r := l.Ropes[n]
		sym := fmt.Sprintf("moec_rope_inv_%s%s", prefix, n)
		writeFloatTable(w, sym, r.Inv)
		fmt.Fprintf(fill, "  if (!moec_fill_rope(s, %dULL, %s, %d, %d, %s, \"filling %s%s\")) return 0;\n",
			at(n), sym, len(r.Inv), r.Positions, cDouble(r.Attention), what, n)
	}
}

// writeFloatTable writes vals as the C table sym, eight values a line.
func writeFloatTable(w *strings.Builder, sym string, vals []float32) {
	fmt.Fprintf(w, "static const float %s[%d] = {", sym, len(vals))
	for j, v := range vals {
		if j%8 == 0 {
			w.WriteString("\n   ")
		}
		fmt.Fprintf(w, " %s,", cFloat(v))
	}
	w.WriteString("\n};\n")
}

// cDouble is v as a C double literal, exact (shortest form that reads back as v).
func cDouble(v float64) string {
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return s
}
