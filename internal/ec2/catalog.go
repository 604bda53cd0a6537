package ec2

import (
	"context"
	"strconv"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type regionXML struct {
	RegionName     string `xml:"regionName"`
	RegionEndpoint string `xml:"regionEndpoint"`
	OptInStatus    string `xml:"optInStatus"`
}

type describeRegionsResponse struct {
	Meta
	RegionInfo List[regionXML] `xml:"regionInfo"`
}

type zoneXML struct {
	ZoneName           string         `xml:"zoneName"`
	ZoneState          string         `xml:"zoneState"`
	RegionName         string         `xml:"regionName"`
	ZoneID             string         `xml:"zoneId"`
	GroupName          string         `xml:"groupName"`
	NetworkBorderGroup string         `xml:"networkBorderGroup"`
	ZoneType           string         `xml:"zoneType"`
	OptInStatus        string         `xml:"optInStatus"`
	MessageSet         List[struct{}] `xml:"messageSet"`
}

type describeZonesResponse struct {
	Meta
	AvailabilityZoneInfo List[zoneXML] `xml:"availabilityZoneInfo"`
}

type vcpuInfoXML struct {
	DefaultVCpus          int `xml:"defaultVCpus"`
	DefaultCores          int `xml:"defaultCores"`
	DefaultThreadsPerCore int `xml:"defaultThreadsPerCore"`
}

type memoryInfoXML struct {
	SizeInMiB int `xml:"sizeInMiB"`
}

type processorInfoXML struct {
	SupportedArchitectures List[string] `xml:"supportedArchitectures"`
}

type ebsInfoXML struct {
	EbsOptimizedSupport string `xml:"ebsOptimizedSupport"`
	EncryptionSupport   string `xml:"encryptionSupport"`
	NvmeSupport         string `xml:"nvmeSupport"`
}

type networkInfoXML struct {
	NetworkPerformance           string `xml:"networkPerformance"`
	MaximumNetworkInterfaces     int    `xml:"maximumNetworkInterfaces"`
	Ipv4AddressesPerInterface    int    `xml:"ipv4AddressesPerInterface"`
	Ipv6AddressesPerInterface    int    `xml:"ipv6AddressesPerInterface"`
	Ipv6Supported                bool   `xml:"ipv6Supported"`
	EnaSupport                   string `xml:"enaSupport"`
	EfaSupported                 bool   `xml:"efaSupported"`
	EncryptionInTransitSupported bool   `xml:"encryptionInTransitSupported"`
}

type instanceTypeXML struct {
	InstanceType                  string           `xml:"instanceType"`
	CurrentGeneration             bool             `xml:"currentGeneration"`
	FreeTierEligible              bool             `xml:"freeTierEligible"`
	SupportedUsageClasses         List[string]     `xml:"supportedUsageClasses"`
	SupportedRootDeviceTypes      List[string]     `xml:"supportedRootDeviceTypes"`
	SupportedVirtualizationTypes  List[string]     `xml:"supportedVirtualizationTypes"`
	BareMetal                     bool             `xml:"bareMetal"`
	Hypervisor                    string           `xml:"hypervisor"`
	ProcessorInfo                 processorInfoXML `xml:"processorInfo"`
	VCpuInfo                      vcpuInfoXML      `xml:"vCpuInfo"`
	MemoryInfo                    memoryInfoXML    `xml:"memoryInfo"`
	InstanceStorageSupported      bool             `xml:"instanceStorageSupported"`
	EbsInfo                       ebsInfoXML       `xml:"ebsInfo"`
	NetworkInfo                   networkInfoXML   `xml:"networkInfo"`
	PlacementGroupInfo            struct{}         `xml:"placementGroupInfo"`
	HibernationSupported          bool             `xml:"hibernationSupported"`
	BurstablePerformanceSupported bool             `xml:"burstablePerformanceSupported"`
	DedicatedHostsSupported       bool             `xml:"dedicatedHostsSupported"`
	AutoRecoverySupported         bool             `xml:"autoRecoverySupported"`
	SupportedBootModes            List[string]     `xml:"supportedBootModes"`
}

type describeInstanceTypesResponse struct {
	Meta
	InstanceTypeSet List[instanceTypeXML] `xml:"instanceTypeSet"`
	NextToken       string                `xml:"nextToken,omitempty"`
}

type attrValueXML struct {
	AttributeValue string `xml:"attributeValue"`
}

type accountAttrXML struct {
	AttributeName     string             `xml:"attributeName"`
	AttributeValueSet List[attrValueXML] `xml:"attributeValueSet"`
}

type describeAccountAttributesResponse struct {
	Meta
	AccountAttributeSet List[accountAttrXML] `xml:"accountAttributeSet"`
}

func (h *Handler) registerCatalog() {
	h.actions["DescribeRegions"] = h.describeRegions
	h.actions["DescribeAvailabilityZones"] = h.describeZones
	h.actions["DescribeInstanceTypes"] = h.describeInstanceTypes
	h.actions["DescribeAccountAttributes"] = h.describeAccountAttributes
}

type regionInfo struct{ name, endpoint string }

func (h *Handler) describeRegions(p *Params) (exec, error) {
	names, err := p.List("RegionName")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	p.Ignore("AllRegions")
	return func(ctx context.Context, c service.Caller) (response, error) {
		region := h.svc.Config().Region
		for _, n := range names {
			if n != region {
				return nil, model.InvalidParam("RegionName", "Invalid region: %s", n)
			}
		}
		list, err := service.FilterList([]regionInfo{{region, h.Endpoint}}, filters, func(r regionInfo) func(string) ([]string, bool) {
			return func(name string) ([]string, bool) {
				switch name {
				case "region-name":
					return []string{r.name}, true
				case "endpoint":
					return []string{r.endpoint}, true
				case "opt-in-status":
					return []string{"opt-in-not-required"}, true
				}
				return nil, false
			}
		})
		if err != nil {
			return nil, err
		}
		out := &describeRegionsResponse{RegionInfo: List[regionXML]{}}
		for _, r := range list {
			out.RegionInfo = append(out.RegionInfo, regionXML{RegionName: r.name, RegionEndpoint: r.endpoint, OptInStatus: "opt-in-not-required"})
		}
		return out, nil
	}, nil
}

func (h *Handler) describeZones(p *Params) (exec, error) {
	names, err := p.List("ZoneName")
	if err != nil {
		return nil, err
	}
	ids, err := p.List("ZoneId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	p.Ignore("AllAvailabilityZones")
	return func(ctx context.Context, c service.Caller) (response, error) {
		zones, err := service.FilterList(h.svc.Zones(), filters, service.ZoneFields)
		if err != nil {
			return nil, err
		}
		byName, byID := map[string]bool{}, map[string]bool{}
		for _, z := range h.svc.Zones() {
			byName[z.Name], byID[z.ID] = true, true
		}
		for _, n := range names {
			if !byName[n] {
				return nil, model.InvalidParam("ZoneName", "The zone '%s' does not exist.", n)
			}
		}
		for _, n := range ids {
			if !byID[n] {
				return nil, model.InvalidParam("ZoneId", "The zone ID '%s' does not exist.", n)
			}
		}
		out := &describeZonesResponse{AvailabilityZoneInfo: List[zoneXML]{}}
		for _, z := range zones {
			if (len(names) > 0 && !contains(names, z.Name)) || (len(ids) > 0 && !contains(ids, z.ID)) {
				continue
			}
			out.AvailabilityZoneInfo = append(out.AvailabilityZoneInfo, zoneXML{ZoneName: z.Name, ZoneState: "available",
				RegionName: z.Region, ZoneID: z.ID, GroupName: z.Region, NetworkBorderGroup: z.Region,
				ZoneType: "availability-zone", OptInStatus: "opt-in-not-required", MessageSet: List[struct{}]{}})
		}
		return out, nil
	}, nil
}

func (h *Handler) describeInstanceTypes(p *Params) (exec, error) {
	names, err := p.List("InstanceType")
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
		types, next, err := h.svc.InstanceTypes(names, filters, pg)
		if err != nil {
			return nil, err
		}
		out := &describeInstanceTypesResponse{InstanceTypeSet: List[instanceTypeXML]{}, NextToken: next}
		for _, t := range types {
			out.InstanceTypeSet = append(out.InstanceTypeSet, instanceTypeXML{
				InstanceType: t.Name, CurrentGeneration: true,
				SupportedUsageClasses:        List[string]{"on-demand"},
				SupportedRootDeviceTypes:     List[string]{"ebs"},
				SupportedVirtualizationTypes: List[string]{"hvm"},
				Hypervisor:                   "kvm",
				ProcessorInfo:                processorInfoXML{SupportedArchitectures: List[string]{"x86_64"}},
				VCpuInfo:                     vcpuInfoXML{DefaultVCpus: t.VCPUs, DefaultCores: t.VCPUs, DefaultThreadsPerCore: 1},
				MemoryInfo:                   memoryInfoXML{SizeInMiB: t.MemoryMiB},
				EbsInfo:                      ebsInfoXML{EbsOptimizedSupport: "unsupported", EncryptionSupport: "unsupported", NvmeSupport: "unsupported"},
				NetworkInfo: networkInfoXML{NetworkPerformance: "Up to 10 Gigabit", MaximumNetworkInterfaces: 1,
					Ipv4AddressesPerInterface: 1, EnaSupport: "unsupported"},
				SupportedBootModes: List[string]{"legacy-bios"},
			})
		}
		return out, nil
	}, nil
}

func (h *Handler) describeAccountAttributes(p *Params) (exec, error) {
	names, err := p.List("AttributeName")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		cfg := h.svc.Config()
		attrs := []accountAttrXML{
			{"supported-platforms", List[attrValueXML]{{"VPC"}}},
			{"default-vpc", List[attrValueXML]{{h.svc.DefaultVPC(c.AccountID)}}},
			{"max-instances", List[attrValueXML]{{strconv.Itoa(cfg.MaxInstances)}}},
			{"vpc-max-security-groups-per-interface", List[attrValueXML]{{"5"}}},
			{"max-elastic-ips", List[attrValueXML]{{"5"}}},
			{"vpc-max-elastic-ips", List[attrValueXML]{{"5"}}},
		}
		out := &describeAccountAttributesResponse{AccountAttributeSet: List[accountAttrXML]{}}
		for _, a := range attrs {
			if len(names) == 0 || contains(names, a.AttributeName) {
				out.AccountAttributeSet = append(out.AccountAttributeSet, a)
			}
		}
		for _, n := range names {
			found := false
			for _, a := range attrs {
				found = found || a.AttributeName == n
			}
			if !found {
				return nil, model.InvalidParam("AttributeName", "Value (%s) for parameter attributeName is invalid.", n)
			}
		}
		return out, nil
	}, nil
}
