package scheduler

import (
	"errors"
	"fmt"
	"testing"
)

func nodes(n int, zone string) []*Node {
	var out []*Node
	for i := range n {
		out = append(out, &Node{ID: fmt.Sprintf("n%03d", i), Zone: zone, Ready: true,
			Capacity: Resources{VCPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10}})
	}
	return out
}

func TestSpreads(t *testing.T) {
	ns := nodes(3, "a")
	got, err := Place(ns, Request{Zone: "a", Size: Resources{VCPUs: 1, MemoryMiB: 1024}, MinCount: 6, MaxCount: 6}, Ratios{1, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, id := range got {
		count[id]++
	}
	for _, n := range ns {
		if count[n.ID] != 2 {
			t.Fatalf("not spread: %v", count)
		}
	}
}

func TestZonesReadinessAndShortage(t *testing.T) {
	ns := append(nodes(2, "a"), nodes(1, "b")...)
	ns[0].Ready = false
	got, err := Place(ns, Request{Zone: "a", Size: Resources{VCPUs: 4, MemoryMiB: 1024}, MinCount: 1, MaxCount: 5}, Ratios{1, 1, 1})
	if err != nil || len(got) != 1 || got[0] != "n001" {
		t.Fatalf("got %v %v", got, err)
	}
	_, err = Place(ns, Request{Zone: "a", Size: Resources{VCPUs: 1, MemoryMiB: 1024}, MinCount: 1, MaxCount: 1}, Ratios{1, 1, 1})
	var ce *CapacityError
	if !errors.As(err, &ce) {
		t.Fatalf("want capacity error, got %v", err)
	}
	t.Log(ce)
	// Overcommit makes room.
	got, err = Place(ns, Request{Zone: "a", Size: Resources{VCPUs: 1, MemoryMiB: 1024}, MinCount: 1, MaxCount: 1}, Ratios{2, 1, 1})
	if err != nil || len(got) != 1 {
		t.Fatalf("overcommit: %v %v", got, err)
	}
	_, err = Place(ns, Request{Zone: "c", Size: Resources{VCPUs: 1}, MinCount: 1, MaxCount: 1}, Ratios{1, 1, 1})
	if !errors.As(err, &ce) {
		t.Fatalf("zone without nodes: %v", err)
	}
}

func BenchmarkPlace(b *testing.B) {
	// 10,000 instances on 1,000 nodes, one at a time (the worst case).
	for b.Loop() {
		ns := nodes(1000, "a")
		for range 10000 {
			if _, err := Place(ns, Request{Zone: "a", Size: Resources{VCPUs: 1, MemoryMiB: 256}, MinCount: 1, MaxCount: 1}, Ratios{4, 1, 1}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
