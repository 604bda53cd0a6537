package ec2

import (
	"context"
	"encoding/base64"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type cidrStateXML struct {
	State string `xml:"state"`
}

type cidrAssocXML struct {
	CidrBlock      string       `xml:"cidrBlock"`
	AssociationID  string       `xml:"associationId"`
	CidrBlockState cidrStateXML `xml:"cidrBlockState"`
}

type vpcXML struct {
	VpcID                       string             `xml:"vpcId"`
	OwnerID                     string             `xml:"ownerId"`
	State                       string             `xml:"state"`
	CidrBlock                   string             `xml:"cidrBlock"`
	CidrBlockAssociationSet     List[cidrAssocXML] `xml:"cidrBlockAssociationSet"`
	IPv6CidrBlockAssociationSet List[struct{}]     `xml:"ipv6CidrBlockAssociationSet"`
	DhcpOptionsID               string             `xml:"dhcpOptionsId"`
	InstanceTenancy             string             `xml:"instanceTenancy"`
	IsDefault                   bool               `xml:"isDefault"`
	TagSet                      List[TagXML]       `xml:"tagSet"`
}

type subnetXML struct {
	SubnetID                    string         `xml:"subnetId"`
	SubnetArn                   string         `xml:"subnetArn"`
	State                       string         `xml:"state"`
	OwnerID                     string         `xml:"ownerId"`
	VpcID                       string         `xml:"vpcId"`
	CidrBlock                   string         `xml:"cidrBlock"`
	IPv6CidrBlockAssociationSet List[struct{}] `xml:"ipv6CidrBlockAssociationSet"`
	AvailableIPAddressCount     int            `xml:"availableIpAddressCount"`
	AvailabilityZone            string         `xml:"availabilityZone"`
	AvailabilityZoneID          string         `xml:"availabilityZoneId"`
	DefaultForAz                bool           `xml:"defaultForAz"`
	MapPublicIPOnLaunch         bool           `xml:"mapPublicIpOnLaunch"`
	AssignIPv6AddressOnCreation bool           `xml:"assignIpv6AddressOnCreation"`
	TagSet                      List[TagXML]   `xml:"tagSet"`
}

type describeVpcsResponse struct {
	Meta
	VpcSet List[vpcXML] `xml:"vpcSet"`
}

type describeSubnetsResponse struct {
	Meta
	SubnetSet List[subnetXML] `xml:"subnetSet"`
}

type valueXML struct {
	Value string `xml:"value"`
}

type boolValueXML struct {
	Value bool `xml:"value"`
}

type instanceAttributeResponse struct {
	Meta
	InstanceID                        string         `xml:"instanceId"`
	InstanceType                      *valueXML      `xml:"instanceType,omitempty"`
	UserData                          *valueXML      `xml:"userData,omitempty"`
	DisableAPITermination             *boolValueXML  `xml:"disableApiTermination,omitempty"`
	DisableAPIStop                    *boolValueXML  `xml:"disableApiStop,omitempty"`
	InstanceInitiatedShutdownBehavior *valueXML      `xml:"instanceInitiatedShutdownBehavior,omitempty"`
	RootDeviceName                    *valueXML      `xml:"rootDeviceName,omitempty"`
	SourceDestCheck                   *boolValueXML  `xml:"sourceDestCheck,omitempty"`
	EbsOptimized                      *boolValueXML  `xml:"ebsOptimized,omitempty"`
	EnaSupport                        *boolValueXML  `xml:"enaSupport,omitempty"`
	GroupSet                          List[groupXML] `xml:"groupSet,omitempty"`
	BlockDeviceMapping                List[bdmXML]   `xml:"blockDeviceMapping,omitempty"`
}

type metadataOptionsResponse struct {
	Meta
	InstanceID              string             `xml:"instanceId"`
	InstanceMetadataOptions metadataOptionsXML `xml:"instanceMetadataOptions"`
}

func (h *Handler) registerNetwork() {
	h.actions["DescribeVpcs"] = h.describeVpcs
	h.actions["DescribeSubnets"] = h.describeSubnets
	h.actions["ModifyInstanceAttribute"] = h.modifyInstanceAttribute
	h.actions["DescribeInstanceAttribute"] = h.describeInstanceAttribute
	h.actions["ModifyInstanceMetadataOptions"] = h.modifyMetadataOptions
}

func (h *Handler) describeVpcs(p *Params) (exec, error) {
	ids, err := p.List("VpcId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	p.Ignore("MaxResults", "NextToken")
	return func(ctx context.Context, c service.Caller) (response, error) {
		vpcs, err := h.svc.DescribeVPCs(ctx, c, ids, filters)
		if err != nil {
			return nil, err
		}
		out := &describeVpcsResponse{VpcSet: List[vpcXML]{}}
		for _, v := range vpcs {
			out.VpcSet = append(out.VpcSet, vpcXML{VpcID: v.ID, OwnerID: v.AccountID, State: "available", CidrBlock: v.CIDR,
				CidrBlockAssociationSet: List[cidrAssocXML]{{CidrBlock: v.CIDR, AssociationID: derived("vpc-cidr-assoc-", v.ID),
					CidrBlockState: cidrStateXML{State: "associated"}}},
				IPv6CidrBlockAssociationSet: List[struct{}]{}, DhcpOptionsID: "default", InstanceTenancy: "default",
				IsDefault: v.Default, TagSet: tagsXML(v.Tags)})
		}
		return out, nil
	}, nil
}

func (h *Handler) describeSubnets(p *Params) (exec, error) {
	ids, err := p.List("SubnetId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	p.Ignore("MaxResults", "NextToken")
	return func(ctx context.Context, c service.Caller) (response, error) {
		subnets, err := h.svc.DescribeSubnets(ctx, c, ids, filters)
		if err != nil {
			return nil, err
		}
		zoneIDs := map[string]string{}
		for _, z := range h.svc.Zones() {
			zoneIDs[z.Name] = z.ID
		}
		cfg := h.svc.Config()
		out := &describeSubnetsResponse{SubnetSet: List[subnetXML]{}}
		for _, s := range subnets {
			out.SubnetSet = append(out.SubnetSet, subnetXML{SubnetID: s.ID,
				SubnetArn: "arn:aws:ec2:" + cfg.Region + ":" + s.AccountID + ":subnet/" + s.ID, State: "available",
				OwnerID: s.AccountID, VpcID: s.VPCID, CidrBlock: s.CIDR, IPv6CidrBlockAssociationSet: List[struct{}]{},
				AvailableIPAddressCount: s.Available, AvailabilityZone: s.Zone, AvailabilityZoneID: zoneIDs[s.Zone],
				DefaultForAz: s.Default, TagSet: tagsXML(s.Tags)})
		}
		return out, nil
	}, nil
}

func optBool(p *Params, name string) (*bool, error) {
	if !p.Has(name) {
		return nil, nil
	}
	v, err := p.Bool(name)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func (h *Handler) modifyInstanceAttribute(p *Params) (exec, error) {
	id, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	var ch service.AttributeChange
	if ch.GroupIDs, err = p.List("GroupId"); err != nil {
		return nil, err
	}
	ch.InstanceType = p.Str("InstanceType.Value")
	if p.Has("UserData.Value") {
		if ch.UserData, err = p.Base64("UserData.Value"); err != nil {
			return nil, err
		}
		ch.UserDataSet = true
	}
	if ch.DisableAPITermination, err = optBool(p, "DisableApiTermination.Value"); err != nil {
		return nil, err
	}
	if ch.DisableAPIStop, err = optBool(p, "DisableApiStop.Value"); err != nil {
		return nil, err
	}
	if ch.SourceDestCheck, err = optBool(p, "SourceDestCheck.Value"); err != nil {
		return nil, err
	}
	ch.ShutdownBehavior = p.Str("InstanceInitiatedShutdownBehavior.Value")
	// The older Attribute/Value form.
	if attr := p.Str("Attribute"); attr != "" {
		v := p.Str("Value")
		switch attr {
		case "instanceType":
			ch.InstanceType = v
		case "disableApiTermination", "disableApiStop", "sourceDestCheck":
			b := v == "true"
			switch attr {
			case "disableApiTermination":
				ch.DisableAPITermination = &b
			case "disableApiStop":
				ch.DisableAPIStop = &b
			default:
				ch.SourceDestCheck = &b
			}
		case "instanceInitiatedShutdownBehavior":
			ch.ShutdownBehavior = v
		default:
			return nil, model.InvalidParam("Attribute", "Modifying attribute '%s' is not supported", attr)
		}
	}
	p.Ignore("EbsOptimized.Value", "DryRun")
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.ModifyInstanceAttribute(ctx, c, id, ch); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) describeInstanceAttribute(p *Params) (exec, error) {
	id, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	attr, err := p.Required("Attribute")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		i, err := h.svc.Instance(ctx, c, id)
		if err != nil {
			return nil, err
		}
		out := &instanceAttributeResponse{InstanceID: id}
		switch attr {
		case "instanceType":
			out.InstanceType = &valueXML{i.InstanceType}
		case "userData":
			out.UserData = &valueXML{base64.StdEncoding.EncodeToString(i.UserData)}
		case "disableApiTermination":
			out.DisableAPITermination = &boolValueXML{i.DisableAPITermination}
		case "disableApiStop":
			out.DisableAPIStop = &boolValueXML{i.DisableAPIStop}
		case "instanceInitiatedShutdownBehavior":
			out.InstanceInitiatedShutdownBehavior = &valueXML{"stop"}
		case "rootDeviceName":
			out.RootDeviceName = &valueXML{"/dev/xvda"}
		case "sourceDestCheck":
			out.SourceDestCheck = &boolValueXML{true}
		case "ebsOptimized":
			out.EbsOptimized = &boolValueXML{false}
		case "enaSupport":
			out.EnaSupport = &boolValueXML{false}
		case "groupSet":
			names, err := h.svc.GroupNames(ctx, c)
			if err != nil {
				return nil, err
			}
			out.GroupSet = groupSetXML(i.Groups, names)
		case "blockDeviceMapping":
			out.BlockDeviceMapping = toInstanceXML(i, nil).BlockDeviceMapping
		default:
			return nil, model.InvalidParam("Attribute", "Value (%s) for parameter attribute is invalid. Unknown attribute.", attr)
		}
		return out, nil
	}, nil
}

func (h *Handler) modifyMetadataOptions(p *Params) (exec, error) {
	id, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	in, err := decodeMetadata(p, "")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		i, err := h.svc.ModifyMetadataOptions(ctx, c, id, in)
		if err != nil {
			return nil, err
		}
		x := metadataXML(i.Metadata)
		x.State = "pending"
		return &metadataOptionsResponse{InstanceID: id, InstanceMetadataOptions: x}, nil
	}, nil
}

// decodeMetadata reads HttpTokens & co under prefix ("" or "MetadataOptions.").
func decodeMetadata(p *Params, prefix string) (service.MetadataInput, error) {
	in := service.MetadataInput{HTTPTokens: p.Str(prefix + "HttpTokens"), HTTPEndpoint: p.Str(prefix + "HttpEndpoint"),
		Tags: p.Str(prefix + "InstanceMetadataTags")}
	var err error
	if in.HopLimit, err = p.Int(prefix+"HttpPutResponseHopLimit", 0); err != nil {
		return in, err
	}
	if v := p.Str(prefix + "HttpProtocolIpv6"); v != "" && v != "disabled" && v != "enabled" {
		return in, model.InvalidParam("HttpProtocolIpv6", "HttpProtocolIpv6 must be enabled or disabled")
	}
	return in, nil
}

func metadataXML(m model.MetadataOptions) metadataOptionsXML {
	return metadataOptionsXML{State: "applied", HTTPTokens: m.HTTPTokens, HTTPPutResponseHopLimit: m.HopLimit,
		HTTPEndpoint: m.HTTPEndpoint, HTTPProtocolIPv6: "enabled", InstanceMetadataTags: m.Tags}
}

func groupSetXML(ids []string, names map[string]string) List[groupXML] {
	out := List[groupXML]{}
	for _, g := range ids {
		out = append(out, groupXML{GroupID: g, GroupName: names[g]})
	}
	return out
}
