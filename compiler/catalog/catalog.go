package catalog

import (
	"sort"

	"github.com/moec-dev/moec/compiler/program"
)

const (
	giB = 1 << 30
	gB  = 1e9
	tF  = 1e12
)

// entries returns a fresh catalog on every call: there is no package-level mutable state,
// so a caller that edits a Device never changes what the next caller sees.
func entries() map[string]program.Device {
	return map[string]program.Device{
		// NVIDIA A100 Tensor Core GPU datasheet (2021): 40 GB HBM2, 1,555 GB/s; dense
		// 312 TFLOP/s FP16/BF16, 156 TF32, 19.5 FP32; NVLink3 600 GB/s total (300 GB/s
		// each way); PCIe Gen4 x16 ~32 GB/s each way (25 GB/s sustained is typical).
		"a100_40gb": {
			Name: "a100_40gb", Memory: 40 * giB,
			PeakFLOPs:    map[program.Precision]float64{program.FP32: 19.5 * tF, program.TF32: 156 * tF, program.FP16: 312 * tF, program.BF16: 312 * tF, program.INT8: 624 * tF},
			HBMBandwidth: 1555 * gB, IntraLink: 300 * gB, HostLink: 25 * gB, Reserve: 2 * giB, IntraLinkName: "nvlink3",
		},
		// Same datasheet: 80 GB HBM2e at 2,039 GB/s (SXM); compute as the 40 GB part.
		"a100_80gb": {
			Name: "a100_80gb", Memory: 80 * giB,
			PeakFLOPs:    map[program.Precision]float64{program.FP32: 19.5 * tF, program.TF32: 156 * tF, program.FP16: 312 * tF, program.BF16: 312 * tF, program.INT8: 624 * tF},
			HBMBandwidth: 2039 * gB, IntraLink: 300 * gB, HostLink: 25 * gB, Reserve: 2 * giB, IntraLinkName: "nvlink3",
		},
		// NVIDIA H100 datasheet (SXM5): 80 GB HBM3 at 3.35 TB/s; dense 989 TFLOP/s
		// FP16/BF16, 495 TF32, 67 FP32, 1,979 FP8; NVLink4 900 GB/s total (450 each way);
		// PCIe Gen5 x16 ~64 GB/s each way (50 sustained).
		"h100_80gb": {
			Name: "h100_80gb", Memory: 80 * giB,
			PeakFLOPs:    map[program.Precision]float64{program.FP32: 67 * tF, program.TF32: 495 * tF, program.FP16: 989 * tF, program.BF16: 989 * tF, program.FP8: 1979 * tF, program.INT8: 1979 * tF},
			HBMBandwidth: 3350 * gB, IntraLink: 450 * gB, HostLink: 50 * gB, Reserve: 2 * giB, IntraLinkName: "nvlink4",
		},
		// NVIDIA H200 datasheet (SXM): 141 GB HBM3e at 4.8 TB/s; compute as H100 SXM.
		"h200_141gb": {
			Name: "h200_141gb", Memory: 141 * gB,
			PeakFLOPs:    map[program.Precision]float64{program.FP32: 67 * tF, program.TF32: 495 * tF, program.FP16: 989 * tF, program.BF16: 989 * tF, program.FP8: 1979 * tF, program.INT8: 1979 * tF},
			HBMBandwidth: 4800 * gB, IntraLink: 450 * gB, HostLink: 50 * gB, Reserve: 2 * giB, IntraLinkName: "nvlink4",
		},
		// A CPU host used as its own "device" (the embedded default): 2 AVX-512 cores at
		// ~150 GFLOP/s each fp32 with OpenBLAS (measured ~300 GFLOP/s sgemm on 2 cores),
		// DDR bandwidth ~20 GB/s, memory given by the cluster's host_memory.
		"cpu": {
			Name: "cpu", Memory: 24 * giB,
			PeakFLOPs:    map[program.Precision]float64{program.FP32: 0.3 * tF, program.BF16: 0.3 * tF, program.FP16: 0.3 * tF},
			HBMBandwidth: 20 * gB, IntraLink: 10 * gB, HostLink: 20 * gB, Reserve: 0, IntraLinkName: "shared-memory",
		},
	}
}

// Lookup returns the catalog entry for name.
func Lookup(name string) (program.Device, bool) {
	d, ok := entries()[name]
	return d, ok
}

// Names lists every catalog entry, sorted.
func Names() []string {
	var names []string
	for n := range entries() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
