package model

import (
	"fmt"
	"time"
)

// Types of node conditions.
const (
	// CondUnderlayMTU: the node's own underlay interface is smaller than
	// the overlay needs (the instance MTU plus VXLAN's 50 bytes).
	CondUnderlayMTU = "underlay-mtu"
	// CondPeerPath: the underlay path to a peer node does not carry
	// packets of that size.
	CondPeerPath = "peer-path"
)

// Statuses of node conditions (as package doctor names them).
const (
	CondBlackHole   = "black-hole"   // larger packets vanish, no ICMP error
	CondMTUMismatch = "mtu-mismatch" // an interface or a router says the MTU is smaller
	CondUnreachable = "unreachable"  // not even small probes get an answer
)

// NodeCondition is a problem a node's self-check found on the underlay
// its overlay runs over.
type NodeCondition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	// Peer is the peer node's underlay address (peer-path).
	Peer string `json:"peer,omitempty"`
	// MTU is the underlay packet size the overlay needs; PathMTU the
	// largest that passes (or the interface's MTU), when known.
	MTU     int    `json:"mtu"`
	PathMTU int    `json:"path_mtu,omitempty"`
	Message string `json:"message"`
}

// NodeSelfCheck is the latest result of a node's overlay self-check: it
// probes every peer node's underlay address at the underlay MTU the
// overlay needs, and compares its own interface's MTU with it.
type NodeSelfCheck struct {
	Checked time.Time `json:"checked"`
	// MTU is the underlay MTU checked; 0 when the node carries no overlay
	// traffic (nothing to check).
	MTU int `json:"mtu"`
	// Peers is the number of peer nodes probed.
	Peers int `json:"peers"`
	// Conditions are the problems found; none on a healthy node.
	Conditions []NodeCondition `json:"conditions"`
}

// Summary says the result in a few words, for a table column: "ok", or
// the first condition and how many more there are.
func (s NodeSelfCheck) Summary() string {
	if len(s.Conditions) == 0 {
		return "ok"
	}
	c := s.Conditions[0]
	out := c.Status
	switch {
	case c.Peer != "":
		out += " to " + c.Peer
	case c.Type == CondUnderlayMTU:
		out += fmt.Sprintf(" (underlay MTU %d < %d)", c.PathMTU, c.MTU)
	}
	if n := len(s.Conditions) - 1; n > 0 {
		out += fmt.Sprintf(" +%d more", n)
	}
	return out
}
