package network

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests need neither root nor a namespace: the settings live in a
// temporary directory laid out like /proc/sys.

func fakeProc(t *testing.T, value string) sysctls {
	t.Helper()
	root := t.TempDir()
	for _, s := range pinned {
		p := filepath.Join(root, s.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sysctls{root: root, list: pinned}
}

func TestPinAll(t *testing.T) {
	sc := fakeProc(t, "0")
	if err := sc.pinAll(); err != nil {
		t.Fatal(err)
	}
	for _, s := range pinned {
		if got, _ := sc.read(s); got != "1" {
			t.Errorf("%s = %q after pinning", s.path, got)
		}
	}
}

// A kernel without bridge netfilter (no such file, or one that cannot be
// written): the node refuses to start and says why.
func TestPinRefusesWithoutBridgeNetfilter(t *testing.T) {
	sc := fakeProc(t, "1")
	p := filepath.Join(sc.root, "/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil { // unwritable even for root
		t.Fatal(err)
	}
	err := sc.pinAll()
	if err == nil {
		t.Fatal("pinned a setting that cannot be written")
	}
	for _, want := range []string{"bridge-nf-call-iptables", "security groups fail open", "bridge netfilter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
}

func TestGuardSetsBack(t *testing.T) {
	sc := fakeProc(t, "1")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if n := sc.check(log); n != 0 {
		t.Fatalf("%d changed on a pinned host", n)
	}
	s := pinned[1] // bridge-nf-call-iptables
	if err := os.WriteFile(sc.root+s.path, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := sc.check(log); n != 1 {
		t.Fatalf("%d changed, want 1", n)
	}
	if got, _ := sc.read(s); got != "1" {
		t.Errorf("not set back: %q", got)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "bridge-nf-call-iptables") {
		t.Errorf("no alarm in the log: %s", logs.String())
	}

	// The running guard does the same on its own.
	g := startGuard(log, sc, 10*time.Millisecond)
	defer g.stop()
	if err := os.WriteFile(sc.root+s.path, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got, _ := sc.read(s); got != "1"; got, _ = sc.read(s) {
		if time.Now().After(deadline) {
			t.Fatal("the guard did not set the setting back")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
