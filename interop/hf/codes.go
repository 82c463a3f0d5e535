package hf

import "github.com/moec-dev/moec/lang/diag"

// Stable codes of interop refusals. They travel as *diag.RuntimeError (or inside *Error) so
// callers can test them with diag.CodeOf.
const (
	// ErrBadConfig: config.json is not a JSON object, or a field has the wrong type or an
	// impossible value.
	ErrBadConfig diag.Code = "E0901"
	// ErrUnknownArchitecture: model_type names an architecture moec does not import.
	ErrUnknownArchitecture diag.Code = "E0902"
	// ErrInexpressible: a config field describes something moec's language cannot express.
	ErrInexpressible diag.Code = "E0903"
	// ErrWeights: the safetensors of a Hugging Face folder do not match its config.
	ErrWeights diag.Code = "E0904"
	// ErrExport: a checkpoint cannot be exported.
	ErrExport diag.Code = "E0905"
)
