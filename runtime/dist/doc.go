// Package dist is how the ranks of a sharded run talk to each other and account for the
// memory they hold.
//
// A Comm is one rank's handle on a group of ranks. The runtime uses a handful of
// collectives — all-reduce (sum, max), all-gather, all-to-all with per-peer sizes,
// barrier — point-to-point messages between pipeline stages, and splits the world into
// the groups the plan names (expert-parallel, expert-data-parallel, and each axis of a
// step program's layout). Two transports implement it: in-process ranks (goroutines of
// one moec process, the default for `moec run --ranks N`) and MPI (package dist/mpi, one
// rank per process under mpirun).
//
// Every collective has a deadline. A rank that fails calls Abort, and every other rank's
// pending or later collective returns an *Error naming the op, the group and the rank
// that failed or that never arrived, so a dead rank stops the run instead of hanging it.
//
// Meter counts the bytes a rank holds per component (parameters, gradients, optimizer
// states, activations, MoE dispatch buffers, temporary buffers) with their peaks, so a
// run can print what it held next to what the plan predicted.
package dist
