package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/dist"
)

// Ranks are the sessions of every rank of one layout, in this process: one generated
// step per rank (rank r on device r, or on the emulation's device r), joined in one NCCL
// communicator per group of ranks the programs communicate over (every rank, or a part:
// the tp pairs of dp 2 × tp 2), whose unique id the group's first rank creates and hands
// to the others in memory. Under mpirun (OpenRank) Sessions holds this process's rank
// alone and the ids travel over the MPI world. Under the emulation the ranks' collectives
// meet in shared memory, the process's threads or the processes alike.
type Ranks struct {
	Sessions []*Session
	m        *program.Model
	// across is the world of a rank whose peers are other processes (OpenRank), else nil.
	across dist.Comm
}

// OpenRanks opens the generated step of each of progs (every rank's program of one
// layout, in rank order) and joins them. Under the emulation the kernels are compiled
// once, for rank 0 (or taken from the compile cache), and those objects linked into every
// rank's host program.
func OpenRanks(ctx context.Context, progs []*step.Program, m *program.Model, o Options) (*Ranks, error) {
	if len(progs) == 0 {
		return nil, errors.New("gpu: no rank to open")
	}
	for r, p := range progs {
		if p.Rank != r || p.Layout.World() != len(progs) {
			return nil, fmt.Errorf("gpu: program %d is rank %d of %d; OpenRanks takes every rank's program in rank order", r, p.Rank, p.Layout.World())
		}
	}
	if len(progs) > 1 && o.Mode == Device {
		if err := errors.Join(CheckDriver(), CheckNCCL()); err != nil {
			return nil, fmt.Errorf("gpu: %d ranks on GPUs: %w", len(progs), err)
		}
	}
	root := o.Dir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "moec-gpu-ranks-*"); err != nil {
			return nil, fmt.Errorf("gpu: %w", err)
		}
		defer os.RemoveAll(root)
	}
	rs := &Ranks{m: m}
	for r, p := range progs {
		ro := o
		ro.Dir = filepath.Join(root, fmt.Sprintf("rank%d", r))
		if err := os.MkdirAll(ro.Dir, 0o755); err != nil {
			rs.Close()
			return nil, fmt.Errorf("gpu: %w", err)
		}
		if r > 0 && o.Mode == Emulated {
			ro.objects = rs.Sessions[0].objects // the compile cache's entry, or rank 0's folder
		}
		s, err := Open(ctx, p, m, ro)
		if err != nil {
			rs.Close()
			return nil, fmt.Errorf("gpu: rank %d: %w", r, err)
		}
		rs.Sessions = append(rs.Sessions, s)
	}
	if len(progs) > 1 {
		if err := rs.join(); err != nil {
			rs.Close()
			return nil, err
		}
	}
	return rs, nil
}

// join creates one unique id per group of ranks the programs communicate over (on the
// group's first rank) and makes every rank join its groups' communicators with them, all
// ranks at once (ncclCommInitRank returns when every rank of its group has called it;
// each rank joins its communicators in the lowering's order, the same on every rank).
func (rs *Ranks) join() error {
	ids := map[string][]byte{}
	for r, s := range rs.Sessions {
		for _, c := range s.low.Comms {
			if _, ok := ids[c.Key()]; ok {
				continue
			}
			if c.Ranks[0] < 0 || c.Ranks[0] >= len(rs.Sessions) {
				return fmt.Errorf("gpu: rank %d's communicator over ranks %v names a rank the layout lacks", r, c.Ranks)
			}
			id := make([]byte, ncclIDBytes)
			if err := rs.Sessions[c.Ranks[0]].call("moec_step_nccl_id", id); err != nil {
				return fmt.Errorf("gpu: rank %d, the communicator of ranks %v: %w", c.Ranks[0], c.Ranks, err)
			}
			ids[c.Key()] = id
		}
	}
	return rs.joinWith(ids)
}

// joinWith makes every rank of rs join its communicators with the unique ids by the
// communicators' keys.
func (rs *Ranks) joinWith(ids map[string][]byte) error {
	return rs.each(func(r int, s *Session) error {
		all := make([]byte, 0, ncclIDBytes*len(s.low.Comms))
		for _, c := range s.low.Comms {
			id, ok := ids[c.Key()]
			if !ok {
				return fmt.Errorf("gpu: rank %d: no unique id for the communicator of ranks %v", s.p.Rank, c.Ranks)
			}
			all = append(all, id...)
		}
		if len(all) == 0 {
			all = make([]byte, ncclIDBytes) // a rank without collectives joins nothing
		}
		if err := s.call("moec_step_join", all); err != nil {
			return fmt.Errorf("gpu: rank %d: %w", s.p.Rank, err)
		}
		return nil
	})
}

// ncclIDBytes is the size of an ncclUniqueId.
const ncclIDBytes = 128

// OpenRank opens this process's rank of a layout whose ranks are processes (mpirun, one
// rank per process): progs is every rank's program in rank order (the process lowers
// them all), world the MPI world, whose rank picks the program. The rank runs on the
// device of its node-local rank (localRank: Open MPI's OMPI_COMM_WORLD_LOCAL_RANK, else
// the world rank), a GPU per process on each node. Its communicators' unique ids are made
// by each group's first rank and exchanged over world (exchangeIDs); under the emulation
// the collectives meet in shared memory. Every process must call it at once.
func OpenRank(ctx context.Context, progs []*step.Program, m *program.Model, o Options, world dist.Comm) (*Ranks, error) {
	if world == nil || world.Size() != len(progs) {
		return nil, fmt.Errorf("gpu: %d ranks' programs for a world of %d processes", len(progs), sizeOf(world))
	}
	me := world.Rank()
	for r, p := range progs {
		if p.Rank != r || p.Layout.World() != len(progs) {
			return nil, fmt.Errorf("gpu: program %d is rank %d of %d; OpenRank takes every rank's program in rank order", r, p.Rank, p.Layout.World())
		}
	}
	device, err := localRank(me)
	if err != nil {
		return nil, err
	}
	o.device = &device
	if o.Mode == Device && len(progs) > 1 {
		if err := errors.Join(CheckDriver(), CheckNCCL()); err != nil {
			return nil, fmt.Errorf("gpu: rank %d of %d on GPUs: %w", me, len(progs), err)
		}
	}
	s, err := Open(ctx, progs[me], m, o)
	if err != nil {
		// The others wait in the exchange below: tell them.
		world.Abort(fmt.Errorf("gpu: rank %d: %w", me, err))
		return nil, fmt.Errorf("gpu: rank %d: %w", me, err)
	}
	rs := &Ranks{Sessions: []*Session{s}, m: m, across: world}
	if len(progs) > 1 {
		ids, err := exchangeIDs(s, world)
		if err == nil {
			err = rs.joinWith(ids)
		}
		if err != nil {
			rs.Close()
			return nil, err
		}
	}
	return rs, nil
}

// localRank is the process's rank on its node, the device it opens: Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK, else (another launcher) the world rank me.
func localRank(me int) (int, error) {
	v := os.Getenv("OMPI_COMM_WORLD_LOCAL_RANK")
	if v == "" {
		return me, nil
	}
	r, err := strconv.Atoi(v)
	if err != nil || r < 0 {
		return 0, fmt.Errorf("gpu: OMPI_COMM_WORLD_LOCAL_RANK=%q is not a rank", v)
	}
	return r, nil
}

// sizeOf is c's size, 0 for no world.
func sizeOf(c dist.Comm) int {
	if c == nil {
		return 0
	}
	return c.Size()
}

// exchangeIDs creates the unique ids of the communicators whose group s's rank leads
// (the first of its ranks) and gathers every rank's over world: first each rank's record
// length, then the records padded to the longest (each record: for each communicator its
// key's length, the key and the 128-byte id). Every rank gets every id; a communicator's
// id comes from its first rank alone, so the result is the same on every rank.
func exchangeIDs(s *Session, world dist.Comm) (map[string][]byte, error) {
	var mine []byte
	for _, c := range s.low.Comms {
		if c.Ranks[0] != s.p.Rank {
			continue
		}
		id := make([]byte, ncclIDBytes)
		if err := s.call("moec_step_nccl_id", id); err != nil {
			err = fmt.Errorf("gpu: rank %d, the communicator of ranks %v: %w", s.p.Rank, c.Ranks, err)
			world.Abort(err)
			return nil, err
		}
		key := c.Key()
		mine = strconv.AppendInt(mine, int64(len(key)), 10)
		mine = append(mine, ':')
		mine = append(append(mine, key...), id...)
	}
	n := world.Size()
	lens := make([]byte, 8*n)
	if err := world.AllGather(dist.AsBytes([]int64{int64(len(mine))}), lens); err != nil {
		return nil, fmt.Errorf("gpu: rank %d: exchanging the NCCL unique ids: %w", s.p.Rank, err)
	}
	sizes := make([]int64, n)
	copy(dist.AsBytes(sizes), lens)
	longest := slices.Max(sizes)
	if longest == 0 {
		return map[string][]byte{}, nil
	}
	send := make([]byte, longest)
	copy(send, mine)
	recv := make([]byte, int(longest)*n)
	if err := world.AllGather(send, recv); err != nil {
		return nil, fmt.Errorf("gpu: rank %d: exchanging the NCCL unique ids: %w", s.p.Rank, err)
	}
	ids := map[string][]byte{}
	for r := range n {
		rec := recv[int64(r)*longest : int64(r)*longest+sizes[r]]
		for len(rec) > 0 {
			colon := slices.Index(rec, ':')
			k, err := strconv.Atoi(string(rec[:max(colon, 0)]))
			if colon < 0 || err != nil || len(rec) < colon+1+k+ncclIDBytes {
				return nil, fmt.Errorf("gpu: rank %d: rank %d's NCCL unique ids are malformed", s.p.Rank, r)
			}
			rec = rec[colon+1:]
			ids[string(rec[:k])] = slices.Clone(rec[k : k+ncclIDBytes])
			rec = rec[k+ncclIDBytes:]
		}
	}
	return ids, nil
}

// each runs f for every rank at once, one goroutine a rank, and returns the first error.
// A rank that fails before a collective leaves the others waiting in it: the generated
// step's NCCL (or the emulation's rendezvous, after MOEC_EMU_NCCL_TIMEOUT) decides then.
func (rs *Ranks) each(f func(r int, s *Session) error) error {
	errs := make([]error, len(rs.Sessions))
	var wg sync.WaitGroup
	for r, s := range rs.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = f(r, s)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// call calls one of the host program's entry points that take the handle, a byte buffer
// and the error buffer.
func (s *Session) call(name string, buf []byte) error {
	f, err := s.lib.Func(name)
	if err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	msg := make([]byte, errBytes)
	if err := f.Call(0, 0, s.handle, buf, msg, int64(errBytes)); err != nil {
		return err
	}
	if e := cString(msg); e != "" {
		return fmt.Errorf("gpu: %s", e)
	}
	return nil
}

// Step runs one training step on every rank: micro holds every replica's micro-batches in
// turn (replica r takes micro[r·M:(r+1)·M]), as runtime/exec's Local.Step takes them. The
// stats are the step's, summed over the ranks as Local.Step sums them (under OpenRank over
// the processes too: every process calls Step at once).
func (rs *Ranks) Step(micro [][]int32, o StepOptions) (Stats, error) {
	stats := make([]Stats, len(rs.Sessions))
	err := rs.each(func(r int, s *Session) error {
		c, M := s.p.Coord, s.p.Batch.Micro
		if (c.DP+1)*M > len(micro) {
			return fmt.Errorf("gpu: rank %d: %d micro-batches for %d replicas of %d", r, len(micro), s.p.Layout.DP, M)
		}
		var err error
		stats[r], err = s.Step(micro[c.DP*M:(c.DP+1)*M], o)
		if err != nil {
			return fmt.Errorf("gpu: rank %d: %w", r, err)
		}
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	var out Stats
	for r, s := range rs.Sessions {
		if s.p.Coord.TP != 0 {
			continue
		}
		out.CE += stats[r].CE
		out.Balance += stats[r].Balance
		out.ZLoss += stats[r].ZLoss
		out.Dropped += stats[r].Dropped
		out.Distill += stats[r].Distill
	}
	if rs.across != nil {
		v := []float64{out.CE, out.Balance, out.ZLoss, float64(out.Dropped), out.Distill}
		if err := rs.across.AllReduceF64(v); err != nil {
			return Stats{}, fmt.Errorf("gpu: summing the step's loss over the ranks: %w", err)
		}
		out.CE, out.Balance, out.ZLoss, out.Dropped, out.Distill = v[0], v[1], v[2], int(v[3]), v[4]
	}
	out.Loss = stepLoss(out, rs.Sessions[0].p.Layout.Distill, rs.m)
	out.GradNorm, out.LR = stats[0].GradNorm, stats[0].LR
	out.Skipped = stats[0].Skipped // every rank settled on the same reduced norm
	return out, nil
}

// Close closes every rank's session.
func (rs *Ranks) Close() error {
	var err error
	for _, s := range rs.Sessions {
		err = errors.Join(err, s.Close())
	}
	rs.Sessions = nil
	return err
}
