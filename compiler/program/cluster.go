package program

// Precision names a numeric format.
type Precision string

const (
	FP32 Precision = "fp32"
	TF32 Precision = "tf32"
	FP16 Precision = "fp16"
	BF16 Precision = "bf16"
	FP8  Precision = "fp8"
	INT8 Precision = "int8"
	INT4 Precision = "int4"
)

// Bytes is the storage size of one element.
func (p Precision) Bytes() float64 {
	switch p {
	case FP32, TF32:
		return 4
	case FP16, BF16:
		return 2
	case FP8, INT8:
		return 1
	case INT4:
		return 0.5
	}
	return 4
}

// Device is one accelerator (or a CPU host) as the planner sees it. Values come from the
// catalog (package compiler/catalog) and may be overridden field by field in a cluster.
type Device struct {
	Name          string
	Memory        int64                 // bytes of device memory
	PeakFLOPs     map[Precision]float64 // dense FLOP/s per precision
	HBMBandwidth  float64               // bytes/s
	IntraLink     float64               // bytes/s per device to its node peers (NVLink/PCIe), one direction
	HostLink      float64               // bytes/s host<->device (PCIe), one direction
	Reserve       int64                 // bytes the framework/driver keeps (CUDA context, allocator slack)
	IntraLinkName string                // "nvlink3", "pcie4", ...
}

// Cluster is a resolved cluster declaration.
type Cluster struct {
	Name            string
	Nodes           int
	GPUsPerNode     int
	Device          Device
	HostMemory      int64   // bytes per node
	HostUsable      float64 // fraction of host memory usable for model states (rest: OS, data, pinned buffers)
	Network         float64 // bytes/s per node inter-node bandwidth (declared in bits/s, stored as bytes/s)
	NetLatency      float64 // seconds per message, inter-node
	NVMe            int64   // bytes per node (0 = none)
	NVMeBW          float64 // bytes/s per node
	Ranks           int     // for a local CPU cluster: in-process ranks (0 = not local)
	PricePerGPUHour float64 // for objective = cost (0 = unknown)
	Decl            Source  // the `cluster` declaration (set by compiler/check; zero when built in Go)
}

// GPUs is the total device count.
func (c *Cluster) GPUs() int { return c.Nodes * c.GPUsPerNode }
