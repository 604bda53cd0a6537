package doctor_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks time `doctor path` to its verdict on the topologies of the
// tests, and run tracepath (iputils) once on the same topology for
// comparison, after the doctor's runs. Metrics: s/verdict (inside the
// diagnosis; s/with-tls with the TLS check), probes/op,
// mtu (what the doctor found), tracepath-s and tracepath-pmtu. ns/op
// includes starting the process in the namespace. Run them with
// scripts/bench-doctor.sh (root; tracepath needs ~90 s per black hole).

var tracepathResume = regexp.MustCompile(`Resume: pmtu (\d+)`)

func benchPath(b *testing.B, ipv6 bool, setup func(*topo) []string) {
	tp := newTopo(b, 2)
	args := setup(tp)
	target := tp.serverAddr(ipv6)
	if ipv6 {
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
		time.Sleep(1500 * time.Millisecond) // let the routers' ICMP rate limits refill
		b.StartTimer()
	}
	b.ReportMetric(secs/float64(n), "s/verdict")
	if len(args) > 1 && args[0] == "--url" {
		b.ReportMetric(all/float64(n), "s/with-tls")
	}
	b.ReportMetric(float64(probes)/float64(n), "probes/op")
	b.ReportMetric(float64(mtu), "mtu")

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
}

func blackHole(tp *topo) {
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
}

func BenchmarkDoctorHealthy(b *testing.B) {
	benchPath(b, false, func(*topo) []string { return nil })
}

func BenchmarkDoctorPMTUD(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string { tp.bottleneck(2, routeMTU); return nil })
}

func BenchmarkDoctorBlackHole(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string { blackHole(tp); return nil })
}

func BenchmarkDoctorBlackHoleTLS(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string {
		blackHole(tp)
		tp.startTLS()
		return []string{"--url", "https://" + tp.serverAddr(false) + ":" + tlsPort + "/big"}
	})
}

func BenchmarkDoctorMSSClamped(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string {
		blackHole(tp)
		tp.clampMSS(2)
		tp.startTLS()
		return []string{"--url", "https://" + tp.serverAddr(false) + ":" + tlsPort + "/big"}
	})
}

func BenchmarkDoctorEchoBlocked(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string {
		blackHole(tp)
		tp.routers[0].Nft(noEchoRules)
		return []string{"--port", tlsPort}
	})
}

func BenchmarkDoctorBlackHoleIPv6(b *testing.B) {
	benchPath(b, true, func(tp *topo) []string { blackHole(tp); return nil })
}

func BenchmarkDoctorLossy(b *testing.B) {
	benchPath(b, false, func(tp *topo) []string { tp.routers[0].Nft(lossyRules); return nil })
}
