package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
)

// A node's self-check is stored as it came, minus what the controller
// cannot vouch for: unknown kinds are dropped, long texts cut.
func TestRecordSelfCheck(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	long := strings.Repeat("é", maxConditionText) // two bytes each
	sc := model.NodeSelfCheck{Checked: time.Now(), MTU: 1500, Peers: 3, Conditions: []model.NodeCondition{
		{Type: model.CondPeerPath, Status: model.CondBlackHole, Peer: "10.0.0.2", MTU: 1500, PathMTU: 1400, Message: long},
		{Type: "gremlins", Status: model.CondBlackHole, Message: "from a newer node"},
		{Type: model.CondPeerPath, Status: "haunted", Message: "from a newer node"},
	}}
	if err := f.svc.RecordSelfCheck(ctx, f.node, sc); err != nil {
		t.Fatal(err)
	}
	all, err := f.svc.NodeSelfChecks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := all[f.node]
	if len(got.Conditions) != 1 || got.Conditions[0].Peer != "10.0.0.2" || got.MTU != 1500 || got.Peers != 3 {
		t.Fatalf("stored %+v, want the one known condition", got)
	}
	if m := got.Conditions[0].Message; len(m) > maxConditionText || !strings.HasPrefix(long, m) || !strings.HasSuffix(m, "é") {
		t.Errorf("message of %d bytes, want it cut on a character boundary to at most %d", len(m), maxConditionText)
	}
	if err := f.svc.RecordSelfCheck(ctx, "n-nowhere", sc); err == nil {
		t.Error("recorded a self-check for a node that does not exist")
	}
}
