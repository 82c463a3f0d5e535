// Package mpi is dist.Comm over Open MPI: one rank per process, launched by mpirun.
//
//	mpirun -np 4 moec run --stage dense model.moe
//
// libmpi is loaded at run time with dlopen (RTLD_NOW|RTLD_GLOBAL: Open MPI's plugins
// resolve symbols of libmpi itself), from a small C shim that looks every function and
// predefined handle up with dlsym. Nothing of MPI is needed to build moec, so `go build`
// and `go vet` work on machines without Open MPI, and a plain `go build ./cmd/moec`
// binary runs under mpirun. Open MPI's ABI is what the shim assumes: handles are pointers
// to the library's predefined objects (MPI_COMM_WORLD is &ompi_mpi_comm_world,
// MPI_FLOAT &ompi_mpi_float, …), MPI_IN_PLACE is (void *)1. The library is found as
// libmpi.so.40 (Open MPI 3 to 5) or libmpi.so on the loader's path; Debian's openmpi-bin
// installs it.
//
// # Process state
//
// MPI is initialised at most once per process and its world communicator belongs to the
// process, so this package keeps the little state MPI forces on it: whether Init has been
// called, and the process's MPI worker. Everything else hangs off the returned Comm.
//
// # Threads and timeouts
//
// Every MPI call runs on one worker goroutine locked to its OS thread, the thread that
// called MPI_Init_thread, so MPI sees one call at a time from one thread however many
// goroutines use the communicators (MPI_THREAD_SERIALIZED is requested). The ranks must
// still issue the collectives of every group in the same order, as dist.Comm requires.
//
// A blocking MPI collective cannot be cancelled. So each call waits for the worker with
// the Init timeout; when the timer fires first the call returns a *dist.Error with
// Timeout set (Missing is empty: MPI cannot tell which ranks have not arrived), the rank
// prints the error to stderr, and a second later calls MPI_Abort so that mpirun stops
// the whole job instead of leaving it hanging. The buffers of a call that timed out may
// still be written until then. An error returned by MPI itself (the world communicator
// is switched to MPI_ERRORS_RETURN) is handled the same way, since MPI's state after a
// failed collective is undefined. Argument errors found before calling MPI (a count that
// does not fit in a C int, an offset outside its buffer) are returned without aborting;
// the other ranks then time out.
//
// Abort prints the error with the rank to stderr and calls MPI_Abort(MPI_COMM_WORLD, 1):
// mpirun kills the other ranks and names the one that aborted. Unlike dist.Local, the
// other ranks do not get an error back; they are terminated.
//
// # Sums
//
// MPI_Allreduce does not add in rank order, so its sums can differ in the last bits from
// dist.Local's; Open MPI's algorithms for a fixed process count give every rank the same
// bits, which the conformance suite (package disttest) checks.
//
// # Running in containers
//
// As root, mpirun needs --allow-run-as-root; with more ranks than cores, --oversubscribe.
// Where the shared-memory transport cannot use cross-memory attach (no ptrace
// permission in many containers) set OMPI_MCA_btl_vader_single_copy_mechanism=none.
// The tests run
//
//	OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1 \
//	  mpirun --allow-run-as-root --oversubscribe --mca btl self,vader -np N prog
package mpi
