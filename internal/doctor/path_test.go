package doctor_test

import (
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/doctor"
)

// Every path test builds client — r1 — r2 — server (4 hops with the
// server) and checks what `doctor path` finds. The bottleneck, when there
// is one, is a 1400-byte route MTU in r2 with all interfaces at 1500; the
// expected figures are checked against what probing found, never copied
// from the configuration into the verdict.

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

// wantMTU checks the probed path MTU against the configured bottleneck,
// within the size of the probe's headers.
func wantMTU(t *testing.T, rep *doctor.Report, want int) {
	t.Helper()
	if rep.PathMTU > want || rep.PathMTU < want-60 {
		t.Errorf("path_mtu = %d, want %d (within the probe's header size)", rep.PathMTU, want)
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
