// Package nodeproto is the protocol between the controller and its node
// agents: the messages (JSON over HTTP) and a client the agent uses. The node
// always dials the controller, so nodes behind NAT work.
//
//	POST /node/v1/register          Registration -> RegistrationReply
//	GET  /node/v1/desired?since=R   long poll -> Desired (changes after R)
//	POST /node/v1/report            Report -> ReportReply
//	GET  /node/v1/blobs/{sha256}    image blob bytes
//	POST /node/v1/join              JoinRequest -> CertReply (no client certificate)
//	POST /node/v1/renew             RenewRequest -> CertReply
//
// Everything but join runs over mutual TLS: the node presents the
// certificate it got by joining (CN = node name), the controller acts for
// that node only. See package pki for the CA and the join tokens.
package nodeproto

import (
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
)

// Paths of the node API.
const (
	PathRegister = "/node/v1/register"
	PathDesired  = "/node/v1/desired"
	PathReport   = "/node/v1/report"
	PathBlobs    = "/node/v1/blobs/"
)

// HeaderNodeID names the node on every request after registration.
const HeaderNodeID = "X-Clipper-Node"

// Registration is what a node says about itself when it (re)connects.
type Registration struct {
	Name     string         `json:"name"`
	Zone     string         `json:"zone"`
	Address  string         `json:"address,omitempty"`
	Version  string         `json:"version"`
	Capacity model.Capacity `json:"capacity"`
}

// RegistrationReply gives the node its ID and how often to report.
type RegistrationReply struct {
	NodeID          string        `json:"node_id"`
	Zone            string        `json:"zone"`
	ReportInterval  time.Duration `json:"report_interval"`
	ConsoleMaxBytes int           `json:"console_max_bytes"`
}

// Network is the layer-2/3 setup an instance's interface needs on its node.
type Network struct {
	VPCID     string `json:"vpc_id"`
	Bridge    string `json:"bridge"`  // host bridge of the network, at most 15 bytes
	Gateway   string `json:"gateway"` // gateway address with prefix, "172.31.0.1/20"
	MTU       int    `json:"mtu"`     // MTU the guest must use (DHCP option 26); 0 on a bridged network: the host bridge's
	DNS       string `json:"dns,omitempty"`
	PrivateIP string `json:"private_ip"` // the instance address, no prefix
	MAC       string `json:"mac"`
	// Groups are the instance's security group IDs; their rules come in
	// Desired.Groups.
	Groups []string `json:"groups,omitempty"`
	// VNI is the network's VXLAN identifier: nodes that host instances of
	// the network join their bridges with a VXLAN device of this VNI.
	VNI int `json:"vni,omitempty"`
	// GatewayMAC is the bridge MAC every node gives the network, so the
	// distributed gateway answers the same wherever an instance runs.
	GatewayMAC string `json:"gateway_mac,omitempty"`
	// Uplink, when set, attaches the network to an existing host bridge or
	// interface (bridged mode) instead of a bridge of Clipper's own; then
	// there is no overlay and no NAT: instances are on the LAN.
	Uplink string `json:"uplink,omitempty"`
	// PublicIP is the elastic IP associated with the instance, if any: the
	// node answers ARP for it on its uplink and translates it (DNAT in,
	// SNAT out).
	PublicIP string `json:"public_ip,omitempty"`
}

// Forward is a managed port forward a node carries out.
type Forward struct {
	ID         string `json:"id"`
	Protocol   string `json:"protocol"` // tcp | udp
	ListenIP   string `json:"listen_ip"`
	ListenPort int    `json:"listen_port"`
	TargetIP   string `json:"target_ip"`
	TargetPort int    `json:"target_port"`
}

// Port is what attaching an instance made on its node.
type Port struct {
	Tap string // tap device QEMU opens
	// Mark is the packet mark the node gives everything that enters from
	// the tap; the metadata service identifies the instance by it.
	Mark uint32
}

// Rule is one security group permission as nodes enforce it.
type Rule struct {
	// Protocol is "tcp", "udp", "icmp", "icmpv6", "-1" (all) or an IP
	// protocol number.
	Protocol string `json:"protocol"`
	// FromPort and ToPort bound the ports (tcp/udp); for icmp they are the
	// type and code, -1 meaning any. Both -1 (or 0 and 65535) is every port.
	FromPort int `json:"from_port"`
	ToPort   int `json:"to_port"`
	// CIDRs are peer address ranges (IPv4 and IPv6).
	CIDRs []string `json:"cidrs,omitempty"`
	// Groups are peer security groups: their members' addresses.
	Groups []string `json:"groups,omitempty"`
}

// SecurityGroup is a group's rules and members, as nodes need them.
type SecurityGroup struct {
	ID      string `json:"id"`
	Rev     int64  `json:"rev"`
	Deleted bool   `json:"deleted,omitempty"`
	Ingress []Rule `json:"ingress"`
	Egress  []Rule `json:"egress"`
	// Members are the private addresses of every live instance in the
	// group, on any node (source-group rules match them).
	Members []string `json:"members"`
}

// MetadataOptions are an instance's IMDS settings.
type MetadataOptions struct {
	HTTPTokens   string `json:"http_tokens"`   // "required" | "optional"
	HTTPEndpoint string `json:"http_endpoint"` // "enabled" | "disabled"
	HopLimit     int    `json:"hop_limit"`     // IP TTL of token responses, 1-64
	Tags         bool   `json:"tags"`          // tags under meta-data/tags/instance/
}

// PublicKey is an OpenSSH key served under meta-data/public-keys/.
type PublicKey struct {
	Name    string `json:"name"`
	OpenSSH string `json:"openssh"`
}

// InstanceMetadata is what the node's metadata service answers for an
// instance.
type InstanceMetadata struct {
	AccountID      string            `json:"account_id"`
	Region         string            `json:"region"`
	Zone           string            `json:"zone"`
	ImageID        string            `json:"image_id"`
	InstanceID     string            `json:"instance_id"`
	InstanceType   string            `json:"instance_type"`
	ReservationID  string            `json:"reservation_id"`
	LaunchIndex    int               `json:"launch_index"`
	LaunchTime     time.Time         `json:"launch_time"`
	Hostname       string            `json:"hostname"` // local-hostname, "ip-172-31-0-5.ec2.internal"
	LocalIPv4      string            `json:"local_ipv4"`
	PublicIPv4     string            `json:"public_ipv4,omitempty"`
	MAC            string            `json:"mac"`
	VPCID          string            `json:"vpc_id"`
	VPCCIDR        string            `json:"vpc_cidr"`
	SubnetID       string            `json:"subnet_id"`
	SubnetCIDR     string            `json:"subnet_cidr"`
	InterfaceID    string            `json:"interface_id"`
	SecurityGroups []string          `json:"security_groups"` // names
	GroupIDs       []string          `json:"group_ids"`
	PublicKeys     []PublicKey       `json:"public_keys,omitempty"`
	UserData       []byte            `json:"user_data,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// DesiredInstance is everything a node needs to converge one VM.
type DesiredInstance struct {
	ID        string      `json:"id"`
	Rev       int64       `json:"rev"`
	Power     model.Power `json:"power"`
	RebootSeq int         `json:"reboot_seq"`
	VCPUs     int         `json:"vcpus"`
	MemoryMiB int         `json:"memory_mib"`
	// DiskGiB is the root disk size of an image with a disk: the larger of
	// the image's size and the instance type's.
	DiskGiB         int                 `json:"disk_gib,omitempty"`
	Image           model.ImageManifest `json:"image"`
	ImageID         string              `json:"image_id"`
	Network         Network             `json:"network"`
	Metadata        InstanceMetadata    `json:"metadata"`
	MetadataOptions MetadataOptions     `json:"metadata_options"`
	// StopGrace is how long a graceful stop may take before the VM is ended.
	StopGrace time.Duration `json:"stop_grace"`
	// Move, when set, is a live migration of the instance this node takes
	// part in.
	Move *Move `json:"move,omitempty"`
}

// Roles of a node in a live migration.
const (
	MoveIn  = "in"  // the destination: start the VM waiting for its state
	MoveOut = "out" // the source: send the VM's state to Addr
)

// Move is one node's part in a live migration.
type Move struct {
	Role string `json:"role"`
	// Addr is where the destination waits (role out).
	Addr string `json:"addr,omitempty"`
	// Console seeds the destination's console log (role in).
	Console []byte `json:"console,omitempty"`
	// From is the name of the node the instance moves from (role in):
	// the destination admits no other node's stream.
	From string `json:"from,omitempty"`
}

// Desired is one answer to a desired-state poll.
type Desired struct {
	// Rev is the revision this answer brings the node up to; the next poll
	// passes it as since.
	Rev int64 `json:"rev"`
	// Full means Instances is the node's whole desired state: anything the
	// node runs that is not listed must go.
	Full      bool              `json:"full"`
	Instances []DesiredInstance `json:"instances"`
	// Groups are the security groups changed after since (all of those the
	// node's instances need when Full). Their Members are empty on the
	// wire: nodes build them from Peers.
	Groups []SecurityGroup `json:"groups,omitempty"`
	// Peers are the instances of the networks the node serves that changed
	// after since (all live ones when Full): source-group rules match their
	// addresses. A node that starts serving a new network asks for a full
	// answer.
	Peers []Peer `json:"peers,omitempty"`
	// Forwards is every port forward the node carries (always the whole
	// list: forwards are few).
	Forwards []Forward `json:"forwards"`
}

// Changed reports whether the answer brings anything new to a node that is
// up to date with the revision it asked from.
func (d Desired) Changed() bool {
	return d.Full || len(d.Instances) > 0 || len(d.Groups) > 0 || len(d.Peers) > 0
}

// Peer is an instance as other instances' rules see it.
type Peer struct {
	ID     string   `json:"id"`
	VPCID  string   `json:"vpc_id"`
	IP     string   `json:"ip"`
	MAC    string   `json:"mac"`
	Groups []string `json:"groups"`
	// Gone means the instance no longer holds the address.
	Gone bool `json:"gone,omitempty"`
	// Node is the underlay address of the node the instance runs on (its
	// VXLAN tunnel endpoint).
	Node string `json:"node,omitempty"`
	// VNI is the VXLAN identifier of the peer's network.
	VNI int `json:"vni,omitempty"`
}

// Observed states of an instance on its node.
const (
	ObsRunning = "running"
	ObsStopped = "stopped"
	ObsAbsent  = "absent"  // no VM (deleted, or never created)
	ObsFailed  = "failed"  // the last attempt to converge failed; Reason says why
	ObsPending = "pending" // being prepared (image download, create)
	// ObsIncoming: the VM waits for a live migration's state at
	// ObservedInstance.MoveAddr.
	ObsIncoming = "incoming"
	// ObsMigrated: the VM handed its state over to the destination.
	ObsMigrated = "migrated"
)

// ObservedInstance is what a node sees of one VM.
type ObservedInstance struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// RebootSeq is the last reboot request the node has carried out.
	RebootSeq int `json:"reboot_seq"`
	// Console, when set, is the latest tail of the serial console.
	Console []byte `json:"console,omitempty"`
	// MoveAddr is where an incoming VM waits for its state; MoveError says
	// why this node could not take its part in a live migration.
	MoveAddr  string `json:"move_addr,omitempty"`
	MoveError string `json:"move_error,omitempty"`
}

// Report is a heartbeat with the node's observations. Instances lists only
// those that changed since the last accepted report, unless Full is set.
type Report struct {
	Capacity  model.Capacity     `json:"capacity"`
	Full      bool               `json:"full"`
	Instances []ObservedInstance `json:"instances"`
	// SelfCheck, when set, is the node's latest overlay self-check, whole:
	// sent when one finished since the last accepted report, and in full
	// reports.
	SelfCheck *model.NodeSelfCheck `json:"self_check,omitempty"`
}

// ReportReply tells the node what the controller thinks of it.
type ReportReply struct {
	NodeState model.NodeState `json:"node_state"`
}
