package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type placementXML struct {
	AvailabilityZone string `xml:"availabilityZone"`
	GroupName        string `xml:"groupName"`
	Tenancy          string `xml:"tenancy"`
}

type stateReasonXML struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type groupXML struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type ebsXML struct {
	VolumeID            string `xml:"volumeId"`
	Status              string `xml:"status"`
	AttachTime          Time   `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type bdmXML struct {
	DeviceName string `xml:"deviceName"`
	Ebs        ebsXML `xml:"ebs"`
}

type privateIPXML struct {
	PrivateIPAddress string       `xml:"privateIpAddress"`
	PrivateDNSName   string       `xml:"privateDnsName"`
	Primary          bool         `xml:"primary"`
	Association      *eniAssocXML `xml:"association,omitempty"`
}

// eniAssocXML is the elastic IP associated with an interface address.
type eniAssocXML struct {
	PublicIP      string `xml:"publicIp"`
	PublicDNSName string `xml:"publicDnsName"`
	IPOwnerID     string `xml:"ipOwnerId"`
}

type attachmentXML struct {
	AttachmentID        string `xml:"attachmentId"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          Time   `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type eniXML struct {
	NetworkInterfaceID string             `xml:"networkInterfaceId"`
	SubnetID           string             `xml:"subnetId"`
	VpcID              string             `xml:"vpcId"`
	Description        string             `xml:"description"`
	OwnerID            string             `xml:"ownerId"`
	Status             string             `xml:"status"`
	MacAddress         string             `xml:"macAddress"`
	PrivateIPAddress   string             `xml:"privateIpAddress"`
	PrivateDNSName     string             `xml:"privateDnsName"`
	SourceDestCheck    bool               `xml:"sourceDestCheck"`
	GroupSet           List[groupXML]     `xml:"groupSet"`
	Attachment         attachmentXML      `xml:"attachment"`
	Association        *eniAssocXML       `xml:"association,omitempty"`
	PrivateIPs         List[privateIPXML] `xml:"privateIpAddressesSet"`
	IPv6Addresses      List[struct{}]     `xml:"ipv6AddressesSet"`
	InterfaceType      string             `xml:"interfaceType"`
}

type metadataOptionsXML struct {
	State                   string `xml:"state"`
	HTTPTokens              string `xml:"httpTokens"`
	HTTPPutResponseHopLimit int    `xml:"httpPutResponseHopLimit"`
	HTTPEndpoint            string `xml:"httpEndpoint"`
	HTTPProtocolIPv6        string `xml:"httpProtocolIpv6"`
	InstanceMetadataTags    string `xml:"instanceMetadataTags"`
}

type cpuOptionsXML struct {
	CoreCount      int `xml:"coreCount"`
	ThreadsPerCore int `xml:"threadsPerCore"`
}

type enabledXML struct {
	Enabled bool `xml:"enabled"`
}

type configuredXML struct {
	Configured bool `xml:"configured"`
}

type monitoringXML struct {
	State string `xml:"state"`
}

type instanceXML struct {
	InstanceID          string             `xml:"instanceId"`
	ImageID             string             `xml:"imageId"`
	InstanceState       StateXML           `xml:"instanceState"`
	PrivateDNSName      string             `xml:"privateDnsName"`
	DNSName             string             `xml:"dnsName"`
	Reason              string             `xml:"reason"`
	KeyName             string             `xml:"keyName,omitempty"`
	AmiLaunchIndex      int                `xml:"amiLaunchIndex"`
	ProductCodes        List[struct{}]     `xml:"productCodes"`
	InstanceType        string             `xml:"instanceType"`
	LaunchTime          Time               `xml:"launchTime"`
	Placement           placementXML       `xml:"placement"`
	Monitoring          monitoringXML      `xml:"monitoring"`
	SubnetID            string             `xml:"subnetId,omitempty"`
	VpcID               string             `xml:"vpcId,omitempty"`
	PrivateIPAddress    string             `xml:"privateIpAddress,omitempty"`
	IPAddress           string             `xml:"ipAddress,omitempty"`
	SourceDestCheck     bool               `xml:"sourceDestCheck"`
	GroupSet            List[groupXML]     `xml:"groupSet"`
	StateReason         *stateReasonXML    `xml:"stateReason,omitempty"`
	Architecture        string             `xml:"architecture"`
	RootDeviceType      string             `xml:"rootDeviceType"`
	RootDeviceName      string             `xml:"rootDeviceName"`
	BlockDeviceMapping  List[bdmXML]       `xml:"blockDeviceMapping"`
	VirtualizationType  string             `xml:"virtualizationType"`
	ClientToken         string             `xml:"clientToken"`
	TagSet              List[TagXML]       `xml:"tagSet"`
	Hypervisor          string             `xml:"hypervisor"`
	NetworkInterfaceSet List[eniXML]       `xml:"networkInterfaceSet"`
	EbsOptimized        bool               `xml:"ebsOptimized"`
	EnaSupport          bool               `xml:"enaSupport"`
	CPUOptions          cpuOptionsXML      `xml:"cpuOptions"`
	HibernationOptions  configuredXML      `xml:"hibernationOptions"`
	MetadataOptions     metadataOptionsXML `xml:"metadataOptions"`
	EnclaveOptions      enabledXML         `xml:"enclaveOptions"`
	PlatformDetails     string             `xml:"platformDetails"`
	UsageOperation      string             `xml:"usageOperation"`
	BootMode            string             `xml:"currentInstanceBootMode"`
}

func tagsXML(tags []model.Tag) List[TagXML] {
	out := make(List[TagXML], len(tags))
	for i, t := range tags {
		out[i] = TagXML{Key: t.Key, Value: t.Value}
	}
	return out
}

// derived returns a stable ID for a sub-resource of an instance.
func derived(prefix, seed string) string {
	h := sha256.Sum256([]byte(seed))
	return prefix + hex.EncodeToString(h[:])[:17]
}

func toInstanceXML(i model.Instance, names map[string]string) instanceXML {
	x := instanceXML{
		InstanceID: i.ID, ImageID: i.ImageID,
		InstanceState:  StateXML{Code: i.State.Code(), Name: string(i.State)},
		PrivateDNSName: service.PrivateDNSName(i.PrivateIP),
		Reason:         i.TransitionNote, KeyName: i.KeyName, AmiLaunchIndex: i.LaunchIndex,
		InstanceType: i.InstanceType, LaunchTime: Time(i.LaunchTime),
		Placement:  placementXML{AvailabilityZone: i.Zone, Tenancy: "default"},
		Monitoring: monitoringXML{State: "disabled"},
		SubnetID:   i.SubnetID, VpcID: i.VPCID, PrivateIPAddress: i.PrivateIP,
		SourceDestCheck: true, GroupSet: groupSetXML(i.Groups, names), Architecture: "x86_64",
		RootDeviceType: "ebs", RootDeviceName: "/dev/xvda", BlockDeviceMapping: List[bdmXML]{},
		VirtualizationType: "hvm", ClientToken: i.ClientToken, TagSet: tagsXML(i.Tags),
		Hypervisor: "kvm", NetworkInterfaceSet: List[eniXML]{},
		CPUOptions:      cpuOptionsXML{CoreCount: i.VCPUs, ThreadsPerCore: 1},
		MetadataOptions: metadataXML(i.Metadata),
		PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances", BootMode: "legacy-bios",
	}
	if i.StateReason.Code != "" {
		x.StateReason = &stateReasonXML{Code: i.StateReason.Code, Message: i.StateReason.Message}
	}
	if i.State == model.StateTerminated {
		return x
	}
	x.BlockDeviceMapping = List[bdmXML]{{DeviceName: "/dev/xvda", Ebs: ebsXML{
		VolumeID: derived("vol-", i.ID), Status: "attached", AttachTime: Time(i.LaunchTime), DeleteOnTermination: true}}}
	if i.PrivateIP != "" {
		x.NetworkInterfaceSet = List[eniXML]{{
			NetworkInterfaceID: derived(model.PrefixENI, i.ID), SubnetID: i.SubnetID, VpcID: i.VPCID,
			OwnerID: i.AccountID, Status: "in-use", MacAddress: i.MAC, PrivateIPAddress: i.PrivateIP,
			PrivateDNSName: x.PrivateDNSName, SourceDestCheck: true, GroupSet: groupSetXML(i.Groups, names),
			Attachment: attachmentXML{AttachmentID: derived("eni-attach-", i.ID), Status: "attached",
				AttachTime: Time(i.LaunchTime), DeleteOnTermination: true},
			PrivateIPs:    List[privateIPXML]{{PrivateIPAddress: i.PrivateIP, PrivateDNSName: x.PrivateDNSName, Primary: true}},
			IPv6Addresses: List[struct{}]{}, InterfaceType: "interface",
		}}
		if i.PublicIP != "" {
			assoc := &eniAssocXML{PublicIP: i.PublicIP, IPOwnerID: i.AccountID}
			x.IPAddress = i.PublicIP
			x.NetworkInterfaceSet[0].Association = assoc
			x.NetworkInterfaceSet[0].PrivateIPs[0].Association = assoc
		}
	}
	return x
}

type reservationXML struct {
	ReservationID string            `xml:"reservationId"`
	OwnerID       string            `xml:"ownerId"`
	GroupSet      List[groupXML]    `xml:"groupSet"`
	InstancesSet  List[instanceXML] `xml:"instancesSet"`
}

func toReservationXML(r service.Reservation, names map[string]string) reservationXML {
	x := reservationXML{ReservationID: r.ID, OwnerID: r.AccountID, GroupSet: List[groupXML]{}, InstancesSet: List[instanceXML]{}}
	for _, i := range r.Instances {
		x.InstancesSet = append(x.InstancesSet, toInstanceXML(i, names))
	}
	if len(r.Instances) > 0 {
		x.GroupSet = groupSetXML(r.Instances[0].Groups, names)
	}
	return x
}

type runInstancesResponse struct {
	Meta
	reservationXML
}

type describeInstancesResponse struct {
	Meta
	ReservationSet List[reservationXML] `xml:"reservationSet"`
	NextToken      string               `xml:"nextToken,omitempty"`
}

type stateChangeXML struct {
	InstanceID    string   `xml:"instanceId"`
	CurrentState  StateXML `xml:"currentState"`
	PreviousState StateXML `xml:"previousState"`
}

type stateChangeResponse struct {
	Meta
	InstancesSet List[stateChangeXML] `xml:"instancesSet"`
}

type consoleOutputResponse struct {
	Meta
	InstanceID string `xml:"instanceId"`
	Timestamp  Time   `xml:"timestamp"`
	Output     string `xml:"output"`
}

type statusDetailXML struct {
	Name          string `xml:"name"`
	Status        string `xml:"status"`
	ImpairedSince *Time  `xml:"impairedSince,omitempty"`
}

type statusXML struct {
	Status  string                `xml:"status"`
	Details List[statusDetailXML] `xml:"details"`
}

type instanceStatusXML struct {
	InstanceID       string         `xml:"instanceId"`
	AvailabilityZone string         `xml:"availabilityZone"`
	InstanceState    StateXML       `xml:"instanceState"`
	SystemStatus     statusXML      `xml:"systemStatus"`
	InstanceStatus   statusXML      `xml:"instanceStatus"`
	EventsSet        List[struct{}] `xml:"eventsSet"`
}

type describeInstanceStatusResponse struct {
	Meta
	InstanceStatusSet List[instanceStatusXML] `xml:"instanceStatusSet"`
	NextToken         string                  `xml:"nextToken,omitempty"`
}

// runIgnored are RunInstances parameters Clipper accepts without effect.
var runIgnored = []string{"Monitoring.", "EbsOptimized", "CreditSpecification.", "BlockDeviceMapping.",
	"HibernationOptions.", "CapacityReservationSpecification.", "EnclaveOptions.", "MaintenanceOptions.",
	"PrivateDnsNameOptions.", "Placement.Tenancy", "Placement.GroupName"}

// decodeRunInterfaces reads NetworkInterface.N: Clipper gives an instance
// one interface, so only device index 0 is accepted, with its subnet,
// groups and address.
func decodeRunInterfaces(p *Params, in *service.RunInput) error {
	nics, err := p.Structs("NetworkInterface")
	if err != nil {
		return err
	}
	for _, n := range nics {
		if idx, err := n.Int("DeviceIndex", 0); err != nil || idx != 0 {
			if err != nil {
				return err
			}
			return model.Errorf(model.KindUnsupported, "", "DeviceIndex", "Instances have one network interface (device index 0)")
		}
		if n.Str("NetworkInterfaceId") != "" {
			return model.Errorf(model.KindUnsupported, "", "NetworkInterfaceId", "Attaching existing network interfaces is not supported")
		}
		if in.SubnetID != "" || len(in.GroupIDs) > 0 {
			return model.Errorf(model.KindParameterCombination, "", "NetworkInterface",
				"Network interfaces and an instance-level security groups and subnets may not be specified on the same request")
		}
		in.SubnetID = n.Str("SubnetId")
		if in.GroupIDs, err = n.List("SecurityGroupId"); err != nil {
			return err
		}
		if ip := n.Str("PrivateIpAddress"); ip != "" {
			in.PrivateIP = ip
		}
		if pub, err := n.Bool("AssociatePublicIpAddress"); err != nil || pub {
			if err != nil {
				return err
			}
			return model.Errorf(model.KindUnsupported, "", "AssociatePublicIpAddress", "Public addresses come from elastic IPs (AllocateAddress)")
		}
		n.Ignore("DeleteOnTermination", "Description", "InterfaceType")
	}
	return nil
}

func (h *Handler) registerInstances() {
	h.actions["RunInstances"] = h.runInstances
	h.actions["DescribeInstances"] = h.describeInstances
	h.actions["StopInstances"] = h.stateChange(func(ctx context.Context, c service.Caller, ids []string, force bool) ([]service.StateChange, error) {
		return h.svc.StopInstances(ctx, c, ids, force)
	}, "Force", "Hibernate")
	h.actions["StartInstances"] = h.stateChange(func(ctx context.Context, c service.Caller, ids []string, _ bool) ([]service.StateChange, error) {
		return h.svc.StartInstances(ctx, c, ids)
	}, "AdditionalInfo")
	h.actions["TerminateInstances"] = h.stateChange(func(ctx context.Context, c service.Caller, ids []string, _ bool) ([]service.StateChange, error) {
		return h.svc.TerminateInstances(ctx, c, ids)
	})
	h.actions["RebootInstances"] = h.rebootInstances
	h.actions["GetConsoleOutput"] = h.getConsoleOutput
	h.actions["DescribeInstanceStatus"] = h.describeInstanceStatus
}

func (h *Handler) runInstances(p *Params) (exec, error) {
	var in service.RunInput
	var err error
	in.ImageID, in.InstanceType, in.KeyName = p.Str("ImageId"), p.Str("InstanceType"), p.Str("KeyName")
	in.ClientToken, in.Zone = p.Str("ClientToken"), p.Str("Placement.AvailabilityZone")
	if in.MinCount, err = p.Int("MinCount", 0); err != nil {
		return nil, err
	}
	if in.MaxCount, err = p.Int("MaxCount", 0); err != nil {
		return nil, err
	}
	if !p.Has("MinCount") {
		return nil, model.MissingParam("MinCount")
	}
	if !p.Has("MaxCount") {
		return nil, model.MissingParam("MaxCount")
	}
	if in.UserData, err = p.Base64("UserData"); err != nil {
		return nil, err
	}
	if in.Tags, err = p.TagSpecifications("instance", "volume", "network-interface"); err != nil {
		return nil, err
	}
	if in.GroupIDs, err = p.List("SecurityGroupId"); err != nil {
		return nil, err
	}
	if in.GroupNames, err = p.List("SecurityGroup"); err != nil {
		return nil, err
	}
	in.SubnetID, in.PrivateIP = p.Str("SubnetId"), p.Str("PrivateIpAddress")
	if in.Metadata, err = decodeMetadata(p, "MetadataOptions."); err != nil {
		return nil, err
	}
	if err := decodeRunInterfaces(p, &in); err != nil {
		return nil, err
	}
	if in.DisableAPITermination, err = p.Bool("DisableApiTermination"); err != nil {
		return nil, err
	}
	if in.DisableAPIStop, err = p.Bool("DisableApiStop"); err != nil {
		return nil, err
	}
	if b := p.Str("InstanceInitiatedShutdownBehavior"); b != "" && b != "stop" {
		return nil, model.InvalidParam("InstanceInitiatedShutdownBehavior", "Only 'stop' is supported for InstanceInitiatedShutdownBehavior")
	}
	p.Ignore(runIgnored...)
	return func(ctx context.Context, c service.Caller) (response, error) {
		res, err := h.svc.RunInstances(ctx, c, in)
		if err != nil {
			return nil, err
		}
		return &runInstancesResponse{reservationXML: toReservationXML(res, res.GroupNames)}, nil
	}, nil
}

func (h *Handler) describeInstances(p *Params) (exec, error) {
	ids, err := p.List("InstanceId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		res, next, err := h.svc.DescribeInstances(ctx, c, ids, filters, pg)
		if err != nil {
			return nil, err
		}
		names, err := h.svc.GroupNames(ctx, c)
		if err != nil {
			return nil, err
		}
		out := &describeInstancesResponse{ReservationSet: List[reservationXML]{}, NextToken: next}
		for _, r := range res {
			out.ReservationSet = append(out.ReservationSet, toReservationXML(r, names))
		}
		return out, nil
	}, nil
}

type changeFunc func(ctx context.Context, c service.Caller, ids []string, force bool) ([]service.StateChange, error)

func (h *Handler) stateChange(fn changeFunc, ignored ...string) parser {
	return func(p *Params) (exec, error) {
		ids, err := p.List("InstanceId")
		if err != nil {
			return nil, err
		}
		force, err := p.Bool("Force")
		if err != nil {
			return nil, err
		}
		if hib, err := p.Bool("Hibernate"); err != nil || hib {
			if err != nil {
				return nil, err
			}
			return nil, model.Errorf(model.KindUnsupported, "", "Hibernate", "Hibernation is not supported")
		}
		p.Ignore(ignored...)
		return func(ctx context.Context, c service.Caller) (response, error) {
			changes, err := fn(ctx, c, ids, force)
			if err != nil {
				return nil, err
			}
			out := &stateChangeResponse{InstancesSet: List[stateChangeXML]{}}
			for _, ch := range changes {
				out.InstancesSet = append(out.InstancesSet, stateChangeXML{InstanceID: ch.InstanceID,
					CurrentState:  StateXML{Code: ch.Current.Code(), Name: string(ch.Current)},
					PreviousState: StateXML{Code: ch.Previous.Code(), Name: string(ch.Previous)}})
			}
			return out, nil
		}, nil
	}
}

func (h *Handler) rebootInstances(p *Params) (exec, error) {
	ids, err := p.List("InstanceId")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.RebootInstances(ctx, c, ids); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) getConsoleOutput(p *Params) (exec, error) {
	id, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	if _, err := p.Bool("Latest"); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		con, err := h.svc.ConsoleOutput(ctx, c, id)
		if err != nil {
			return nil, err
		}
		return &consoleOutputResponse{InstanceID: id, Timestamp: Time(con.Updated),
			Output: base64.StdEncoding.EncodeToString(con.Output)}, nil
	}, nil
}

func (h *Handler) describeInstanceStatus(p *Params) (exec, error) {
	ids, err := p.List("InstanceId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	all, err := p.Bool("IncludeAllInstances")
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		sts, next, err := h.svc.DescribeInstanceStatus(ctx, c, ids, filters, all, pg)
		if err != nil {
			return nil, err
		}
		out := &describeInstanceStatusResponse{InstanceStatusSet: List[instanceStatusXML]{}, NextToken: next}
		for _, s := range sts {
			out.InstanceStatusSet = append(out.InstanceStatusSet, instanceStatusXML{
				InstanceID: s.Instance.ID, AvailabilityZone: s.Instance.Zone,
				InstanceState:  StateXML{Code: s.Instance.State.Code(), Name: string(s.Instance.State)},
				SystemStatus:   statusOf(s.SystemStatus, s.ImpairedSince),
				InstanceStatus: statusOf(s.InstanceStatus, time.Time{}),
				EventsSet:      List[struct{}]{},
			})
		}
		return out, nil
	}, nil
}

// statusOf is a status check summary with its reachability detail; a
// failed check says since when (impairedSince).
func statusOf(s string, impairedSince time.Time) statusXML {
	d := statusDetailXML{Name: "reachability", Status: service.Reachability(s)}
	if d.Status == "failed" && !impairedSince.IsZero() {
		t := Time(impairedSince)
		d.ImpairedSince = &t
	}
	return statusXML{Status: s, Details: List[statusDetailXML]{d}}
}
