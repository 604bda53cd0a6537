// Package nodeproto is the protocol between the controller and its node
// agents: the messages (JSON over HTTP) and a client the agent uses. The node
// always dials the controller, so nodes behind NAT work.
//
//	POST /node/v1/register          Registration -> RegistrationReply
//	GET  /node/v1/desired?since=R   long poll -> Desired (changes after R)
//	POST /node/v1/report            Report -> ReportReply
//	GET  /node/v1/blobs/{sha256}    image blob bytes
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
	Bridge    string `json:"bridge"`  // host bridge name
	Gateway   string `json:"gateway"` // gateway address with prefix, "172.31.0.1/20"
	MTU       int    `json:"mtu"`     // MTU the guest must use
	DNS       string `json:"dns,omitempty"`
	PrivateIP string `json:"private_ip"` // the instance address, no prefix
	MAC       string `json:"mac"`
}

// DesiredInstance is everything a node needs to converge one VM.
type DesiredInstance struct {
	ID        string              `json:"id"`
	Rev       int64               `json:"rev"`
	Power     model.Power         `json:"power"`
	RebootSeq int                 `json:"reboot_seq"`
	VCPUs     int                 `json:"vcpus"`
	MemoryMiB int                 `json:"memory_mib"`
	Image     model.ImageManifest `json:"image"`
	ImageID   string              `json:"image_id"`
	Network   Network             `json:"network"`
	// StopGrace is how long a graceful stop may take before the VM is ended.
	StopGrace time.Duration `json:"stop_grace"`
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
}

// Observed states of an instance on its node.
const (
	ObsRunning = "running"
	ObsStopped = "stopped"
	ObsAbsent  = "absent"  // no VM (deleted, or never created)
	ObsFailed  = "failed"  // the last attempt to converge failed; Reason says why
	ObsPending = "pending" // being prepared (image download, create)
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
}

// Report is a heartbeat with the node's observations. Instances lists only
// those that changed since the last accepted report, unless Full is set.
type Report struct {
	Capacity  model.Capacity     `json:"capacity"`
	Full      bool               `json:"full"`
	Instances []ObservedInstance `json:"instances"`
}

// ReportReply tells the node what the controller thinks of it.
type ReportReply struct {
	NodeState model.NodeState `json:"node_state"`
}
