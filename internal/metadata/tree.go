package metadata

import (
	"encoding/json"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// versions are the API versions IMDS answers under, besides "latest".
var versions = []string{
	"1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
	"2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12", "2014-02-25", "2014-11-05",
	"2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02", "2018-03-28", "2018-08-17", "2018-09-24",
	"2019-10-01", "2020-10-27", "2021-01-03", "2021-03-23",
}

// versionList is the answer to GET /.
var versionList = strings.Join(append(slices.Clone(versions), "latest"), "\n")

func knownVersion(v string) bool { return v == "latest" || slices.Contains(versions, v) }

// node is a directory or a leaf of an instance's metadata.
type node struct {
	kids    map[string]*node // nil for a leaf
	value   string
	listing string // a directory's listing when it is not its children's names
	octets  bool   // served as application/octet-stream
}

func dir() *node { return &node{kids: map[string]*node{}} }

// put stores value at a slash-separated path, creating directories. Empty
// values are left out: IMDS answers 404 for what an instance does not have.
func (n *node) put(path, value string) {
	if value == "" {
		return
	}
	n.at(path).value = value
}

// at returns the node at path, creating it (a leaf) and its parents.
func (n *node) at(path string) *node {
	parts := strings.Split(path, "/")
	cur := n
	for i, p := range parts {
		next := cur.kids[p]
		if next == nil {
			next = &node{}
			if i < len(parts)-1 {
				next = dir()
			}
			cur.kids[p] = next
		}
		cur = next
	}
	return cur
}

// dirAt returns the directory at path, creating it and its parents.
func (n *node) dirAt(path string) *node {
	cur := n
	for _, p := range strings.Split(path, "/") {
		next := cur.kids[p]
		if next == nil {
			next = dir()
			cur.kids[p] = next
		}
		cur = next
	}
	return cur
}

// list is a directory's listing: children in order, directories with a
// trailing slash.
func (n *node) list() string {
	if n.listing != "" {
		return n.listing
	}
	names := make([]string, 0, len(n.kids))
	for name, k := range n.kids {
		if k.kids != nil {
			name += "/"
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, "\n")
}

// lookup walks a path below the node. Empty segments never match; one
// trailing slash is allowed on directories and leaves alike.
func (n *node) lookup(path string) (*node, bool) {
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return n, true
	}
	cur := n
	for _, p := range strings.Split(path, "/") {
		if cur.kids == nil {
			return nil, false
		}
		next, ok := cur.kids[p]
		if !ok || p == "" {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

// buildTree lays out one instance's metadata the way IMDS does. The
// version level is the root: meta-data/, dynamic/, user-data.
func buildTree(md nodeproto.InstanceMetadata, opts nodeproto.MetadataOptions) *node {
	root := dir()
	// IMDS lists the version level without trailing slashes.
	top := []string{"dynamic", "meta-data"}
	if len(md.UserData) > 0 {
		root.put("user-data", string(md.UserData))
		root.kids["user-data"].octets = true
		top = append(top, "user-data")
	}
	root.kids["meta-data"] = metaData(md, opts)
	root.dirAt("dynamic/instance-identity").put("document", identityDocument(md))
	root.listing = strings.Join(top, "\n")
	return root
}

func metaData(md nodeproto.InstanceMetadata, opts nodeproto.MetadataOptions) *node {
	m := dir()
	host := md.Hostname
	if host == "" && md.LocalIPv4 != "" {
		host = "ip-" + strings.ReplaceAll(md.LocalIPv4, ".", "-")
	}
	mac := strings.ToLower(md.MAC)
	m.put("ami-id", md.ImageID)
	m.put("ami-launch-index", strconv.Itoa(md.LaunchIndex))
	m.put("hostname", host)
	m.put("instance-id", md.InstanceID)
	m.put("instance-life-cycle", "on-demand")
	m.put("instance-type", md.InstanceType)
	m.put("local-hostname", host)
	m.put("local-ipv4", md.LocalIPv4)
	m.put("mac", mac)
	m.put("public-ipv4", md.PublicIPv4)
	m.put("reservation-id", md.ReservationID)
	m.put("security-groups", strings.Join(md.SecurityGroups, "\n"))
	m.put("placement/availability-zone", md.Zone)
	m.put("placement/region", md.Region)
	m.put("services/domain", "amazonaws.com")
	m.put("services/partition", "aws")
	if len(md.PublicKeys) > 0 {
		// public-keys/ lists "0=name"; public-keys/0/ holds the key.
		pk := m.dirAt("public-keys")
		var listing []string
		for i, k := range md.PublicKeys {
			idx := strconv.Itoa(i)
			pk.dirAt(idx).put("openssh-key", k.OpenSSH)
			listing = append(listing, idx+"="+k.Name)
		}
		pk.listing = strings.Join(listing, "\n")
	}
	if mac != "" {
		nic := "network/interfaces/macs/" + mac + "/"
		m.put(nic+"device-number", "0")
		m.put(nic+"interface-id", md.InterfaceID)
		m.put(nic+"local-hostname", host)
		m.put(nic+"local-ipv4s", md.LocalIPv4)
		m.put(nic+"mac", mac)
		m.put(nic+"owner-id", md.AccountID)
		m.put(nic+"public-ipv4s", md.PublicIPv4)
		m.put(nic+"security-group-ids", strings.Join(md.GroupIDs, "\n"))
		m.put(nic+"security-groups", strings.Join(md.SecurityGroups, "\n"))
		m.put(nic+"subnet-id", md.SubnetID)
		m.put(nic+"subnet-ipv4-cidr-block", md.SubnetCIDR)
		m.put(nic+"vpc-id", md.VPCID)
		m.put(nic+"vpc-ipv4-cidr-block", md.VPCCIDR)
		m.put(nic+"vpc-ipv4-cidr-blocks", md.VPCCIDR)
	}
	if opts.Tags {
		inst := m.dirAt("tags/instance")
		for k, v := range md.Tags {
			// A key IMDS could not serve as one path segment is left out.
			if k == "" || k == "." || k == ".." || strings.Contains(k, "/") {
				continue
			}
			inst.kids[k] = &node{value: v}
		}
	}
	return m
}

// identityDocument is dynamic/instance-identity/document.
func identityDocument(md nodeproto.InstanceMetadata) string {
	arch := runtime.GOARCH
	switch arch {
	case "amd64":
		arch = "x86_64"
	case "arm64":
		arch = "arm64"
	}
	var pending string
	if !md.LaunchTime.IsZero() {
		pending = md.LaunchTime.UTC().Format(time.RFC3339)
	}
	doc := struct {
		AccountID        string   `json:"accountId"`
		Architecture     string   `json:"architecture"`
		AvailabilityZone string   `json:"availabilityZone"`
		BillingProducts  []string `json:"billingProducts"`
		DevpayProducts   []string `json:"devpayProductCodes"`
		MarketplaceCodes []string `json:"marketplaceProductCodes"`
		ImageID          string   `json:"imageId"`
		InstanceID       string   `json:"instanceId"`
		InstanceType     string   `json:"instanceType"`
		KernelID         *string  `json:"kernelId"`
		PendingTime      string   `json:"pendingTime"`
		PrivateIP        string   `json:"privateIp"`
		RamdiskID        *string  `json:"ramdiskId"`
		Region           string   `json:"region"`
		Version          string   `json:"version"`
	}{AccountID: md.AccountID, Architecture: arch, AvailabilityZone: md.Zone, ImageID: md.ImageID,
		InstanceID: md.InstanceID, InstanceType: md.InstanceType, PendingTime: pending,
		PrivateIP: md.LocalIPv4, Region: md.Region, Version: "2017-09-30"}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return string(b)
}
