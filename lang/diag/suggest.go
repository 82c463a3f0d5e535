package diag

import "strings"

// Closest returns the candidate nearest to name by Damerau-Levenshtein distance (optimal
// string alignment: insertions, deletions, substitutions and swaps of neighbours), for
// "did you mean" suggestions. It reports false when nothing is close enough to be a
// plausible typo: the distance must be at most max(1, len(name)/3) (so `haeds` finds
// `heads` but `x` finds nothing in a list of long keys), and never the whole name.
// An exact match wins, then one differing only in case. Ties go to the earliest candidate, so callers control preference by order.
func Closest(name string, candidates []string) (string, bool) {
	for _, c := range candidates {
		if c == name {
			return c, true
		}
	}
	// A difference in case alone is the likeliest typo of all (`tbps` for `Tbps`).
	for _, c := range candidates {
		if strings.EqualFold(c, name) {
			return c, true
		}
	}
	limit := max(1, len([]rune(name))/3)
	best, bestDist := "", limit+1
	for _, c := range candidates {
		d := distance(name, c)
		if d < bestDist && d < max(len([]rune(c)), 1) {
			best, bestDist = c, d
		}
	}
	return best, best != ""
}

// distance is the optimal-string-alignment distance between a and b, counted in runes.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) == 0 {
		return len(rb)
	}
	if len(rb) == 0 {
		return len(ra)
	}
	// Three rows suffice: a swap looks two rows back.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
