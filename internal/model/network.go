package model

import "time"

// Resource names of network errors.
const (
	ResVPC         = "vpc"
	ResSubnet      = "subnet"
	ResGroup       = "group"
	ResPermission  = "permission"
	ResRule        = "rule"
	ResInterface   = "interface"
	PrefixGroup    = "sg-"
	PrefixRule     = "sgr-"
	DefaultGroup   = "default"
	ProtocolAll    = "-1"
	MetadataTokens = "required"
)

// VPC is a network of an account.
type VPC struct {
	ID        string
	AccountID string
	CIDR      string
	Default   bool
	VNI       int    // VXLAN identifier of the overlay
	Uplink    string // bridged mode: existing host bridge or interface
	Created   time.Time
	Tags      []Tag
}

// Subnet is a VPC's address range in one availability zone.
type Subnet struct {
	ID        string
	VPCID     string
	AccountID string
	Zone      string
	CIDR      string
	Default   bool
	// Gateway overrides the router address (bridged networks use the LAN's
	// router); empty means the subnet's first host address.
	Gateway string
	// RangeFirst and RangeLast bound the addresses handed out (bridged
	// networks share the LAN); empty means the whole subnet.
	RangeFirst string
	RangeLast  string
	Created    time.Time
	Tags       []Tag
}

// SecurityGroup is a named set of rules instances belong to.
type SecurityGroup struct {
	ID          string
	AccountID   string
	VPCID       string
	Name        string
	Description string
	Rev         int64
	Created     time.Time
	Tags        []Tag
}

// GroupRule is one permission with one peer (a CIDR or a group), the unit
// EC2 gives a security group rule ID.
type GroupRule struct {
	ID          string
	GroupID     string
	Egress      bool
	Protocol    string // "tcp", "udp", "icmp", "icmpv6", "-1", or a number
	FromPort    int
	ToPort      int
	CIDR        string // set, or PeerGroup
	PeerGroup   string
	Description string
	Created     time.Time
}

// SameRule reports whether two rules allow the same traffic (IDs and
// descriptions aside).
func (r GroupRule) SameRule(o GroupRule) bool {
	return r.GroupID == o.GroupID && r.Egress == o.Egress && r.Protocol == o.Protocol &&
		r.FromPort == o.FromPort && r.ToPort == o.ToPort && r.CIDR == o.CIDR && r.PeerGroup == o.PeerGroup
}

// MetadataOptions are an instance's IMDS settings.
type MetadataOptions struct {
	HTTPTokens   string // "required" | "optional"
	HTTPEndpoint string // "enabled" | "disabled"
	HopLimit     int
	Tags         string // "enabled" | "disabled"
}

// DefaultMetadataOptions: IMDSv2 required, endpoint on, one hop.
func DefaultMetadataOptions() MetadataOptions {
	return MetadataOptions{HTTPTokens: "required", HTTPEndpoint: "enabled", HopLimit: 1, Tags: "disabled"}
}
