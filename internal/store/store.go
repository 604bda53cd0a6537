// Package store defines how Clipper keeps its desired state: a Store runs
// short transactions, and a Tx reads and writes domain records. Drivers live
// in sub-packages (sqlite; postgres follows with the same schema).
package store

import (
	"context"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
)

// Store runs transactions. Update transactions are serialised and durable
// when Update returns nil; View transactions see a consistent snapshot.
type Store interface {
	Update(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// InstanceQuery selects instances. Zero fields do not filter.
type InstanceQuery struct {
	AccountID     string
	IDs           []string
	ReservationID string
	NodeID        string
	// Involving selects the instances a node must know of: those on it,
	// moving to it, and those it must drop.
	Involving string
	// SinceRev > 0 returns only instances changed after that revision,
	// ordered by revision (node sync).
	SinceRev int64
	// Live excludes instances in state terminated.
	Live bool
}

// Tx is one transaction. Getters return a *model.Error of KindNotFound when
// the record does not exist.
type Tx interface {
	// NextRev allocates the next change revision.
	NextRev() (int64, error)
	// NextRevs allocates n consecutive revisions and returns the first.
	NextRevs(n int) (int64, error)
	// Rev is the latest allocated revision.
	Rev() (int64, error)

	CreateAccount(a model.Account) error
	GetAccount(id string) (model.Account, error)
	GetAccountByName(name string) (model.Account, error)
	CreateAccessKey(k model.AccessKey) error
	GetAccessKey(id string) (model.AccessKey, error)
	// AccessKeys lists an account's keys, oldest first.
	AccessKeys(accountID string) ([]model.AccessKey, error)

	InsertImage(img model.Image) error
	UpdateImage(img model.Image) error
	GetImage(id string) (model.Image, error)
	// ListImages returns images owned by ownerID or public ones.
	ListImages(ownerID string) ([]model.Image, error)

	InsertKeyPair(k model.KeyPair) error
	GetKeyPair(accountID, name string) (model.KeyPair, error)
	ListKeyPairs(accountID string) ([]model.KeyPair, error)
	DeleteKeyPair(accountID, id string) error

	InsertReservation(r model.Reservation) error
	GetReservationByToken(accountID, token string) (model.Reservation, error)

	InsertInstance(i model.Instance) error
	// InsertInstances inserts several instances and their groups.
	InsertInstances(is []model.Instance) error
	// UpdateInstance writes every mutable field of i (tags excluded).
	UpdateInstance(i model.Instance) error
	GetInstance(id string) (model.Instance, error)
	ListInstances(q InstanceQuery) ([]model.Instance, error)
	// NodeUsage sums what live instances take on each node: vCPU and memory
	// of instances that are not stopped, disk of every live instance.
	NodeUsage() (map[string]model.Capacity, error)
	// AddressInUse reports whether a live instance holds the private IP in
	// the subnet.
	AddressInUse(subnetID, ip string) (bool, error)
	// PurgeInstances deletes terminated instances whose state changed before t.
	PurgeInstances(before time.Time) (int, error)

	// SetTags adds or overwrites tags on a resource.
	SetTags(accountID, resourceID string, tags []model.Tag) error
	// DeleteTags removes tags; a tag with an empty Value matches any value
	// unless valueSet says the empty value is meant. nil tags removes all.
	DeleteTags(resourceID string, tags []TagMatch) error
	// Tags returns the tags of the given resources (all of the account's
	// resources when ids is nil), keyed by resource ID.
	Tags(accountID string, ids []string) (map[string][]model.Tag, error)

	UpsertNode(n model.Node) error
	GetNode(id string) (model.Node, error)
	GetNodeByName(name string) (model.Node, error)
	ListNodes() ([]model.Node, error)
	// DeleteNode forgets a node (clipper node rm): its name is free again.
	DeleteNode(id string) error
	// PutNodeSelfCheck replaces a node's latest overlay self-check;
	// NodeSelfChecks returns them all, by node ID.
	PutNodeSelfCheck(nodeID string, sc model.NodeSelfCheck) error
	NodeSelfChecks() (map[string]model.NodeSelfCheck, error)

	PutConsole(c model.Console) error
	GetConsole(instanceID string) (model.Console, error)

	PutBlob(b model.BlobRef) error
	GetBlob(sha256 string) (model.BlobRef, error)

	NetworkTx
	AddressTx
}

// AddressTx reads and writes elastic IPs and port forwards.
type AddressTx interface {
	InsertAddress(a model.Address) error
	UpdateAddress(a model.Address) error
	DeleteAddress(id string) error
	GetAddress(id string) (model.Address, error)
	GetAddressByIP(publicIP string) (model.Address, error)
	// ListAddresses returns an account's addresses (every address when
	// accountID is empty).
	ListAddresses(accountID string) ([]model.Address, error)
	// InstanceAddresses returns the addresses associated with instances.
	InstanceAddresses(instanceIDs []string) (map[string]model.Address, error)

	InsertForward(f model.Forward) error
	DeleteForward(id string) error
	GetForward(id string) (model.Forward, error)
	// ListForwards lists an account's forwards (every account's for "").
	ListForwards(accountID string) ([]model.Forward, error)
	NodeForwards(nodeID string) ([]model.Forward, error)
}

// NetworkTx reads and writes VPCs, subnets and security groups.
type NetworkTx interface {
	InsertVPC(v model.VPC) error
	GetVPC(id string) (model.VPC, error)
	ListVPCs(accountID string) ([]model.VPC, error)
	InsertSubnet(s model.Subnet) error
	GetSubnet(id string) (model.Subnet, error)
	ListSubnets(accountID string) ([]model.Subnet, error)
	// SubnetUsed counts the live instances holding an address in a subnet.
	SubnetUsed(subnetID string) (int, error)
	// DeleteVPC removes a VPC, its subnets and its default group.
	DeleteVPC(id string) error

	InsertGroup(g model.SecurityGroup) error
	GetGroup(id string) (model.SecurityGroup, error)
	// GetGroupByName finds a group by name in a VPC.
	GetGroupByName(vpcID, name string) (model.SecurityGroup, error)
	ListGroups(accountID string) ([]model.SecurityGroup, error)
	// GroupsByID returns the named groups (missing ones are left out).
	GroupsByID(ids []string) ([]model.SecurityGroup, error)
	DeleteGroup(id string) error
	SetGroupRev(id string, rev int64) error

	InsertRule(r model.GroupRule) error
	DeleteRule(id string) error
	// Rules returns the rules of the given groups (of the account when
	// groupIDs is nil).
	Rules(accountID string, groupIDs []string) ([]model.GroupRule, error)
	// RulesReferencing returns the rules whose peer is the group.
	RulesReferencing(groupID string) ([]model.GroupRule, error)

	// SetInstanceGroups replaces an instance's groups.
	SetInstanceGroups(instanceID string, groupIDs []string) error
	// AddInstanceGroups gives a new instance (no groups yet) its groups.
	AddInstanceGroups(instanceID string, groupIDs []string) error
	// InstanceGroups returns the groups of the instances, in order.
	InstanceGroups(instanceIDs []string) (map[string][]string, error)
	// GroupInUse counts the live instances in a group.
	GroupInUse(groupID string) (int, error)
	// NodeGroups returns the groups of a node's live instances.
	NodeGroups(nodeID string) ([]string, error)
	// NodeVPCs returns the VPCs of a node's live instances.
	NodeVPCs(nodeID string) ([]string, error)
	// VPCNodes returns the nodes with live instances in the VPCs.
	VPCNodes(vpcIDs []string) ([]string, error)
	// GroupNodes returns the nodes with live instances in the groups.
	GroupNodes(groupIDs []string) ([]string, error)
	// VPCInstances returns the instances of the VPCs (live ones only, or
	// those changed after sinceRev when it is positive).
	VPCInstances(vpcIDs []string, sinceRev int64) ([]model.Instance, error)
}

// TagMatch selects a tag to delete: by key, and by value when HasValue.
type TagMatch struct {
	Key      string
	Value    string
	HasValue bool
}
