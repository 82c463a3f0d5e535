package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
)

// Issue is one config field moec refuses, with why.
type Issue struct {
	Field     string    // the config.json key ("rope_scaling")
	Code      diag.Code // diag.CodeBadHFConfig or diag.CodeInexpressible
	Message   string    // what is wrong
	Droppable bool      // Options.Drop may name Field to import without it
}

// Error lists every config field an import refused, so one run reports them all.
type Error struct {
	Source string // the config's name for messages ("config.json")
	Issues []Issue
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d field(s) cannot be imported:", e.Source, len(e.Issues))
	var droppable []string
	for _, is := range e.Issues {
		fmt.Fprintf(&b, "\n  error[%s]: %s: %s", is.Code, is.Field, is.Message)
		if is.Droppable {
			droppable = append(droppable, is.Field)
		}
	}
	if len(droppable) > 0 {
		fmt.Fprintf(&b, "\n  to import without them, at the cost stated above, pass --drop %s", strings.Join(droppable, ","))
	}
	return b.String()
}

// Diagnostics returns each issue as a diagnostic about the config file.
func (e *Error) Diagnostics() diag.List {
	out := make(diag.List, len(e.Issues))
	for i, is := range e.Issues {
		out[i] = diag.Diagnostic{Severity: diag.Error, Code: is.Code, Subject: diag.Range{File: e.Source},
			Summary: is.Field + ": " + is.Message}
	}
	return out
}

// Unwrap returns each issue as a *diag.Diagnostic, so errors.As and diag.CodeOf find the
// first.
func (e *Error) Unwrap() []error { return diag.ListError(e.Diagnostics()).Unwrap() }

// metadataKeys are config.json keys that do not describe the network: tokenizer ids,
// bookkeeping, inference switches, initialisation of a model trained from scratch.
var metadataKeys = map[string]bool{
	"_name_or_path": true, "architectures": true, "model_type": true, "torch_dtype": true,
	"transformers_version": true, "bos_token_id": true, "eos_token_id": true,
	"pad_token_id": true, "initializer_range": true, "use_cache": true,
	"output_router_logits": true, "auto_map": true, "tokenizer_class": true,
	"return_dict": true, "output_hidden_states": true, "output_attentions": true,
	"dtype": true, "ep_size": true,
}

// reader hands out config fields and remembers which were read, so that every field left
// over at the end can be reported instead of ignored.
type reader struct {
	source    string // the config's name in messages: the file the user gave
	fields    map[string]json.RawMessage
	used      map[string]bool
	drop      map[string]bool
	dropOrder []string          // Options.Drop as given, for messages in the user's order
	refusable map[string]bool   // fields moec cannot express: the ones Options.Drop may name
	numeric   map[string]string // fields refused because dropping them would change the numbers, with why
	issues    []Issue
	notes     []string // header comment lines for dropped fields and approximations
	delta     int64    // parameters the checkpoint has that the imported model does not
}

// newReader reads src, which messages call source ("" = "config.json").
func newReader(src []byte, drop []string, source string) (*reader, error) {
	if source == "" {
		source = "config.json"
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil || fields == nil {
		var wrongType *json.UnmarshalTypeError
		if errors.As(err, &wrongType) {
			err = fmt.Errorf("it holds a JSON %s", wrongType.Value) // not Go's type names
		} else if err == nil {
			err = fmt.Errorf("it holds %s", compact(bytes.TrimSpace(src)))
		}
		return nil, diag.RuntimeWrap(diag.CodeBadHFConfig, err, "%s is not a JSON object", source)
	}
	r := &reader{source: source, fields: fields, used: map[string]bool{}, drop: map[string]bool{}, refusable: map[string]bool{}, numeric: map[string]string{}}
	for _, d := range drop {
		if !r.drop[d] {
			r.dropOrder = append(r.dropOrder, d)
		}
		r.drop[d] = true
	}
	return r, nil
}

// checkDrops reports every Options.Drop name that does not name a field this config has
// and moec cannot express: dropping a field moec imports, or one that is not there, would
// otherwise pass silently, and the user would believe something was left out. A field
// present as null is the feature's absence; dropping it changes nothing and is accepted.
func (r *reader) checkDrops() {
	var can []string
	for f := range r.refusable {
		can = append(can, f)
	}
	sort.Strings(can)
	list := "this config has no field to drop"
	if len(can) > 0 {
		list = "this config can drop " + strings.Join(can, ", ")
	}
	for _, d := range r.dropOrder {
		raw, in := r.fields[d]
		switch {
		case r.refusable[d]:
		case r.numeric[d] != "":
			// The field's own issue already says why; a second one would say it again.
			continue
		case !in:
			msg := fmt.Sprintf("--drop names a field %s does not have; %s", r.source, list)
			if c, ok := diag.Closest(d, keysOf(r.fields)); ok {
				msg += fmt.Sprintf(" (did you mean %s?)", c)
			}
			r.issues = append(r.issues, Issue{Field: d, Code: diag.CodeBadHFConfig, Message: msg})
		case !r.present(d):
		default:
			r.issues = append(r.issues, Issue{Field: d, Code: diag.CodeBadHFConfig, Message: fmt.Sprintf(
				"--drop names a field moec imports as it is (value %s): dropping it would change the computation, and only a field whose absence leaves the numbers the same may be dropped; %s", compact(raw), list)})
		}
	}
}

func keysOf(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (r *reader) bad(field, format string, args ...any) {
	r.issues = append(r.issues, Issue{Field: field, Code: diag.CodeBadHFConfig, Message: fmt.Sprintf(format, args...)})
}

// inexpressible reports a field moec cannot express, or with Options.Drop naming it, notes
// it in the header with its effect and the parameters the imported model lacks.
func (r *reader) inexpressible(field, what, effect string, paramDelta int64) {
	r.used[field] = true
	r.refusable[field] = true
	if r.drop[field] {
		note := fmt.Sprintf("dropped %s: %s; %s", field, what, effect)
		if paramDelta != 0 {
			note += fmt.Sprintf(" (%d parameters fewer than the checkpoint)", paramDelta)
		}
		r.notes = append(r.notes, note)
		r.delta += paramDelta
		return
	}
	msg := what + "; without it, " + effect
	if paramDelta != 0 {
		msg += fmt.Sprintf(" (%d checkpoint parameters would have no place)", paramDelta)
	}
	r.issues = append(r.issues, Issue{Field: field, Code: diag.CodeInexpressible, Message: msg, Droppable: true})
}

// refuse reports a field moec cannot express whose absence would change the computation:
// it cannot be dropped, and --drop naming it is an error that says so.
func (r *reader) refuse(field, what, why string) {
	r.used[field] = true
	r.numeric[field] = why
	r.issues = append(r.issues, Issue{Field: field, Code: diag.CodeInexpressible,
		Message: what + "; " + why + ", and without it the model would compute something else, so it cannot be dropped"})
}

func (r *reader) present(key string) bool {
	v, ok := r.fields[key]
	return ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// take marks key read and returns its raw value; nil when absent or null.
func (r *reader) take(key string) json.RawMessage {
	r.used[key] = true
	if !r.present(key) {
		return nil
	}
	return r.fields[key]
}

func (r *reader) number(key string) (float64, bool) {
	raw := r.take(key)
	if raw == nil {
		return 0, false
	}
	var n json.Number
	// json.Number also accepts a quoted number; config.json must say 32, not "32".
	if err := json.Unmarshal(raw, &n); err != nil || raw[0] == '"' {
		r.bad(key, "want a number, have %s", raw)
		return 0, false
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		r.bad(key, "want a finite number, have %s", raw)
		return 0, false
	}
	return f, true
}

// integer returns key as a non-negative integer, def when absent.
func (r *reader) integer(key string, def int64) int64 {
	f, ok := r.number(key)
	if !ok {
		return def
	}
	if f != math.Trunc(f) || f < 0 || f > 1<<53 {
		r.bad(key, "want a non-negative integer, have %v", f)
		return def
	}
	return int64(f)
}

// required returns key as a positive integer and reports it, once, when it is missing or
// is anything else.
func (r *reader) required(key string) int64 {
	if !r.present(key) {
		r.used[key] = true
		r.bad(key, "missing (required for this architecture)")
		return 0
	}
	f, ok := r.number(key) // reports a value that is no number
	if !ok {
		return 0
	}
	if f != math.Trunc(f) || f <= 0 || f > 1<<53 {
		r.bad(key, "want a positive integer, have %v", f)
		return 0
	}
	return int64(f)
}

func (r *reader) float(key string, def float64) float64 {
	if f, ok := r.number(key); ok {
		return f
	}
	return def
}

func (r *reader) boolean(key string, def bool) bool {
	raw := r.take(key)
	if raw == nil {
		return def
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		r.bad(key, "want true or false, have %s", raw)
		return def
	}
	return b
}

func (r *reader) str(key, def string) string {
	raw := r.take(key)
	if raw == nil {
		return def
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		r.bad(key, "want a string, have %s", raw)
		return def
	}
	return s
}

func (r *reader) ints(key string) []int64 {
	raw := r.take(key)
	if raw == nil {
		return nil
	}
	var v []int64
	if err := json.Unmarshal(raw, &v); err != nil {
		r.bad(key, "want a list of integers, have %s", raw)
		return nil
	}
	return v
}

// zero requires a numeric key to be absent or zero: dropout and noise moec does not model.
func (r *reader) zero(key, what string) {
	if f, ok := r.number(key); ok && f != 0 {
		r.inexpressible(key, fmt.Sprintf("%s %v", what, f), "moec trains without it; the forward pass at inference, and so every number the checkpoint computes there, is the same", 0)
	}
}

// leftovers reports every field nobody read.
func (r *reader) leftovers() {
	keys := make([]string, 0, len(r.fields))
	for k := range r.fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// The fields moec reads, taken before any unknown one is refused (refusing marks a
	// field read): a suggestion names a field moec reads, never another unknown one.
	known := make([]string, 0, len(r.used)+len(metadataKeys))
	for f := range r.used {
		known = append(known, f)
	}
	for f := range metadataKeys {
		known = append(known, f)
	}
	sort.Strings(known)
	for _, k := range keys {
		if r.used[k] || metadataKeys[k] {
			continue
		}
		if !r.present(k) {
			continue // an explicit null is the absence of the feature
		}
		why := "moec does not know what it changes"
		if c, ok := diag.Closest(k, known); ok {
			why += fmt.Sprintf(" (did you mean %s, which moec reads?)", c)
		}
		r.refuse(k, fmt.Sprintf("unknown field (value %s)", compact(r.fields[k])), why)
	}
}

// compact is raw without spaces, shortened for a message.
func compact(raw json.RawMessage) string {
	s := compactFull(raw)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// compactFull is raw without spaces.
func compactFull(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
