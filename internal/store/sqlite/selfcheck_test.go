package sqlite

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

func TestNodeSelfChecks(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	put := func(id string, sc model.NodeSelfCheck) error {
		return s.Update(ctx, func(tx store.Tx) error { return tx.PutNodeSelfCheck(id, sc) })
	}
	get := func() map[string]model.NodeSelfCheck {
		t.Helper()
		var out map[string]model.NodeSelfCheck
		if err := s.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = tx.NodeSelfChecks()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := s.Update(ctx, func(tx store.Tx) error {
		for _, id := range []string{"n1", "n2"} {
			if err := tx.UpsertNode(model.Node{ID: id, Name: id, Zone: "z", State: model.NodeReady, LastSeen: now, Created: now}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := get(); len(got) != 0 {
		t.Fatalf("self-checks before any: %+v", got)
	}
	bad := model.NodeSelfCheck{Checked: now, MTU: 1500, Peers: 2, Conditions: []model.NodeCondition{
		{Type: model.CondPeerPath, Status: model.CondBlackHole, Peer: "10.0.0.2", MTU: 1500, PathMTU: 1400, Message: "vanish"},
		{Type: model.CondUnderlayMTU, Status: model.CondMTUMismatch, MTU: 1500, PathMTU: 1450, Message: "small"},
	}}
	ok := model.NodeSelfCheck{Checked: now.Add(time.Minute), MTU: 1500, Peers: 1, Conditions: []model.NodeCondition{}}
	for _, step := range []struct {
		id string
		sc model.NodeSelfCheck
	}{{"n1", bad}, {"n2", ok}} {
		if err := put(step.id, step.sc); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]model.NodeSelfCheck{"n1": bad, "n2": ok}
	if got := get(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// A new check replaces the old one, conditions included.
	if err := put("n1", ok); err != nil {
		t.Fatal(err)
	}
	if got := get()["n1"]; !reflect.DeepEqual(got, ok) {
		t.Fatalf("after the healthy check: %+v, want %+v", got, ok)
	}
	// Only known nodes have self-checks.
	if err := put("n-unknown", ok); err == nil {
		t.Fatal("stored a self-check for a node that does not exist")
	}
}
