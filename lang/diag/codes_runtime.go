package diag

import (
	"errors"
	"fmt"
	"strings"
)

// Runtime refusals (package runtime/...). These are errors about a user's run rather than
// about a source range: a stage that does not exist, a corpus that is empty, a checkpoint
// that is corrupt. They travel as *RuntimeError values so callers can test the code with
// errors.As and the CLI can print the same `error[CODE]: ...` form as other diagnostics.
const (
	ErrUnknownStage       Code = "E0601" // no such stage (or train) in the program
	ErrNoFromCheckpoint   Code = "E0602" // a stage's `from` stage has no final checkpoint yet
	ErrUnsupportedFeature Code = "E0603" // the CPU runtime does not implement a model feature
	ErrEmptyCorpus        Code = "E0604" // the data glob matches nothing or only unusable files
	ErrBadDataFile        Code = "E0605" // a data file cannot be read
	ErrVocabTooSmall      Code = "E0606" // byte-level tokens need vocab >= 256
	ErrCorruptCheckpoint  Code = "E0607" // a checkpoint file is truncated, malformed or fails its hash
	ErrCheckpointMismatch Code = "E0608" // a checkpoint does not fit the model (names, shapes, config)
	ErrOutputExists       Code = "E0609" // the output directory already holds a run
	ErrUnknownTrain       Code = "E0610" // no such train block
	ErrBadRunOption       Code = "E0611" // an option of the run is out of range
	ErrBadGrowth          Code = "E0612" // a stage cannot be grown from its `from` stage
	ErrNonFiniteLoss      Code = "E0613" // training diverged (NaN or Inf loss)
	ErrBadSafetensors     Code = "E0614" // a safetensors file is malformed
	ErrRankFailed         Code = "E0615" // a rank of a sharded run failed, or a collective timed out
	ErrRunInUse           Code = "E0616" // another process holds the run folder
	ErrBadTokenizer       Code = "E0621" // a tokenizer file cannot be read or is of a kind moec does not read
)

var runtimeCodes = []Info{
	{ErrUnknownStage, "no stage of that name in the train block"},
	{ErrNoFromCheckpoint, "the stage's `from` stage has no final checkpoint yet"},
	{ErrUnsupportedFeature, "the CPU runtime does not implement this model feature"},
	{ErrEmptyCorpus, "the training data glob matches no usable text file"},
	{ErrBadDataFile, "a training data file cannot be read"},
	{ErrVocabTooSmall, "byte-level tokens need a vocabulary of at least 256"},
	{ErrCorruptCheckpoint, "a checkpoint file is truncated, malformed or fails its SHA-256"},
	{ErrCheckpointMismatch, "a checkpoint does not match the model (tensor names, shapes or config)"},
	{ErrOutputExists, "the output directory already holds a run (use --resume or --force)"},
	{ErrUnknownTrain, "no train block of that name"},
	{ErrBadRunOption, "a run option is out of range"},
	{ErrBadGrowth, "a stage cannot be grown from its `from` stage"},
	{ErrNonFiniteLoss, "training diverged: the loss is NaN or infinite"},
	{ErrBadSafetensors, "a safetensors file is malformed"},
	{ErrRankFailed, "a rank of a sharded run failed or a collective timed out; the other ranks stopped"},
	{ErrRunInUse, "another moec run holds the run folder (its lock names the process)"},
	{ErrBadTokenizer, "a tokenizer file cannot be read, or is of a kind moec does not read (it reads BPE tokenizer.json)"},
}

// RuntimeError is a coded refusal from the runtime. Err, when set, is the underlying cause
// (an *os.PathError, say) and is reachable with errors.Is/As.
type RuntimeError struct {
	Code       Code
	Message    string
	Suggestion string // e.g. "did you mean `dense`?"; empty when none
	Err        error
	// Range is where the refused value is written in the source (a .moe entry), when the
	// refusal is about one; the zero Range when it is not, or the value came from elsewhere.
	Range Range
}

func (e *RuntimeError) Error() string {
	var b strings.Builder
	if e.Range.Start.IsValid() {
		fmt.Fprintf(&b, "%s:%d:%d: ", e.Range.File, e.Range.Start.Line, e.Range.Start.Col)
	}
	b.WriteString("error[")
	b.WriteString(string(e.Code))
	b.WriteString("]: ")
	b.WriteString(e.Message)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Suggestion != "" {
		b.WriteString(" (")
		b.WriteString(e.Suggestion)
		b.WriteString(")")
	}
	return b.String()
}

func (e *RuntimeError) Unwrap() error { return e.Err }

// Runtimef returns a *RuntimeError with a formatted message. A trailing error argument is
// not special: wrap causes by setting Err on the result or using RuntimeWrap.
func Runtimef(code Code, format string, args ...any) *RuntimeError {
	return &RuntimeError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// RuntimeWrap returns a *RuntimeError that wraps err.
func RuntimeWrap(code Code, err error, format string, args ...any) *RuntimeError {
	return &RuntimeError{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// Diagnostic is e as a diagnostic at its Range, for rendering with the source line.
func (e *RuntimeError) Diagnostic() Diagnostic {
	msg := e.Message
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return Diagnostic{Severity: Error, Code: e.Code, Message: msg, Range: e.Range, Suggestion: e.Suggestion}
}

// CodeOf returns the code of the first *RuntimeError in err's chain, or "".
func CodeOf(err error) Code {
	var re *RuntimeError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}
