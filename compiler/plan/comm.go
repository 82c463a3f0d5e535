package plan

import (
	"math"
	"strconv"
)

// group is a communicator as ranks are numbered: tensor parallel innermost (stride 1),
// then expert parallel, then the rest of data parallel, pipeline outermost (Megatron's
// order), so a group of size n and stride s has min(n, gpus_per_node/s) members per node.
type group struct {
	size, stride int
}

// link is the alpha-beta model of the cluster's two tiers, per device.
type link struct {
	gpn              int
	intraBW, interBW float64 // bytes/s per device, one direction
	intraLat, netLat float64 // seconds per message
	intraName        string
}

func (e *env) link() link {
	c := e.c
	gpn := max(1, c.GPUsPerNode)
	inter := c.Network / float64(gpn) // every device of a node sends at once: each gets its share of the NIC
	name := c.Device.IntraLinkName
	if name == "" {
		name = "intra-node"
	}
	return link{gpn: gpn, intraBW: c.Device.IntraLink, interBW: inter, intraLat: e.a.IntraLatency, netLat: e.a.NetLatency, intraName: name}
}

// split returns members per node k and nodes spanned m.
func (lk link) split(g group) (k, m int) {
	if g.stride >= lk.gpn {
		return 1, g.size
	}
	k = min(g.size, lk.gpn/g.stride)
	k = max(k, 1)
	return k, (g.size + k - 1) / k
}

// tier names where a group's traffic goes.
func (lk link) tier(g group) string {
	if _, m := lk.split(g); m > 1 {
		return "network"
	}
	return lk.intraName
}

// allReduce is a hierarchical ring all-reduce of b bytes: reduce-scatter inside the node,
// all-reduce of each device's 1/k slice across nodes, all-gather inside the node (what NCCL
// does within a constant factor). Volume per device 2(n-1)/n × b.
func (lk link) allReduce(b float64, g group) float64 {
	if g.size <= 1 || b <= 0 {
		return 0
	}
	k, m := lk.split(g)
	var t float64
	if k > 1 {
		t += 2*float64(k-1)/float64(k)*b/lk.intraBW + 2*float64(k-1)*lk.intraLat
	}
	if m > 1 {
		t += 2*float64(m-1)/float64(m)*(b/float64(k))/lk.interBW + 2*float64(m-1)*lk.netLat
	}
	return t
}

// allGather (and reduceScatter) move half an all-reduce's volume.
func (lk link) allGather(b float64, g group) float64 { return lk.allReduce(b, g) / 2 }

// allToAll sends b bytes per device spread evenly over the group: the share to node peers
// goes over the intra link, the rest over the network, concurrently.
func (lk link) allToAll(b float64, g group) float64 {
	if g.size <= 1 || b <= 0 {
		return 0
	}
	k, _ := lk.split(g)
	n := float64(g.size)
	intra := b * float64(k-1) / n / lk.intraBW
	inter := 0.0
	lat := float64(k-1) * lk.intraLat
	if g.size > k {
		inter = b * (n - float64(k)) / n / lk.interBW
		lat = float64(g.size-1) * lk.netLat
	}
	return math.Max(intra, inter) + lat
}

// p2p sends b bytes to the next pipeline stage.
func (lk link) p2p(b float64, g group) float64 {
	if g.size <= 1 || b <= 0 {
		return 0
	}
	if g.stride*g.size > lk.gpn {
		// Some stage boundary crosses nodes, and 1F1B waits for the slowest hop.
		return b/lk.interBW + lk.netLat
	}
	return b/lk.intraBW + lk.intraLat
}

// Comm is one line of the communication table: a collective, for what, over which group
// and link tier, its bytes per device per step and its time.
type Comm struct {
	Collective string  `json:"collective"` // all-reduce, all-gather, reduce-scatter, all-to-all, send-recv, pcie, nvme
	Purpose    string  `json:"purpose"`
	Group      int     `json:"group"`   // ranks in the communicator (0 for PCIe/NVMe)
	Tier       string  `json:"tier"`    // link tier: the intra-node link's name, "network", "pcie", "nvme"
	Bytes      float64 `json:"bytes"`   // bytes each device sends per step
	Seconds    float64 `json:"seconds"` // time per step if nothing overlapped it
	Exposed    bool    `json:"exposed"` // on the critical path (not hidden behind compute)
}

// GroupText is the group column for people: the communicator's size, or "-" for host
// (PCIe) and NVMe transfers, which each device makes alone, in no communicator.
func (c Comm) GroupText() string {
	if c.Group <= 0 {
		return "-"
	}
	return strconv.Itoa(c.Group)
}

// ringVolume is what one device sends in a ring all-reduce of b bytes over n ranks.
func ringVolume(b float64, n int) float64 {
	if n <= 1 {
		return 0
	}
	return 2 * float64(n-1) / float64(n) * b
}
