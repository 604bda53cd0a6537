package qemu

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/computetest"
	"github.com/clipper-cloud/clipper/internal/testutil/need"
)

// guestDir finds the test guest built by `make guest-image`.
func guestDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CLIPPER_GUEST")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "build", "guest")
	}
	for _, f := range []string{"vmlinux", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			need.Missing(t, "no test guest in %s (run `make guest-image`; `make test` does): %v", dir, err)
		}
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

func requireQEMU(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots real VMs; skipped with -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		need.Missing(t, "qemu-system-x86_64 is not installed (`make test` installs it)")
	}
}

func newDriver(t testing.TB, dir string) *Driver {
	t.Helper()
	d, err := New(Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// killAll ends every VM under dir, whatever state the test left it in.
func killAll(t testing.TB, dir string) {
	d := newDriver(t, dir)
	vms, _ := d.List(context.Background())
	for _, vm := range vms {
		if err := d.Delete(context.Background(), vm.ID); err != nil {
			t.Errorf("cleanup %s: %v", vm.ID, err)
		}
	}
}

func TestConformance(t *testing.T) {
	requireQEMU(t)
	guest := guestDir(t)
	dirs := map[compute.Hypervisor]string{}
	computetest.Run(t, computetest.Harness{
		New: func(t *testing.T) compute.Hypervisor {
			dir := t.TempDir()
			t.Cleanup(func() { killAll(t, dir) })
			d := newDriver(t, dir)
			dirs[d] = dir
			return d
		},
		Reopen: func(t *testing.T, old compute.Hypervisor) compute.Hypervisor {
			d := newDriver(t, dirs[old])
			dirs[d] = dirs[old]
			return d
		},
		Spec: func(t *testing.T, id string) compute.Spec {
			return compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, Kernel: filepath.Join(guest, "vmlinux"),
				Initrd: filepath.Join(guest, "initrd.img"), Cmdline: "console=ttyS0 quiet"}
		},
		Ready: "CLIPPER-GUEST-READY",
		Boot:  60 * time.Second,
	})
}

// TestOverlayAndGuestPoweroff boots with a qcow2 root disk (the overlay must
// leave the base untouched) and checks a VM that stops on its own reports
// stopped with the reason.
func TestOverlayAndGuestPoweroff(t *testing.T) {
	requireQEMU(t)
	guest := guestDir(t)
	dir := t.TempDir()
	t.Cleanup(func() { killAll(t, dir) })
	base := filepath.Join(t.TempDir(), "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	baseInfo, _ := os.Stat(base)
	d := newDriver(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "i-0d15c00000000001"
	spec := compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, Kernel: filepath.Join(guest, "vmlinux"),
		Initrd: filepath.Join(guest, "initrd.img"), Cmdline: "console=ttyS0 quiet", BaseImage: base, BaseFormat: "qcow2"}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "info", d.path(id, overlayFile)).CombinedOutput(); err != nil {
		t.Fatalf("overlay: %v: %s", err, out)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, d, id, "CLIPPER-GUEST-READY", 1, time.Minute)
	// The guest powers itself off (as `poweroff` inside it would).
	c, err := d.conn(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// The button is pressed until the guest listens: acpid starts after
	// CLIPPER-GUEST-READY.
	deadline := time.Now().Add(time.Minute)
	for i := 0; ; i++ {
		if i%15 == 0 {
			if _, err := c.Execute(ctx, "system_powerdown", nil); err != nil {
				t.Fatal(err)
			}
		}
		st, err := d.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == compute.StateStopped {
			if st.ExitReason != "guest powered off" {
				t.Fatalf("exit reason %q", st.ExitReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("guest did not power off")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if after, _ := os.Stat(base); !after.ModTime().Equal(baseInfo.ModTime()) {
		t.Fatal("the base image was written to")
	}
}

func TestBadKernelFailsWithReason(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	t.Cleanup(func() { killAll(t, dir) })
	d := newDriver(t, dir)
	bogus := filepath.Join(t.TempDir(), "not-a-kernel")
	os.WriteFile(bogus, []byte("nope"), 0o644)
	ctx := context.Background()
	id := "i-0bad000000000001"
	if err := d.Create(ctx, compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 128, Kernel: bogus, Machine: "q35"}); err != nil {
		t.Fatal(err)
	}
	err := d.Start(ctx, id)
	if err == nil {
		t.Fatal("started a VM with a bogus kernel")
	}
	st, _ := d.Status(ctx, id)
	if st.State != compute.StateStopped || st.ExitReason == "" {
		t.Fatalf("status after failure: %+v", st)
	}
	t.Logf("reason: %s", st.ExitReason)
}

// TestStopForcesAGuestThatIgnoresTheButton: a guest without acpid never
// powers off, so Stop ends QEMU after the grace period and says so.
func TestStopForcesAGuestThatIgnoresTheButton(t *testing.T) {
	requireQEMU(t)
	guest := guestDir(t)
	dir := t.TempDir()
	t.Cleanup(func() { killAll(t, dir) })
	d := newDriver(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "i-0deaf00000000001"
	if err := d.Create(ctx, compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, Kernel: filepath.Join(guest, "vmlinux"),
		Initrd: filepath.Join(guest, "initrd.img"), Cmdline: "console=ttyS0 quiet clipper.acpi=off"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, d, id, "CLIPPER-GUEST-READY", 1, time.Minute)
	pid := d.livePID(id)
	if err := d.Stop(ctx, id, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(ctx, id)
	if err != nil || st.State != compute.StateStopped || st.PID != 0 {
		t.Fatalf("after a forced stop: %+v %v", st, err)
	}
	if want := "stopped by force: the guest did not power off within 2s"; st.ExitReason != want {
		t.Fatalf("exit reason %q, want %q", st.ExitReason, want)
	}
	if isInstanceProcess(pid, id) {
		t.Fatalf("QEMU %d still runs", pid)
	}
}

// TestFirmwareBootsAWholeDiskImage boots the test guest's whole-disk image
// (SYSLINUX on a FAT volume) through SeaBIOS on q35, with no kernel given,
// and stops it through ACPI.
func TestFirmwareBootsAWholeDiskImage(t *testing.T) {
	requireQEMU(t)
	disk := filepath.Join(guestDir(t), "disk.qcow2")
	if _, err := os.Stat(disk); err != nil {
		need.Missing(t, "no whole-disk test guest (run `make guest-image`; `make test` does): %v", err)
	}
	dir := t.TempDir()
	t.Cleanup(func() { killAll(t, dir) })
	d := newDriver(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := "i-0d15c00000000002"
	spec := compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, BaseImage: disk, BaseFormat: "qcow2", DiskSizeMiB: 128}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(d.Command(spec), " "); !strings.Contains(args, "-machine q35") || strings.Contains(args, "-kernel") {
		t.Fatalf("not a firmware boot: %s", args)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", d.path(id, overlayFile)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"virtual-size": 134217728`) {
		t.Fatalf("overlay not grown to 128 MiB: %v: %s", err, out)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, d, id, "CLIPPER-GUEST-READY", 1, 2*time.Minute)
	if err := d.Stop(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Status(ctx, id); st.State != compute.StateStopped || st.ExitReason != "guest powered off" {
		t.Fatalf("after stop: %+v", st)
	}
}

// TestMigrateWholeDisk moves a VM booted from the whole-disk guest: blocks
// written on the source (here straight into its overlay, through QEMU's
// own qemu-io) are in the destination's overlay afterwards, the
// destination waits paused until Start, and then runs the guest on (it
// boots again from the moved disk after a reset). Memory and disk go over
// TLS, as between the nodes of a cluster.
func TestMigrateWholeDisk(t *testing.T) {
	requireQEMU(t)
	disk := filepath.Join(guestDir(t), "disk.qcow2")
	if _, err := os.Stat(disk); err != nil {
		need.Missing(t, "no whole-disk test guest (run `make guest-image`; `make test` does): %v", err)
	}
	ca := openTestCA(t)
	src, dst := newTLSDriver(t, nodeCreds(t, ca, "node-a")), newTLSDriver(t, nodeCreds(t, ca, "node-b"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := "i-0d15c000000000a3"
	spec := compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, BaseImage: disk, BaseFormat: "qcow2", DiskSizeMiB: 128}
	for _, d := range []*Driver{src, dst} {
		if err := d.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, src, id, "CLIPPER-GUEST-READY", 1, 2*time.Minute)
	c, err := src.conn(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB of 0x5a at 100 MiB, beyond anything the base image holds.
	if _, err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": `qemu-io root "write -P 0x5a 100M 64k"`}); err != nil {
		t.Fatal(err)
	}
	con, _ := src.Console(ctx, id, 1<<16)
	addr, err := dst.Incoming(ctx, id, "127.0.0.1", "node-a", con)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "tls:node-b ") || !strings.Contains(addr, " nbd:127.0.0.1:") {
		t.Fatalf("destination address %q exports no disk", addr)
	}
	if err := src.MigrateTo(ctx, id, addr); err != nil {
		t.Fatal(err)
	}
	if st, _ := src.Status(ctx, id); st.State != compute.StateMigrated {
		t.Fatalf("source after the move: %+v", st)
	}
	if st, _ := dst.Status(ctx, id); st.State != compute.StateIncoming {
		t.Fatalf("destination before Start: %+v, want it waiting", st)
	}
	out, err := exec.Command("qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x5a 100M 64k", dst.path(id, overlayFile)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") {
		t.Fatalf("the written blocks are not in the destination's overlay: %v: %s", err, out)
	}
	if err := src.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := dst.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, _ := dst.Status(ctx, id); st.State != compute.StateRunning {
		t.Fatalf("destination after Start: %+v", st)
	}
	if err := dst.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, dst, id, "CLIPPER-GUEST-READY", 2, 2*time.Minute)
}
