package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// moveTimeout bounds one live migration's copy.
const moveTimeout = 5 * time.Minute

// convergeMove carries out this node's part of a live migration: as the
// destination it prepares the instance (image, port, VM) and starts the VM
// waiting for its state; as the source it sends the state once the
// destination waits. Either way it reports how far it got, and a node that
// cannot do its part says why in MoveError (the controller then calls the
// move off).
func (a *Agent) convergeMove(ctx context.Context, d nodeproto.DesiredInstance, obs nodeproto.ObservedInstance) (nodeproto.ObservedInstance, error) {
	log := a.log.With("instance", d.ID)
	mig, ok := a.cfg.Driver.(compute.Migrator)
	if !ok {
		obs = a.observe(ctx, d.ID, obs)
		obs.MoveError = fmt.Sprintf("the %s driver cannot move VMs live", a.cfg.Driver.Name())
		return obs, nil
	}
	switch d.Move.Role {
	case nodeproto.MoveIn:
		if st, err := a.cfg.Driver.Status(ctx, d.ID); err == nil && st.State == compute.StateRunning {
			return a.observe(ctx, d.ID, obs), nil // arrived
		}
		addr, err := a.prepareIncoming(ctx, d, mig)
		if err != nil {
			log.Error("cannot take a moving instance", "error", err)
			obs.State, obs.MoveError = nodeproto.ObsFailed, err.Error()
			return obs, nil
		}
		obs = a.observe(ctx, d.ID, obs)
		obs.MoveAddr = addr
		return obs, nil
	case nodeproto.MoveOut:
		if d.Move.Addr == "" {
			return a.observe(ctx, d.ID, obs), nil // the destination is not ready yet
		}
		mctx, cancel := context.WithTimeout(ctx, moveTimeout)
		defer cancel()
		start := time.Now()
		err := mig.MigrateTo(mctx, d.ID, d.Move.Addr)
		obs = a.observe(ctx, d.ID, obs)
		if err != nil {
			if ctx.Err() != nil {
				return obs, ctx.Err()
			}
			log.Error("live migration failed", "to", d.Move.Addr, "error", err)
			obs.MoveError = err.Error()
			return obs, nil
		}
		log.Info("instance moved out", "to", d.Move.Addr, "took", time.Since(start))
		return obs, nil
	}
	return obs, fmt.Errorf("unknown move role %q", d.Move.Role)
}

// prepareIncoming readies the destination of a move: the image and the
// port as for a boot, then the VM waiting for the instance's state on this
// node's underlay address.
func (a *Agent) prepareIncoming(ctx context.Context, d nodeproto.DesiredInstance, mig compute.Migrator) (string, error) {
	if a.cfg.Address == "" {
		return "", errors.New("this node has no underlay address (--address) for the migration to arrive on")
	}
	if err := a.create(ctx, d); err != nil {
		return "", err
	}
	return mig.Incoming(ctx, d.ID, a.cfg.Address, d.Move.From, d.Move.Console)
}
