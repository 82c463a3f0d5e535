package cudastep

import (
	"fmt"
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// launchTableMin is the number of consecutive launches, with no host work between them,
// from which the host program writes them as one table run by moec_launch_run instead of
// a C block each. A launch written out costs some 400–750 bytes of C (its locals, its
// args array, its checked call) and a table row some 100–150; a table costs two arrays
// and a call besides. Shorter runs stay written out: they save little, and written out
// they keep each argument's buffer name beside it where a listing is read most — around
// the collectives, cache copies and settle steps that break the runs.
const launchTableMin = 4

// argCell is one launch argument as the host program builds it: a kind of
// moec_arg (hostLaunchRun) and its value.
type argCell struct {
	kind  string  // "P" (arena offset), "Z" (null), "I" (int), "L" (long long), "F" (float), "H" (s->adam), "S" (loss-scaled float)
	v     int64   // P: the byte offset from the arena's base; I, L: the value; H: s->adam's index
	f     float32 // F, S: the constant
	about string  // what a pointer points at or which host scalar, for a listing's comment
}

// launchArg is argument j of launch ln as the host program builds it, checked as the
// written-out launch checks it (a device buffer, a placed table or workspace, a finite
// float, an int that fits).
func launchArg(j int, a Arg, ln Launch, p *step.Program, workAt map[string]int64) (argCell, error) {
	switch {
	case a.Kind.Pointer() && a.Buf >= 0:
		b := p.Buffers[a.Buf]
		if b.Tier != step.Device {
			return argCell{}, fmt.Errorf("buffer %s lives in host memory", b.Name)
		}
		about := b.Name
		if a.Offset != 0 {
			about += fmt.Sprintf(" + %d", a.Offset)
		}
		return argCell{kind: "P", v: b.Offset + a.Offset*4, about: about}, nil
	case a.Kind.Pointer() && a.Table != nil:
		at, ok := workAt[tableName(a.Table)]
		if !ok {
			return argCell{}, fmt.Errorf("address table %s has no place", tableName(a.Table))
		}
		return argCell{kind: "P", v: at, about: "the address table " + tableName(a.Table)}, nil
	case a.Kind.Pointer() && a.Work != "":
		at, ok := workAt[a.Work]
		if !ok {
			return argCell{}, fmt.Errorf("workspace %s has no place", a.Work)
		}
		return argCell{kind: "P", v: at + a.Offset*4, about: fmt.Sprintf("%s + %d", a.Work, a.Offset)}, nil
	case a.Kind.Pointer():
		return argCell{kind: "Z"}, nil
	case a.Kind == F32 && a.Host == HostLossScale:
		if math.IsNaN(float64(a.Float)) || math.IsInf(float64(a.Float), 0) {
			return argCell{}, fmt.Errorf("loss-scaled argument %d is %v", j, a.Float)
		}
		return argCell{kind: "S", f: a.Float}, nil
	case a.Kind == F32 && a.Host != "":
		h := hostFloatIndex(a.Host)
		if h < 0 {
			return argCell{}, fmt.Errorf("no host scalar %s", a.Host)
		}
		return argCell{kind: "H", v: int64(h), about: a.Host}, nil
	case a.Kind == F32:
		if math.IsNaN(float64(a.Float)) || math.IsInf(float64(a.Float), 0) {
			return argCell{}, fmt.Errorf("argument %d of %s is %v", j, ln.Kernel, a.Float)
		}
		return argCell{kind: "F", f: a.Float}, nil
	case a.Kind == I32:
		if a.Int != int64(int32(a.Int)) {
			return argCell{}, fmt.Errorf("argument %d of %s, %d, overflows an int", j, ln.Kernel, a.Int)
		}
		return argCell{kind: "I", v: a.Int}, nil
	}
	return argCell{kind: "L", v: a.Int}, nil
}

// cell is c as a moec_arg initialiser (the one-letter macros hostLaunchCells defines
// around the tables).
func (c argCell) cell() string {
	switch c.kind {
	case "Z":
		return "Z"
	case "F", "S":
		return fmt.Sprintf("%s(%s)", c.kind, cFloat(c.f))
	}
	return fmt.Sprintf("%s(%d)", c.kind, c.v)
}

// hostLaunchCells are the macros that spell the tables' cells (one letter each, for a
// host program of ten thousand launches; undefined after the tables), and
// hostLaunchCellsEnd undefines them.
const (
	hostLaunchCells = `#if defined(P) || defined(Z) || defined(I) || defined(L) || defined(F) || defined(H) || defined(S)
#error "a header defines a macro the launch tables' cells are spelt with"
#endif
#define P(off) {(off), 0.0f, 'P'}
#define Z {0, 0.0f, 'Z'}
#define I(v) {(v), 0.0f, 'I'}
#define L(v) {(v), 0.0f, 'L'}
#define F(v) {0, (v), 'F'}
#define H(i) {(i), 0.0f, 'H'}
#define S(v) {0, (v), 'S'}
`
	hostLaunchCellsEnd = "#undef P\n#undef Z\n#undef I\n#undef L\n#undef F\n#undef H\n#undef S\n"
)

// tabledLaunch is one launch of a run, the op it serves and the die it depends on: on > 0
// runs it when dice[on-1] is nonzero (the layer recomputes its attention weights), on < 0
// when dice[-on-1] is zero (it reuses the layer below's), 0 always.
type tabledLaunch struct {
	ln   Launch
	what string
	on   int
}

// opRows are an op's launches as rows: under its layer's die (die ≥ 0) its launches when
// the die says recompute, then its reuse launches when it says reuse.
func opRows(ls, reuse []Launch, die int, what string) []tabledLaunch {
	rows := make([]tabledLaunch, 0, len(ls)+len(reuse))
	on := 0
	if die >= 0 {
		on = die + 1
	}
	for _, ln := range ls {
		rows = append(rows, tabledLaunch{ln, what, on})
	}
	if die >= 0 {
		for _, ln := range reuse {
			rows = append(rows, tabledLaunch{ln, what, -on})
		}
	}
	return rows
}

// launchTables gathers the host program's launch tables (runs of launchTableMin launches
// or more) and the labels their rows name; writeTables writes them, with
// moec_launch_run, before the functions that call it.
type launchTables struct {
	p      *step.Program
	idx    map[string]int
	workAt map[string]int64
	opt    string // the expressions moec_launch_run's opt and dice are in the calling function ("opt", or "NULL")
	dice   string

	tables  []string
	labels  []string
	labelOf map[string]int
	maxArgs int
}

// emit writes ls as one table and one call of moec_launch_run at indent in (cond, when
// not empty, is a condition the call runs under, e.g. "update"), and returns false
// without writing anything when ls is shorter than launchTableMin.
func (lt *launchTables) emit(w *strings.Builder, in, cond string, ls []tabledLaunch) (bool, error) {
	if len(ls) < launchTableMin {
		return false, nil
	}
	if lt.labelOf == nil {
		lt.labelOf = map[string]int{}
	}
	t := len(lt.tables)
	var rows, args strings.Builder
	nargs := 0
	for _, tl := range ls {
		ln := tl.ln
		label, ok := lt.labelOf[tl.what]
		if !ok {
			label = len(lt.labels)
			lt.labelOf[tl.what] = label
			lt.labels = append(lt.labels, tl.what)
		}
		k := lt.idx[ln.Kernel]
		fmt.Fprintf(&rows, "    {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d}, // %s\n", k, ln.Grid[0], ln.Grid[1], ln.Grid[2],
			ln.Block[0], ln.Block[1], ln.Block[2], ln.Shared, len(ln.Args), label, tl.on, ln.Kernel)
		cells := make([]string, 0, len(ln.Args))
		for j, a := range ln.Args {
			c, err := launchArg(j, a, ln, lt.p, lt.workAt)
			if err != nil {
				return false, fmt.Errorf("cudastep: %s: %w", tl.what, err)
			}
			cells = append(cells, c.cell())
		}
		if len(cells) > 0 {
			fmt.Fprintf(&args, "    %s,\n", strings.Join(cells, ", "))
		}
		nargs += len(ln.Args)
		lt.maxArgs = max(lt.maxArgs, len(ln.Args))
	}
	if nargs == 0 {
		args.WriteString("    Z,\n") // a C array has an element at least
	}
	lt.tables = append(lt.tables, fmt.Sprintf("static const moec_launch_row moec_launches_%d[%d] = {\n%s};\nstatic const moec_arg moec_args_%d[%d] = {\n%s};\n",
		t, len(ls), rows.String(), t, max(nargs, 1), args.String()))
	if cond != "" {
		cond += " && "
	}
	span := ls[0].what
	if last := ls[len(ls)-1].what; last != span {
		span += " … " + last
	}
	fmt.Fprintf(w, "%sif (%s!moec_launch_run(s, %s, %s, moec_launches_%d, moec_args_%d, %d)) return 0; // %d launches: %s\n",
		in, cond, lt.opt, lt.dice, t, t, len(ls), len(ls), span)
	return true, nil
}

// writeTables writes moec_launch_run, the labels and the tables (nothing when there is
// no table).
func (lt *launchTables) writeTables(w *strings.Builder) {
	if len(lt.tables) == 0 {
		return
	}
	fmt.Fprintf(w, "\n// The ops the tables' launches serve, by number (a failed launch names its op).\nstatic const char *const moec_launch_labels[%d] = {\n", len(lt.labels))
	for _, l := range lt.labels {
		fmt.Fprintf(w, "    \"%s\",\n", l)
	}
	w.WriteString("};\n")
	fmt.Fprintf(w, hostLaunchRun, max(lt.maxArgs, 1), hostLossScaleSlot, hostLossScaleSlot)
	w.WriteString("\n")
	w.WriteString(hostLaunchCells)
	for _, t := range lt.tables {
		w.WriteString(t)
	}
	w.WriteString(hostLaunchCellsEnd)
}

// hostLaunchRun runs a table of launches (fmt: the most arguments a row has, the loss
// scale's slot of opt twice).
const hostLaunchRun = `
// moec_launch_row is one launch of a table: kernel k of moec_kernel_names, its grid, block
// and dynamic shared bytes, its nargs arguments (the next nargs cells of the table's
// moec_arg array), the op it serves (moec_launch_labels[what]) and the attention-sharing
// die it depends on: on > 0 launches when dice[on - 1] is nonzero, on < 0 when
// dice[-on - 1] is zero, 0 always.
typedef struct {
  int k;
  unsigned gx, gy, gz, bx, by, bz, shared;
  int nargs, what, on;
} moec_launch_row;

// moec_arg is one argument of a table's launch, by kind: 'P' the arena's base + v (a byte
// offset), 'Z' a null address, 'I' the int v, 'L' the long long v, 'F' the float f,
// 'H' s->adam[v] and 'S' f times the step's loss scale, both read when the launch is
// issued (they change every step). The tables spell them P(v), Z, I(v), L(v), F(f), H(v)
// and S(f).
typedef struct {
  long long v;
  float f;
  char kind;
} moec_arg;

#define MOEC_MAX_ARGS %d

// moec_launch_run issues a table's n launches in order on the compute stream, each one's
// arguments built from its cells into storage of the kernel parameter's type; the first
// failure ends it with the error a launch written out gives (the kernel and the op).
// opt (the loss scale) and dice (the layers' attention-sharing dice) are moec_step_train's,
// NULL where there are none.
[[maybe_unused]] static int moec_launch_run(moec_state *s, const double *opt, const int *dice,
                                            const moec_launch_row *t, const moec_arg *a, int n) {
  for (int i = 0; i < n; i++) {
    const moec_launch_row *r = &t[i];
    if (r->on != 0) {
      if (dice == NULL) return moec_failf(s, "%%s: a launch on a die outside the training step", moec_launch_labels[r->what]);
      if ((dice[(r->on > 0 ? r->on : -r->on) - 1] != 0) != (r->on > 0)) {
        a += r->nargs;
        continue;
      }
    }
    union {
      CUdeviceptr p;
      int i;
      long long l;
      float f;
    } cells[MOEC_MAX_ARGS];
    void *args[MOEC_MAX_ARGS];
    args[0] = NULL;
    if (r->nargs > MOEC_MAX_ARGS) return moec_failf(s, "%%s: %%d arguments, the table holds at most %%d", moec_launch_labels[r->what], r->nargs, MOEC_MAX_ARGS);
    for (int j = 0; j < r->nargs; j++, a++) {
      switch (a->kind) {
      case 'P': cells[j].p = s->base + (CUdeviceptr)a->v; break;
      case 'Z': cells[j].p = 0; break;
      case 'I': cells[j].i = (int)a->v; break;
      case 'L': cells[j].l = a->v; break;
      case 'F': cells[j].f = a->f; break;
      case 'H': cells[j].f = s->adam[a->v]; break;
      case 'S':
        if (opt == NULL) return moec_failf(s, "%%s: a loss-scaled argument outside the training step", moec_launch_labels[r->what]);
        cells[j].f = (float)(a->f * (opt[%d] > 0 ? opt[%d] : 1.0));
        break;
      default: return moec_failf(s, "%%s: an argument of kind %%d", moec_launch_labels[r->what], a->kind);
      }
      args[j] = &cells[j];
    }
    if (!moec_launch(s, r->k, r->gx, r->gy, r->gz, r->bx, r->by, r->bz, r->shared, args, moec_launch_labels[r->what])) return 0;
  }
  return 1;
}
`

// pendingOp is an op whose text is its comment and its launches alone (and the update's
// condition around them): no host work that would end a run of launches.
type pendingOp struct {
	head, tail string // the op's text before and after its launches
	in         string // the launches' indent
	what       string
	rows       []tabledLaunch
	die        int // the layer whose die the op's launches depend on; -1: none
	launches   []Launch
	reuse      []Launch
}

// launchRun is the pending ops of one run: consecutive, all under the same condition
// (cond: "update" in the update phase, else empty).
type launchRun struct {
	ops  []pendingOp
	cond string
}

// add appends o to r, writing r's ops first when o runs under another condition.
func (lt *launchTables) add(w *strings.Builder, r *launchRun, o pendingOp, cond string) error {
	if len(r.ops) > 0 && r.cond != cond {
		if err := lt.flush(w, r); err != nil {
			return err
		}
	}
	r.cond = cond
	o.rows = opRows(o.launches, o.reuse, o.die, o.what)
	r.ops = append(r.ops, o)
	return nil
}

// flush writes r's ops and empties it: their launches as one table (emit) when there are
// launchTableMin or more, else each op as it reads on its own (its comment, its launches
// written out).
func (lt *launchTables) flush(w *strings.Builder, r *launchRun) error {
	var rows []tabledLaunch
	var ops strings.Builder // the ops' comments, the listing's landmarks
	for _, o := range r.ops {
		rows = append(rows, o.rows...)
		fmt.Fprintf(&ops, "  // %s\n", o.what)
	}
	pending := r.ops
	r.ops = nil
	if len(rows) >= launchTableMin {
		w.WriteString(ops.String())
		_, err := lt.emit(w, "  ", r.cond, rows)
		return err
	}
	for _, o := range pending {
		w.WriteString(o.head)
		if err := lt.writeOut(w, o.in, o.die, o.launches, o.reuse, o.what); err != nil {
			return err
		}
		w.WriteString(o.tail)
	}
	return nil
}

// opLaunches writes one op's launches at indent in (under dice[die] when die ≥ 0, its
// reuse launches when the die says reuse): one table when there are launchTableMin or
// more, else each written out.
func (lt *launchTables) opLaunches(w *strings.Builder, in string, die int, ls, reuse []Launch, what string) error {
	if done, err := lt.emit(w, in, "", opRows(ls, reuse, die, what)); done || err != nil {
		return err
	}
	return lt.writeOut(w, in, die, ls, reuse, what)
}

// writeOut writes one op's launches as C blocks of their own (emitLaunch), under
// dice[die] when die ≥ 0 (its reuse launches in the other branch).
func (lt *launchTables) writeOut(w *strings.Builder, in string, die int, ls, reuse []Launch, what string) error {
	each := func(in string, ls []Launch) error {
		for _, ln := range ls {
			if err := emitLaunch(w, in, ln, lt.idx[ln.Kernel], lt.p, lt.workAt, what); err != nil {
				return fmt.Errorf("cudastep: %s: %w", what, err)
			}
		}
		return nil
	}
	if die < 0 {
		return each(in, ls)
	}
	fmt.Fprintf(w, "%sif (dice[%d]) {\n", in, die)
	if err := each(in+"  ", ls); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s} else {\n", in)
	if err := each(in+"  ", reuse); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s}\n", in)
	return nil
}
