package weights

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// CheckpointsDir is the folder of a run directory that holds its checkpoints.
const CheckpointsDir = "checkpoints"

// ResolveCheckpoint returns the checkpoint directory dir names: dir itself when it holds a
// manifest, else the newest checkpoint of the run directory dir.
func ResolveCheckpoint(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, checkpoint.ManifestFile)); err == nil {
		return dir, nil
	}
	latest, err := checkpoint.Latest(filepath.Join(dir, CheckpointsDir))
	if err != nil {
		return "", err
	}
	if latest == "" {
		// Say what is missing when the folder looks like a checkpoint or holds step
		// directories: "neither a checkpoint nor a run" hides a deleted manifest.
		if _, err := os.Stat(filepath.Join(dir, checkpoint.ModelFile)); err == nil {
			return "", diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s has no %s (an interrupted save?)", dir, checkpoint.ManifestFile)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, CheckpointsDir)); len(ents) > 0 {
			for i := len(ents) - 1; i >= 0; i-- {
				if name := ents[i].Name(); ents[i].IsDir() && strings.HasPrefix(name, "step-") {
					return "", diag.Runtimef(diag.CodeCorruptCheckpoint, "%s has no complete checkpoint: %s has no %s (an interrupted save?)", dir, filepath.Join(CheckpointsDir, name), checkpoint.ManifestFile)
				}
			}
		}
		return "", diag.Runtimef(diag.CodeCorruptCheckpoint, "%s is neither a checkpoint nor a run directory with a checkpoint", dir)
	}
	return latest, nil
}

// Grown are stage model m's weights grown by g (seeded with seed) from the final checkpoint
// that from names (a checkpoint, or a run directory: its newest), as a run grows a stage
// from the one before.
func Grown(from string, m *program.Model, g program.Grow, seed int64) ([]Tensor, error) {
	dir, err := ResolveCheckpoint(from)
	if err != nil {
		return nil, err
	}
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		return nil, err
	}
	if !c.Manifest.Final {
		return nil, fmt.Errorf("weights: checkpoint %s is not the final one of its stage", dir)
	}
	for _, t := range c.Model {
		for i, v := range t.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: tensor %s holds %v at index %d; training never saves non-finite weights", dir, t.Name, v, i)
			}
		}
	}
	ts, err := Initial(m, seed)
	if err != nil {
		return nil, err
	}
	if _, err := Grow(c.Model, c.Manifest.Model, m, ts, g, seed); err != nil {
		return nil, err
	}
	return ts, nil
}
