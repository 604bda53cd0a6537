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

// guardInterval is how often the guard checks the pinned settings.
const guardInterval = 2 * time.Second

func pinSysctl(s sysctl) error {
	if err := os.WriteFile(s.path, []byte(s.want), 0o644); err != nil {
		return fmt.Errorf("network: cannot set %s to %s (%s): %w; the node agent needs root and a kernel with bridge netfilter",
			s.path, s.want, s.why, err)
	}
	got, err := os.ReadFile(s.path)
	if err != nil || strings.TrimSpace(string(got)) != s.want {
		return fmt.Errorf("network: %s did not stay at %s (%s)", s.path, s.want, s.why)
	}
	return nil
}

func pinAll() error {
	for _, s := range pinned {
		if err := pinSysctl(s); err != nil {
			return err
		}
	}
	return nil
}

// sysctlGuard checks the pinned settings until stopped: a setting that
// changed is an alarm (logged as an error) and is set back.
type sysctlGuard struct {
	quit chan struct{}
	done chan struct{}
}

func startGuard(log *slog.Logger) *sysctlGuard {
	g := &sysctlGuard{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		t := time.NewTicker(guardInterval)
		defer t.Stop()
		for {
			select {
			case <-g.quit:
				return
			case <-t.C:
			}
			for _, s := range pinned {
				got, err := os.ReadFile(s.path)
				if err == nil && strings.TrimSpace(string(got)) == s.want {
					continue
				}
				log.Error("network: a pinned sysctl changed; setting it back", "sysctl", s.path,
					"value", strings.TrimSpace(string(got)), "want", s.want, "why", s.why)
				if err := pinSysctl(s); err != nil {
					log.Error("network: cannot pin sysctl", "error", err)
				}
			}
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
