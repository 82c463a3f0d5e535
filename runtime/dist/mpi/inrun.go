package mpi

import "os"

// InRun reports whether this process was launched by Open MPI's mpirun.
func InRun() bool { return os.Getenv("OMPI_COMM_WORLD_SIZE") != "" }
