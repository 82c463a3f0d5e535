package check

import (
	"math/big"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// catalogDefault takes a device field from the catalog entry the cluster's gpu names.
// A CPU "device" has the host's memory, so for gpu = cpu gpu_memory defaults to
// host_memory rather than to the catalog's placeholder.
func catalogDefault(key string) computedDefault {
	return func(r *resolver, s *scope) (value, string, bool) {
		gv, ok := r.get(s, "gpu")
		if !ok {
			return value{}, "", false
		}
		dev, ok := catalog.Lookup(gv.s)
		if !ok {
			return value{}, "", false
		}
		from := "catalog " + dev.Name
		intv := func(n int64, d dim) value { return numValue(new(big.Rat).SetInt64(n), d) }
		floatv := func(f float64, d dim) value { return numValue(new(big.Rat).SetFloat64(f), d) }
		switch key {
		case "gpu_memory":
			if dev.Name == "cpu" {
				if hm, ok := r.get(s, "host_memory"); ok {
					return hm, "host_memory", true
				}
			}
			return intv(dev.Memory, dimBytes), from, true
		case "gpu_reserve":
			return intv(dev.Reserve, dimBytes), from, true
		case "peak_flops":
			return floatv(dev.PeakFLOPs[program.BF16], dimFLOPS), from + " (bf16)", true
		case "hbm_bandwidth":
			return floatv(dev.HBMBandwidth, dimRate), from, true
		case "intra_link":
			return floatv(dev.IntraLink, dimRate), from, true
		case "host_link":
			return floatv(dev.HostLink, dimRate), from, true
		}
		return value{}, "", false
	}
}

// resolveClusters evaluates every cluster and overlays written device fields on the
// catalog entry.
func (c *checker) resolveClusters() {
	for _, d := range c.declsOf("cluster") {
		fb := newFlatBlock()
		c.readBody(d.spec, "cluster "+d.name, d.block.Body, d.file, fb)
		s := newScope("cluster "+d.name, d.spec, d.file, d.block.Name, fb.entries, nil)
		s.incomplete = d.block.Broken
		d.scope = s
		if gv, ok := c.r.get(s, "gpu"); ok && gv.kind == kindIdent {
			if _, known := catalog.Lookup(gv.s); !known {
				dg := c.errorf(diag.CodeUnknownDevice, s.rangeOf("gpu"), "gpu `%s` is not in the device catalog", gv.s)
				dg.Suggestion = didYouMean(gv.s, catalog.Names())
				if dg.Suggestion == "" {
					dg.Notes = append(dg.Notes, "catalog entries: "+joinNames(catalog.Names()))
				}
				// The device fields cannot default: mark them failed quietly.
				s.slot("gpu").ok = false
			}
		}
		c.r.evalAll(s)
		cl := &program.Cluster{
			Name: d.name, Nodes: s.int("nodes"), GPUsPerNode: s.int("gpus_per_node"),
			HostMemory: s.i64("host_memory"), HostUsable: s.f64("host_usable"),
			Network: s.f64("network"), NetLatency: s.f64("net_latency"),
			NVMe: s.i64("nvme"), NVMeBW: s.f64("nvme_bandwidth"), Ranks: s.int("ranks"),
			PricePerGPUHour: s.f64("price_per_gpu_hour"), Decl: declSource(d.file, d.block),
		}
		if dev, ok := catalog.Lookup(s.str("gpu")); ok {
			cl.Device = dev
			cl.Device.Memory = s.i64("gpu_memory")
			cl.Device.Reserve = s.i64("gpu_reserve")
			cl.Device.HBMBandwidth = s.f64("hbm_bandwidth")
			cl.Device.IntraLink = s.f64("intra_link")
			cl.Device.HostLink = s.f64("host_link")
			if s.written("peak_flops") {
				// One written number stands for every precision the device runs.
				peak := map[program.Precision]float64{}
				for p := range dev.PeakFLOPs {
					peak[p] = s.f64("peak_flops")
				}
				cl.Device.PeakFLOPs = peak
			}
		}
		if ok(s, "nodes", "network") && cl.Nodes > 1 && cl.Network == 0 {
			dg := c.errorf(diag.CodeNoNetwork, s.rangeOf("nodes"), "cluster %s has %d nodes but no network bandwidth", d.name, cl.Nodes)
			dg.Suggestion = "add `network = 200Gbps` (per node)"
		}
		c.prog.Clusters[d.name] = cl
		c.prog.ClusterOrder = append(c.prog.ClusterOrder, d.name)
		d.prov = s.provenance(nil)
	}
}

func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}
