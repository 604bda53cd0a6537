package qemu

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/computetest"
	"github.com/clipper-cloud/clipper/internal/pki"
)

// nodeCreds issues a node certificate for name from ca, as a node that
// joined the cluster of ca holds.
func nodeCreds(t testing.TB, ca *pki.CA, name string) func() (MigrationTLS, error) {
	t.Helper()
	c, err := ca.IssueNode(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.KeyPEM(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	creds := MigrationTLS{Name: name, CertPEM: pki.CertPEM(c.Certificate[0]), KeyPEM: key, CAPEM: pki.CertPEM(ca.Cert().Raw)}
	return func() (MigrationTLS, error) { return creds, nil }
}

func openTestCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.OpenCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newTLSDriver is a driver in a fresh directory that moves VMs over TLS
// with creds.
func newTLSDriver(t testing.TB, creds func() (MigrationTLS, error)) *Driver {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { killAll(t, dir) })
	d, err := New(Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MigrationTLS: creds})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want destination
		ok   bool
	}{
		{"tcp:10.0.0.2:4000", destination{uri: "tcp:10.0.0.2:4000"}, true},
		{"tcp:10.0.0.2:4000 nbd:10.0.0.2:4001", destination{uri: "tcp:10.0.0.2:4000", nbd: "10.0.0.2:4001"}, true},
		{"tls:node2 tcp:[fd00::2]:4000 nbd:[fd00::2]:4001", destination{tlsName: "node2", uri: "tcp:[fd00::2]:4000", nbd: "[fd00::2]:4001"}, true},
		{"tls:node2 tcp:10.0.0.2:4000", destination{tlsName: "node2", uri: "tcp:10.0.0.2:4000"}, true},
		{"", destination{}, false},
		{"tls:node2", destination{}, false},
		{"tls: tcp:10.0.0.2:4000", destination{}, false},
		{"unix:/tmp/x", destination{}, false},
		{"tcp:10.0.0.2:4000 nbd:", destination{}, false},
		{"tcp:10.0.0.2:4000 tcp:10.0.0.2:4001", destination{}, false},
		{"tls:a tls:b tcp:10.0.0.2:4000", destination{}, false},
		{"tcp:10.0.0.2:4000 nbd:10.0.0.2:4001 extra", destination{}, false},
	} {
		got, err := parseAddr(tc.in)
		if tc.ok != (err == nil) || (tc.ok && got != tc.want) {
			t.Errorf("parseAddr(%q) = %+v, %v", tc.in, got, err)
			continue
		}
		if err != nil && !errors.Is(err, compute.ErrMigrationFailed) {
			t.Errorf("parseAddr(%q): %v, want ErrMigrationFailed", tc.in, err)
		}
		if tc.ok && got.String() != strings.Join(strings.Fields(tc.in), " ") {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"tcp:1.2.3.4:5", "tls:n tcp:1.2.3.4:5 nbd:1.2.3.4:6", "tls:", " nbd:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dest, err := parseAddr(s)
		if err != nil {
			return
		}
		again, err := parseAddr(dest.String())
		if err != nil || again != dest {
			t.Fatalf("%q: %+v does not read back: %+v %v", s, dest, again, err)
		}
	})
}

// TestMigrateTLS moves a VM between two nodes of one cluster over TLS,
// after the moves that must fail did: to a destination whose certificate
// comes from another CA, to one that is not the node it claims to be, to
// one that offers plain TCP, from a node without credentials, from a node
// of another cluster, from one whose certificate the cluster's CA did not
// sign, and from a node of the cluster other than the one the instance
// moves from. Each failed attempt leaves the VM running where it was, and
// the destination waiting; a destination whose agent restarted waits at
// a new address.
func TestMigrateTLS(t *testing.T) {
	requireQEMU(t)
	guest := guestDir(t)
	ca, other := openTestCA(t), openTestCA(t)
	src := newTLSDriver(t, nodeCreds(t, ca, "node-a"))
	dst := newTLSDriver(t, nodeCreds(t, ca, "node-b"))
	impostor := newTLSDriver(t, nodeCreds(t, other, "node-b"))
	stranger := newTLSDriver(t, nodeCreds(t, other, "node-a"))
	// A node that trusts the cluster's CA but whose certificate is not
	// from it: only the destination can refuse it.
	forgedCreds, _ := nodeCreds(t, other, "node-a")()
	forgedCreds.CAPEM = pki.CertPEM(ca.Cert().Raw)
	forger := newTLSDriver(t, func() (MigrationTLS, error) { return forgedCreds, nil })
	// A node of the cluster, but not the one the instance moves from.
	bystander := newTLSDriver(t, nodeCreds(t, ca, "node-c"))
	plainDir := t.TempDir()
	t.Cleanup(func() { killAll(t, plainDir) })
	plain := newDriver(t, plainDir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := "i-0d15c000000000b1"
	for _, d := range []*Driver{src, dst, impostor, stranger, forger, bystander, plain} {
		if err := d.Create(ctx, compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, Kernel: filepath.Join(guest, "vmlinux"),
			Initrd: filepath.Join(guest, "initrd.img"), Cmdline: "console=ttyS0 quiet"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []*Driver{src, stranger, forger, bystander, plain} {
		if err := d.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	computetest.WaitConsole(t, src, id, "CLIPPER-GUEST-READY", 1, 2*time.Minute)
	refused := func(what string, from *Driver, addr string) {
		t.Helper()
		err := from.MigrateTo(ctx, id, addr)
		if !errors.Is(err, compute.ErrMigrationFailed) {
			t.Fatalf("%s: %v, want ErrMigrationFailed", what, err)
		}
		t.Logf("%s: %v", what, err)
		if st, _ := from.Status(ctx, id); st.State != compute.StateRunning {
			t.Fatalf("after %s the source is %+v, want running", what, st)
		}
		if st, _ := dst.Status(ctx, id); st.State != compute.StateIncoming {
			t.Fatalf("after %s the destination is %+v, want it waiting", what, st)
		}
	}

	bad, err := impostor.Incoming(ctx, id, "127.0.0.1", "node-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := dst.Incoming(ctx, id, "127.0.0.1", "node-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "tls:node-b tcp:127.0.0.1:") {
		t.Fatalf("destination address %q", addr)
	}
	refused("to another cluster's node", src, bad)
	refused("to a node under another name", src, strings.Replace(addr, "tls:node-b", "tls:node-c", 1))
	refused("to plain TCP", src, strings.TrimPrefix(addr, "tls:node-b "))
	refused("from a node without credentials", plain, addr)
	refused("from another cluster's node", stranger, addr)
	refused("from a node with a certificate of another CA", forger, addr)
	refused("from a node of the cluster the instance does not move from", bystander, addr)

	// The destination's agent restarts while the VM waits: its tunnels
	// ended with it, so the VM waits afresh behind new ones.
	dst.closeTunnels(id)
	dst.dropConn(id)
	dst, err = New(Config{StateDir: dst.cfg.StateDir, Logger: dst.cfg.Logger, MigrationTLS: dst.cfg.MigrationTLS})
	if err != nil {
		t.Fatal(err)
	}
	stale := addr
	if addr, err = dst.Incoming(ctx, id, "127.0.0.1", "node-a", nil); err != nil || addr == stale {
		t.Fatalf("Incoming after a restart: %q %v (was %q)", addr, err, stale)
	}
	refused("to the address of before the restart", src, stale)

	if err := src.MigrateTo(ctx, id, addr); err != nil {
		t.Fatal(err)
	}
	if st, _ := src.Status(ctx, id); st.State != compute.StateMigrated {
		t.Fatalf("source after the move: %+v", st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := dst.Status(ctx, id)
		if st.State == compute.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination after the move: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The guest runs on, and boots again after a reset.
	if err := dst.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	computetest.WaitConsole(t, dst, id, "CLIPPER-GUEST-READY", 1, 2*time.Minute)
}
