package service

import (
	"context"
	"slices"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// Bounds on what a node's self-check report may hold.
const (
	maxNodeConditions = 256
	maxConditionText  = 1024
)

// RecordSelfCheck stores the latest overlay self-check a node reported
// (see agent/selfcheck.go), replacing the one before. Conditions of kinds
// this controller does not know are dropped, long texts cut: a report is
// never refused for its self-check.
func (s *Service) RecordSelfCheck(ctx context.Context, nodeID string, sc model.NodeSelfCheck) error {
	sc.Conditions = s.saneConditions(nodeID, sc.Conditions)
	if sc.Checked.IsZero() {
		sc.Checked = s.nowMS()
	}
	sc.MTU, sc.Peers = max(sc.MTU, 0), max(sc.Peers, 0)
	var prev model.NodeSelfCheck
	err := s.update(ctx, func(tx store.Tx) error {
		all, err := tx.NodeSelfChecks()
		if err != nil {
			return err
		}
		prev = all[nodeID]
		return tx.PutNodeSelfCheck(nodeID, sc)
	})
	if err == nil && prev.Summary() != sc.Summary() {
		s.log.Info("node self-check", "node", nodeID, "condition", sc.Summary(), "mtu", sc.MTU, "peers", sc.Peers)
	}
	return err
}

func (s *Service) saneConditions(nodeID string, cs []model.NodeCondition) []model.NodeCondition {
	known := []string{model.CondBlackHole, model.CondMTUMismatch, model.CondUnreachable}
	out := []model.NodeCondition{}
	for _, c := range cs {
		if (c.Type != model.CondPeerPath && c.Type != model.CondUnderlayMTU) || !slices.Contains(known, c.Status) {
			s.log.Warn("node self-check: unknown condition dropped", "node", nodeID, "type", c.Type, "status", c.Status)
			continue
		}
		if len(out) == maxNodeConditions {
			s.log.Warn("node self-check: too many conditions; the rest dropped", "node", nodeID, "conditions", len(cs))
			break
		}
		c.Peer = cutText(c.Peer, 64)
		c.Message = cutText(c.Message, maxConditionText)
		out = append(out, c)
	}
	return out
}

// cutText shortens s to at most n bytes, on a character boundary.
func cutText(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// NodeSelfChecks returns the latest self-check of every node that has
// reported one, by node ID.
func (s *Service) NodeSelfChecks(ctx context.Context) (map[string]model.NodeSelfCheck, error) {
	var out map[string]model.NodeSelfCheck
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.NodeSelfChecks()
		return err
	})
	return out, err
}
