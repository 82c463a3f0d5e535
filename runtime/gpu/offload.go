package gpu

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
)

// The offloaded optimizer's host arena (cudastep's offload.go): the buffers of the memory
// plan's host tier (the master weights, the gradients' host copies, the AdamW moments) in
// the host program's pinned memory.

// hostFuncs are the host program's entry points into its host arena, present when the
// program offloads its optimizer or runs the unified cache (whose host tier holds the
// weights, gradients and moments).
var hostFuncs = []string{"moec_step_host_upload", "moec_step_host_download"}

// UploadBuffer copies values into buffer b of the program at element offset 0: into the
// device arena, or for a buffer of the host tier into the pinned host arena.
func (s *Session) UploadBuffer(b *step.Buffer, values []float32) error {
	if b.Tier == step.Host {
		return s.moveHost("moec_step_host_upload", b, values)
	}
	return s.Upload(b.Offset, values)
}

// DownloadBuffer copies buffer b's values out of the device arena or, for a buffer of the
// host tier, out of the pinned host arena.
func (s *Session) DownloadBuffer(b *step.Buffer, values []float32) error {
	if b.Tier == step.Host {
		return s.moveHost("moec_step_host_download", b, values)
	}
	return s.Download(b.Offset, values)
}

func (s *Session) moveHost(fn string, b *step.Buffer, values []float32) error {
	if s.fns[fn] == nil {
		return fmt.Errorf("gpu: %s lives in host memory but the program has no host arena (neither the offloaded optimizer nor the unified cache)", b.Name)
	}
	if int64(len(values)) > b.Elements() {
		return fmt.Errorf("gpu: %d values for %s, which holds %d", len(values), b.Name, b.Elements())
	}
	return s.move(fn, b.Offset, values)
}

// loadHostMasters fills, under the offloaded optimizer, each group's master weights in
// host memory (params[G]@host: the group's flat vector, or this rank's shard of it under
// ZeRO 1–3) from get, as runtime/exec's syncHostParams fills them after a load: every
// tensor of the group contributes its elements inside the part.
func (s *Session) loadHostMasters(get func(id params.ID) []float32) error {
	p := s.p
	if !p.Layout.OffloadOpt {
		return nil
	}
	for gi, g := range p.Groups {
		host := -1
		for i, b := range p.Buffers {
			if b.Kind == step.KindOptimizer && b.Tier == step.Host && strings.HasPrefix(b.Name, "params["+g.Name+"]@host") {
				host = i
			}
		}
		if host < 0 {
			continue
		}
		vals := make([]float32, p.Buffers[host].Elements())
		lo := int64(0)
		if g.ZeRO > 0 {
			lo = int64(g.Index) * g.Shard
		}
		if err := flatPart(p, gi, lo, vals, get, false); err != nil {
			return err
		}
		if err := s.UploadBuffer(p.Buffers[host], vals); err != nil {
			return fmt.Errorf("gpu: uploading %s: %w", p.Buffers[host].Name, err)
		}
	}
	return nil
}
