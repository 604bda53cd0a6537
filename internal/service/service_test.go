package service

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/store"
	"github.com/clipper-cloud/clipper/internal/store/sqlite"
)

type memBlobs map[string][]byte

func (m memBlobs) Open(sha string) (io.ReadCloser, int64, error) {
	b, ok := m[sha]
	if !ok {
		return nil, 0, os.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

type recorder struct{ nodes []string }

func (r *recorder) NodesChanged(ids ...string) { r.nodes = append(r.nodes, ids...) }

type fixture struct {
	svc    *Service
	st     store.Store
	caller Caller
	node   string
	image  string
	notes  *recorder
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	manifest := []byte(`{"kernel":{"SHA256":"` + sha64("a") + `","Size":10},"machine":"microvm"}`)
	blobs := memBlobs{sha64("d"): manifest}
	rec := &recorder{}
	svc, err := New(st, DefaultConfig(), blobs, rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.EnsureAdmin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{svc: svc, st: st, caller: Caller{AccountID: key.AccountID}, notes: rec}
	reg, err := svc.RegisterNode(ctx, nodeproto.Registration{Name: "n1", Capacity: model.Capacity{VCPUs: 4, MemoryMiB: 16384, DiskMiB: 100000}})
	if err != nil {
		t.Fatal(err)
	}
	f.node = reg.NodeID
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.PutBlob(model.BlobRef{SHA256: sha64("a"), Size: 10}) }); err != nil {
		t.Fatal(err)
	}
	img, err := svc.RegisterImage(ctx, f.caller, RegisterInput{Name: "guest", Location: ManifestPrefix + sha64("d")})
	if err != nil {
		t.Fatal(err)
	}
	f.image = img.ID
	return f
}

func sha64(c string) string { return string(bytes.Repeat([]byte(c), 64)) }

func (f *fixture) report(t *testing.T, id, state string) {
	t.Helper()
	_, err := f.svc.ReportNode(context.Background(), f.node, nodeproto.Report{Instances: []nodeproto.ObservedInstance{{ID: id, State: state}}})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) state(t *testing.T, id string) model.Instance {
	t.Helper()
	res, _, err := f.svc.DescribeInstances(context.Background(), f.caller, []string{id}, nil, Page{})
	if err != nil || len(res) != 1 {
		t.Fatalf("describe %s: %v", id, err)
	}
	return res[0].Instances[0]
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	res, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: f.image, MinCount: 2, MaxCount: 2,
		Tags: []model.Tag{{Key: "Name", Value: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Instances) != 2 || len(f.notes.nodes) != 1 {
		t.Fatalf("run: %d instances, notified %v", len(res.Instances), f.notes.nodes)
	}
	id := res.Instances[0].ID
	d, err := f.svc.NodeDesired(ctx, f.node, 0)
	if err != nil || !d.Full || len(d.Instances) != 2 || d.Instances[0].Network.PrivateIP == "" {
		t.Fatalf("desired: %+v %v", d, err)
	}
	if got := f.state(t, id).State; got != model.StatePending {
		t.Fatalf("state before the node reports: %s", got)
	}
	f.report(t, id, nodeproto.ObsRunning)
	if got := f.state(t, id).State; got != model.StateRunning {
		t.Fatalf("after report: %s", got)
	}
	// Incremental desired state only returns what changed.
	d2, _ := f.svc.NodeDesired(ctx, f.node, d.Rev)
	if d2.Full || len(d2.Instances) != 0 {
		t.Fatalf("no change expected: %+v", d2)
	}
	ch, err := f.svc.StopInstances(ctx, f.caller, []string{id}, false)
	if err != nil || ch[0].Previous != model.StateRunning || ch[0].Current != model.StateStopping {
		t.Fatalf("stop: %+v %v", ch, err)
	}
	d3, _ := f.svc.NodeDesired(ctx, f.node, d.Rev)
	if len(d3.Instances) != 1 || d3.Instances[0].Power != model.PowerStopped {
		t.Fatalf("desired after stop: %+v", d3)
	}
	f.report(t, id, nodeproto.ObsStopped)
	if got := f.state(t, id).State; got != model.StateStopped {
		t.Fatalf("stopped: %s", got)
	}
	if _, err := f.svc.StartInstances(ctx, f.caller, []string{id}); err != nil {
		t.Fatal(err)
	}
	f.report(t, id, nodeproto.ObsRunning)
	if err := f.svc.RebootInstances(ctx, f.caller, []string{id}); err != nil {
		t.Fatal(err)
	}
	ch, err = f.svc.TerminateInstances(ctx, f.caller, []string{id})
	if err != nil || ch[0].Current != model.StateShuttingDown {
		t.Fatalf("terminate: %+v %v", ch, err)
	}
	if _, err := f.svc.StartInstances(ctx, f.caller, []string{id}); !errors.Is(err, model.ErrIncorrectState) {
		t.Fatalf("start while shutting down: %v", err)
	}
	f.report(t, id, nodeproto.ObsAbsent)
	if i := f.state(t, id); i.State != model.StateTerminated || i.PrivateIP != "" {
		t.Fatalf("terminated: %+v", i)
	}
	// Filters and tags.
	res2, _, err := f.svc.DescribeInstances(ctx, f.caller, nil, []Filter{{Name: "tag:Name", Values: []string{"w*"}},
		{Name: "instance-state-name", Values: []string{"pending", "running"}}}, Page{})
	if err != nil || len(res2) != 1 || len(res2[0].Instances) != 1 || res2[0].Instances[0].ID == id {
		t.Fatalf("filtered: %+v %v", res2, err)
	}
	if _, _, err := f.svc.DescribeInstances(ctx, f.caller, nil, []Filter{{Name: "bogus", Values: []string{"x"}}}, Page{}); !errors.Is(err, model.ErrInvalidParameter) {
		t.Fatalf("bogus filter: %v", err)
	}
}

func TestLaunchFailureCarriesReason(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	res, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: f.image})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Instances[0].ID
	_, err = f.svc.ReportNode(ctx, f.node, nodeproto.Report{Instances: []nodeproto.ObservedInstance{{ID: id, State: nodeproto.ObsFailed, Reason: "qemu exited: boom"}}})
	if err != nil {
		t.Fatal(err)
	}
	i := f.state(t, id)
	if i.State != model.StateShuttingDown || i.Power != model.PowerAbsent || i.StateReason.Code != "Server.InternalError" {
		t.Fatalf("after failure: %+v", i)
	}
	f.report(t, id, nodeproto.ObsAbsent)
	if i := f.state(t, id); i.State != model.StateTerminated || i.StateReason.Message != "Server.InternalError: qemu exited: boom" {
		t.Fatalf("terminated: %+v", i.StateReason)
	}
}

func TestClientTokenAndPaging(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	in := RunInput{ImageID: f.image, InstanceType: "t3.nano", MinCount: 3, MaxCount: 3, ClientToken: "abc"}
	a, err := f.svc.RunInstances(ctx, f.caller, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.svc.RunInstances(ctx, f.caller, in)
	if err != nil || b.ID != a.ID || len(b.Instances) != 3 {
		t.Fatalf("replay: %v %v", b.ID, err)
	}
	in.InstanceType = "t3.micro"
	if _, err := f.svc.RunInstances(ctx, f.caller, in); model.KindOf(err) != model.KindParameterCombination {
		t.Fatalf("mismatched replay: %v", err)
	}
	for range 4 {
		if _, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: f.image, InstanceType: "t3.nano", MinCount: 5, MaxCount: 5}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	tok := ""
	pages := 0
	for {
		res, next, err := f.svc.DescribeInstances(ctx, f.caller, nil, nil, Page{MaxResults: 5, NextToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range res {
			for _, i := range r.Instances {
				if seen[i.ID] {
					t.Fatalf("%s twice", i.ID)
				}
				seen[i.ID] = true
			}
		}
		if next == "" {
			break
		}
		tok = next
	}
	if len(seen) != 23 || pages != 5 {
		t.Fatalf("paged %d instances in %d pages", len(seen), pages)
	}
	if _, _, err := f.svc.DescribeInstances(ctx, f.caller, []string{"i-0123456789abcdef0"}, nil, Page{MaxResults: 5}); model.KindOf(err) != model.KindParameterCombination {
		t.Fatalf("ids+maxresults: %v", err)
	}
}

func TestInsufficientCapacitySaysWhy(t *testing.T) {
	f := newFixture(t)
	_, err := f.svc.RunInstances(context.Background(), f.caller, RunInput{ImageID: f.image, InstanceType: "m5.xlarge", MinCount: 10, MaxCount: 10})
	if model.KindOf(err) != model.KindInsufficientCapacity {
		t.Fatalf("want capacity error, got %v", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("memory")) {
		t.Fatalf("message does not say what was short: %v", err)
	}
}

func TestWildcard(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{`a\*`, "a*", true}, {`a\*`, "ab", false}, {"*b*", "abc", true}, {"running", "running", true},
		{"run", "running", false}, {"*ing", "running", true}, {"é?", "éa", true},
	} {
		if got := Wildcard(c.p, c.s); got != c.want {
			t.Errorf("Wildcard(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"kernel":{"SHA256":"` + sha64("a") + `","Size":10}}`))
	f.Add([]byte(`{"disk":{"SHA256":"` + sha64("b") + `","Size":10},"disk_format":"qcow2"}`))
	f.Add([]byte(`{"kernel":{}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if model.KindOf(err) != model.KindInvalidParameter {
				t.Fatalf("error of kind %v: %v", model.KindOf(err), err)
			}
			return
		}
		if m.Kernel.IsZero() && m.Disk.IsZero() {
			t.Fatal("accepted a manifest with nothing to boot")
		}
	})
}
