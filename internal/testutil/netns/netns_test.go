package netns_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

func TestTopologyAndCleanup(t *testing.T) {
	netns.Require(t)
	var names []string
	var pid int
	t.Run("build", func(t *testing.T) {
		a, b := netns.New(t, "a"), netns.New(t, "b")
		names = []string{a.Name, b.Name}
		netns.Link(t, a, "va", b, "vb")
		a.Addr("va", "10.9.0.1/24")
		b.Addr("vb", "10.9.0.2/24")
		a.Addr("va", "fd09::1/64")
		b.Addr("vb", "fd09::2/64")
		a.Run("ping", "-c1", "-W2", "10.9.0.2")
		a.Run("ping", "-c1", "-W2", "fd09::2")
		if _, err := a.Output("ping", "-c1", "-W1", "10.9.9.9"); err == nil {
			t.Error("ping to an address nobody has succeeded")
		}
		p := b.Start("sh", "-c", "echo up; exec sleep 60")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.WaitFor(ctx, "up"); err != nil {
			t.Fatal(err)
		}
		pid = p.PID()
		if out := b.Run("ip", "-o", "link", "show", "vb"); !strings.Contains(out, "vb@") {
			t.Errorf("link vb: %s", out)
		}
	})
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s left behind: %v", n, err)
		}
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
		t.Errorf("process %d left behind", pid)
	}
}
