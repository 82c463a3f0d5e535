package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moec-dev/moec/lang/diag"
)

// LockFile is the file in a run folder that the run holding the folder keeps locked, with
// who holds it (LockHolder as JSON). The file stays when the run ends; the lock does not:
// the system releases it when the holding process exits, however it exits, so a killed run
// never leaves a folder locked.
const LockFile = "run.lock"

// LockHolder says which process holds a run folder, for the message a second run gets.
type LockHolder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Command []string  `json:"command"`
}

// RunLock is a held run-folder lock; Release gives it up.
type RunLock struct{ f *os.File }

// LockRunDir takes the exclusive lock of run folder dir (creating the folder), or fails at
// once with ErrRunInUse naming the process that holds it. One process locks a folder:
// in-process ranks share their process's lock, and under mpirun rank 0, which writes the
// run's files, takes it.
func LockRunDir(dir string) (*RunLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: opening the run folder's lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("train: locking %s: %w", path, err)
	}
	if !held {
		f.Close()
		return nil, inUse(dir, path)
	}
	host, _ := os.Hostname()
	b, err := json.Marshal(LockHolder{PID: os.Getpid(), Host: host, Started: time.Now().UTC().Truncate(time.Second), Command: os.Args})
	if err == nil {
		// The holder's own record: written in place under the lock (the file is the lock,
		// so it cannot be replaced by a rename), read only by runs that fail to take it.
		if err = f.Truncate(0); err == nil {
			_, err = f.WriteAt(append(b, '\n'), 0)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("train: recording the holder in %s: %w", path, err)
	}
	return &RunLock{f: f}, nil
}

// Release gives the lock up. It is safe on a nil lock and more than once.
func (l *RunLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close() // closing the last descriptor releases the lock
	l.f = nil
}

// inUse is the refusal for a folder another process holds, naming it from the lock file.
func inUse(dir, path string) error {
	who := "another process (it has not recorded itself yet)"
	if b, err := os.ReadFile(path); err == nil {
		var h LockHolder
		if json.Unmarshal(b, &h) == nil && h.PID > 0 {
			who = fmt.Sprintf("pid %d on host %s, started %s: %s", h.PID, h.Host, h.Started.Format(time.RFC3339), strings.Join(h.Command, " "))
		}
	}
	e := diag.Runtimef(diag.CodeRunInUse, "run folder %s is in use by %s", dir, who)
	e.Suggestion = "wait for that run to finish or stop it, or pass --out (or --out-root) for another folder; the lock goes away with the process that holds it"
	return e
}
