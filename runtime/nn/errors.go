package nn

import "fmt"

// UnsupportedError reports a feature of the model that the CPU runtime does not compute.
// New returns it rather than silently training a different model than the one written.
type UnsupportedError struct {
	Feature string // what the model asks for, in the language's words
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("nn: the CPU runtime does not support %s", e.Feature)
}
