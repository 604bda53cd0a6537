package model

import "time"

// Address resources and prefixes.
const (
	ResAddress        = "address"
	ResAllocation     = "allocation"
	ResAssociation    = "association"
	ResForward        = "forward"
	PrefixAllocation  = "eipalloc-"
	PrefixAssociation = "eipassoc-"
	PrefixForward     = "fwd-"
)

// Address is an elastic IP: a public address of the pool allocated to an
// account, and associated with an instance's private address or not.
type Address struct {
	ID            string // eipalloc-
	AccountID     string
	PublicIP      string
	AssociationID string
	InstanceID    string
	PrivateIP     string
	Created       time.Time
	Tags          []Tag
}

// Forward is a managed port forward: traffic to ListenIP:ListenPort on a
// node goes to TargetIP:TargetPort.
type Forward struct {
	ID         string
	AccountID  string
	Protocol   string // tcp | udp
	ListenIP   string
	ListenPort int
	TargetIP   string
	TargetPort int
	NodeID     string
	Rev        int64
	Created    time.Time
}
