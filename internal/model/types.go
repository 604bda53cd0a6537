package model

import "time"

// InstanceState is the EC2 lifecycle state of an instance.
type InstanceState string

const (
	StatePending      InstanceState = "pending"
	StateRunning      InstanceState = "running"
	StateShuttingDown InstanceState = "shutting-down"
	StateTerminated   InstanceState = "terminated"
	StateStopping     InstanceState = "stopping"
	StateStopped      InstanceState = "stopped"
)

// Code is the numeric state code EC2 reports next to the name.
func (s InstanceState) Code() int {
	switch s {
	case StatePending:
		return 0
	case StateRunning:
		return 16
	case StateShuttingDown:
		return 32
	case StateTerminated:
		return 48
	case StateStopping:
		return 64
	case StateStopped:
		return 80
	}
	return 0
}

// Power is the power state the controller wants a node to converge a VM to.
type Power string

const (
	PowerRunning Power = "running"
	PowerStopped Power = "stopped"
	PowerAbsent  Power = "absent" // delete the VM and everything it had
)

// StateReason explains the last state change (EC2's stateReason).
type StateReason struct {
	Code    string // "Client.UserInitiatedShutdown", "Server.InternalError", ...
	Message string
}

// Account owns resources; its ID is the 12-digit EC2 owner ID.
type Account struct {
	ID      string
	Name    string
	Created time.Time
}

// AccessKey is an API credential of an account.
type AccessKey struct {
	ID        string // "AKIA..."
	Secret    string
	AccountID string
	Created   time.Time
}

// Tag is a key/value pair on a resource.
type Tag struct {
	Key   string
	Value string
}

// BlobRef names a content-addressed file in the controller's blob store.
type BlobRef struct {
	SHA256 string // lower-case hex
	Size   int64
}

// IsZero reports whether the reference names nothing.
func (b BlobRef) IsZero() bool { return b.SHA256 == "" }

// ImageManifest is what an uploaded image consists of. Its JSON form is
// itself a blob; RegisterImage takes its location.
type ImageManifest struct {
	Kernel     BlobRef `json:"kernel,omitzero"`
	Initrd     BlobRef `json:"initrd,omitzero"`
	Disk       BlobRef `json:"disk,omitzero"`
	DiskFormat string  `json:"disk_format,omitempty"` // qcow2 | raw
	DiskSize   int64   `json:"disk_virtual_size,omitempty"`
	Cmdline    string  `json:"cmdline,omitempty"`
	Machine    string  `json:"machine,omitempty"` // microvm | q35 | ""
	Arch       string  `json:"architecture,omitempty"`
}

// Image is a machine image (AMI).
type Image struct {
	ID             string
	OwnerID        string
	Name           string
	Description    string
	State          string // available | deregistered
	Location       string // "sha256:<manifest hex>"
	Manifest       ImageManifest
	Architecture   string
	RootDeviceName string
	Public         bool
	Created        time.Time
	Tags           []Tag
}

// KeyPair is an SSH public key registered with an account.
type KeyPair struct {
	ID          string
	AccountID   string
	Name        string
	Type        string // rsa | ed25519
	Fingerprint string
	PublicKey   string // OpenSSH authorized_keys line
	Created     time.Time
	Tags        []Tag
}

// InstanceType is one entry of the configurable instance type table.
type InstanceType struct {
	Name      string `json:"name"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memory_mib"`
	DiskGiB   int    `json:"disk_gib"` // root disk size when the image is smaller
}

// Instance is a virtual machine as the controller knows it.
type Instance struct {
	ID            string
	AccountID     string
	ReservationID string
	ImageID       string
	InstanceType  string
	VCPUs         int
	MemoryMiB     int
	DiskGiB       int
	KeyName       string
	UserData      []byte
	LaunchIndex   int
	ClientToken   string
	Zone          string
	NodeID        string

	State          InstanceState
	StateReason    StateReason
	TransitionNote string // EC2 "reason" (stateTransitionReason)
	LaunchTime     time.Time
	StateChanged   time.Time
	Power          Power // desired power on the node
	RebootSeq      int   // bumped by RebootInstances
	Rev            int64 // change sequence, for node sync

	VPCID     string
	SubnetID  string
	PrivateIP string
	MAC       string
	Groups    []string // security group IDs, in order
	PublicIP  string   // the associated elastic IP (read from addresses, not stored)

	Metadata              MetadataOptions
	DisableAPITermination bool
	DisableAPIStop        bool

	// A live migration: MoveTo is the node the instance moves to, MoveAddr
	// where that node waits for its state (once it does), DropNode a node
	// that must delete its copy (the source of a finished move, or the
	// destination of a failed one).
	MoveTo   string
	MoveAddr string
	DropNode string

	Tags []Tag
}

// Reservation groups the instances of one RunInstances call.
type Reservation struct {
	ID          string
	AccountID   string
	ClientToken string
	Created     time.Time
}

// NodeState is the lifecycle state of a node.
type NodeState string

const (
	NodeReady    NodeState = "ready"
	NodeCordoned NodeState = "cordoned"
	NodeDraining NodeState = "draining"
	NodeDown     NodeState = "down"
)

// Capacity is what a node offers.
type Capacity struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int   `json:"memory_mib"`
	DiskMiB   int64 `json:"disk_mib"`
}

// Node is a host that runs a node agent.
type Node struct {
	ID      string
	Name    string
	Zone    string
	Address string
	State   NodeState // health: NodeReady or NodeDown
	// Schedule is the operator's say: "" (schedulable), NodeCordoned (no
	// new instances) or NodeDraining (no new instances; being emptied).
	Schedule NodeState
	Capacity Capacity
	Version  string
	LastSeen time.Time
	Created  time.Time
}

// Shown is the state to show an operator: down wins, then the operator's
// schedule, then ready.
func (n Node) Shown() NodeState {
	if n.State == NodeDown || n.Schedule == "" {
		return n.State
	}
	return n.Schedule
}

// Schedulable reports whether new instances may be placed on the node.
func (n Node) Schedulable() bool { return n.State == NodeReady && n.Schedule == "" }

// Console is the latest serial console output of an instance.
type Console struct {
	InstanceID string
	Output     []byte
	Updated    time.Time
}

// Zone is an availability zone.
type Zone struct {
	Name   string
	Region string
	ID     string // "use1-az1"-like zone ID
}
