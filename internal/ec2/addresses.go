package ec2

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type addressXML struct {
	PublicIP                string       `xml:"publicIp"`
	AllocationID            string       `xml:"allocationId"`
	Domain                  string       `xml:"domain"`
	InstanceID              string       `xml:"instanceId,omitempty"`
	AssociationID           string       `xml:"associationId,omitempty"`
	NetworkInterfaceID      string       `xml:"networkInterfaceId,omitempty"`
	NetworkInterfaceOwnerID string       `xml:"networkInterfaceOwnerId,omitempty"`
	PrivateIPAddress        string       `xml:"privateIpAddress,omitempty"`
	TagSet                  List[TagXML] `xml:"tagSet"`
	PublicIpv4Pool          string       `xml:"publicIpv4Pool"`
	NetworkBorderGroup      string       `xml:"networkBorderGroup"`
}

type allocateAddressResponse struct {
	Meta
	PublicIP           string `xml:"publicIp"`
	Domain             string `xml:"domain"`
	AllocationID       string `xml:"allocationId"`
	PublicIpv4Pool     string `xml:"publicIpv4Pool"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

type associateAddressResponse struct {
	Meta
	Return        bool   `xml:"return"`
	AssociationID string `xml:"associationId"`
}

type describeAddressesResponse struct {
	Meta
	AddressesSet List[addressXML] `xml:"addressesSet"`
}

type addressAttributeXML struct {
	PublicIP     string `xml:"publicIp"`
	AllocationID string `xml:"allocationId"`
}

type describeAddressesAttributeResponse struct {
	Meta
	AddressSet List[addressAttributeXML] `xml:"addressSet"`
	NextToken  string                    `xml:"nextToken,omitempty"`
}

// publicPool is the name DescribeAddresses gives the operator's pool.
const publicPool = "clipper"

func (h *Handler) registerAddresses() {
	h.actions["AllocateAddress"] = h.allocateAddress
	h.actions["AssociateAddress"] = h.associateAddress
	h.actions["DisassociateAddress"] = h.disassociateAddress
	h.actions["ReleaseAddress"] = h.releaseAddress
	h.actions["DescribeAddresses"] = h.describeAddresses
	h.actions["DescribeAddressesAttribute"] = h.describeAddressesAttribute
}

func (h *Handler) allocateAddress(p *Params) (exec, error) {
	if d := p.Str("Domain"); d != "" && d != "vpc" {
		return nil, model.InvalidParam("Domain", "Domain must be vpc")
	}
	want := p.Str("Address")
	tags, err := p.TagSpecifications("elastic-ip")
	if err != nil {
		return nil, err
	}
	p.Ignore("PublicIpv4Pool", "NetworkBorderGroup", "CustomerOwnedIpv4Pool", "IpamPoolId")
	return func(ctx context.Context, c service.Caller) (response, error) {
		a, err := h.svc.AllocateAddress(ctx, c, want, tags)
		if err != nil {
			return nil, err
		}
		return &allocateAddressResponse{PublicIP: a.PublicIP, Domain: "vpc", AllocationID: a.ID,
			PublicIpv4Pool: publicPool, NetworkBorderGroup: h.svc.Config().Region}, nil
	}, nil
}

func (h *Handler) associateAddress(p *Params) (exec, error) {
	ref := service.AddressRef{AllocationID: p.Str("AllocationId"), PublicIP: p.Str("PublicIp")}
	instanceID := p.Str("InstanceId")
	if instanceID == "" && p.Has("NetworkInterfaceId") {
		return nil, model.Errorf(model.KindUnsupported, "", "", "Associate an address with an instance: network interfaces are not separate resources here")
	}
	if instanceID == "" {
		return nil, model.MissingParam("InstanceId")
	}
	privateIP := p.Str("PrivateIpAddress")
	reassoc := false
	if p.Has("AllowReassociation") {
		v, err := p.Bool("AllowReassociation")
		if err != nil {
			return nil, err
		}
		reassoc = v
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		a, err := h.svc.AssociateAddress(ctx, c, ref, instanceID, privateIP, reassoc)
		if err != nil {
			return nil, err
		}
		return &associateAddressResponse{Return: true, AssociationID: a.AssociationID}, nil
	}, nil
}

func (h *Handler) disassociateAddress(p *Params) (exec, error) {
	assoc, ip := p.Str("AssociationId"), p.Str("PublicIp")
	if assoc == "" && ip == "" {
		return nil, model.MissingParam("AssociationId")
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.DisassociateAddress(ctx, c, assoc, ip); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) releaseAddress(p *Params) (exec, error) {
	ref := service.AddressRef{AllocationID: p.Str("AllocationId"), PublicIP: p.Str("PublicIp")}
	if ref.AllocationID == "" && ref.PublicIP == "" {
		return nil, model.MissingParam("AllocationId")
	}
	p.Ignore("NetworkBorderGroup")
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.ReleaseAddress(ctx, c, ref); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) describeAddresses(p *Params) (exec, error) {
	ips, err := p.List("PublicIp")
	if err != nil {
		return nil, err
	}
	ids, err := p.List("AllocationId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		as, err := h.svc.DescribeAddresses(ctx, c, ips, ids, filters)
		if err != nil {
			return nil, err
		}
		out := &describeAddressesResponse{AddressesSet: List[addressXML]{}}
		region := h.svc.Config().Region
		for _, a := range as {
			x := addressXML{PublicIP: a.PublicIP, AllocationID: a.ID, Domain: "vpc", InstanceID: a.InstanceID,
				AssociationID: a.AssociationID, PrivateIPAddress: a.PrivateIP, TagSet: tagsXML(a.Tags),
				PublicIpv4Pool: publicPool, NetworkBorderGroup: region}
			if a.InstanceID != "" {
				x.NetworkInterfaceID = derived(model.PrefixENI, a.InstanceID)
				x.NetworkInterfaceOwnerID = a.AccountID
			}
			out.AddressesSet = append(out.AddressesSet, x)
		}
		return out, nil
	}, nil
}

// describeAddressesAttribute answers for the one attribute EC2 has
// (domain-name, the reverse DNS record): Clipper sets none.
func (h *Handler) describeAddressesAttribute(p *Params) (exec, error) {
	ids, err := p.List("AllocationId")
	if err != nil {
		return nil, err
	}
	if a := p.Str("Attribute"); a != "" && a != "domain-name" {
		return nil, model.InvalidParam("Attribute", "Attribute must be domain-name")
	}
	page, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		as, err := h.svc.DescribeAddresses(ctx, c, nil, ids, nil)
		if err != nil {
			return nil, err
		}
		out := &describeAddressesAttributeResponse{AddressSet: List[addressAttributeXML]{}}
		ids := make([]string, len(as))
		for i, a := range as {
			ids[i] = a.ID
		}
		start, end, next, err := service.PageIDs(ids, page)
		if err != nil {
			return nil, err
		}
		for _, a := range as[start:end] {
			out.AddressSet = append(out.AddressSet, addressAttributeXML{PublicIP: a.PublicIP, AllocationID: a.ID})
		}
		out.NextToken = next
		return out, nil
	}, nil
}
