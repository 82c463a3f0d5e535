// Package pagepool is the unified cache's device page pool (AngelPTM): a fixed number of
// pages holding the units (a model's embedding, layers, head) gathered most recently, most
// often or first, so that a unit used again is not gathered again.
//
// In: a capacity in pages, an eviction policy, and a sequence of requests (Get, then Put
// on a miss, Unpin when the unit's use ends, Drop when the weights change). Out: hits,
// pinned entries and the entries evicted to make room.
//
// It is the one implementation of the pool's decisions: runtime/train runs it with the
// gathered buffers as values, and compiler/plan replays a step's requests through it to
// predict the pool's peak, so the prediction and the run cannot drift. Its decisions depend
// only on the requests and their sizes, which every rank shares, so all ranks of a run hit
// and miss together and their gathers stay collective.
package pagepool
