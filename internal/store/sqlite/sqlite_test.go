package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "clipper.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func schemaOf(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, s string
		if err := rows.Scan(&n, &s); err != nil {
			t.Fatal(err)
		}
		out[n] = s
	}
	return out
}

// TestMigrateFromEveryVersion migrates an empty database and a database at
// every older version to the latest, and checks all end with one schema.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	latest := LatestVersion()
	if latest < 1 {
		t.Fatal("no migrations embedded")
	}
	var want map[string]string
	for from := 0; from <= latest; from++ {
		db, err := sql.Open("sqlite", dsn(filepath.Join(t.TempDir(), "m.db"), true))
		if err != nil {
			t.Fatal(err)
		}
		if from > 0 {
			if err := Migrate(ctx, db, from); err != nil {
				t.Fatalf("migrate to %d: %v", from, err)
			}
		}
		if err := Migrate(ctx, db, 0); err != nil {
			t.Fatalf("migrate %d -> latest: %v", from, err)
		}
		// Migrating again is a no-op.
		if err := Migrate(ctx, db, 0); err != nil {
			t.Fatalf("re-migrate: %v", err)
		}
		var v int
		if err := db.QueryRow(`SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v != latest {
			t.Fatalf("from %d: version %d, %v; want %d", from, v, err, latest)
		}
		got := schemaOf(t, db)
		if want == nil {
			want = got
		} else if len(got) != len(want) {
			t.Fatalf("from %d: schema has %d objects, want %d", from, len(got), len(want))
		} else {
			for k, s := range want {
				if got[k] != s {
					t.Fatalf("from %d: %s differs:\n%s\nwant\n%s", from, k, got[k], s)
				}
			}
		}
		db.Close()
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	db, _ := sql.Open("sqlite", dsn(path, true))
	if err := Migrate(ctx, db, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, path); err == nil {
		t.Fatal("opened a store newer than the binary")
	}
}

func TestInstancesAndTags(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateAccount(model.Account{ID: "000000000001", Name: "admin", Created: now}); err != nil {
			return err
		}
		if err := tx.InsertReservation(model.Reservation{ID: "r-1", AccountID: "000000000001", ClientToken: "tok", Created: now}); err != nil {
			return err
		}
		for _, id := range []string{"i-a", "i-b"} {
			rev, err := tx.NextRev()
			if err != nil {
				return err
			}
			if err := tx.InsertInstance(model.Instance{ID: id, AccountID: "000000000001", ReservationID: "r-1",
				ImageID: "ami-1", InstanceType: "t3.micro", VCPUs: 2, MemoryMiB: 1024, Zone: "a",
				NodeID: "node-1", State: model.StatePending, Power: model.PowerRunning, Rev: rev,
				LaunchTime: now, StateChanged: now, UserData: []byte("hi")}); err != nil {
				return err
			}
		}
		return tx.SetTags("000000000001", "i-a", []model.Tag{{Key: "Name", Value: "web"}, {Key: "env", Value: ""}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Duplicate client token is a domain duplicate.
	err = s.Update(ctx, func(tx store.Tx) error {
		return tx.InsertReservation(model.Reservation{ID: "r-2", AccountID: "000000000001", ClientToken: "tok", Created: now})
	})
	if !errors.Is(err, model.ErrDuplicate) {
		t.Fatalf("duplicate token: %v", err)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		i, err := tx.GetInstance("i-a")
		if err != nil {
			return err
		}
		if i.LaunchTime != now || string(i.UserData) != "hi" || i.Rev != 1 {
			t.Errorf("round trip: %+v", i)
		}
		if _, err := tx.GetInstance("i-zz"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("missing instance: %v", err)
		}
		since, err := tx.ListInstances(store.InstanceQuery{NodeID: "node-1", SinceRev: 1})
		if err != nil || len(since) != 1 || since[0].ID != "i-b" {
			t.Errorf("since rev 1: %v %v", since, err)
		}
		tags, err := tx.Tags("000000000001", []string{"i-a", "i-b"})
		if err != nil || len(tags["i-a"]) != 2 || len(tags["i-b"]) != 0 {
			t.Errorf("tags: %v %v", tags, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Terminate and purge.
	err = s.Update(ctx, func(tx store.Tx) error {
		i, _ := tx.GetInstance("i-a")
		i.State, i.StateChanged = model.StateTerminated, now.Add(-2*time.Hour)
		if err := tx.UpdateInstance(i); err != nil {
			return err
		}
		n, err := tx.PurgeInstances(now.Add(-time.Hour))
		if n != 1 {
			t.Errorf("purged %d", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNodeUsageTriggers checks the trigger-kept usage against a full sum
// through a launch, a stop, a start, a termination and a purge.
func TestNodeUsageTriggers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Now()
	sum := func(tx store.Tx) model.Capacity {
		insts, err := tx.ListInstances(store.InstanceQuery{NodeID: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		var c model.Capacity
		for _, i := range insts {
			if i.State != model.StateTerminated {
				c.DiskMiB += int64(i.DiskGiB) * 1024
				if i.State != model.StateStopped {
					c.VCPUs += i.VCPUs
					c.MemoryMiB += i.MemoryMiB
				}
			}
		}
		return c
	}
	check := func(step string) {
		t.Helper()
		s.View(ctx, func(tx store.Tx) error {
			u, err := tx.NodeUsage()
			if err != nil {
				t.Fatal(err)
			}
			if want := sum(tx); u["n1"] != want {
				t.Fatalf("%s: usage %+v, sum %+v", step, u["n1"], want)
			}
			return nil
		})
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Update(ctx, func(tx store.Tx) error {
		must(tx.CreateAccount(model.Account{ID: "1", Name: "a", Created: now}))
		must(tx.UpsertNode(model.Node{ID: "n1", Name: "n1", Zone: "z", State: model.NodeReady, Capacity: model.Capacity{VCPUs: 8, MemoryMiB: 8192}, LastSeen: now, Created: now}))
		must(tx.InsertReservation(model.Reservation{ID: "r", AccountID: "1", Created: now}))
		for _, id := range []string{"i-a", "i-b"} {
			must(tx.InsertInstance(model.Instance{ID: id, AccountID: "1", ReservationID: "r", VCPUs: 2, MemoryMiB: 512, DiskGiB: 1,
				NodeID: "n1", State: model.StatePending, Power: model.PowerRunning, LaunchTime: now, StateChanged: now}))
		}
		return nil
	}))
	check("launch")
	// Changes that keep the usage (pending to running, running to
	// stopping) as well as those that change it.
	for _, st := range []model.InstanceState{model.StateStopped, model.StatePending, model.StateRunning,
		model.StateStopping, model.StateStopped, model.StatePending, model.StateTerminated} {
		must(s.Update(ctx, func(tx store.Tx) error {
			i, err := tx.GetInstance("i-a")
			must(err)
			i.State, i.StateChanged = st, now.Add(-2*time.Hour)
			return tx.UpdateInstance(i)
		}))
		check(string(st))
	}
	must(s.Update(ctx, func(tx store.Tx) error { _, err := tx.PurgeInstances(now); return err }))
	check("purge")
}

// TestNodeNetworkTriggers checks node_vpcs and node_groups against direct
// queries through launch, group changes, a move and termination.
func TestNodeNetworkTriggers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, node string, wantVPCs, wantGroups int) {
		t.Helper()
		s.View(ctx, func(tx store.Tx) error {
			v, err := tx.NodeVPCs(node)
			must(err)
			g, err := tx.NodeGroups(node)
			must(err)
			if len(v) != wantVPCs || len(g) != wantGroups {
				t.Fatalf("%s: node %s has vpcs %v groups %v, want %d and %d", step, node, v, g, wantVPCs, wantGroups)
			}
			return nil
		})
	}
	must(s.Update(ctx, func(tx store.Tx) error {
		must(tx.CreateAccount(model.Account{ID: "1", Name: "a", Created: now}))
		must(tx.InsertVPC(model.VPC{ID: "vpc-1", AccountID: "1", CIDR: "10.0.0.0/16", Created: now}))
		for _, g := range []string{"sg-1", "sg-2"} {
			must(tx.InsertGroup(model.SecurityGroup{ID: g, AccountID: "1", VPCID: "vpc-1", Name: g, Description: "d", Created: now}))
		}
		must(tx.InsertReservation(model.Reservation{ID: "r", AccountID: "1", Created: now}))
		for _, id := range []string{"i-a", "i-b"} {
			must(tx.InsertInstance(model.Instance{ID: id, AccountID: "1", ReservationID: "r", VCPUs: 1, MemoryMiB: 1,
				NodeID: "n1", VPCID: "vpc-1", State: model.StatePending, Power: model.PowerRunning, LaunchTime: now, StateChanged: now}))
			must(tx.SetInstanceGroups(id, []string{"sg-1"}))
		}
		return nil
	}))
	check("launch", "n1", 1, 1)
	must(s.Update(ctx, func(tx store.Tx) error { return tx.SetInstanceGroups("i-a", []string{"sg-1", "sg-2"}) }))
	check("more groups", "n1", 1, 2)
	must(s.Update(ctx, func(tx store.Tx) error {
		i, err := tx.GetInstance("i-a")
		must(err)
		i.NodeID = "n2"
		return tx.UpdateInstance(i)
	}))
	check("move: old node", "n1", 1, 1)
	check("move: new node", "n2", 1, 2)
	must(s.Update(ctx, func(tx store.Tx) error {
		for _, id := range []string{"i-a", "i-b"} {
			i, err := tx.GetInstance(id)
			must(err)
			must(tx.SetInstanceGroups(id, nil))
			i.State = model.StateTerminated
			must(tx.UpdateInstance(i))
		}
		return nil
	}))
	check("terminated n1", "n1", 0, 0)
	check("terminated n2", "n2", 0, 0)
}

// TestDeleteNode: a deleted node is gone by ID and by name, and its name
// can be taken by a new node; deleting it again is not found.
func TestDeleteNode(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Now()
	node := func(id string) model.Node {
		return model.Node{ID: id, Name: "n1", Zone: "z", State: model.NodeReady, Capacity: model.Capacity{VCPUs: 1, MemoryMiB: 1}, LastSeen: now, Created: now}
	}
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.UpsertNode(node("nd-1")); err != nil {
			return err
		}
		if err := tx.UpsertNode(node("nd-2")); model.KindOf(err) != model.KindDuplicate {
			t.Errorf("a second node under the name: %v", err)
		}
		if err := tx.DeleteNode("nd-1"); err != nil {
			return err
		}
		if _, err := tx.GetNodeByName("n1"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("by name after delete: %v", err)
		}
		if err := tx.DeleteNode("nd-1"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("delete again: %v", err)
		}
		return tx.UpsertNode(node("nd-2"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestViewCancelled checks that a read whose context ends stops at its next
// statement with the context's error.
func TestViewCancelled(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	var first, second error
	err := s.View(ctx, func(tx store.Tx) error {
		_, first = tx.Rev()
		cancel()
		_, second = tx.Rev()
		_, err := tx.ListNodes()
		return err
	})
	if first != nil {
		t.Fatalf("read before cancel: %v", first)
	}
	if !errors.Is(second, context.Canceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("reads after cancel: %v, %v; want context.Canceled", second, err)
	}
	if err := s.View(ctx, func(store.Tx) error { t.Fatal("ran"); return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("view with an ended context: %v", err)
	}
}

// TestInstanceGroupsOrder checks that an instance's groups come back in the
// order they were given, not in the order of their IDs.
func TestInstanceGroupsOrder(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Now()
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateAccount(model.Account{ID: "1", Name: "a", Created: now}); err != nil {
			return err
		}
		if err := tx.InsertVPC(model.VPC{ID: "vpc-1", AccountID: "1", CIDR: "10.0.0.0/16", Created: now}); err != nil {
			return err
		}
		for _, g := range []string{"sg-1", "sg-2", "sg-3"} {
			if err := tx.InsertGroup(model.SecurityGroup{ID: g, AccountID: "1", VPCID: "vpc-1", Name: g, Description: "d", Created: now}); err != nil {
				return err
			}
		}
		if err := tx.InsertReservation(model.Reservation{ID: "r", AccountID: "1", Created: now}); err != nil {
			return err
		}
		for id, groups := range map[string][]string{"i-a": {"sg-3", "sg-1", "sg-2"}, "i-b": {"sg-2"}, "i-c": nil} {
			if err := tx.InsertInstance(model.Instance{ID: id, AccountID: "1", ReservationID: "r", VCPUs: 1, MemoryMiB: 1,
				VPCID: "vpc-1", State: model.StatePending, Power: model.PowerRunning, LaunchTime: now, StateChanged: now}); err != nil {
				return err
			}
			if err := tx.SetInstanceGroups(id, groups); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string][]string
	err = s.View(ctx, func(tx store.Tx) error {
		var err error
		got, err = tx.InstanceGroups([]string{"i-a", "i-b", "i-c"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"i-a": {"sg-3", "sg-1", "sg-2"}, "i-b": {"sg-2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("InstanceGroups = %v, want %v", got, want)
	}
}
