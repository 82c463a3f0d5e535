package dist

import (
	"fmt"
	"sync"
)

// Component is a part of a rank's memory, named as the plan names it.
type Component int

// The components, in the plan's order.
const (
	Params Component = iota
	Grads
	Optimizer
	Activations
	Dispatch
	Temp
	NumComponents
)

var componentNames = [NumComponents]string{"parameters", "gradients", "optimizer states", "activations", "moe dispatch buffers", "temporary buffers"}

func (c Component) String() string {
	if c < 0 || c >= NumComponents {
		return fmt.Sprintf("component(%d)", int(c))
	}
	return componentNames[c]
}

// Tier is where bytes live: the rank's device budget or the host behind it.
type Tier int

// The tiers. On CPU ranks both are host memory; the runtime still keeps them apart so
// offload and the unified cache move bytes exactly as they would on a GPU machine.
const (
	Device Tier = iota
	Host
	NumTiers
)

func (t Tier) String() string {
	if t == Host {
		return "host"
	}
	return "device"
}

// Meter counts the bytes one rank holds per tier and component, and their peaks. The
// runtime calls Alloc and Free around every buffer it sizes (weights, gradients, optimizer
// moments, workspaces, dispatch and gathered-parameter buffers), so the peaks are what the
// rank held, not what the Go heap happened to keep around. Safe for concurrent use.
type Meter struct {
	mu         sync.Mutex
	cur, peak  [NumTiers][NumComponents]int64
	total, top [NumTiers]int64
}

// Alloc records bytes taken in tier t by component c.
func (m *Meter) Alloc(t Tier, c Component, bytes int64) {
	if m == nil || bytes == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur[t][c] += bytes
	m.peak[t][c] = max(m.peak[t][c], m.cur[t][c])
	m.total[t] += bytes
	m.top[t] = max(m.top[t], m.total[t])
}

// Free records bytes released.
func (m *Meter) Free(t Tier, c Component, bytes int64) { m.Alloc(t, c, -bytes) }

// Current and Peak return the bytes held now and at most by one component.
func (m *Meter) Current(t Tier, c Component) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur[t][c]
}

// Peak is the most bytes component c held in tier t at any time.
func (m *Meter) Peak(t Tier, c Component) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak[t][c]
}

// PeakTotal is the most bytes the tier held at once (not the sum of the per-component
// peaks, which need not coincide).
func (m *Meter) PeakTotal(t Tier) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.top[t]
}
