package doctor_test

import (
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/doctor"
)

// Most path tests build client — r1 — r2 — server (3 hops: r1, r2 and
// the server) and check what `doctor path` finds; one builds four routers
// (5 hops). The bottleneck, when there is one, is a route MTU in a router
// (1400 bytes, or an odd 1337 that is no common MTU) with all interfaces
// at 1500; the expected figures are checked against what probing found,
// never copied from the configuration into the verdict.

const (
	routeMTU = 1400
	tlsPort  = "8443"
)

// noEchoRules make a router drop ICMP echo in both directions.
const noEchoRules = `table inet noecho {
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		icmp type { echo-request, echo-reply } drop
		icmpv6 type { echo-request, echo-reply } drop
	}
}
`

// lossyRules make a router drop 30% of what it forwards, both ways: about
// half of the probes get no answer, whatever their size (netem is not
// available on these machines).
const lossyRules = `table inet lossy {
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		numgen random mod 10 < 3 drop
	}
}
`

// oddMTU is a bottleneck that is none of the common MTUs the search tries
// first: the search must bisect down to it.
const oddMTU = 1337

// wantMTU checks the probed path MTU against the configured bottleneck,
// exactly: every probe is a whole IP packet of the size asked for (the
// probe's headers are inside it, whatever the method), and the search
// narrows the gap between the largest size that passed and the smallest
// that failed to one byte, so the route MTU itself is the answer. (Where
// a router announces the MTU, its message proves the boundary and the
// search need not probe one byte above it.)
func wantMTU(t *testing.T, rep *doctor.Report, want int) {
	t.Helper()
	if rep.PathMTU != want {
		t.Errorf("path_mtu = %d, want %d", rep.PathMTU, want)
	}
	if rep.Verdict == doctor.VerdictBlackHole && rep.FailingSize != want+1 {
		t.Errorf("failing_size = %d, want %d", rep.FailingSize, want+1)
	}
}

func TestPathHealthy(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.startTLS()
	rep, code := tp.runDoctor("--url", "https://"+tp.serverAddr(false)+":"+tlsPort+"/big", tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictOK || code != doctor.ExitHealthy {
		t.Fatalf("verdict %s exit %d, want ok 0", rep.Verdict, code)
	}
	if rep.PathMTU != 1500 {
		t.Errorf("path_mtu = %d, want 1500", rep.PathMTU)
	}
	if rep.TLS == nil || !rep.TLS.Works() {
		t.Errorf("TLS check does not work on a healthy path: %+v", rep.TLS)
	}
	if rep.Method != doctor.MethodICMP {
		t.Errorf("method = %s, want icmp", rep.Method)
	}
}

func TestPathPMTUDiscoveryWorks(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	rep, code := tp.runDoctor(tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictPMTUDOK || code != doctor.ExitHealthy {
		t.Fatalf("verdict %s exit %d, want pmtud-ok 0", rep.Verdict, code)
	}
	if rep.PathMTU != routeMTU || rep.AnnouncedMTU != routeMTU {
		t.Errorf("path_mtu %d announced %d, want %d", rep.PathMTU, rep.AnnouncedMTU, routeMTU)
	}
	if got, want := rep.Hop.String(), tp.routerAddr(2, false); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
}

func TestPathBlackHole(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	tp.startTLS()
	rep, code := tp.runDoctor("--url", "https://"+tp.serverAddr(false)+":"+tlsPort+"/big", tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	wantMTU(t, rep, routeMTU)
	if got, want := rep.Hop.String(), tp.routerAddr(2, false); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
	if rep.HopTTL != 2 {
		t.Errorf("hop_ttl = %d, want 2", rep.HopTTL)
	}
	if len(rep.Fix) == 0 {
		t.Error("no fix")
	}
	tl := rep.TLS
	if tl == nil || tl.Connect != doctor.StepOK || tl.Handshake != doctor.StepStalled || tl.ServerBytes != 0 {
		t.Fatalf("TLS check = %+v, want connect ok and the handshake stalled after the first flight", tl)
	}
	if !strings.Contains(tl.Signature, "after the first flight") {
		t.Errorf("TLS signature %q, want the first-flight stall named", tl.Signature)
	}
	if rep.TCPProtected == nil || *rep.TCPProtected {
		t.Errorf("tcp_protected = %v, want false", rep.TCPProtected)
	}
	t.Logf("verdict in %.2f s, %.2f s with the TLS check (target: under 5 s)", rep.ProbeSeconds, rep.Seconds)
}

func TestPathBlackHoleMSSClamped(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	tp.clampMSS(2)
	tp.startTLS()
	rep, code := tp.runDoctor("--url", "https://"+tp.serverAddr(false)+":"+tlsPort+"/big", tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	wantMTU(t, rep, routeMTU)
	if rep.TCPProtected == nil || !*rep.TCPProtected {
		t.Errorf("tcp_protected = %v, want true", rep.TCPProtected)
	}
	if !rep.UDPExposed {
		t.Error("udp_exposed = false, want true")
	}
	tl := rep.TLS
	if tl == nil || !tl.Works() || tl.Download == nil || tl.Download.Status != doctor.StepOK || tl.Upload == nil || tl.Upload.Status != doctor.StepOK {
		t.Fatalf("TLS check = %+v, want handshake, download and upload ok", tl)
	}
	if tl.PeerMSS+40 > routeMTU {
		t.Errorf("peer MSS %d does not fit the path MTU: not clamped?", tl.PeerMSS)
	}
}

func TestPathEchoBlocked(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	tp.routers[0].Nft(noEchoRules)
	rep, code := tp.runDoctor("--port", tlsPort, tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	if rep.Method != doctor.MethodTCP {
		t.Errorf("method = %s, want tcp", rep.Method)
	}
	wantMTU(t, rep, routeMTU)
	if got, want := rep.Hop.String(), tp.routerAddr(2, false); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
}

// noEchoNoTCPRules make a router drop ICMP echo and all TCP: only UDP
// probes (answered with port unreachable) get through.
const noEchoNoTCPRules = `table inet noechotcp {
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		icmp type { echo-request, echo-reply } drop
		icmpv6 type { echo-request, echo-reply } drop
		meta l4proto tcp drop
	}
}
`

// Only UDP reaches the server, and the server's kernel rate-limits the
// port unreachable answers UDP probes count on (a burst of 6, then one a
// second): the search must pace itself to still find the exact threshold.
func TestPathUDPOnly(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	tp.routers[0].Nft(noEchoNoTCPRules)
	rep, code := tp.runDoctor("--port", tlsPort, tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	if rep.Method != doctor.MethodUDP {
		t.Errorf("method = %s, want udp (tried %v)", rep.Method, rep.Tried)
	}
	wantMTU(t, rep, routeMTU)
	if got, want := rep.Hop.String(), tp.routerAddr(2, false); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
	if !rep.UDPExposed {
		t.Error("udp_exposed = false, want true (measured with UDP probes)")
	}
	t.Logf("verdict in %.2f s with %d probes", rep.ProbeSeconds, rep.Probes)
}

func TestPathBlackHoleIPv6(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	rep, code := tp.runDoctor("-6", tp.serverAddr(true))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	wantMTU(t, rep, routeMTU)
	if got, want := rep.Hop.String(), tp.routerAddr(2, true); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
}

func TestPathLossyIsNotABlackHole(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.routers[0].Nft(lossyRules)
	rep, _ := tp.runDoctor(tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictOK {
		t.Fatalf("verdict %s on a lossy 1500-byte path, want ok", rep.Verdict)
	}
	t.Logf("loss seen: %.0f%% of %d probes", 100*rep.Loss, rep.Probes)
}

// A bottleneck of an odd size: discovery that works names it exactly, and
// so does the search in a black hole, over ICMP and over (paced) UDP.
func TestPathOddMTU(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		dropPTB bool
		args    []string
		verdict doctor.Verdict
		method  doctor.Method
	}{
		{"pmtud-ok", false, nil, doctor.VerdictPMTUDOK, doctor.MethodICMP},
		{"black-hole", true, nil, doctor.VerdictBlackHole, doctor.MethodICMP},
		{"black-hole over udp", true, []string{"--method", "udp"}, doctor.VerdictBlackHole, doctor.MethodUDP},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, 2)
			tp.bottleneck(2, oddMTU)
			if tt.dropPTB {
				tp.dropPTB(2)
			}
			rep, _ := tp.runDoctor(append(tt.args, tp.serverAddr(false))...)
			if rep.Verdict != tt.verdict || rep.Method != tt.method {
				t.Fatalf("verdict %s over %s, want %s over %s", rep.Verdict, rep.Method, tt.verdict, tt.method)
			}
			wantMTU(t, rep, oddMTU)
			if tt.verdict == doctor.VerdictPMTUDOK && rep.AnnouncedMTU != oddMTU {
				t.Errorf("announced MTU %d, want %d", rep.AnnouncedMTU, oddMTU)
			}
			if got, want := rep.Hop.String(), tp.routerAddr(2, false); got != want {
				t.Errorf("hop = %s, want the router r2 %s", got, want)
			}
		})
	}
}

// Four routers, the black hole in the third: it is located at hop 3,
// with hop 4 as the first that big probes do not reach.
func TestPathBlackHoleFourRouters(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 4)
	tp.bottleneck(3, routeMTU)
	tp.dropPTB(3)
	rep, code := tp.runDoctor(tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictBlackHole || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want black-hole 2", rep.Verdict, code)
	}
	wantMTU(t, rep, routeMTU)
	if got, want := rep.Hop.String(), tp.routerAddr(3, false); got != want || rep.HopTTL != 3 {
		t.Errorf("hop %s at TTL %d, want the router r3 %s at 3", got, rep.HopTTL, want)
	}
	if got, want := rep.NextHop.String(), tp.routerAddr(4, false); got != want || rep.NextHopTTL != 4 {
		t.Errorf("next hop %s at TTL %d, want the router r4 %s at 4", got, rep.NextHopTTL, want)
	}
	if n := len(rep.Hops); n != 5 || !rep.Hops[n-1].Target {
		t.Errorf("hops %+v, want 5 with the server last", rep.Hops)
	}
	t.Logf("verdict in %.2f s with %d probes (target: under 5 s)", rep.ProbeSeconds, rep.Probes)
}

func TestPathPMTUDiscoveryWorksIPv6(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	rep, code := tp.runDoctor("-6", tp.serverAddr(true))
	if rep.Verdict != doctor.VerdictPMTUDOK || code != doctor.ExitHealthy {
		t.Fatalf("verdict %s exit %d, want pmtud-ok 0", rep.Verdict, code)
	}
	wantMTU(t, rep, routeMTU)
	if rep.AnnouncedMTU != routeMTU {
		t.Errorf("announced MTU %d, want %d", rep.AnnouncedMTU, routeMTU)
	}
	if got, want := rep.Hop.String(), tp.routerAddr(2, true); got != want {
		t.Errorf("hop = %s, want the router r2 %s", got, want)
	}
}

// dropAllRules make a host drop everything that comes in.
const dropAllRules = `table inet dropall {
	chain in {
		type filter hook input priority 0; policy drop;
	}
}
`

// A server that answers nothing (not echo, not TCP, not UDP, and not the
// TLS check's connection): the verdict is unknown and the exit status 3,
// could not tell — through the command line, as users get it.
func TestPathUnknown(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.server.Nft(dropAllRules)
	rep, code := tp.runDoctor("--tls", "--port", tlsPort, "--step-timeout", "1s", tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictUnknown || code != doctor.ExitUnknown {
		t.Fatalf("verdict %s exit %d, want unknown 3", rep.Verdict, code)
	}
	if len(rep.Tried) != 3 || rep.Method != "" || rep.PathMTU != 0 {
		t.Errorf("tried %v, method %q, path MTU %d: want all three methods tried, none working", rep.Tried, rep.Method, rep.PathMTU)
	}
	if rep.TLS == nil || rep.TLS.Connect != doctor.StepFailed {
		t.Errorf("TLS check %+v, want the connect failed", rep.TLS)
	}
	for _, f := range rep.Fix {
		if f.Party == "server" {
			t.Errorf("fix for the server although nothing is known about the path: %+v", f)
		}
	}
}

// Two bottlenecks: r1 forwards at most 1450 bytes and drops its own
// frag-needed errors, r2 forwards 1400 and sends them. Probes of 1401-1450
// bytes get frag-needed from r2, larger ones vanish at r1: discovery works
// for some sizes only, which is partial, with the path MTU still found.
func TestPathPartialTwoBottlenecks(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(1, 1450)
	tp.dropPTB(1)
	tp.bottleneck(2, routeMTU)
	rep, code := tp.runDoctor(tp.serverAddr(false))
	if rep.Verdict != doctor.VerdictPartial || code != doctor.ExitProblem {
		t.Fatalf("verdict %s exit %d, want partial 2 (%s)", rep.Verdict, code, rep.Evidence)
	}
	if rep.PathMTU != routeMTU {
		t.Errorf("path_mtu = %d, want %d", rep.PathMTU, routeMTU)
	}
}
