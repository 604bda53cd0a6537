package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/doctor"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// topo is client — router 1 — ... — router n — server, one subnet per
// link: link i is 10.77.i.0/24 and fd77:i::/64, its left end .1 / ::1, its
// right end .2 / ::2. Every interface is 1500 bytes.
type topo struct {
	t       testing.TB
	client  *netns.NS
	server  *netns.NS
	routers []*netns.NS
}

func v4(link, end int) string { return fmt.Sprintf("10.77.%d.%d", link, end) }
func v6(link, end int) string { return fmt.Sprintf("fd77:%d::%d", link, end) }

// serverAddr is the server's address in the family.
func (tp *topo) serverAddr(ipv6 bool) string {
	n := len(tp.routers)
	if ipv6 {
		return v6(n, 2)
	}
	return v4(n, 2)
}

// routerAddr is router k's (1-based) address toward the client.
func (tp *topo) routerAddr(k int, ipv6 bool) string {
	if ipv6 {
		return v6(k-1, 2)
	}
	return v4(k-1, 2)
}

func newTopo(t testing.TB, routers int) *topo {
	t.Helper()
	netns.Require(t)
	tp := &topo{t: t}
	tp.client = netns.New(t, "cli")
	nodes := []*netns.NS{tp.client}
	for k := 1; k <= routers; k++ {
		r := netns.New(t, fmt.Sprintf("r%d", k))
		r.Forward()
		tp.routers = append(tp.routers, r)
		nodes = append(nodes, r)
	}
	tp.server = netns.New(t, "srv")
	nodes = append(nodes, tp.server)
	for i := 0; i+1 < len(nodes); i++ {
		l, r := nodes[i], nodes[i+1]
		netns.Link(t, l, fmt.Sprintf("right%d", i), r, fmt.Sprintf("left%d", i))
		l.Addr(fmt.Sprintf("right%d", i), v4(i, 1)+"/24")
		l.Addr(fmt.Sprintf("right%d", i), v6(i, 1)+"/64")
		r.Addr(fmt.Sprintf("left%d", i), v4(i, 2)+"/24")
		r.Addr(fmt.Sprintf("left%d", i), v6(i, 2)+"/64")
	}
	tp.client.IP("route", "add", "default", "via", v4(0, 2))
	tp.client.IP("-6", "route", "add", "default", "via", v6(0, 2))
	tp.server.IP("route", "add", "default", "via", v4(routers, 1))
	tp.server.IP("-6", "route", "add", "default", "via", v6(routers, 1))
	for k, r := range tp.routers {
		k++ // router k sits between link k-1 (left) and link k (right)
		for j := 0; j <= routers; j++ {
			switch {
			case j < k-1:
				r.IP("route", "add", fmt.Sprintf("10.77.%d.0/24", j), "via", v4(k-1, 1))
				r.IP("-6", "route", "add", fmt.Sprintf("fd77:%d::/64", j), "via", v6(k-1, 1))
			case j > k:
				r.IP("route", "add", fmt.Sprintf("10.77.%d.0/24", j), "via", v4(k, 2))
				r.IP("-6", "route", "add", fmt.Sprintf("fd77:%d::/64", j), "via", v6(k, 2))
			}
		}
	}
	return tp
}

// bottleneck gives router k (1-based) a route MTU of mtu in both
// directions, with all interfaces left at 1500: the way a tunnel or a
// policy route shrinks the path without the hosts seeing a small link.
func (tp *topo) bottleneck(k, mtu int) {
	r := tp.routers[k-1]
	n := len(tp.routers)
	m := fmt.Sprint(mtu)
	for j := 0; j <= n; j++ {
		var dev4, via4, dev6, via6 string
		switch {
		case j == k: // the right link, connected
			dev4, dev6 = fmt.Sprintf("right%d", k), fmt.Sprintf("right%d", k)
		case j == k-1: // the left link, connected
			dev4, dev6 = fmt.Sprintf("left%d", k-1), fmt.Sprintf("left%d", k-1)
		case j < k-1:
			via4, via6 = v4(k-1, 1), v6(k-1, 1)
		default:
			via4, via6 = v4(k, 2), v6(k, 2)
		}
		p4, p6 := fmt.Sprintf("10.77.%d.0/24", j), fmt.Sprintf("fd77:%d::/64", j)
		if dev4 != "" {
			r.IP("route", "replace", p4, "dev", dev4, "mtu", m)
			r.IP("-6", "route", "replace", p6, "dev", dev6, "metric", "256", "mtu", m)
		} else {
			r.IP("route", "replace", p4, "via", via4, "mtu", m)
			r.IP("-6", "route", "replace", p6, "via", via6, "mtu", m)
		}
	}
}

// dropPTB makes router k drop the frag-needed and packet-too-big messages
// it generates (its output chain).
func (tp *topo) dropPTB(k int) {
	tp.routers[k-1].Nft(`table inet blackhole {
	chain out {
		type filter hook output priority 0; policy accept;
		icmp type destination-unreachable icmp code frag-needed drop
		icmpv6 type packet-too-big drop
	}
}
`)
}

// clampMSS makes router k clamp the MSS of forwarded SYNs to its route MTU.
func (tp *topo) clampMSS(k int) {
	tp.routers[k-1].Nft(`table inet clamp {
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		tcp flags syn tcp option maxseg size set rt mtu
	}
}
`)
}

// startTLS starts the HTTPS server with the large chain on port 8443.
func (tp *topo) startTLS() {
	tp.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		tp.t.Fatal(err)
	}
	p := tp.server.Start("env", helperEnv+"=tls-server", exe, "[::]:8443")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, "ready"); err != nil {
		tp.t.Fatal(err)
	}
}

// doctorCmd returns the argv that runs `clipper doctor ARGS --json -v`:
// the real binary when CLIPPER_BIN is set, else this test binary running
// the same command line code. No controller is reachable from the test's
// namespaces, and none is named: the environment's AWS settings are
// dropped.
func doctorCmd(t testing.TB, args ...string) []string {
	t.Helper()
	argv := append([]string{"doctor", args[0], "--json", "-v"}, args[1:]...)
	env := []string{"env", "-u", "AWS_ENDPOINT_URL", "-u", "AWS_ENDPOINT_URL_EC2", "-u", "AWS_ACCESS_KEY_ID"}
	if bin := os.Getenv("CLIPPER_BIN"); bin != "" {
		return append(append(env, bin), argv...)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append(append(env, helperEnv+"=cli", exe), argv...)
}

// runDoctor runs `doctor path` with args in the client namespace and
// decodes its report; it fails the test on exit status 1 (could not run).
func (tp *topo) runDoctor(args ...string) (*doctor.Report, int) {
	tp.t.Helper()
	var rep doctor.Report
	code := runJSON(tp.t, tp.client, &rep, doctorCmd(tp.t, append([]string{"path"}, args...)...)...)
	return &rep, code
}

// runJSON runs argv in ns, decodes its standard output into v and returns
// the exit status.
func runJSON(t testing.TB, ns *netns.NS, v any, argv ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
		t.Errorf("%s: data race:\n%s", strings.Join(argv, " "), stderr.String())
	}
	if code == doctor.ExitError {
		t.Fatalf("%s: exit 1:\n%s\n%s", strings.Join(argv, " "), stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		t.Fatalf("%s: bad JSON %v:\n%s\n%s", strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	if _, ok := t.(*testing.T); ok { // benchmarks print every log line
		t.Logf("%s (exit %d):\n%s", strings.Join(argv, " "), code, lastLines(stderr.String(), 40))
	}
	return code
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
