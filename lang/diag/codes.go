package diag

import "strings"

// Code is a stable diagnostic code such as "E0101". Codes are append-only: once
// published a code keeps its meaning forever. Each phase owns a range:
//
//	E00xx  command line (cmd/moec)
//	E01xx  lexing and syntax (lang/parse)
//	E02xx  names, keys, types and units (compiler/check)
//	E03xx  cross-field model rules (compiler/check)
//	E04xx  cluster, train, stage, serve, compress, experiment rules (compiler/check)
//	E05xx  planning (compiler/plan)
//	E06xx  runtime refusals (runtime)
//	E09xx  import and export (interop)
//	W9xxx  warnings (W92xx the checker's, W95xx backends': a feature a backend does not honour)
//
// Every code, whichever phase reports it, is registered here, in lang/diag, in one
// naming scheme: the constant Code<Name> (CodeUnknownKey, CodeNoFit, CodeBadHFConfig).
// Each owning phase has one file, codes_<phase>.go, holding its codes as one
// `const Code<Name> Code = "E...."` line each and one line each in its table of summaries
// (syntaxCodes, checkCodes, ...), both in code order. To add a code:
//
//  1. take the next free number in the phase's range (never reuse one);
//  2. add its constant line and its table line, with a one-line summary, to the phase's
//     codes_<phase>.go (TestEveryCodeConstantIsRegistered fails on a constant without
//     its table line, or named another way);
//  3. add its example, examples/<CODE>.moe for a code `moec check` reports or
//     examples/<CODE>.txtar with the command lines for the others (see Example), or a
//     reason in examples_test.go's withoutExample where no input reaches it;
//  4. report it as a Diagnostic (List.Errorf in a phase, Runtimef or RuntimeWrap for a
//     refusal of a run), with Labels for the other places that explain it.
//
// `moec explain CODE` prints the summary and the example.
type Code string

// Info describes a code.
type Info struct {
	Code    Code
	Summary string
}

// Registry returns every registered code with its summary, in code order.
func Registry() []Info {
	var out []Info
	for _, group := range [][]Info{cliCodes, syntaxCodes, checkCodes, distillCodes, planCodes, runtimeCodes, compressCodes, interopCodes} {
		out = append(out, group...)
	}
	return out
}

// Lookup returns the registered code c (matched without regard to case).
func Lookup(c string) (Info, bool) {
	for _, info := range Registry() {
		if strings.EqualFold(string(info.Code), c) {
			return info, true
		}
	}
	return Info{}, false
}

// Severity is "error" for an E code and "warning" for a W code.
func (c Code) Severity() string {
	if strings.HasPrefix(string(c), "W") {
		return "warning"
	}
	return "error"
}

// Checked reports whether a .moe file alone can produce c: it is the parser's or the
// checker's (E01xx-E04xx, W92xx), which `moec check` reports.
func (c Code) Checked() bool {
	for _, prefix := range []string{"E01", "E02", "E03", "E04", "W92"} {
		if strings.HasPrefix(string(c), prefix) {
			return true
		}
	}
	return false
}

// Phase names the part of moec that reports c, from its number range (see Code).
func (c Code) Phase() string {
	s := string(c)
	if len(s) < 3 {
		return "unknown"
	}
	if s[0] == 'W' {
		switch {
		case strings.HasPrefix(s, "W92"):
			return "checker (compiler/check)"
		case strings.HasPrefix(s, "W95"):
			return "backends (compiler/features: a feature a backend does not honour)"
		}
		return "warnings"
	}
	switch s[1:3] {
	case "00":
		return "command line (cmd/moec)"
	case "01":
		return "lexing and syntax (lang/parse)"
	case "02":
		return "names, keys, types and units (compiler/check)"
	case "03":
		return "cross-field model rules (compiler/check)"
	case "04":
		return "cluster, train, stage, serve, compress and experiment rules (compiler/check)"
	case "05":
		return "planning and lowering (compiler/plan, compiler/step)"
	case "06":
		return "runtime (moec run, generate, eval, serve)"
	case "09":
		return "import and export (interop)"
	}
	return "unknown"
}
