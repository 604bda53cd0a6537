package service

import (
	"strconv"

	"github.com/clipper-cloud/clipper/internal/model"
)

func typeFields(t *model.InstanceType) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "instance-type":
			return []string{t.Name}, true
		case "vcpu-info.default-vcpus":
			return []string{strconv.Itoa(t.VCPUs)}, true
		case "memory-info.size-in-mib":
			return []string{strconv.Itoa(t.MemoryMiB)}, true
		case "current-generation":
			return []string{"true"}, true
		case "burstable-performance-supported", "bare-metal", "free-tier-eligible", "hibernation-supported":
			return []string{"false"}, true
		case "processor-info.supported-architecture":
			return []string{"x86_64"}, true
		case "supported-virtualization-type":
			return []string{"hvm"}, true
		case "supported-root-device-type":
			return []string{"ebs"}, true
		case "hypervisor":
			return []string{"kvm"}, true
		}
		return nil, false
	}
}

// InstanceTypes returns entries of the instance type table.
func (s *Service) InstanceTypes(names []string, filters []Filter, pg Page) ([]model.InstanceType, string, error) {
	if err := checkFilters(filters, typeFields(&model.InstanceType{})); err != nil {
		return nil, "", err
	}
	if pg.MaxResults != 0 && (pg.MaxResults < 5 || pg.MaxResults > 100) {
		return nil, "", model.InvalidParam("MaxResults", "MaxResults must be between 5 and 100")
	}
	for _, n := range names {
		if _, ok := s.types[n]; !ok {
			return nil, "", model.InvalidParam("InstanceType", "The following supplied instance types do not exist: [%s]", n)
		}
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []model.InstanceType
	var keys []string
	for _, t := range s.cfg.InstanceTypes {
		if len(names) > 0 && !want[t.Name] {
			continue
		}
		if matchFilters(filters, typeFields(&t)) {
			out = append(out, t)
			keys = append(keys, t.Name)
		}
	}
	// The table is in configuration order; page by position.
	start, end, next, err := pageOrdered(keys, pg)
	if err != nil {
		return nil, "", err
	}
	return out[start:end], next, nil
}

// pageOrdered pages a list that is not sorted by key: the token carries
// the last key, found by a linear scan.
func pageOrdered(keys []string, pg Page) (int, int, string, error) {
	idx := make([]string, len(keys))
	for i := range keys {
		idx[i] = strconv.FormatInt(int64(100000+i), 10) // sortable position keys
	}
	return pageIDs(idx, pg)
}

// ZoneInfo describes an availability zone.
type ZoneInfo struct {
	Name   string
	ID     string
	Region string
}

// Zones returns the configured availability zones.
func (s *Service) Zones() []ZoneInfo {
	out := make([]ZoneInfo, len(s.cfg.Zones))
	for i, z := range s.cfg.Zones {
		out[i] = ZoneInfo{Name: z, ID: s.cfg.Region + "-az" + strconv.Itoa(i+1), Region: s.cfg.Region}
	}
	return out
}

// ZoneFields is the filter field function for zones.
func ZoneFields(z ZoneInfo) func(string) ([]string, bool) {
	return func(name string) ([]string, bool) {
		switch name {
		case "zone-name":
			return []string{z.Name}, true
		case "zone-id":
			return []string{z.ID}, true
		case "region-name":
			return []string{z.Region}, true
		case "state":
			return []string{"available"}, true
		case "zone-type":
			return []string{"availability-zone"}, true
		case "group-name", "network-border-group":
			return []string{z.Region}, true
		case "opt-in-status":
			return []string{"opt-in-not-required"}, true
		}
		return nil, false
	}
}

// FilterList keeps the items whose fields pass the filters, after checking
// the filter names against a probe item. It serves small static lists.
func FilterList[T any](items []T, filters []Filter, fields func(T) func(string) ([]string, bool)) ([]T, error) {
	var zero T
	if err := checkFilters(filters, fields(zero)); err != nil {
		return nil, err
	}
	var out []T
	for _, it := range items {
		if matchFilters(filters, fields(it)) {
			out = append(out, it)
		}
	}
	return out, nil
}
