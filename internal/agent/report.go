package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

func (a *Agent) kickReport() {
	select {
	case a.reportKick <- struct{}{}:
	default:
	}
}

// reportLoop sends changed observations as soon as there are any, and a
// heartbeat every interval.
func (a *Agent) reportLoop(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	full := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.reportKick:
		case <-t.C:
		}
		rep, sent := a.collect(full)
		if _, err := a.client.Report(ctx, rep); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nodeproto.ErrUnauthorized) {
				return err
			}
			a.log.Warn("report failed; will retry", "error", err)
			continue
		}
		full = false
		a.acknowledge(sent)
		a.ackSelfCheck(rep.SelfCheck)
	}
}

// collect builds a report of the dirty instances (all of them if full).
func (a *Agent) collect(full bool) (nodeproto.Report, map[*instance]nodeproto.ObservedInstance) {
	rep := nodeproto.Report{Capacity: a.cfg.Capacity, Full: full, SelfCheck: a.selfCheckReport(full)}
	if rep.Capacity.VCPUs == 0 {
		rep.Capacity = detectCapacity(a.cfg.DataDir)
	}
	sent := map[*instance]nodeproto.ObservedInstance{}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, in := range a.insts {
		if in.dirty || full {
			rep.Instances = append(rep.Instances, in.obs)
			sent[in] = in.obs
		}
	}
	return rep, sent
}

// acknowledge clears what the controller accepted, unless it changed since.
func (a *Agent) acknowledge(sent map[*instance]nodeproto.ObservedInstance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for in, o := range sent {
		if in.obs.State == o.State && in.obs.PID == o.PID && in.obs.Reason == o.Reason && in.obs.MoveAddr == o.MoveAddr && in.obs.MoveError == o.MoveError &&
			in.obs.RebootSeq == o.RebootSeq && len(in.obs.Console) == len(o.Console) {
			in.dirty = false
			in.obs.Console = nil
		}
		if in.done && !in.dirty {
			if cur, ok := a.insts[in.id]; ok && cur == in {
				delete(a.insts, in.id)
			}
		}
	}
}

// scanLoop watches VMs for changes nobody asked for (a guest powering off)
// and for new console output.
func (a *Agent) scanLoop(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		a.scan(ctx)
	}
}

func (a *Agent) scan(ctx context.Context) {
	a.mu.Lock()
	var ids []string
	for id, in := range a.insts {
		if !in.busy && !in.done && in.desired.Power != model.PowerAbsent {
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	changed := false
	for _, id := range ids {
		st, err := a.cfg.Driver.Status(ctx, id)
		if err != nil && !errors.Is(err, compute.ErrNotFound) {
			continue
		}
		var con []byte
		var sum [32]byte
		if err == nil {
			if con, err = a.cfg.Driver.Console(ctx, id, a.consoleMax); err == nil && len(con) > 0 {
				sum = sha256.Sum256(con)
			}
		}
		a.mu.Lock()
		in, ok := a.insts[id]
		if ok && !in.busy && !in.done {
			obs := in.obs
			switch {
			case errors.Is(err, compute.ErrNotFound) && obs.State != nodeproto.ObsPending && obs.State != nodeproto.ObsFailed:
				obs.State = nodeproto.ObsAbsent
			case st.State == compute.StateRunning && obs.State != nodeproto.ObsFailed:
				obs.State, obs.PID, obs.StartedAt, obs.Reason = nodeproto.ObsRunning, st.PID, st.StartedAt, ""
			case st.State == compute.StateStopped && obs.State == nodeproto.ObsRunning:
				obs.State, obs.PID, obs.Reason = nodeproto.ObsStopped, 0, st.ExitReason
			}
			if obs.State != in.obs.State || obs.PID != in.obs.PID {
				in.obs, in.dirty, changed = obs, true, true
				a.log.Info("instance changed on its own", "instance", id, "state", obs.State, "reason", obs.Reason)
			}
			if len(con) > 0 && sum != in.console {
				in.console = sum
				in.obs.Console = con
				in.dirty, changed = true, true
			}
		}
		a.mu.Unlock()
	}
	if changed {
		a.kickReport()
	}
}
