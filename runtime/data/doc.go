// Package data turns a text corpus into byte-level training batches.
//
// In: a glob ("$GOROOT/src/**/*.go"; environment variables are expanded, $GOROOT falls back
// to `go env GOROOT`, and "**" matches any number of directories), an optional validation
// glob, and the seed and step of each batch.
// Out: a Corpus holding the training and validation text as bytes (token id = byte value,
// 0..255), windows of T+1 tokens sampled deterministically from (seed, step, window index)
// so a resumed run sees exactly the batches an uninterrupted run would, whatever its
// micro-batch size, and a fixed set of validation windows.
//
// Without a validation glob every 20th file (in sorted path order) is held out. Files with
// a NUL byte are treated as binary and skipped; the Corpus says how many. A glob that
// matches nothing, a corpus with no usable text, or an unreadable file is a coded error.
package data
