package service

import (
	"context"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// TestNodeDownWithinTenSeconds moves the clock past a node's last report:
// the health check that runs every HealthCheckInterval marks it down once
// NodeDownAfter has passed, which with the default configuration is
// within 10 s of the last report, and not before three reports were lost.
func TestNodeDownWithinTenSeconds(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	nodes, _, err := f.svc.Nodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	last := nodes[0].LastSeen
	// The health check runs at its interval: the first run after the
	// node's silence passed NodeDownAfter marks it.
	var downAt time.Duration
	for at := time.Duration(0); at <= 15*time.Second; at += HealthCheckInterval {
		f.svc.SetClock(func() time.Time { return last.Add(at) })
		down, err := f.svc.MarkDownNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(down) == 1 {
			downAt = at
			break
		}
	}
	if downAt == 0 || downAt > 10*time.Second {
		t.Fatalf("down %v after the last report, want within 10 s", downAt)
	}
	if downAt < 3*ReportInterval {
		t.Fatalf("down %v after the last report: fewer than three reports (every %v) lost", downAt, ReportInterval)
	}
	nodes, _, _ = f.svc.Nodes(ctx)
	if nodes[0].State != model.NodeDown {
		t.Fatalf("state %s", nodes[0].State)
	}
	// A report brings it back.
	if _, err := f.svc.ReportNode(ctx, f.node, nodeproto.Report{}); err != nil {
		t.Fatal(err)
	}
	if nodes, _, _ = f.svc.Nodes(ctx); nodes[0].State != model.NodeReady {
		t.Fatalf("after a report: %s", nodes[0].State)
	}
}
