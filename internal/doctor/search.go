package doctor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Verdict is the diagnosis of a path.
type Verdict string

// Verdicts, as printed and as in JSON.
const (
	// VerdictOK: full-size packets (the local MTU) pass.
	VerdictOK Verdict = "ok"
	// VerdictPMTUDOK: the path MTU is smaller than the local MTU, and a
	// router says so with frag-needed / packet-too-big: discovery works.
	VerdictPMTUDOK Verdict = "pmtud-ok"
	// VerdictBlackHole: packets above the path MTU vanish and no ICMP error
	// ever comes back.
	VerdictBlackHole Verdict = "black-hole"
	// VerdictPartial: ICMP errors come back for some sizes or some probes,
	// other larger packets vanish.
	VerdictPartial Verdict = "partial"
	// VerdictUnknown: the target could not be made to answer.
	VerdictUnknown Verdict = "unknown"
)

// errUnreachable means no probe of the smallest size got an answer: this
// method cannot reach the target.
var errUnreachable = errors.New("no answer to the smallest probes")

// commonMTUs are the path MTUs met in practice (Ethernet, PPPoE, VPNs,
// tunnels, VXLAN, IPv6 minimum...); the first refinement round tries them.
var commonMTUs = []int{1500, 1492, 1480, 1476, 1472, 1460, 1450, 1440, 1420, 1400, 1380, 1360, 1350, 1300, 1280, 1024, 576}

// searchConfig tunes the path-MTU search.
type searchConfig struct {
	lo, hi    int           // protocol minimum, local MTU (IP sizes)
	width     int           // sizes per refinement round
	firstWait time.Duration // how long the first round waits at most
	minWait   time.Duration // shortest wait for an answer
	maxWait   time.Duration // longest wait for an answer
	// sequential searches one size at a time (bisection, no round of
	// common MTUs, no confirming copies of passing sizes), for methods
	// whose answers the target rate-limits: every passing probe costs one
	// of its few answers, vanishing ones cost nothing.
	sequential bool
}

// maxRounds bounds the search; a normal one takes fewer than ten, a
// sequential one (one size a round) about twenty, more on a lossy path.
const (
	maxRounds           = 40
	maxSequentialRounds = 100
)

func defaultSearchConfig(lo, hi int) searchConfig {
	return searchConfig{lo: lo, hi: hi, width: 8, firstWait: 2 * time.Second, minWait: 250 * time.Millisecond, maxWait: 2 * time.Second}
}

// searchConfigFor is the search for method m: UDP's answers are
// rate-limited by the target, so its search goes one size at a time.
func searchConfigFor(m Method, lo, hi int) searchConfig {
	c := defaultSearchConfig(lo, hi)
	if m == MethodUDP {
		c.width, c.sequential = 1, true
	}
	return c
}

// sizeStat counts the outcomes of every probe of one size.
type sizeStat struct {
	sent, reached, tooBig, refused int
	ptbFrom                        netip.Addr
	ptbMTU                         int
}

func (s *sizeStat) vanished() int { return s.sent - s.reached - s.tooBig - s.refused }

// searchResult is what the search found.
type searchResult struct {
	verdict  Verdict
	pathMTU  int        // largest size that passed
	failMTU  int        // smallest size that failed (0: none)
	ptbFrom  netip.Addr // router that sent frag-needed / packet-too-big
	ptbMTU   int        // the MTU it announced
	rtt      time.Duration
	loss     float64 // fraction of probes lost at sizes that pass
	rounds   int
	reason   string // why partial, in words
	evidence string // the figures behind the verdict
	stats    map[int]*sizeStat
}

// silent reports whether some size above the path MTU vanished every time
// with no ICMP error at all: the part of a black hole that nothing but
// letting ICMP through fixes.
func (r searchResult) silent() bool {
	for size, st := range r.stats {
		if size > r.pathMTU && st.sent > 0 && st.vanished() == st.sent {
			return true
		}
	}
	return false
}

// searcher runs the path-MTU search over an exchanger.
type searcher struct {
	log   *slog.Logger
	x     exchanger
	cfg   searchConfig
	stats map[int]*sizeStat
	rtt   time.Duration
	round int
	tried map[int]bool // sizes given to a refinement round already
}

func newSearcher(log *slog.Logger, x exchanger, cfg searchConfig) *searcher {
	return &searcher{log: log, x: x, cfg: cfg, stats: map[int]*sizeStat{}, tried: map[int]bool{}}
}

func (s *searcher) stat(size int) *sizeStat {
	st := s.stats[size]
	if st == nil {
		st = &sizeStat{}
		s.stats[size] = st
	}
	return st
}

// run sends specs and books their outcomes.
func (s *searcher) run(ctx context.Context, specs []probeSpec, maxWait time.Duration) error {
	if len(specs) == 0 {
		return nil
	}
	s.round++
	start := time.Now()
	outs, err := s.x.exchange(ctx, specs, maxWait, s.settle())
	if err != nil {
		return err
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		var b strings.Builder
		for i, o := range outs {
			fmt.Fprintf(&b, " %d:%s", specs[i].size, o.kind)
			if o.kind != lost {
				fmt.Fprintf(&b, "(%s)", o.rtt.Round(10*time.Microsecond))
			}
		}
		s.log.Debug("round", "n", s.round, "took", time.Since(start).Round(time.Millisecond), "outcomes", b.String())
	}
	for i, o := range outs {
		st := s.stat(specs[i].size)
		st.sent++
		switch o.kind {
		case reached:
			st.reached++
			s.rtt = max(s.rtt, o.rtt)
		case tooBig:
			st.tooBig++
			st.ptbFrom, st.ptbMTU = o.from, o.mtu
		case refused:
			st.refused++
		}
	}
	return nil
}

// settle is how long a round waits for stragglers once the first answer
// has come: a few round trips, never less than minWait.
func (s *searcher) settle() time.Duration {
	return min(max(s.cfg.minWait, 4*s.rtt+s.cfg.minWait/2), s.cfg.maxWait)
}

// bounds returns the largest size that passed and the smallest larger size
// that failed (0 if none).
func (s *searcher) bounds() (pass, fail int) {
	for size, st := range s.stats {
		if st.reached > 0 && size > pass {
			pass = size
		}
	}
	for size, st := range s.stats {
		if size > pass && st.reached == 0 && st.sent > 0 && (fail == 0 || size < fail) {
			fail = size
		}
	}
	return pass, fail
}

// loss estimates the fraction of probes lost at sizes known to pass, with a
// prior so a handful of clean answers do not make it zero.
func (s *searcher) loss() float64 {
	pass, _ := s.bounds()
	var sent, lost int
	for size, st := range s.stats {
		if size <= pass {
			sent += st.sent
			lost += st.sent - st.reached
		}
	}
	return (float64(lost) + 0.5) / (float64(sent) + 1)
}

// copiesFor is how many copies of a size to send so that losing all of them
// by chance stays under 20%. A size lost by chance only costs a round: the
// failing size is confirmed before it counts (see confirmations).
func copiesFor(loss float64) int {
	return clampInt(int(math.Ceil(math.Log(0.2)/math.Log(loss))), 1, 6)
}

// confirmations is how many copies of the failing size must all vanish
// before it is taken as a limit: chance loss of all under 0.1%.
func confirmations(loss float64) int {
	return clampInt(int(math.Ceil(math.Log(0.001)/math.Log(max(loss, 0.05)))), 3, 12)
}

// sequentialLossFloor is the loss a sequential search assumes at least
// when it confirms a failing size (6 copies must vanish).
const sequentialLossFloor = 0.3

func clampInt(v, lo, hi int) int { return min(max(v, lo), hi) }

func repeat(size, ttl, n int) []probeSpec {
	out := make([]probeSpec, n)
	for i := range out {
		out[i] = probeSpec{size: size, ttl: ttl}
	}
	return out
}

// first sends the opening round: the smallest size (three copies, to learn
// the round trip and whether the method works at all) and the local MTU.
// errUnreachable means nothing came back.
func (s *searcher) first(ctx context.Context) error {
	specs := append(repeat(s.cfg.lo, 0, 3), repeat(s.cfg.hi, 0, 2)...)
	if err := s.run(ctx, specs, s.cfg.firstWait); err != nil {
		return err
	}
	if s.stat(s.cfg.lo).reached == 0 && s.stat(s.cfg.hi).reached == 0 {
		return errUnreachable
	}
	return nil
}

// hiVanished reports whether every probe at the local MTU vanished: the sign
// of a possible black hole, worth locating at once.
func (s *searcher) hiVanished() bool {
	st := s.stat(s.cfg.hi)
	return st.reached == 0 && st.tooBig == 0 && st.sent > 0
}

// refine narrows the gap between the largest passing and the smallest
// failing size to one byte, trusting an announced MTU when a router sends
// one, and confirms the failing size with enough copies that loss cannot be
// mistaken for a limit.
func (s *searcher) refine(ctx context.Context) (searchResult, error) {
	for {
		pass, fail := s.bounds()
		if pass == 0 {
			return s.result(), errUnreachable
		}
		if fail == 0 { // everything probed passed
			if pass == s.cfg.hi {
				return s.result(), nil
			}
			fail = s.cfg.hi // cannot happen: hi is probed first
		}
		specs := s.nextRound(pass, fail)
		if len(specs) == 0 {
			return s.result(), nil
		}
		if s.round >= maxRounds && (!s.cfg.sequential || s.round >= maxSequentialRounds) {
			return s.result(), fmt.Errorf("no conclusion after %d rounds", s.round)
		}
		if err := s.run(ctx, specs, s.settle()); err != nil {
			return s.result(), err
		}
	}
}

// nextRound picks the probes for the next round, or none when the search is
// done.
func (s *searcher) nextRound(pass, fail int) []probeSpec {
	loss := s.loss()
	copies := copiesFor(loss)
	st := s.stat(fail)
	// A router announced an MTU between the bounds: try it first.
	var announced []int
	for size, x := range s.stats {
		if x.tooBig > 0 && x.ptbMTU > pass && x.ptbMTU < fail && size > x.ptbMTU && !s.tried[x.ptbMTU] {
			announced = append(announced, x.ptbMTU)
		}
	}
	if len(announced) > 0 {
		slices.Sort(announced)
		announced = slices.Compact(announced)
		var specs []probeSpec
		for _, m := range announced {
			s.tried[m] = true
			specs = append(specs, repeat(m, 0, copies)...)
		}
		return specs
	}
	if n := fail - pass - 1; n > 0 && n <= 2 && st.tooBig == 0 && st.refused == 0 && !s.cfg.sequential {
		// One or two sizes left: one of them or fail is the boundary, and
		// the boundary needs confirming anyway: send enough copies of each
		// to settle it in this round.
		conf := confirmations(loss)
		specs := repeat(fail, 0, max(conf-st.vanished(), 0))
		for size := pass + 1; size < fail; size++ {
			s.tried[size] = true
			specs = append(specs, repeat(size, 0, conf)...)
		}
		return specs
	}
	if fail == pass+1 || (st.tooBig > 0 && st.ptbMTU == pass) {
		// The boundary is known. A too-big answer is proof; silence needs
		// enough vanished copies.
		if st.tooBig > 0 || st.refused > 0 {
			return nil
		}
		conf := confirmations(loss)
		if s.cfg.sequential {
			// Few probes pass in a sequential search, so its loss estimate
			// is poor, and every size probed once was lost with chance
			// loss: confirm as if loss were high. The copies of a size
			// that fails cost the target no answers.
			conf = confirmations(max(loss, sequentialLossFloor))
		}
		need := conf - st.vanished()
		if need <= 0 {
			return nil
		}
		return repeat(fail, 0, need)
	}
	if s.cfg.sequential {
		return repeat(s.nextSize(pass, fail), 0, copies)
	}
	var sizes []int
	if s.round <= 1 {
		for _, m := range commonMTUs {
			if m > pass && m < fail {
				sizes = append(sizes, m)
			}
		}
	}
	if len(sizes) == 0 {
		n := min(s.cfg.width, fail-pass-1)
		for i := 1; i <= n; i++ {
			sizes = append(sizes, pass+(fail-pass)*i/(n+1))
		}
		sizes = slices.Compact(sizes)
	}
	var specs []probeSpec
	for _, size := range sizes {
		s.tried[size] = true
		specs = append(specs, repeat(size, 0, copies)...)
	}
	return specs
}

// nextSize is the one size a sequential search probes next: the largest
// common MTU between the bounds not tried yet, else the middle. Sizes that
// vanish cost the target no answer, so trying the common ones from the top
// spends its rate-limited answers on the sizes that matter.
func (s *searcher) nextSize(pass, fail int) int {
	size := pass + (fail-pass)/2
	for _, m := range commonMTUs {
		if m > pass && m < fail && !s.tried[m] {
			size = m
			break
		}
	}
	s.tried[size] = true
	return size
}

// result classifies what the search saw.
func (s *searcher) result() searchResult {
	pass, fail := s.bounds()
	r := searchResult{pathMTU: pass, failMTU: fail, rtt: s.rtt, loss: s.loss(), rounds: s.round, stats: s.stats}
	var lostAtPass, sentAtPass int
	for size, st := range s.stats {
		if size <= pass {
			sentAtPass += st.sent
			lostAtPass += st.sent - st.reached
		}
	}
	r.loss = 0
	if sentAtPass > 0 {
		r.loss = float64(lostAtPass) / float64(sentAtPass)
	}
	switch {
	case pass == 0:
		r.verdict = VerdictUnknown
		r.evidence = "no probe got an answer"
		return r
	case pass >= s.cfg.hi:
		r.verdict = VerdictOK
		r.evidence = fmt.Sprintf("%d-byte probes (the local MTU) pass", pass)
		return r
	}
	var ptbSizes, vanishSizes, refusedSizes []int
	var rateLimited bool
	for size, st := range s.stats {
		if size <= pass || st.sent == 0 {
			continue
		}
		switch {
		case st.tooBig > 0:
			ptbSizes = append(ptbSizes, size)
			if r.ptbFrom == (netip.Addr{}) || size == fail {
				r.ptbFrom, r.ptbMTU = st.ptbFrom, st.ptbMTU
			}
			// Copies of a too-big size that vanished, beyond what loss
			// explains, mean the router rate-limits its answers.
			if v := st.vanished(); v > 0 && float64(v)/float64(st.sent) > max(0.34, 2*r.loss) {
				rateLimited = true
			}
		case st.refused > 0:
			refusedSizes = append(refusedSizes, size)
		default:
			vanishSizes = append(vanishSizes, size)
		}
	}
	slices.Sort(ptbSizes)
	slices.Sort(vanishSizes)
	fst := s.stats[fail]
	switch {
	case len(ptbSizes) > 0 && len(vanishSizes) == 0 && !rateLimited:
		r.verdict = VerdictPMTUDOK
		r.evidence = fmt.Sprintf("%d-byte probes pass; larger ones get frag-needed from %s (MTU %d)", pass, r.ptbFrom, r.ptbMTU)
	case len(ptbSizes) == 0 && len(vanishSizes) > 0:
		r.verdict = VerdictBlackHole
		r.evidence = fmt.Sprintf("%d-byte probes pass (%d of %d answered); %d-byte probes vanished %d of %d times and no ICMP error came back",
			pass, s.stats[pass].reached, s.stats[pass].sent, fail, fst.vanished(), fst.sent)
	case len(ptbSizes) == 0 && len(vanishSizes) == 0:
		r.verdict = VerdictPartial
		r.reason = fmt.Sprintf("probes above %d bytes are rejected by %v", pass, refusedSizes)
		r.evidence = r.reason
	default:
		r.verdict = VerdictPartial
		switch {
		case len(vanishSizes) > 0:
			r.reason = fmt.Sprintf("frag-needed comes back for %d..%d bytes but %d..%d-byte probes vanish without an answer",
				ptbSizes[0], ptbSizes[len(ptbSizes)-1], vanishSizes[0], vanishSizes[len(vanishSizes)-1])
		default:
			r.reason = "frag-needed comes back for only some probes: the router rate-limits its ICMP errors"
		}
		r.evidence = fmt.Sprintf("%d-byte probes pass; %s", pass, r.reason)
	}
	return r
}
