package service

import (
	"context"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/store"
)

// TestTerminatedStayAnHour: a terminated instance stays visible for the
// configured hour, then the purge removes it and it is not found.
func TestTerminatedStayAnHour(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	res, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: f.image, MinCount: 2, MaxCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	gone, kept := res.Instances[0].ID, res.Instances[1].ID
	f.report(t, gone, nodeproto.ObsRunning)
	f.report(t, kept, nodeproto.ObsRunning)
	if _, err := f.svc.TerminateInstances(ctx, f.caller, []string{gone}); err != nil {
		t.Fatal(err)
	}
	f.report(t, gone, nodeproto.ObsAbsent)
	ended := f.state(t, gone).StateChanged
	purgeAt := func(d time.Duration) int {
		t.Helper()
		f.svc.SetClock(func() time.Time { return ended.Add(d) })
		n, err := f.svc.Purge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := purgeAt(59 * time.Minute); n != 0 {
		t.Fatalf("purged %d instances before the hour", n)
	}
	if i := f.state(t, gone); i.State != model.StateTerminated {
		t.Fatalf("at 59 min: %s", i.State)
	}
	if n := purgeAt(61 * time.Minute); n != 1 {
		t.Fatalf("purged %d instances after the hour, want 1", n)
	}
	if _, _, err := f.svc.DescribeInstances(ctx, f.caller, []string{gone}, nil, Page{}); model.KindOf(err) != model.KindNotFound {
		t.Fatalf("purged instance: %v", err)
	}
	if i := f.state(t, kept); i.State != model.StateRunning {
		t.Fatalf("the running instance: %s", i.State)
	}
}

// TestClientTokenComparesArguments: a retry that asks for something else
// under the same token is refused, not answered with the first launch.
func TestClientTokenComparesArguments(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.svc.CreateKeyPair(ctx, f.caller, "k1", "", "", nil); err != nil {
		t.Fatal(err)
	}
	in := RunInput{ImageID: f.image, InstanceType: "t3.nano", MinCount: 1, MaxCount: 2, ClientToken: "tok",
		KeyName: "k1", UserData: []byte("#!/bin/sh\n")}
	first, err := f.svc.RunInstances(ctx, f.caller, in)
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*RunInput){
		"key name":  func(r *RunInput) { r.KeyName = "" },
		"user data": func(r *RunInput) { r.UserData = []byte("other") },
		"count":     func(r *RunInput) { r.MinCount, r.MaxCount = 3, 3 },
		"zone":      func(r *RunInput) { r.Zone = "elsewhere-1z" },
	} {
		r := in
		change(&r)
		_, err := f.svc.RunInstances(ctx, f.caller, r)
		if e, ok := err.(*model.Error); !ok || e.Kind != model.KindParameterCombination || e.Resource != "idempotency" {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	again, err := f.svc.RunInstances(ctx, f.caller, in)
	if err != nil || again.ID != first.ID || len(again.Instances) != len(first.Instances) {
		t.Fatalf("identical retry: %v %v", again.ID, err)
	}
}

// TestRootDiskFollowsInstanceType: an image with a 1 GiB disk launched as a
// type with an 8 GiB disk gets 8 GiB, which the node is told; a kernel-only
// image gets no disk.
func TestRootDiskFollowsInstanceType(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	disk := model.BlobRef{SHA256: sha64("b"), Size: 1 << 20}
	manifest := []byte(`{"kernel":{"SHA256":"` + sha64("a") + `","Size":10},"disk":{"SHA256":"` + sha64("b") +
		`","Size":1048576},"disk_format":"qcow2","disk_virtual_size":1073741824,"machine":"microvm"}`)
	f.svc.blobs.(memBlobs)[sha64("e")] = manifest
	if err := f.st.Update(ctx, func(tx store.Tx) error { return tx.PutBlob(disk) }); err != nil {
		t.Fatal(err)
	}
	img, err := f.svc.RegisterImage(ctx, f.caller, RegisterInput{Name: "with-disk", Location: ManifestPrefix + sha64("e")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: img.ID, InstanceType: "t3.micro"})
	if err != nil {
		t.Fatal(err)
	}
	kernelOnly, err := f.svc.RunInstances(ctx, f.caller, RunInput{ImageID: f.image, InstanceType: "t3.micro"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := f.svc.NodeDesired(ctx, f.node, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, di := range d.Instances {
		got[di.ID] = di.DiskGiB
	}
	if got[res.Instances[0].ID] != 8 || got[kernelOnly.Instances[0].ID] != 0 {
		t.Fatalf("disk sizes told to the node: %v", got)
	}
}
