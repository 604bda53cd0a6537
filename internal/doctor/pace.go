package doctor

import (
	"context"
	"sync"
	"time"
)

// UDP probes pass when the target answers them with ICMP port unreachable,
// and hosts rate-limit those: Linux sends a burst of 6 to one destination,
// then one per net.ipv4.icmp_ratelimit (1 s; net.ipv6.icmp.ratelimit for
// ICMPv6), for every type in icmp_ratemask, destination unreachable
// included. A search that sends a round of eight sizes gets one answer and
// takes seven passing sizes for lost ones. Frag-needed and packet-too-big
// are exempt from the limit, and probes that vanish cost the target
// nothing, so only probes that reach the target need pacing.

// Linux's defaults for the limit on the target's ICMP errors.
const (
	icmpBurst = 6
	// icmpEvery is the refill interval, with a margin for the jitter
	// between when this host counts and when the target's kernel does.
	icmpEvery = 1100 * time.Millisecond
)

// pacer is an exchanger that never lets more probes out at once than the
// target has answers left in its rate limit (a token bucket, as the
// kernel keeps one per destination). It believes the target's bucket full
// at the start, spends a token for every answer from the target, and
// waits for the bucket to refill when it runs dry.
type pacer struct {
	x     exchanger
	burst float64
	every time.Duration
	now   func() time.Time
	sleep func(context.Context, time.Duration) error

	mu     sync.Mutex // one batch at a time: the bucket is shared
	tokens float64
	last   time.Time
	waited time.Duration
}

func newPacer(x exchanger) *pacer {
	return &pacer{x: x, burst: icmpBurst, every: icmpEvery, now: time.Now, sleep: sleepCtx, tokens: icmpBurst}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (p *pacer) sent() int { return p.x.sent() }

// refill adds the tokens the target has earned since the last look.
func (p *pacer) refill() {
	now := p.now()
	if !p.last.IsZero() {
		p.tokens = min(p.burst, p.tokens+float64(now.Sub(p.last))/float64(p.every))
	}
	p.last = now
}

// exchange sends specs in chunks no larger than the tokens left, waiting
// for the bucket between chunks; the outcomes keep the order of specs.
func (p *pacer) exchange(ctx context.Context, specs []probeSpec, maxWait, settle time.Duration) ([]outcome, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]outcome, 0, len(specs))
	for len(specs) > 0 {
		p.refill()
		if p.tokens < 1-1e-9 {
			d := time.Duration((1-p.tokens)*float64(p.every)) + time.Millisecond
			p.waited += d
			if err := p.sleep(ctx, d); err != nil {
				return nil, err
			}
			continue
		}
		n := min(max(int(p.tokens+1e-9), 1), len(specs))
		o, err := p.x.exchange(ctx, specs[:n], maxWait, settle)
		if err != nil {
			return nil, err
		}
		for _, x := range o {
			if x.kind == reached {
				p.tokens = max(p.tokens-1, 0)
			}
		}
		out = append(out, o...)
		specs = specs[n:]
	}
	return out, nil
}
