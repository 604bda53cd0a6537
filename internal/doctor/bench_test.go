package doctor_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks time `doctor path` to its verdict on the topologies of the
// tests, and run tracepath (iputils) once on the same topology for
// comparison, after the doctor's runs. Metrics: s/verdict (inside the
// diagnosis; s/with-tls with the TLS check), probes/op, mtu (what the
// doctor found), tracepath-s, tracepath-pmtu and tracepath-probes.
// tracepath prints no count of its probes: an nft counter in the client's
// namespace counts the UDP datagrams it sends to the target. ns/op
// includes starting the process in the namespace. Run them with
// scripts/bench-doctor.sh (root; tracepath needs ~90 s per black hole).

var (
	tracepathResume = regexp.MustCompile(`Resume: pmtu (\d+)`)
	nftPackets      = regexp.MustCompile(`counter packets (\d+)`)
)

// benchTopo is one benchmarked topology.
type benchTopo struct {
	routers int  // default 2
	ipv6    bool // probe the server's IPv6 address
	// rest is the pause between runs, so routers' and the target's ICMP
	// rate limits refill (default 1.5 s).
	rest  time.Duration
	setup func(*topo) []string
}

func benchPath(b *testing.B, bt benchTopo) {
	if bt.routers == 0 {
		bt.routers = 2
	}
	if bt.rest == 0 {
		bt.rest = 1500 * time.Millisecond
	}
	tp := newTopo(b, bt.routers)
	var args []string
	if bt.setup != nil {
		args = bt.setup(tp)
	}
	target := tp.serverAddr(bt.ipv6)
	if bt.ipv6 {
		args = append(args, "-6")
	}
	args = append(args, target)
	var secs, all float64
	var probes, mtu, n int
	for b.Loop() {
		rep, _ := tp.runDoctor(args...)
		n++
		secs += rep.ProbeSeconds
		all += rep.Seconds
		probes += rep.Probes
		mtu = rep.PathMTU
		b.StopTimer()
		time.Sleep(bt.rest)
		b.StartTimer()
	}
	b.ReportMetric(secs/float64(n), "s/verdict")
	if len(args) > 1 && args[0] == "--url" {
		b.ReportMetric(all/float64(n), "s/with-tls")
	}
	b.ReportMetric(float64(probes)/float64(n), "probes/op")
	b.ReportMetric(float64(mtu), "mtu")
	runTracepath(b, tp, target, bt.ipv6)
}

// runTracepath runs tracepath once and reports its time, its pmtu and the
// datagrams it sent.
func runTracepath(b *testing.B, tp *topo, target string, ipv6 bool) {
	family := "ip"
	if ipv6 {
		family = "ip6"
	}
	tp.client.Nft(fmt.Sprintf(`table inet tpcount {
	chain out {
		type filter hook output priority 0; policy accept;
		%s daddr %s meta l4proto udp counter
	}
}
`, family, target))
	argv := []string{"tracepath", "-n"}
	if ipv6 {
		argv = append(argv, "-6")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, _ := tp.client.Command(ctx, append(argv, target)...).CombinedOutput()
	b.ReportMetric(time.Since(start).Seconds(), "tracepath-s")
	if m := tracepathResume.FindStringSubmatch(string(out)); m != nil {
		pmtu, _ := strconv.Atoi(m[1])
		b.ReportMetric(float64(pmtu), "tracepath-pmtu")
	} else {
		b.Logf("tracepath printed no pmtu: %s", strings.TrimSpace(lastLines(string(out), 3)))
	}
	if m := nftPackets.FindStringSubmatch(tp.client.Run("nft", "list", "table", "inet", "tpcount")); m != nil {
		sent, _ := strconv.Atoi(m[1])
		b.ReportMetric(float64(sent), "tracepath-probes")
	}
}

func blackHole(tp *topo) {
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
}

func BenchmarkDoctorHealthy(b *testing.B) {
	benchPath(b, benchTopo{})
}

func BenchmarkDoctorPMTUD(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string { tp.bottleneck(2, routeMTU); return nil }})
}

func BenchmarkDoctorBlackHole(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string { blackHole(tp); return nil }})
}

// Four routers, the black hole in the third: the longest path the issue
// asks a verdict in seconds for.
func BenchmarkDoctorBlackHole4Routers(b *testing.B) {
	benchPath(b, benchTopo{routers: 4, setup: func(tp *topo) []string {
		tp.bottleneck(3, routeMTU)
		tp.dropPTB(3)
		return nil
	}})
}

func BenchmarkDoctorBlackHoleTLS(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string {
		blackHole(tp)
		tp.startTLS()
		return []string{"--url", "https://" + tp.serverAddr(false) + ":" + tlsPort + "/big"}
	}})
}

func BenchmarkDoctorMSSClamped(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string {
		blackHole(tp)
		tp.clampMSS(2)
		tp.startTLS()
		return []string{"--url", "https://" + tp.serverAddr(false) + ":" + tlsPort + "/big"}
	}})
}

func BenchmarkDoctorEchoBlocked(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string {
		blackHole(tp)
		tp.routers[0].Nft(noEchoRules)
		return []string{"--port", tlsPort}
	}})
}

// Only UDP passes: the search is paced by the server's ICMP rate limit,
// so the runs rest until its bucket (6 answers, one a second) is full.
func BenchmarkDoctorUDPOnly(b *testing.B) {
	benchPath(b, benchTopo{rest: 7 * time.Second, setup: func(tp *topo) []string {
		blackHole(tp)
		tp.routers[0].Nft(noEchoNoTCPRules)
		return []string{"--port", tlsPort}
	}})
}

func BenchmarkDoctorBlackHoleIPv6(b *testing.B) {
	benchPath(b, benchTopo{ipv6: true, setup: func(tp *topo) []string { blackHole(tp); return nil }})
}

func BenchmarkDoctorLossy(b *testing.B) {
	benchPath(b, benchTopo{setup: func(tp *topo) []string { tp.routers[0].Nft(lossyRules); return nil }})
}
