package agent

import (
	"context"
	"errors"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// pollWait is how long one desired-state long poll may be held.
const pollWait = 30 * time.Second

// instance is the agent's view of one instance: what is wanted and what is
// seen. A worker goroutine per instance converges it, one step at a time.
type instance struct {
	id      string
	desired nodeproto.DesiredInstance
	kick    chan struct{}
	busy    bool // the worker is converging; the scanner leaves obs alone
	done    bool // the VM is gone and the worker has exited
	obs     nodeproto.ObservedInstance
	dirty   bool // obs changed since the last accepted report
	console [32]byte
}

// pollLoop long-polls the controller for desired state.
func (a *Agent) pollLoop(ctx context.Context) error {
	var since int64
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		d, err := a.client.Desired(ctx, since, pollWait)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nodeproto.ErrUnauthorized) {
				return err
			}
			a.log.Warn("desired state poll failed; retrying", "error", err, "in", backoff)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			since = 0 // resync fully after an outage
			continue
		}
		backoff = 200 * time.Millisecond
		if a.apply(ctx, d) {
			since = 0 // an instance needs groups or peers this node lacks
			continue
		}
		since = d.Rev
	}
	return ctx.Err()
}

// apply merges desired state into the instance table and wakes workers. It
// returns true when the node should ask for a full answer next.
func (a *Agent) apply(ctx context.Context, d nodeproto.Desired) (resync bool) {
	a.mu.Lock()
	netChanged := a.net.merge(d)
	resync = !d.Full && a.net.needsFull(d.Instances)
	a.mu.Unlock()
	if resync {
		return true
	}
	// Groups go in before the instances that use them are attached.
	if netChanged {
		a.applyGroups(ctx, d.Full)
	}
	a.applyForwards(ctx, d.Forwards)
	a.mu.Lock()
	listed := map[string]bool{}
	for _, di := range d.Instances {
		listed[di.ID] = true
		a.setDesiredLocked(ctx, di)
	}
	if d.Full {
		// Whatever the controller no longer lists must go.
		for id, in := range a.insts {
			if !listed[id] {
				a.setDesiredLocked(ctx, nodeproto.DesiredInstance{ID: id, Rev: in.desired.Rev, Power: model.PowerAbsent})
			}
		}
	}
	first := d.Full && !a.synced
	if d.Full {
		a.synced = true
	}
	a.mu.Unlock()
	if first {
		a.adoptOrphans(ctx, listed)
		a.readyOnce.Do(func() { close(a.ready) })
	}
	return false
}

// adoptOrphans deletes VMs the driver holds that the controller does not
// list (terminated while the agent was away).
func (a *Agent) adoptOrphans(ctx context.Context, listed map[string]bool) {
	vms, err := a.cfg.Driver.List(ctx)
	if err != nil {
		a.log.Error("list VMs", "error", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, vm := range vms {
		if !listed[vm.ID] {
			if _, known := a.insts[vm.ID]; !known {
				a.log.Info("removing VM the controller no longer wants", "instance", vm.ID)
				a.setDesiredLocked(ctx, nodeproto.DesiredInstance{ID: vm.ID, Power: model.PowerAbsent})
			}
		}
	}
}

func (a *Agent) setDesiredLocked(ctx context.Context, di nodeproto.DesiredInstance) {
	in, ok := a.insts[di.ID]
	if !ok {
		in = &instance{id: di.ID, kick: make(chan struct{}, 1), obs: nodeproto.ObservedInstance{ID: di.ID, State: nodeproto.ObsPending}}
		a.insts[di.ID] = in
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.worker(ctx, in)
		}()
	}
	in.desired = di
	if in.done {
		if di.Power == model.PowerAbsent {
			in.dirty = true // say "absent" again
			return
		}
		in.done = false
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.worker(ctx, in)
		}()
	}
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

// worker converges one instance whenever it is kicked, until it is gone.
func (a *Agent) worker(ctx context.Context, in *instance) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.kick:
		case <-retry.C:
		}
		a.mu.Lock()
		d := in.desired
		in.busy = true
		a.mu.Unlock()

		obs, gone, err := a.converge(ctx, d)

		a.mu.Lock()
		in.busy = false
		obs.Console = in.obs.Console // unsent console output stays queued
		if obs.State != in.obs.State || obs.Reason != in.obs.Reason || obs.PID != in.obs.PID || obs.RebootSeq != in.obs.RebootSeq ||
			obs.MoveAddr != in.obs.MoveAddr || obs.MoveError != in.obs.MoveError {
			in.obs, in.dirty = obs, true
		}
		if gone && in.desired.Rev == d.Rev && in.desired.Power == model.PowerAbsent {
			// The reporter forgets the instance once "absent" is accepted.
			in.done = true
			a.mu.Unlock()
			a.kickReport()
			return
		}
		a.mu.Unlock()
		a.kickReport()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("converge failed; will retry", "instance", in.id, "error", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
	}
}
