// Package computetest is the conformance suite every compute.Hypervisor
// must pass: the fake driver always, the qemu driver with a real VM.
package computetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
)

// Harness gives the suite what it needs from a driver.
type Harness struct {
	// New returns a fresh driver over an empty state directory.
	New func(t *testing.T) compute.Hypervisor
	// Reopen returns a second driver over the same state as d, as a
	// restarted agent would create it.
	Reopen func(t *testing.T, d compute.Hypervisor) compute.Hypervisor
	// Spec returns a bootable spec for id.
	Spec func(t *testing.T, id string) compute.Spec
	// Ready is the console line that proves the guest booted.
	Ready string
	// Boot bounds how long a boot may take (TCG is slow).
	Boot time.Duration
	// Parallel is how many VMs the concurrency test starts at once.
	Parallel int
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Boot == 0 {
		h.Boot = 30 * time.Second
	}
	if h.Parallel == 0 {
		h.Parallel = 2
	}
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, h) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, h) })
	t.Run("Readopt", func(t *testing.T) { testReadopt(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	if _, ok := h.New(t).(compute.Migrator); ok {
		t.Run("Migrate", func(t *testing.T) { testMigrate(t, h) })
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitConsole polls the console until it holds want (count times).
func WaitConsole(t *testing.T, d compute.Hypervisor, id, want string, count int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var out []byte
	for time.Now().Before(deadline) {
		var err error
		out, err = d.Console(context.Background(), id, 1<<20)
		if err != nil {
			t.Fatalf("console %s: %v", id, err)
		}
		if strings.Count(string(out), want) >= count {
			return string(out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %q seen fewer than %d times within %s; console:\n%s", id, want, count, within, out)
	return ""
}

func waitState(t *testing.T, d compute.Hypervisor, id string, want compute.State, within time.Duration) compute.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	var st compute.Status
	var err error
	for time.Now().Before(deadline) {
		st, err = d.Status(context.Background(), id)
		if err == nil && st.State == want {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: state %v (%v), want %s", id, st.State, err, want)
	return st
}

func cleanup(t *testing.T, d compute.Hypervisor, id string) {
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), id); err != nil {
			t.Errorf("cleanup delete %s: %v", id, err)
		}
	})
}

func testLifecycle(t *testing.T, h Harness) {
	d := h.New(t)
	ctx := ctxFor(t, 5*h.Boot)
	id := "i-0c0ffee000000001"
	spec := h.Spec(t, id)
	cleanup(t, d, id)
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatalf("second Create with the same spec: %v", err)
	}
	st, err := d.Status(ctx, id)
	if err != nil || st.State != compute.StateStopped || st.PID != 0 {
		t.Fatalf("after Create: %+v %v", st, err)
	}
	if err := d.Reboot(ctx, id); !errors.Is(err, compute.ErrInvalidState) {
		t.Fatalf("Reboot of a stopped VM: %v", err)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, d, id, compute.StateRunning, h.Boot)
	if st.PID <= 0 || st.StartedAt.IsZero() {
		t.Fatalf("running without a PID: %+v", st)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if again, _ := d.Status(ctx, id); again.PID != st.PID {
		t.Fatalf("second Start changed the PID: %d -> %d", st.PID, again.PID)
	}
	WaitConsole(t, d, id, h.Ready, 1, h.Boot)
	if err := d.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	WaitConsole(t, d, id, h.Ready, 2, h.Boot)
	if err := d.Stop(ctx, id, h.Boot); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, d, id, compute.StateStopped, h.Boot)
	if st.PID != 0 {
		t.Fatalf("stopped with a PID: %+v", st)
	}
	// The guest listens to the power button, so the stop was graceful.
	if st.ExitReason != "guest powered off" {
		t.Fatalf("graceful stop ended with %q", st.ExitReason)
	}
	if err := d.Stop(ctx, id, h.Boot); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// The console survives stop and start.
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	WaitConsole(t, d, id, h.Ready, 3, h.Boot)
	vms, err := d.List(ctx)
	if err != nil || len(vms) != 1 || vms[0].ID != id || vms[0].State != compute.StateRunning {
		t.Fatalf("List: %+v %v", vms, err)
	}
	if err := d.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(ctx, id); !errors.Is(err, compute.ErrNotFound) {
		t.Fatalf("Status after Delete: %v", err)
	}
	if vms, _ := d.List(ctx); len(vms) != 0 {
		t.Fatalf("List after Delete: %+v", vms)
	}
	if err := d.Delete(ctx, id); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func testErrors(t *testing.T, h Harness) {
	d := h.New(t)
	ctx := ctxFor(t, h.Boot)
	missing := "i-0000000000000bad0"
	for name, err := range map[string]error{
		"Start":  d.Start(ctx, missing),
		"Stop":   d.Stop(ctx, missing, time.Second),
		"Reboot": d.Reboot(ctx, missing),
	} {
		if !errors.Is(err, compute.ErrNotFound) {
			t.Errorf("%s of an unknown VM: %v", name, err)
		}
	}
	if _, err := d.Status(ctx, missing); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("Status of an unknown VM: %v", err)
	}
	if _, err := d.Console(ctx, missing, 100); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("Console of an unknown VM: %v", err)
	}
	bad := h.Spec(t, "i-0000000000000bad1")
	bad.Kernel, bad.BaseImage = "", ""
	if err := d.Create(ctx, bad); !errors.Is(err, compute.ErrInvalidSpec) {
		t.Errorf("Create with nothing to boot: %v", err)
	}
	bad = h.Spec(t, "i-0000000000000bad2")
	bad.MemoryMiB = 0
	if err := d.Create(ctx, bad); !errors.Is(err, compute.ErrInvalidSpec) {
		t.Errorf("Create without memory: %v", err)
	}
	good := h.Spec(t, "i-0000000000000bad3")
	cleanup(t, d, good.ID)
	if err := d.Create(ctx, good); err != nil {
		t.Fatal(err)
	}
	good.VCPUs++
	if err := d.Create(ctx, good); !errors.Is(err, compute.ErrExists) {
		t.Errorf("Create of an existing ID with another spec: %v", err)
	}
}

func testReadopt(t *testing.T, h Harness) {
	d := h.New(t)
	ctx := ctxFor(t, 3*h.Boot)
	id := "i-0c0ffee000000002"
	cleanup(t, d, id)
	if err := d.Create(ctx, h.Spec(t, id)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	before := waitState(t, d, id, compute.StateRunning, h.Boot)
	WaitConsole(t, d, id, h.Ready, 1, h.Boot)
	d2 := h.Reopen(t, d)
	after, err := d2.Status(ctx, id)
	if err != nil || after.State != compute.StateRunning || after.PID != before.PID {
		t.Fatalf("re-adopted VM: %+v %v, was %+v", after, err, before)
	}
	vms, err := d2.List(ctx)
	if err != nil || len(vms) != 1 {
		t.Fatalf("List after reopen: %+v %v", vms, err)
	}
	if out, err := d2.Console(ctx, id, 1<<20); err != nil || !strings.Contains(string(out), h.Ready) {
		t.Fatalf("console after reopen: %v", err)
	}
	if err := d2.Stop(ctx, id, h.Boot); err != nil {
		t.Fatal(err)
	}
	waitState(t, d2, id, compute.StateStopped, h.Boot)
	if err := d2.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func testConcurrent(t *testing.T, h Harness) {
	d := h.New(t)
	ctx := ctxFor(t, 4*h.Boot)
	var wg sync.WaitGroup
	errs := make(chan error, h.Parallel)
	for i := range h.Parallel {
		id := fmt.Sprintf("i-0c0ffee1%08x", i)
		cleanup(t, d, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Create(ctx, h.Spec(t, id)); err != nil {
				errs <- err
				return
			}
			if err := d.Start(ctx, id); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range h.Parallel {
		id := fmt.Sprintf("i-0c0ffee1%08x", i)
		WaitConsole(t, d, id, h.Ready, 1, 2*h.Boot)
	}
	for i := range h.Parallel {
		id := fmt.Sprintf("i-0c0ffee1%08x", i)
		if err := d.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

// testMigrate moves a running VM to a second driver (another host) live:
// a failed attempt leaves it running where it was; a good one leaves it
// running at the destination with its console, and paused at the source.
func testMigrate(t *testing.T, h Harness) {
	src, dst := h.New(t), h.New(t)
	ms, md := src.(compute.Migrator), dst.(compute.Migrator)
	ctx := ctxFor(t, 5*h.Boot)
	id := "i-0c0ffee0000000aa"
	spec := h.Spec(t, id)
	cleanup(t, src, id)
	cleanup(t, dst, id)
	if err := src.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := src.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	before := WaitConsole(t, src, id, h.Ready, 1, h.Boot)
	if err := ms.MigrateTo(ctx, id, "tcp:127.0.0.1:1"); !errors.Is(err, compute.ErrMigrationFailed) {
		t.Fatalf("MigrateTo nowhere: %v, want ErrMigrationFailed", err)
	}
	if st, err := src.Status(ctx, id); err != nil || st.State != compute.StateRunning {
		t.Fatalf("after a failed migration the source is %+v %v, want running", st, err)
	}
	if err := dst.Create(ctx, h.Spec(t, id)); err != nil {
		t.Fatal(err)
	}
	addr, err := md.Incoming(ctx, id, "127.0.0.1", "", []byte(before))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := md.Incoming(ctx, id, "127.0.0.1", "", []byte(before)); err != nil || again != addr {
		t.Fatalf("second Incoming: %q %v, want %q", again, err, addr)
	}
	if st, err := dst.Status(ctx, id); err != nil || st.State != compute.StateIncoming {
		t.Fatalf("waiting destination: %+v %v", st, err)
	}
	if err := ms.MigrateTo(ctx, id, addr); err != nil {
		t.Fatal(err)
	}
	if st, err := src.Status(ctx, id); err != nil || st.State != compute.StateMigrated {
		t.Fatalf("source after the migration: %+v %v", st, err)
	}
	waitState(t, dst, id, compute.StateRunning, h.Boot)
	// The guest runs on: it answers a reset, and its console kept what it
	// printed on the source.
	if err := dst.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	WaitConsole(t, dst, id, h.Ready, 2, h.Boot)
	// The destination is lost: the source resumes and runs on.
	if err := dst.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := ms.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, err := src.Status(ctx, id); err != nil || st.State != compute.StateRunning {
		t.Fatalf("source after Resume: %+v %v", st, err)
	}
	if err := ms.Resume(ctx, id); err != nil {
		t.Fatalf("second Resume: %v", err)
	}
	if err := src.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	WaitConsole(t, src, id, h.Ready, 2, h.Boot)
}
