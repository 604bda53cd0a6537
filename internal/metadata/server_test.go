package metadata

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// The socket tests run in a namespace of their own: they set sysctls, put
// the metadata addresses on its loopback and mark their connections.
func TestMain(m *testing.M) { os.Exit(netns.RunInside(m, "md")) }

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// client makes requests whose connections carry mark and leave from src
// (any source when empty), as the node's bridge would mark an instance's.
func client(mark uint32, src string) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second, Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		return errors.Join(err, serr)
	}}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func fetch(t testing.TB, c *http.Client, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// counter reads the packets an nft rule tagged name has counted.
func counter(t testing.TB, name string) int {
	t.Helper()
	out := run(t, "nft", "list", "chain", "inet", "mdtest", "out")
	m := regexp.MustCompile(`packets (\d+) bytes \d+ comment "` + name + `"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter %s in:\n%s", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestServeIdentifiesByMark(t *testing.T) {
	netns.RequireInside(t)
	run(t, "sysctl", "-qw", "net.ipv4.tcp_fwmark_accept=0")
	s := New(nil)
	if err := s.ListenAndServe(context.Background()); err == nil {
		t.Fatal("ListenAndServe started with tcp_fwmark_accept=0")
	}
	run(t, "sysctl", "-qw", "net.ipv4.tcp_fwmark_accept=1")
	run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
	run(t, "ip", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
	run(t, "ip", "addr", "add", "10.7.0.10/32", "dev", "lo")
	// Count what the service sends by TTL.
	f, err := os.CreateTemp(t.TempDir(), "*.nft")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`table inet mdtest {
	chain out {
		type filter hook output priority 0;
		ip saddr 169.254.169.254 tcp sport 80 ip ttl 2 counter comment "ttl2"
		ip saddr 169.254.169.254 tcp sport 80 ip ttl 64 counter comment "ttl64"
		ip6 saddr fd00:ec2::254 tcp sport 80 ip6 hoplimit 3 counter comment "hops3"
	}
}
`)
	f.Close()
	run(t, "nft", "-f", f.Name())
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", "mdtest").Run() })

	s.Set("i-aaaa", markA, mdA, required)
	s.Set("i-bbbb", markB, mdB, nodeproto.MetadataOptions{HTTPTokens: "required", HTTPEndpoint: "enabled", HopLimit: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	base := "http://169.254.169.254"
	a, b := client(markA, ""), client(markB, "")
	waitUp := time.Now().Add(3 * time.Second)
	for {
		if _, err := a.Get(base + "/"); err == nil || time.Now().After(waitUp) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	t.Run("IMDSv1 refused", func(t *testing.T) {
		if code, _ := fetch(t, a, "GET", base+"/latest/meta-data/instance-id", nil); code != 401 {
			t.Fatalf("GET without token: %d, want 401", code)
		}
	})
	t.Run("each mark reads its own instance, whatever the source address", func(t *testing.T) {
		ttl64 := counter(t, "ttl64")
		ttl2 := counter(t, "ttl2")
		code, tokA := fetch(t, a, "PUT", base+"/latest/api/token", map[string]string{hdrTTL: "60"})
		if code != 200 {
			t.Fatalf("PUT token: %d", code)
		}
		if counter(t, "ttl2") == ttl2 {
			t.Error("token response did not leave with the hop limit (2) as TTL")
		}
		code, id := fetch(t, a, "GET", base+"/latest/meta-data/instance-id", map[string]string{hdrToken: tokA})
		if code != 200 || id != "i-aaaa" {
			t.Fatalf("A reads %d %q", code, id)
		}
		if counter(t, "ttl64") == ttl64 {
			t.Error("GET responses do not leave with the default TTL")
		}
		// B's mark from A's address: still B, and A's token is useless.
		bFromA := client(markB, "10.7.0.10")
		code, _ = fetch(t, bFromA, "GET", base+"/latest/meta-data/instance-id", map[string]string{hdrToken: tokA})
		if code != 401 {
			t.Fatalf("A's token with B's mark: %d, want 401", code)
		}
		_, tokB := fetch(t, bFromA, "PUT", base+"/latest/api/token", map[string]string{hdrTTL: "60"})
		code, id = fetch(t, bFromA, "GET", base+"/latest/meta-data/instance-id", map[string]string{hdrToken: tokB})
		if code != 200 || id != "i-bbbb" {
			t.Fatalf("B's mark from A's address reads %d %q, want i-bbbb", code, id)
		}
	})
	t.Run("no mark, no metadata", func(t *testing.T) {
		if code, _ := fetch(t, client(0, ""), "PUT", base+"/latest/api/token", map[string]string{hdrTTL: "60"}); code != 403 {
			t.Fatalf("unmarked PUT: %d, want 403", code)
		}
	})
	t.Run("X-Forwarded-For refused", func(t *testing.T) {
		code, _ := fetch(t, a, "PUT", base+"/latest/api/token", map[string]string{hdrTTL: "60", "X-Forwarded-For": "1.2.3.4"})
		if code != 403 {
			t.Fatalf("PUT with X-Forwarded-For: %d, want 403", code)
		}
	})
	t.Run("IPv6 endpoint with hop limit", func(t *testing.T) {
		hops := counter(t, "hops3")
		code, tok := fetch(t, b, "PUT", "http://[fd00:ec2::254]/latest/api/token", map[string]string{hdrTTL: "60"})
		if code != 200 {
			t.Fatalf("PUT over IPv6: %d", code)
		}
		if counter(t, "hops3") == hops {
			t.Error("IPv6 token response did not leave with hop limit 3")
		}
		code, id := fetch(t, b, "GET", "http://[fd00:ec2::254]/latest/meta-data/instance-id", map[string]string{hdrToken: tok})
		if code != 200 || id != "i-bbbb" {
			t.Fatalf("GET over IPv6: %d %q", code, id)
		}
	})
}
