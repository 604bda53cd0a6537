package doctor

import (
	"net/netip"
	"strings"
	"testing"
)

// blackHoleReport is what DiagnosePath fills in for a black hole at 1400
// on a 1500-byte link, before explain.
func blackHoleReport(tls *TLSReport) *Report {
	r := &Report{
		Address: netip.MustParseAddr("192.0.2.9"), LocalMTU: 1500, Interface: "eth0", Method: MethodICMP,
		Verdict: VerdictBlackHole, PathMTU: 1400, FailingSize: 1401, TLS: tls,
		search: searchResult{verdict: VerdictBlackHole, pathMTU: 1400, failMTU: 1401, stats: map[int]*sizeStat{
			1400: {sent: 3, reached: 3},
			1401: {sent: 5},
			1500: {sent: 2},
		}},
	}
	return r
}

func working(peerMSS, rcvSegment int) *TLSReport {
	return &TLSReport{Connect: StepOK, Handshake: StepOK, PeerMSS: peerMSS, RcvSegment: rcvSegment,
		Download: &Transfer{Status: StepOK}, Upload: &Transfer{Status: StepOK}}
}

func TestExitCode(t *testing.T) {
	refused := &TLSReport{Connect: StepFailed, Handshake: StepNotTested}
	stalled := &TLSReport{Connect: StepOK, Handshake: StepStalled}
	for _, tt := range []struct {
		name    string
		verdict Verdict
		tls     *TLSReport
		want    int
	}{
		{"healthy", VerdictOK, nil, ExitHealthy},
		{"healthy with TLS", VerdictOK, working(1460, 1500), ExitHealthy},
		{"pmtud works", VerdictPMTUDOK, nil, ExitHealthy},
		{"black hole", VerdictBlackHole, nil, ExitProblem},
		{"partial", VerdictPartial, nil, ExitProblem},
		{"unreachable", VerdictUnknown, nil, ExitUnknown},
		{"unreachable with --tls", VerdictUnknown, refused, ExitUnknown},
		{"probes unanswered, TLS hangs", VerdictUnknown, stalled, ExitProblem},
		{"healthy path, port closed", VerdictOK, refused, ExitProblem},
		{"healthy path, TLS hangs", VerdictOK, stalled, ExitProblem},
	} {
		r := &Report{Address: netip.MustParseAddr("192.0.2.9"), LocalMTU: 1500, Verdict: tt.verdict, TLS: tt.tls}
		r.explain()
		if got := r.ExitCode(); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}

func hasFix(r *Report, party string) bool {
	for _, f := range r.Fix {
		if f.Party == party {
			return true
		}
	}
	return false
}

func TestFixes(t *testing.T) {
	refused := &TLSReport{Connect: StepFailed}
	r := &Report{Address: netip.MustParseAddr("192.0.2.9"), Verdict: VerdictUnknown, TLS: refused}
	r.explain()
	if hasFix(r, "server") {
		t.Errorf("unknown verdict got the path-MTU-is-fine server fix: %+v", r.Fix)
	}
	r = &Report{Address: netip.MustParseAddr("192.0.2.9"), LocalMTU: 1500, PathMTU: 1500, Verdict: VerdictOK, TLS: refused}
	r.explain()
	if !hasFix(r, "server") {
		t.Errorf("healthy path with a failing TLS check: no server fix: %+v", r.Fix)
	}

	for _, v6 := range []bool{false, true} {
		r = blackHoleReport(nil)
		want := "icmp type destination-unreachable icmp code frag-needed accept"
		if v6 {
			r.Address = netip.MustParseAddr("2001:db8::9")
			want = "icmpv6 type packet-too-big accept"
		}
		r.explain()
		var router *Fix
		for i := range r.Fix {
			if r.Fix[i].Party == "router operator" {
				router = &r.Fix[i]
			}
		}
		if router == nil {
			t.Fatalf("no router fix: %+v", r.Fix)
		}
		// Every chain the text names has its command.
		for _, chain := range []string{"input", "forward", "output"} {
			if !strings.Contains(router.Action, chain) {
				t.Errorf("router fix does not name the %s chain: %s", chain, router.Action)
			}
			if !strings.Contains(router.Command, "nft insert rule inet filter "+chain+" "+want) {
				t.Errorf("router fix has no command for the %s chain: %q", chain, router.Command)
			}
		}
		var b strings.Builder
		if err := r.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "\n    nft insert rule inet filter output "+want+"\n") {
			t.Errorf("text report does not print each command on its own line:\n%s", b.String())
		}
	}
}

func TestAssessTCP(t *testing.T) {
	stalled := &TLSReport{Connect: StepOK, Handshake: StepStalled}
	alert := &TLSReport{Connect: StepOK, Handshake: StepFailed, HandshakeDetail: "remote error: tls: handshake failure"}
	yes, no := true, false
	for _, tt := range []struct {
		name string
		tls  *TLSReport
		want *bool
	}{
		{"no TLS check", nil, nil},
		{"hangs", stalled, &no},
		{"fails for another reason", alert, nil},
		// Works, but the server's segments were never larger than the
		// path MTU and this host's MSS did not fit: no evidence either way.
		{"works, nothing large sent", working(1460, 0), nil},
		{"works, clamped MSS", working(1360, 1400), &yes},
		{"works, large segments arrived", working(1460, 1500), &yes},
	} {
		r := blackHoleReport(tt.tls)
		r.explain()
		switch {
		case tt.want == nil && r.TCPProtected != nil:
			t.Errorf("%s: tcp_protected = %v, want unset", tt.name, *r.TCPProtected)
		case tt.want != nil && (r.TCPProtected == nil || *r.TCPProtected != *tt.want):
			t.Errorf("%s: tcp_protected = %v, want %v", tt.name, r.TCPProtected, *tt.want)
		}
		if !r.UDPExposed {
			t.Errorf("%s: udp_exposed = false on a silent black hole", tt.name)
		}
		if (r.TCPProtected != nil && *r.TCPProtected) == hasFix(r, "gateway") {
			t.Errorf("%s: gateway (MSS clamping) fix given = %v with tcp_protected %v", tt.name, hasFix(r, "gateway"), r.TCPProtected)
		}
	}
}

// A router that answers every larger size, only rate-limited, leaves UDP
// no worse off than TCP: udp_exposed must not claim a silent drop.
func TestUDPExposedNeedsSilence(t *testing.T) {
	r := blackHoleReport(nil)
	r.Verdict = VerdictPartial
	r.search = searchResult{verdict: VerdictPartial, pathMTU: 1400, failMTU: 1401, stats: map[int]*sizeStat{
		1400: {sent: 3, reached: 3},
		1401: {sent: 4, tooBig: 2},
		1500: {sent: 2, tooBig: 1},
	}}
	r.explain()
	if r.UDPExposed {
		t.Error("udp_exposed = true although every larger size got frag-needed back")
	}
	r = blackHoleReport(nil)
	r.explain()
	var b strings.Builder
	r.WriteText(&b)
	if !strings.Contains(b.String(), "inferred") {
		t.Errorf("udp line of an ICMP-probed black hole does not say it is inferred:\n%s", b.String())
	}
}
