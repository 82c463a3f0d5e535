// Command mpicheck runs the dist conformance suite on Open MPI ranks; the mpi package's
// tests launch it under mpirun. With -fail it instead makes the last rank fail in one of
// the ways a training run can, to check that the job stops rather than hangs:
//
//	-fail abort    the rank calls Abort while the others are in an all-reduce
//	-fail exit     the rank exits with status 3 while the others are in an all-reduce
//	-fail stall    the rank never arrives; the others must time out and abort
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/moec-dev/moec/runtime/dist/disttest"
	"github.com/moec-dev/moec/runtime/dist/mpi"
)

func main() {
	fail := flag.String("fail", "", "make the last rank fail: abort, exit or stall")
	timeout := flag.Duration("timeout", 30*time.Second, "timeout of every collective")
	flag.Parse()
	if err := run(*fail, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "mpicheck:", err)
		os.Exit(1)
	}
}

func run(fail string, timeout time.Duration) error {
	if !mpi.InRun() {
		return errors.New("not launched by mpirun")
	}
	c, err := mpi.Init(timeout)
	if err != nil {
		return err
	}
	if _, err := mpi.Init(timeout); err == nil {
		return errors.New("a second Init succeeded")
	}
	if fail == "" {
		if err := disttest.Check(c); err != nil {
			c.Abort(err)
		}
		if err := mpi.Finalize(); err != nil {
			return err
		}
		if err := mpi.Finalize(); err == nil {
			return errors.New("a second Finalize succeeded")
		}
		fmt.Printf("rank %d of %d: ok\n", c.Rank(), c.Size())
		return nil
	}
	if err := c.Barrier(); err != nil {
		return err
	}
	if c.Rank() == c.Size()-1 {
		time.Sleep(200 * time.Millisecond) // let the others block in the all-reduce
		switch fail {
		case "abort":
			c.Abort(fmt.Errorf("injected failure on rank %d", c.Rank()))
		case "exit":
			fmt.Fprintf(os.Stderr, "mpicheck: rank %d exits mid-run\n", c.Rank())
			os.Exit(3)
		case "stall":
			time.Sleep(10 * time.Minute)
		}
		return fmt.Errorf("unknown -fail %q", fail)
	}
	x := make([]float32, 1000)
	if err := c.AllReduceF32(x); err != nil {
		// The transport has printed the error and aborts the job shortly.
		time.Sleep(time.Minute)
		return err
	}
	return errors.New("the all-reduce completed without the failed rank")
}
