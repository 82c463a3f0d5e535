package check

import "github.com/moec-dev/moec/lang/diag"

// didYouMean formats a suggestion for a misspelt name, or "" when nothing is close.
func didYouMean(name string, candidates []string) string {
	if c, ok := diag.Closest(name, candidates); ok && c != name {
		return "did you mean `" + c + "`?"
	}
	return ""
}
