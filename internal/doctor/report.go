package doctor

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Exit statuses of `clipper doctor` commands.
const (
	// ExitHealthy: nothing wrong found.
	ExitHealthy = 0
	// ExitError: the check could not run (bad arguments, no privileges).
	ExitError = 1
	// ExitProblem: a problem was found (black hole, partial discovery, a
	// TLS hang, rules that drop frag-needed).
	ExitProblem = 2
	// ExitUnknown: the check ran but could not tell (the target never
	// answered).
	ExitUnknown = 3
)

// Fix is one thing one party can do about a problem.
type Fix struct {
	// Party is who can act: "router operator", "gateway", "host",
	// "server", "firewall".
	Party string `json:"party"`
	// Action says what to do, in words.
	Action string `json:"action"`
	// Command is an example command, when there is one.
	Command string `json:"command,omitempty"`
}

// Report is the diagnosis of one path.
type Report struct {
	Target    string     `json:"target"`
	Address   netip.Addr `json:"address"`
	Source    netip.Addr `json:"source"`
	Interface string     `json:"interface"`
	LocalMTU  int        `json:"local_mtu"`
	Port      int        `json:"port"`
	// Verdict is ok, pmtud-ok, black-hole, partial or unknown.
	Verdict Verdict `json:"verdict"`
	// PathMTU is the largest IP packet (bytes, headers included) that
	// passes; FailingSize the smallest one seen to fail.
	PathMTU     int `json:"path_mtu"`
	FailingSize int `json:"failing_size,omitempty"`
	// Hop is the last hop that answers before the bottleneck: the router
	// that sent frag-needed (pmtud-ok), or the last hop that still answers
	// probes of the failing size (black-hole, partial).
	Hop    netip.Addr `json:"hop"`
	HopTTL int        `json:"hop_ttl,omitempty"`
	// NextHop is the first hop the failing size does not reach.
	NextHop    netip.Addr `json:"next_hop,omitzero"`
	NextHopTTL int        `json:"next_hop_ttl,omitempty"`
	// AnnouncedMTU is the next-hop MTU in the frag-needed / packet-too-big
	// messages, when any came.
	AnnouncedMTU int `json:"announced_mtu,omitempty"`
	// Method is the probe kind that worked; Tried every kind tried.
	Method Method   `json:"method,omitempty"`
	Tried  []Method `json:"tried,omitempty"`
	// Summary says what is wrong, Where where, Confidence how sure
	// (high, medium, low) and Evidence on what figures.
	Summary    string   `json:"summary"`
	Where      string   `json:"where,omitempty"`
	Confidence string   `json:"confidence"`
	Evidence   []string `json:"evidence,omitempty"`
	// Loss is the fraction of probes lost at sizes that pass; RTTms the
	// longest round trip seen.
	Loss  float64 `json:"loss"`
	RTTms float64 `json:"rtt_ms"`
	// TCPProtected is set when the TLS check ran on a path with a black
	// hole and shows how TCP fares: false when it hangs, true when it works
	// with evidence (a clamped MSS that fits the path MTU, or segments
	// larger than it that arrived); unset when the check proves neither.
	TCPProtected *bool `json:"tcp_protected,omitempty"`
	// UDPExposed is true when probes above PathMTU vanished without any
	// ICMP error: UDP datagrams of those sizes do the same, as nothing
	// clamps UDP (measured when Method is udp, inferred otherwise). Not set
	// when the router answers some sizes, even rate-limited.
	UDPExposed bool       `json:"udp_exposed,omitempty"`
	TLS        *TLSReport `json:"tls,omitempty"`
	Hops       []Hop      `json:"hops,omitempty"`
	Fix        []Fix      `json:"fix"`
	// Probes is how many probe packets were sent, ProbeSeconds how long
	// the path verdict took, Seconds the whole diagnosis (with the TLS
	// check, which runs beside the probes).
	Probes       int     `json:"probes"`
	ProbeSeconds float64 `json:"probe_seconds"`
	Seconds      float64 `json:"seconds"`

	search searchResult
}

// ExitCode is the exit status for the report (ExitHealthy, ExitProblem or
// ExitUnknown). A black hole, partial discovery or a TLS check that
// connects and then hangs or fails is a problem; a target that answers no
// probe is "could not tell", even when the TLS check could not connect
// either (that says nothing more).
func (r *Report) ExitCode() int {
	switch {
	case r.Verdict == VerdictBlackHole || r.Verdict == VerdictPartial:
		return ExitProblem
	case r.TLS != nil && r.TLS.Connect == StepOK && !r.TLS.Works():
		return ExitProblem
	case r.Verdict == VerdictUnknown:
		return ExitUnknown
	case r.TLS != nil && !r.TLS.Works():
		return ExitProblem // the path is fine and the port does not connect
	}
	return ExitHealthy
}

// fill copies the search result into the report.
func (r *Report) fill(res searchResult) {
	r.search = res
	r.Verdict = res.verdict
	r.PathMTU = res.pathMTU
	r.FailingSize = res.failMTU
	r.Loss = res.loss
	r.RTTms = ms(res.rtt)
	r.AnnouncedMTU = res.ptbMTU
	if res.verdict == VerdictPMTUDOK {
		r.Hop = res.ptbFrom
	}
	if res.evidence != "" {
		r.Evidence = append(r.Evidence, res.evidence)
	}
	if res.loss > 0 {
		r.Evidence = append(r.Evidence, fmt.Sprintf("%.0f%% of the probes at sizes that pass were lost (plain loss, told apart from a size limit by repeating each size)", 100*res.loss))
	}
}

// setLocation records where the bottleneck is.
func (r *Report) setLocation(loc location) {
	r.Hops = loc.hops
	if h, ok := loc.lastHop(); ok {
		r.Hop, r.HopTTL = h.Addr, h.TTL
	}
	if h, ok := loc.nextHop(); ok {
		r.NextHop, r.NextHopTTL = h.Addr, h.TTL
	}
}

// icmpName is the name of the ICMP error that carries the path MTU.
func (r *Report) icmpName() string {
	if r.Address.Is6() {
		return `ICMPv6 type 2 "packet too big"`
	}
	return `ICMP type 3 code 4 "fragmentation needed"`
}

func (r *Report) nftAccept() string {
	if r.Address.Is6() {
		return "icmpv6 type packet-too-big accept"
	}
	return "icmp type destination-unreachable icmp code frag-needed accept"
}

// where says where the bottleneck is, in words.
func (r *Report) where() string {
	switch {
	case r.Verdict == VerdictPMTUDOK && r.Hop.IsValid():
		return fmt.Sprintf("at the router %s, which sends %s announcing MTU %d", r.Hop, r.icmpName(), r.AnnouncedMTU)
	case r.Hop.IsValid() && r.NextHop.IsValid():
		return fmt.Sprintf("after hop %d (%s): it still answers %d-byte probes, hop %d (%s) never sees them. The router at hop %d, or its link toward hop %d, drops them and its %s does not reach this host",
			r.HopTTL, r.Hop, r.FailingSize, r.NextHopTTL, r.NextHop, r.HopTTL, r.NextHopTTL, r.icmpName())
	case r.Hop.IsValid():
		return fmt.Sprintf("after hop %d (%s), the last hop that answers %d-byte probes", r.HopTTL, r.Hop, r.FailingSize)
	case len(r.Hops) > 0:
		return fmt.Sprintf("before the first hop: %d-byte probes do not even reach hop 1 — the link from this host (%s) is the suspect", r.FailingSize, r.Interface)
	}
	return ""
}

// explain writes the summary, the confidence, the TCP/UDP assessment and
// the fixes.
func (r *Report) explain() {
	target := r.Address.String()
	switch r.Verdict {
	case VerdictOK:
		r.Summary = fmt.Sprintf("Full-size packets (%d bytes, the local MTU) reach %s: no path-MTU problem.", r.LocalMTU, target)
	case VerdictPMTUDOK:
		r.Summary = fmt.Sprintf("The path MTU to %s is %d bytes, less than the local %d, and path-MTU discovery works: the router says so with %s.",
			target, r.PathMTU, r.LocalMTU, r.icmpName())
	case VerdictBlackHole:
		r.Summary = fmt.Sprintf("Path-MTU black hole: IP packets larger than %d bytes vanish on the way to %s and no %s ever comes back, so senders never learn to send smaller packets. Small requests work; TLS handshakes with large certificate chains, large downloads and uploads hang.",
			r.PathMTU, target, r.icmpName())
	case VerdictPartial:
		r.Summary = fmt.Sprintf("Path-MTU discovery to %s works only in part: %s. Up to %d bytes pass.", target, r.search.reason, r.PathMTU)
	case VerdictUnknown:
		r.Summary = fmt.Sprintf("Could not tell: %s answered none of the probes (%s). It may be down, or a firewall drops them all.", target, methodList(r.Tried, r.Port))
	}
	r.Where = r.where()
	r.Confidence = r.confidence()
	r.assessTCP()
	r.Fix = r.fixes()
}

func methodList(ms []Method, port int) string {
	var parts []string
	for _, m := range ms {
		switch m {
		case MethodICMP:
			parts = append(parts, "ICMP echo")
		case MethodTCP:
			parts = append(parts, fmt.Sprintf("TCP SYN to port %d", port))
		case MethodUDP:
			parts = append(parts, fmt.Sprintf("UDP to port %d", udpPort))
		}
	}
	return strings.Join(parts, ", ")
}

func (r *Report) confidence() string {
	switch r.Verdict {
	case VerdictUnknown:
		return "low"
	case VerdictOK, VerdictPMTUDOK:
		return "high" // an answer or a too-big message is proof
	}
	if r.Loss >= 0.2 {
		return "medium"
	}
	if fs := r.search.stats[r.FailingSize]; fs != nil && fs.vanished() >= confirmations(r.Loss) {
		return "high"
	}
	return "medium"
}

// assessTCP compares the TLS check with the probes. TCP that works over a
// black hole is protected (MSS clamping on the path, or a small MTU at the
// server) only if the check shows it: segments that fit the path MTU
// although this host's would not, or segments larger than the path MTU
// that arrived. A handshake that works but never needed a large packet
// proves nothing. UDP is exposed where sizes vanish without an answer:
// nothing clamps it.
func (r *Report) assessTCP() {
	bad := r.Verdict == VerdictBlackHole || r.Verdict == VerdictPartial
	if !bad {
		if r.TLS != nil && r.TLS.Stalled() {
			r.Evidence = append(r.Evidence, "the TLS check hangs although full-size packets pass: the cause is not the path MTU (look at the server, a proxy or a middlebox)")
		}
		return
	}
	r.UDPExposed = r.search.silent()
	if r.TLS == nil || r.TLS.Connect != StepOK {
		return
	}
	no := false
	switch {
	case r.TLS.Stalled():
		r.TCPProtected = &no
		return
	case !r.TLS.Works():
		return // failed for another reason: says nothing about the path
	}
	hdr := headerSize(MethodTCP, r.Address.Is6())
	var ev string
	switch {
	case r.TLS.PeerMSS > 0 && r.TLS.PeerMSS+hdr <= r.PathMTU && r.PathMTU < r.LocalMTU:
		ev = fmt.Sprintf("TCP is protected: the TLS check works although the probes show the black hole, and the server's SYN-ACK carried MSS %d, which fits in %d-byte packets: a box on the path clamps the TCP MSS (or the server's own MTU is small)",
			r.TLS.PeerMSS, r.TLS.PeerMSS+hdr)
	case r.TLS.RcvSegment > r.PathMTU:
		ev = fmt.Sprintf("TCP works: %d-byte segments arrived from the server although larger probes vanish, so the black hole is on the way to the server only and this host's segments fit", r.TLS.RcvSegment)
	default:
		r.Evidence = append(r.Evidence, fmt.Sprintf("the TLS check works but sent nothing larger than %d bytes (server MSS %d): it shows nothing about TCP over the black hole; give --url with a large download to test it", r.PathMTU, r.TLS.PeerMSS))
		return
	}
	yes := true
	r.TCPProtected = &yes
	r.Evidence = append(r.Evidence, ev+". UDP (QUIC, DNS, VPNs, VXLAN) and ICMP are still exposed: nothing clamps them.")
}

// routerChains are the chains of the router's filter table that must let
// the ICMP error through: input (its own connections), forward (errors of
// routers further on) and output (the errors it sends itself).
var routerChains = []string{"input", "forward", "output"}

func (r *Report) fixes() []Fix {
	var fs []Fix
	target := r.Address.String()
	router := "the router where the MTU shrinks"
	if r.Hop.IsValid() {
		router = fmt.Sprintf("the router at %s", r.Hop)
		if r.Verdict != VerdictPMTUDOK && r.NextHop.IsValid() {
			router += fmt.Sprintf(" and the link toward %s", r.NextHop)
		}
	}
	mssCmd := "nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu"
	switch r.Verdict {
	case VerdictBlackHole, VerdictPartial:
		var cmds []string
		for _, c := range routerChains {
			cmds = append(cmds, fmt.Sprintf("nft insert rule inet filter %s %s", c, r.nftAccept()))
		}
		fs = append(fs, Fix{
			Party:   "router operator",
			Action:  fmt.Sprintf("On %s and every firewall after it: let %s be sent and forwarded (input, forward and output chains); never rate-limit it below a few hundred per second.", router, r.icmpName()),
			Command: strings.Join(cmds, "\n"),
		})
		if r.TCPProtected == nil || !*r.TCPProtected {
			fs = append(fs, Fix{
				Party:   "gateway",
				Action:  fmt.Sprintf("Clamp the TCP MSS to the path MTU where it shrinks (MSS %d for %d-byte packets); this protects TCP only.", r.PathMTU-headerSize(MethodTCP, r.Address.Is6()), r.PathMTU),
				Command: mssCmd,
			})
		}
		fs = append(fs, Fix{
			Party:   "host",
			Action:  fmt.Sprintf("Until the path is fixed, send at most %d-byte packets toward %s: a route with that MTU, or the interface MTU.", r.PathMTU, target),
			Command: fmt.Sprintf("ip route add %s via <gateway> dev %s mtu lock %d   # or: ip link set dev %s mtu %d", target, r.Interface, r.PathMTU, r.Interface, r.PathMTU),
		})
	case VerdictUnknown:
		fs = append(fs, Fix{Party: "you", Action: "Give a port that answers TCP (open or closed, not filtered) with --port, or let ICMP echo through to the target, and run again."})
	}
	if r.TLS != nil && !r.TLS.Works() && (r.Verdict == VerdictOK || r.Verdict == VerdictPMTUDOK) {
		fs = append(fs, Fix{Party: "server", Action: "The TLS check fails although the path MTU is fine: look at the server, its load balancer or a proxy on the way."})
	}
	if fs == nil {
		fs = []Fix{}
	}
	return fs
}

// WriteText writes the report in plain words.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "path to %s", r.Target)
	if r.Target != r.Address.String() {
		fmt.Fprintf(&b, " (%s)", r.Address)
	}
	fmt.Fprintf(&b, " from %s on %s (MTU %d)\n\n", r.Source, r.Interface, r.LocalMTU)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-10s %s\n", k, indent(v))
		}
	}
	line("verdict", string(r.Verdict))
	line("what", r.Summary)
	line("where", r.Where)
	if r.PathMTU > 0 {
		line("path MTU", fmt.Sprintf("%d bytes (the largest IP packet that passes)", r.PathMTU))
	}
	sure := r.Confidence
	if len(r.Evidence) > 0 {
		sure += ": " + strings.Join(r.Evidence, "; ")
	}
	line("how sure", sure)
	if len(r.Hops) > 0 {
		var hs []string
		for _, h := range r.Hops {
			a := "*"
			if h.Addr.IsValid() {
				a = h.Addr.String()
			}
			mark := "passes"
			if !h.Passes {
				mark = "no answer"
			}
			hs = append(hs, fmt.Sprintf("%d %s (%d bytes: %s)", h.TTL, a, r.FailingSize, mark))
		}
		line("hops", strings.Join(hs, "\n"))
	}
	if t := r.TLS; t != nil {
		line("tls", tlsText(t))
	}
	if r.TCPProtected != nil {
		switch {
		case *r.TCPProtected && r.TLS.PeerMSS > 0 && r.TLS.PeerMSS+headerSize(MethodTCP, r.Address.Is6()) <= r.PathMTU:
			line("tcp", "protected by MSS clamping on the path")
		case *r.TCPProtected:
			line("tcp", "works: the server's large segments arrive (the black hole is on the way to it only)")
		default:
			line("tcp", "exposed: connections hang once they send full-size segments")
		}
	}
	if r.UDPExposed {
		how := "measured with UDP probes"
		if r.Method != MethodUDP {
			how = fmt.Sprintf("inferred: %s probes of those sizes vanish, and nothing on a path clamps UDP", r.Method)
		}
		line("udp", fmt.Sprintf("exposed: datagrams above %d bytes with Don't Fragment vanish (QUIC, DNS over UDP, VPNs, VXLAN); %s", r.PathMTU, how))
	}
	if len(r.Fix) > 0 {
		b.WriteString("fix\n")
		for _, f := range r.Fix {
			fmt.Fprintf(&b, "  %s: %s\n", f.Party, f.Action)
			for _, c := range strings.Split(f.Command, "\n") {
				if c != "" {
					fmt.Fprintf(&b, "    %s\n", c)
				}
			}
		}
	}
	probes := fmt.Sprintf("%d sent, verdict in %.2f s", r.Probes, r.ProbeSeconds)
	if r.Method != "" {
		probes = fmt.Sprintf("%d %s probes sent, verdict in %.2f s", r.Probes, r.Method, r.ProbeSeconds)
	}
	if r.TLS != nil {
		probes += fmt.Sprintf(", %.2f s with the TLS check", r.Seconds)
	}
	line("probes", probes)
	_, err := io.WriteString(w, b.String())
	return err
}

func tlsText(t *TLSReport) string {
	var parts []string
	switch t.Connect {
	case StepOK:
		parts = append(parts, fmt.Sprintf("TCP connect to port %d: ok (%.1f ms)", t.Port, t.ConnectMS))
	default:
		parts = append(parts, fmt.Sprintf("TCP connect to port %d: %s (%s)", t.Port, t.Connect, t.ConnectDetail))
	}
	switch t.Handshake {
	case StepOK:
		parts = append(parts, fmt.Sprintf("handshake: ok, %d-byte chain of %d certificates (%.1f ms)", t.ChainBytes, t.Certs, t.HandshakeMS))
	case StepStalled, StepFailed:
		parts = append(parts, fmt.Sprintf("handshake: %s: %s", t.Handshake, t.HandshakeDetail))
	}
	for _, x := range []struct {
		name string
		t    *Transfer
	}{{"download", t.Download}, {"upload", t.Upload}} {
		if x.t == nil {
			continue
		}
		s := fmt.Sprintf("%s: %s, %d of %d bytes in %.2f s", x.name, x.t.Status, x.t.Bytes, x.t.Want, x.t.Seconds)
		if x.t.Detail != "" {
			s += " (" + x.t.Detail + ")"
		}
		parts = append(parts, s)
	}
	if t.Signature != "" {
		parts = append(parts, "=> "+t.Signature)
	}
	return strings.Join(parts, "\n")
}

// indent continues multi-line values under the value column.
func indent(s string) string {
	return strings.ReplaceAll(s, "\n", "\n"+strings.Repeat(" ", 11))
}
