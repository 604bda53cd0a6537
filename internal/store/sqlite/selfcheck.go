package sqlite

import (
	"fmt"

	"github.com/clipper-cloud/clipper/internal/model"
)

// PutNodeSelfCheck replaces a node's self-check and its conditions.
func (t *tx) PutNodeSelfCheck(nodeID string, sc model.NodeSelfCheck) error {
	if _, err := t.exec(`DELETE FROM node_conditions WHERE node_id = ?`, nodeID); err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO node_self_checks (node_id, checked, mtu, peers) VALUES (?, ?, ?, ?)
		ON CONFLICT (node_id) DO UPDATE SET checked = excluded.checked, mtu = excluded.mtu, peers = excluded.peers`,
		nodeID, ms(sc.Checked), sc.MTU, sc.Peers); err != nil {
		return err
	}
	for i, c := range sc.Conditions {
		if _, err := t.exec(`INSERT INTO node_conditions (node_id, seq, type, status, peer, mtu, path_mtu, message)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, nodeID, i, c.Type, c.Status, c.Peer, c.MTU, c.PathMTU, c.Message); err != nil {
			return err
		}
	}
	return nil
}

// NodeSelfChecks returns every node's latest self-check, by node ID.
func (t *tx) NodeSelfChecks() (map[string]model.NodeSelfCheck, error) {
	rows, err := t.query(`SELECT node_id, checked, mtu, peers FROM node_self_checks`)
	if err != nil {
		return nil, fmt.Errorf("node self-checks: %w", err)
	}
	out := map[string]model.NodeSelfCheck{}
	for rows.Next() {
		var id string
		var checked int64
		var sc model.NodeSelfCheck
		if err := rows.Scan(&id, &checked, &sc.MTU, &sc.Peers); err != nil {
			rows.Close()
			return nil, err
		}
		sc.Checked, sc.Conditions = fromMS(checked), []model.NodeCondition{}
		out[id] = sc
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = t.query(`SELECT node_id, type, status, peer, mtu, path_mtu, message FROM node_conditions ORDER BY node_id, seq`)
	if err != nil {
		return nil, fmt.Errorf("node conditions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var c model.NodeCondition
		if err := rows.Scan(&id, &c.Type, &c.Status, &c.Peer, &c.MTU, &c.PathMTU, &c.Message); err != nil {
			return nil, err
		}
		sc := out[id]
		sc.Conditions = append(sc.Conditions, c)
		out[id] = sc
	}
	return out, rows.Err()
}
