package network

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// Noop is networking that does nothing: for the fake driver, where VMs are
// not real and need no taps.
type Noop struct{}

// Attach returns the tap name a real host would use.
func (Noop) Attach(ctx context.Context, id string, n nodeproto.Network) (nodeproto.Port, error) {
	return nodeproto.Port{Tap: TapName(id)}, nil
}

// SetGroups does nothing.
func (Noop) SetGroups(ctx context.Context, groups []nodeproto.SecurityGroup, full bool) error {
	return nil
}

// SetPeers does nothing.
func (Noop) SetPeers(ctx context.Context, peers []nodeproto.Peer) error { return nil }

// SetForwards does nothing.
func (Noop) SetForwards(ctx context.Context, fs []nodeproto.Forward) error { return nil }

// Detach does nothing.
func (Noop) Detach(ctx context.Context, id string) error { return nil }
