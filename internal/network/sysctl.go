package network

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// sysctl is one kernel setting the design depends on.
type sysctl struct {
	path, want, why string
}

// pinned are the settings New pins and the guard keeps.
var pinned = []sysctl{
	{"/proc/sys/net/ipv4/ip_forward", "1", "instances reach the world through the node"},
	{"/proc/sys/net/bridge/bridge-nf-call-iptables", "1",
		"without it bridged IPv4 skips nftables and security groups fail open"},
	{"/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1",
		"without it bridged IPv6 skips nftables and security groups fail open"},
	{"/proc/sys/net/ipv4/tcp_fwmark_accept", "1",
		"the metadata service identifies an instance by the mark of its connection"},
}

// guardInterval is how often the guard checks the pinned settings. A
// flipped bridge-nf-call-iptables lets bridged traffic skip the groups
// until the guard sets it back, so the window is kept short; a check is
// four reads of /proc (a few microseconds).
const guardInterval = 250 * time.Millisecond

// sysctls reads and writes the pinned settings under root ("" for the
// real /proc; a directory in tests).
type sysctls struct {
	root string
	list []sysctl
}

var hostSysctls = sysctls{list: pinned}

func (sc sysctls) read(s sysctl) (string, error) {
	b, err := os.ReadFile(sc.root + s.path)
	return strings.TrimSpace(string(b)), err
}

func (sc sysctls) pin(s sysctl) error {
	if err := os.WriteFile(sc.root+s.path, []byte(s.want), 0o644); err != nil {
		return fmt.Errorf("network: cannot set %s to %s (%s): %w; the node agent needs root and a kernel with bridge netfilter",
			s.path, s.want, s.why, err)
	}
	if got, err := sc.read(s); err != nil || got != s.want {
		return fmt.Errorf("network: %s did not stay at %s (%s)", s.path, s.want, s.why)
	}
	return nil
}

// pinAll sets every setting, stopping at the first that cannot be set.
func (sc sysctls) pinAll() error {
	for _, s := range sc.list {
		if err := sc.pin(s); err != nil {
			return err
		}
	}
	return nil
}

// check sets back every setting that changed, logging each as an error,
// and reports how many it found changed.
func (sc sysctls) check(log *slog.Logger) int {
	changed := 0
	for _, s := range sc.list {
		got, err := sc.read(s)
		if err == nil && got == s.want {
			continue
		}
		changed++
		log.Error("network: a pinned sysctl changed; setting it back", "sysctl", s.path,
			"value", got, "want", s.want, "why", s.why)
		if err := sc.pin(s); err != nil {
			log.Error("network: cannot pin sysctl", "error", err)
		}
	}
	return changed
}

// sysctlGuard checks the pinned settings until stopped: a setting that
// changed is an alarm (logged as an error) and is set back.
type sysctlGuard struct {
	quit chan struct{}
	done chan struct{}
}

func startGuard(log *slog.Logger, sc sysctls, every time.Duration) *sysctlGuard {
	g := &sysctlGuard{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-g.quit:
				return
			case <-t.C:
			}
			sc.check(log)
		}
	}()
	return g
}

func (g *sysctlGuard) stop() {
	if g == nil {
		return
	}
	select {
	case <-g.quit:
	default:
		close(g.quit)
	}
	<-g.done
}
