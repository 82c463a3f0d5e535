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
// the collectives, cache copies and branches that break the runs.
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

// cell is c as a moec_arg initialiser (the MOEC_A… macros of hostLaunchRun).
func (c argCell) cell() string {
	switch c.kind {
	case "Z":
		return "MOEC_AZ"
	case "F", "S":
		return fmt.Sprintf("MOEC_A%s(%s)", c.kind, cFloat(c.f))
	}
	return fmt.Sprintf("MOEC_A%s(%d)", c.kind, c.v)
}

// tabledLaunch is one launch of a run and the op it serves.
type tabledLaunch struct {
	ln   Launch
	what string
}

// launchTables gathers the host program's launch tables (runs of launchTableMin launches
// or more) and the labels their rows name; writeTables writes them, with
// moec_launch_run, before the functions that call it.
type launchTables struct {
	p      *step.Program
	idx    map[string]int
	workAt map[string]int64
	opt    string // the expression moec_launch_run's opt is in the calling function ("opt", or "NULL")

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
		fmt.Fprintf(&rows, "    {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d}, // %s\n", k, ln.Grid[0], ln.Grid[1], ln.Grid[2],
			ln.Block[0], ln.Block[1], ln.Block[2], ln.Shared, len(ln.Args), label, ln.Kernel)
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
		args.WriteString("    MOEC_AZ,\n") // a C array has an element at least
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
	fmt.Fprintf(w, "%sif (%s!moec_launch_run(s, %s, moec_launches_%d, moec_args_%d, %d)) return 0; // %d launches: %s\n",
		in, cond, lt.opt, t, t, len(ls), len(ls), span)
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
	w.WriteString("#define MOEC_AP(off) {'P', (off), 0.0f}\n#define MOEC_AZ {'Z', 0, 0.0f}\n#define MOEC_AI(v) {'I', (v), 0.0f}\n#define MOEC_AL(v) {'L', (v), 0.0f}\n" +
		"#define MOEC_AF(v) {'F', 0, (v)}\n#define MOEC_AH(i) {'H', (i), 0.0f}\n#define MOEC_AS(v) {'S', 0, (v)}\n")
	for _, t := range lt.tables {
		w.WriteString(t)
	}
	w.WriteString("#undef MOEC_AP\n#undef MOEC_AZ\n#undef MOEC_AI\n#undef MOEC_AL\n#undef MOEC_AF\n#undef MOEC_AH\n#undef MOEC_AS\n")
}

// hostLaunchRun runs a table of launches (fmt: the most arguments a row has, the loss
// scale's slot of opt twice).
const hostLaunchRun = `
// moec_launch_row is one launch of a table: kernel k of moec_kernel_names, its grid, block
// and dynamic shared bytes, its nargs arguments (the next nargs cells of the table's
// moec_arg array) and the op it serves (moec_launch_labels[what]).
typedef struct {
  int k;
  unsigned gx, gy, gz, bx, by, bz, shared;
  int nargs, what;
} moec_launch_row;

// moec_arg is one argument of a table's launch, by kind: 'P' the arena's base + v (a byte
// offset), 'Z' a null address, 'I' the int v, 'L' the long long v, 'F' the float f,
// 'H' s->adam[v] and 'S' f times the step's loss scale, both read when the launch is
// issued (they change every step).
typedef struct {
  char kind;
  long long v;
  float f;
} moec_arg;

#define MOEC_MAX_ARGS %d

// moec_launch_run issues a table's n launches in order on the compute stream, each one's
// arguments built from its cells into storage of the kernel parameter's type; the first
// failure ends it with the error a launch written out gives (the kernel and the op).
// opt is moec_step_train's (the loss scale; NULL where there is none).
[[maybe_unused]] static int moec_launch_run(moec_state *s, const double *opt, const moec_launch_row *t,
                                            const moec_arg *a, int n) {
  for (int i = 0; i < n; i++) {
    const moec_launch_row *r = &t[i];
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
	launches   []Launch
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
	r.ops = append(r.ops, o)
	return nil
}

// flush writes r's ops and empties it: their launches as one table (emit) when there are
// launchTableMin or more, else each op as it reads on its own (its comment, its launches
// written out).
func (lt *launchTables) flush(w *strings.Builder, r *launchRun) error {
	var ls []tabledLaunch
	var ops strings.Builder // the ops' comments, the listing's landmarks
	for _, o := range r.ops {
		for _, ln := range o.launches {
			ls = append(ls, tabledLaunch{ln, o.what})
		}
		fmt.Fprintf(&ops, "  // %s\n", o.what)
	}
	if len(ls) >= launchTableMin {
		w.WriteString(ops.String())
	}
	done, err := lt.emit(w, "  ", r.cond, ls)
	if err != nil {
		return err
	}
	if !done {
		for _, o := range r.ops {
			w.WriteString(o.head)
			if err := lt.writeOut(w, o.in, o.launches, o.what); err != nil {
				return err
			}
			w.WriteString(o.tail)
		}
	}
	r.ops = nil
	return nil
}

// launches writes one op's launches at indent in: a table when there are launchTableMin
// or more, else each written out.
func (lt *launchTables) launches(w *strings.Builder, in string, ls []Launch, what string) error {
	tl := make([]tabledLaunch, len(ls))
	for i, ln := range ls {
		tl[i] = tabledLaunch{ln, what}
	}
	if done, err := lt.emit(w, in, "", tl); done || err != nil {
		return err
	}
	return lt.writeOut(w, in, ls, what)
}

// writeOut writes each of ls as a C block of its own (emitLaunch).
func (lt *launchTables) writeOut(w *strings.Builder, in string, ls []Launch, what string) error {
	for _, ln := range ls {
		if err := emitLaunch(w, in, ln, lt.idx[ln.Kernel], lt.p, lt.workAt, what); err != nil {
			return fmt.Errorf("cudastep: %s: %w", what, err)
		}
	}
	return nil
}
