// Package rng is moec's one source of randomness: a counter-based generator keyed by
// (seed, step, layer, purpose).
//
// In: a seed and the coordinates of the random decision.
// Out: a Stream whose values depend only on that key and a counter, so a run is
// reproducible across parallel layouts and after a resume.
package rng
