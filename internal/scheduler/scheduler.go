// Package scheduler places instances on nodes. It is a pure function of the
// nodes' capacity and load, so it runs inside the launch transaction and a
// burst of many instances is placed in one go.
package scheduler

import (
	"fmt"
	"sort"
	"strings"
)

// Resources is an amount of vCPU, memory and disk.
type Resources struct {
	VCPUs     int
	MemoryMiB int
	DiskMiB   int64
}

// Node is a placement candidate.
type Node struct {
	ID       string
	Zone     string
	Ready    bool      // only ready nodes take new instances
	Capacity Resources // physical capacity
	Used     Resources // what placed, non-stopped instances take
}

// Ratios are overcommit factors applied to capacity.
type Ratios struct {
	CPU, Memory, Disk float64
}

// Request asks for count instances of one size.
type Request struct {
	Zone     string // "" means any zone
	Size     Resources
	MinCount int
	MaxCount int
}

// ErrNoCapacity is returned (wrapped in *CapacityError) when fewer than
// MinCount instances fit.
type CapacityError struct {
	Placed int
	Want   int
	Reason string
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("There is not enough capacity to fulfill your request for %d instance(s) (%d fit): %s", e.Want, e.Placed, e.Reason)
}

// Place returns a node ID per instance (between MinCount and MaxCount of
// them), spreading instances over the least loaded nodes. nodes' Used fields
// are updated in place so callers can place several requests in a row.
func Place(nodes []*Node, req Request, r Ratios) ([]string, error) {
	var cands []*Node
	var notReady, wrongZone int
	for _, n := range nodes {
		switch {
		case !n.Ready:
			notReady++
		case req.Zone != "" && n.Zone != req.Zone:
			wrongZone++
		default:
			cands = append(cands, n)
		}
	}
	free := func(n *Node) (cpu, mem float64, disk float64) {
		cpu = float64(n.Capacity.VCPUs)*r.CPU - float64(n.Used.VCPUs)
		mem = float64(n.Capacity.MemoryMiB)*r.Memory - float64(n.Used.MemoryMiB)
		disk = float64(n.Capacity.DiskMiB)*r.Disk - float64(n.Used.DiskMiB)
		return
	}
	fits := func(n *Node) bool {
		c, m, d := free(n)
		return c >= float64(req.Size.VCPUs) && m >= float64(req.Size.MemoryMiB) && d >= float64(req.Size.DiskMiB)
	}
	// load is the largest used fraction of any resource: spread = least loaded first.
	load := func(n *Node) float64 {
		l := frac(n.Used.VCPUs, float64(n.Capacity.VCPUs)*r.CPU)
		l = max(l, frac(n.Used.MemoryMiB, float64(n.Capacity.MemoryMiB)*r.Memory))
		return l
	}
	var out []string
	for len(out) < req.MaxCount {
		var best *Node
		bestLoad := 0.0
		for _, n := range cands {
			if !fits(n) {
				continue
			}
			if l := load(n); best == nil || l < bestLoad || (l == bestLoad && n.ID < best.ID) {
				best, bestLoad = n, l
			}
		}
		if best == nil {
			break
		}
		best.Used.VCPUs += req.Size.VCPUs
		best.Used.MemoryMiB += req.Size.MemoryMiB
		best.Used.DiskMiB += req.Size.DiskMiB
		out = append(out, best.ID)
	}
	if len(out) >= req.MinCount && len(out) > 0 {
		return out, nil
	}
	// Undo and explain.
	for _, id := range out {
		for _, n := range cands {
			if n.ID == id {
				n.Used.VCPUs -= req.Size.VCPUs
				n.Used.MemoryMiB -= req.Size.MemoryMiB
				n.Used.DiskMiB -= req.Size.DiskMiB
			}
		}
	}
	return nil, &CapacityError{Placed: len(out), Want: req.MinCount, Reason: shortage(cands, req, r, notReady, wrongZone, free)}
}

func frac(used int, capacity float64) float64 {
	if capacity <= 0 {
		return 1
	}
	return float64(used) / capacity
}

func shortage(cands []*Node, req Request, r Ratios, notReady, wrongZone int, free func(*Node) (float64, float64, float64)) string {
	if len(cands) == 0 {
		parts := []string{"no ready node"}
		if req.Zone != "" {
			parts[0] += " in availability zone " + req.Zone
		}
		if notReady > 0 {
			parts = append(parts, fmt.Sprintf("%d node(s) not ready", notReady))
		}
		if wrongZone > 0 {
			parts = append(parts, fmt.Sprintf("%d node(s) in other zones", wrongZone))
		}
		return strings.Join(parts, "; ")
	}
	var cpu, mem, disk float64
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	for _, n := range cands {
		c, m, d := free(n)
		cpu, mem, disk = max(cpu, c), max(mem, m), max(disk, d)
	}
	var short []string
	if cpu < float64(req.Size.VCPUs) {
		short = append(short, fmt.Sprintf("vCPU (need %d, at most %.0f free on a node)", req.Size.VCPUs, max(cpu, 0)))
	}
	if mem < float64(req.Size.MemoryMiB) {
		short = append(short, fmt.Sprintf("memory (need %d MiB, at most %.0f MiB free on a node)", req.Size.MemoryMiB, max(mem, 0)))
	}
	if disk < float64(req.Size.DiskMiB) {
		short = append(short, fmt.Sprintf("disk (need %d MiB, at most %.0f MiB free on a node)", req.Size.DiskMiB, max(disk, 0)))
	}
	if len(short) == 0 {
		// Each instance fits somewhere, but not all of them: name the
		// resource that runs out first across the candidate nodes.
		fitBy := func(get func(*Node) float64, need float64) int {
			if need <= 0 {
				return int(^uint(0) >> 1)
			}
			total := 0
			for _, n := range cands {
				total += int(max(get(n), 0) / need)
			}
			return total
		}
		limits := []struct {
			name string
			n    int
		}{
			{"vCPU", fitBy(func(n *Node) float64 { c, _, _ := free(n); return c }, float64(req.Size.VCPUs))},
			{"memory", fitBy(func(n *Node) float64 { _, m, _ := free(n); return m }, float64(req.Size.MemoryMiB))},
			{"disk", fitBy(func(n *Node) float64 { _, _, d := free(n); return d }, float64(req.Size.DiskMiB))},
		}
		sort.SliceStable(limits, func(i, j int) bool { return limits[i].n < limits[j].n })
		return fmt.Sprintf("short of %s: the %d ready node(s) have room for %d more", limits[0].name, len(cands), limits[0].n)
	}
	return "short of " + strings.Join(short, ", ")
}
