package diag

// Code is a stable diagnostic code such as "E0101". Codes are append-only: once
// published a code keeps its meaning forever. Each phase owns a range:
//
//	E01xx  lexing and syntax (lang/parse)
//	E02xx  names, keys, types and units (compiler/check)
//	E03xx  cross-field model rules (compiler/check)
//	E04xx  cluster, train, stage, serve, compress, experiment rules (compiler/check)
//	E05xx  planning (compiler/plan)
//	E06xx  runtime refusals (runtime)
//	E09xx  import and export (interop)
//	W9xxx  warnings (W92xx the checker's, W95xx backends': a feature a backend does not honour)
//
// Every code is registered with a one-line summary in the Codes table (one file per
// owning phase: codes_*.go) so `moec explain-code` and the docs can list them.
type Code string

// Info describes a code.
type Info struct {
	Code    Code
	Summary string
}

// Registry returns every registered code with its summary, in code order.
func Registry() []Info {
	var out []Info
	for _, group := range [][]Info{syntaxCodes, checkCodes, planCodes, runtimeCodes, interopCodes} {
		out = append(out, group...)
	}
	return out
}
