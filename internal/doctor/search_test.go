package doctor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// fakePath simulates a path of routers to a target: a bottleneck router
// with a smaller MTU that may or may not send too-big answers, plain loss,
// and the TTL check before the MTU check that real routers do.
type fakePath struct {
	rng        *rand.Rand
	routers    []netip.Addr
	target     netip.Addr
	bottleneck int     // 1-based router with the small MTU; 0: none
	mtu        int     // its MTU
	ptb        float64 // chance that a too-big answer is sent and arrives
	vanish     int     // sizes above this vanish before the bottleneck (0: none)
	loss       float64 // chance that a probe or its answer is lost
	count      int
	// limited makes the target rate-limit its answers as Linux does its
	// ICMP errors: a bucket of 6, one more every second of clock, which
	// advances by step at every exchange (and by the pacer's waits).
	limited bool
	tokens  float64
	clock   time.Time
	last    time.Time
	step    time.Duration
}

func (f *fakePath) sent() int { return f.count }

func (f *fakePath) exchange(ctx context.Context, specs []probeSpec, _, _ time.Duration) ([]outcome, error) {
	out := make([]outcome, len(specs))
	for i, s := range specs {
		f.count++
		out[i] = f.one(s)
		if f.limited && out[i].kind == reached && !f.spend() {
			out[i] = outcome{kind: lost}
		}
	}
	f.clock = f.clock.Add(f.step)
	return out, ctx.Err()
}

// spend takes one answer from the target's bucket, if it has one.
func (f *fakePath) spend() bool {
	f.tokens = min(6, f.tokens+f.clock.Sub(f.last).Seconds())
	f.last = f.clock
	if f.tokens < 1 {
		return false
	}
	f.tokens--
	return true
}

func (f *fakePath) one(s probeSpec) outcome {
	if f.rng.Float64() < f.loss {
		return outcome{kind: lost}
	}
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	for h := 1; h <= len(f.routers); h++ {
		if ttl == h {
			return outcome{kind: expired, from: f.routers[h-1], rtt: time.Millisecond}
		}
		if f.vanish > 0 && h == f.bottleneck && s.size > f.vanish {
			return outcome{kind: lost}
		}
		if h == f.bottleneck && s.size > f.mtu {
			if f.rng.Float64() < f.ptb {
				return outcome{kind: tooBig, from: f.routers[h-1], mtu: f.mtu, rtt: time.Millisecond}
			}
			return outcome{kind: lost}
		}
	}
	return outcome{kind: reached, from: f.target, rtt: 2 * time.Millisecond}
}

func newFake(seed uint64) *fakePath {
	return &fakePath{
		rng:     rand.New(rand.NewPCG(seed, 1)),
		routers: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")},
		target:  netip.MustParseAddr("198.51.100.7"),
	}
}

func search(t *testing.T, f *fakePath) searchResult {
	t.Helper()
	s := newSearcher(slog.New(slog.DiscardHandler), f, defaultSearchConfig(68, 1500))
	if err := s.first(t.Context()); err != nil {
		t.Fatalf("first round: %v", err)
	}
	res, err := s.refine(t.Context())
	if err != nil {
		t.Fatalf("refine: %v", err)
	}
	return res
}

func TestSearchVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*fakePath)
		verdict Verdict
		mtu     int
	}{
		{"healthy", func(*fakePath) {}, VerdictOK, 1500},
		{"pmtud works", func(f *fakePath) { f.bottleneck, f.mtu, f.ptb = 2, 1400, 1 }, VerdictPMTUDOK, 1400},
		{"black hole", func(f *fakePath) { f.bottleneck, f.mtu = 2, 1400 }, VerdictBlackHole, 1400},
		{"black hole at 1280", func(f *fakePath) { f.bottleneck, f.mtu = 3, 1280 }, VerdictBlackHole, 1280},
		{"odd size", func(f *fakePath) { f.bottleneck, f.mtu = 1, 1337 }, VerdictBlackHole, 1337},
		{"too-big for some sizes, larger vanish", func(f *fakePath) { f.bottleneck, f.mtu, f.ptb, f.vanish = 2, 1400, 1, 1450 }, VerdictPartial, 1400},
		{"rate-limited too-big", func(f *fakePath) { f.bottleneck, f.mtu, f.ptb = 2, 1400, 0.3 }, VerdictPartial, 1400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(1)
			tt.setup(f)
			res := search(t, f)
			if res.verdict != tt.verdict || res.pathMTU != tt.mtu {
				t.Fatalf("verdict %s path MTU %d, want %s %d (%s)", res.verdict, res.pathMTU, tt.verdict, tt.mtu, res.evidence)
			}
			if f.count > 80 {
				t.Errorf("%d probes, want at most 80", f.count)
			}
			if tt.verdict == VerdictPMTUDOK && res.ptbFrom != f.routers[1] {
				t.Errorf("too-big from %s, want %s", res.ptbFrom, f.routers[1])
			}
		})
	}
}

// Loss must never be mistaken for a size limit: on a lossy path without
// one, no run may end in a black hole; with one, the limit is still found.
func TestSearchLossIsNotALimit(t *testing.T) {
	for _, m := range []Method{MethodICMP, MethodUDP} { // parallel and sequential
		cfg := searchConfigFor(m, 68, 1500)
		t.Run(string(m), func(t *testing.T) { lossIsNotALimit(t, cfg) })
	}
}

func lossIsNotALimit(t *testing.T, cfg searchConfig) {
	for _, loss := range []float64{0.1, 0.3, 0.5} {
		wrong, probes := 0, 0
		const runs = 300
		for seed := range uint64(runs) {
			f := newFake(seed)
			f.loss = loss
			s := newSearcher(slog.New(slog.DiscardHandler), f, cfg)
			if s.first(t.Context()) != nil {
				continue // every small probe lost: the method would be given up
			}
			res, _ := s.refine(t.Context())
			if res.verdict != VerdictOK {
				wrong++
			}
			probes += f.count
		}
		t.Logf("loss %.0f%%: %d of %d runs wrong, %d probes a run", 100*loss, wrong, runs, probes/runs)
		if wrong > runs/100 {
			t.Errorf("loss %.0f%%: %d of %d runs took loss for a limit", 100*loss, wrong, runs)
		}
	}
	for seed := range uint64(100) {
		f := newFake(seed)
		f.loss, f.bottleneck, f.mtu = 0.3, 2, 1400
		s := newSearcher(slog.New(slog.DiscardHandler), f, cfg)
		if s.first(t.Context()) != nil {
			continue
		}
		res, _ := s.refine(t.Context())
		if res.verdict != VerdictBlackHole || res.pathMTU != 1400 {
			t.Errorf("seed %d: lossy black hole: %s %d, want black-hole 1400", seed, res.verdict, res.pathMTU)
		}
	}
}

// A target that rate-limits its answers (UDP port unreachable): the paced,
// sequential search finds the exact threshold; the parallel one, which the
// fake proves models the limit, does not.
func TestSearchRateLimitedTarget(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(*fakePath)
		verdict Verdict
		mtu     int
		// unpacedWrong: the parallel search goes wrong on this path (it
		// happens to get common sizes right: the largest passing one is
		// sent first and answered).
		unpacedWrong bool
	}{
		{"healthy", func(*fakePath) {}, VerdictOK, 1500, false},
		{"black hole", func(f *fakePath) { f.bottleneck, f.mtu = 2, 1400 }, VerdictBlackHole, 1400, false},
		{"odd black hole", func(f *fakePath) { f.bottleneck, f.mtu = 1, 1337 }, VerdictBlackHole, 1337, true},
		{"low black hole", func(f *fakePath) { f.bottleneck, f.mtu = 1, 1001 }, VerdictBlackHole, 1001, true},
		{"pmtud works", func(f *fakePath) { f.bottleneck, f.mtu, f.ptb = 2, 1400, 1 }, VerdictPMTUDOK, 1400, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(1)
			tt.setup(f)
			f.limited, f.tokens, f.step = true, 6, 50*time.Millisecond
			f.clock = time.Unix(1e9, 0)
			f.last = f.clock
			p := newPacer(f)
			p.now = func() time.Time { return f.clock }
			p.sleep = func(_ context.Context, d time.Duration) error { f.clock = f.clock.Add(d); return nil }
			s := newSearcher(slog.New(slog.DiscardHandler), p, searchConfigFor(MethodUDP, 28, 1500))
			if err := s.first(t.Context()); err != nil {
				t.Fatalf("first round: %v", err)
			}
			res, err := s.refine(t.Context())
			if err != nil {
				t.Fatalf("refine: %v", err)
			}
			if res.verdict != tt.verdict || res.pathMTU != tt.mtu {
				t.Fatalf("verdict %s path MTU %d, want %s %d (%s)", res.verdict, res.pathMTU, tt.verdict, tt.mtu, res.evidence)
			}
			t.Logf("%d probes, %d rounds, %.1f s waited for the target's rate limit", f.count, res.rounds, p.waited.Seconds())

			// The same target searched in parallel rounds, unpaced.
			g := newFake(1)
			tt.setup(g)
			g.limited, g.tokens, g.step = true, 6, 50*time.Millisecond
			g.clock, g.last = f.clock, f.clock
			s = newSearcher(slog.New(slog.DiscardHandler), g, defaultSearchConfig(28, 1500))
			if s.first(t.Context()) != nil {
				return
			}
			if res, _ := s.refine(t.Context()); tt.unpacedWrong && res.verdict == tt.verdict && res.pathMTU == tt.mtu {
				t.Errorf("unpaced search got it right too: the fake does not model the rate limit")
			}
		})
	}
}

func TestLocate(t *testing.T) {
	f := newFake(1)
	f.bottleneck, f.mtu = 2, 1400
	loc, err := locate(t.Context(), f, 1400, 1500, time.Second, 30)
	if err != nil {
		t.Fatal(err)
	}
	last, ok := loc.lastHop()
	if !ok || last.Addr != f.routers[1] || last.TTL != 2 {
		t.Fatalf("last hop %+v, want router 2 at TTL 2; hops %+v", last, loc.hops)
	}
	next, ok := loc.nextHop()
	if !ok || next.Addr != f.routers[2] {
		t.Errorf("next hop %+v, want %s", next, f.routers[2])
	}
	if n := len(loc.hops); n != 4 {
		t.Errorf("%d hops, want 4 (3 routers and the target)", n)
	}
}

func TestUnreachable(t *testing.T) {
	f := newFake(1)
	f.loss = 1
	s := newSearcher(slog.New(slog.DiscardHandler), f, defaultSearchConfig(68, 1500))
	if err := s.first(t.Context()); err != errUnreachable {
		t.Fatalf("first = %v, want errUnreachable", err)
	}
}

func TestPeerCondition(t *testing.T) {
	c := Condition{Peer: netip.MustParseAddr("10.0.0.2"), MTU: 1500}
	router := netip.MustParseAddr("10.0.0.1")
	for _, tt := range []struct {
		res  searchResult
		want ConditionStatus
		mtu  int
	}{
		{searchResult{verdict: VerdictOK, pathMTU: 1500}, PeerOK, 0},
		{searchResult{verdict: VerdictPMTUDOK, pathMTU: 1450, ptbFrom: router, ptbMTU: 1450}, PeerMTUMismatch, 1450},
		{searchResult{verdict: VerdictBlackHole, pathMTU: 1450}, PeerBlackHole, 1450},
		{searchResult{verdict: VerdictUnknown}, PeerUnreachable, 0},
	} {
		got := peerCondition(c, tt.res)
		if got.Status != tt.want || got.PathMTU != tt.mtu || got.Message == "" {
			t.Errorf("%s: got %+v, want %s with path MTU %d", tt.res.verdict, got, tt.want, tt.mtu)
		}
	}
}

func TestChecksum(t *testing.T) {
	// RFC 1071's example: 0x0001 f203 f4f5 f6f7 sums to 0xddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := checksum(b, 0); got != ^uint16(0xddf2) {
		t.Fatalf("checksum = %#x, want %#x", got, ^uint16(0xddf2))
	}
	// A packet with its checksum filled in sums to zero.
	pkt := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'a', 'b', 'c'}
	cs := checksum(pkt, 0)
	pkt[2], pkt[3] = byte(cs>>8), byte(cs)
	if checksum(pkt, 0) != 0 {
		t.Fatal("checksum of a checksummed packet is not zero")
	}
}
