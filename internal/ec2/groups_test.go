package ec2

import (
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

func TestDecodePermissions(t *testing.T) {
	p := mustParse(t, "IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=81"+
		"&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F8&IpPermissions.1.IpRanges.1.Description=lan"+
		"&IpPermissions.1.Groups.1.GroupId=sg-12345678&IpPermissions.2.IpProtocol=-1&IpPermissions.2.Ipv6Ranges.1.CidrIpv6=%3A%3A%2F0")
	perms, err := decodePermissions(p)
	if err != nil || len(perms) != 2 {
		t.Fatalf("%+v %v", perms, err)
	}
	if *perms[0].FromPort != 80 || *perms[0].ToPort != 81 || perms[0].CIDRs[0].Description != "lan" || perms[0].Groups[0].GroupID != "sg-12345678" {
		t.Fatalf("first: %+v", perms[0])
	}
	if perms[1].CIDRs[0].CIDR != "::/0" {
		t.Fatalf("second: %+v", perms[1])
	}
	if len(p.unused()) != 0 {
		t.Fatalf("unused %v", p.unused())
	}
	// Legacy top-level form.
	p = mustParse(t, "IpProtocol=udp&FromPort=53&ToPort=53&CidrIp=0.0.0.0%2F0")
	perms, err = decodePermissions(p)
	if err != nil || len(perms) != 1 || perms[0].Protocol != "udp" {
		t.Fatalf("legacy: %+v %v", perms, err)
	}
}

// FuzzIpPermissions: the decoder never panics, and whatever it accepts the
// service's validation either accepts or rejects with a domain error.
func FuzzIpPermissions(f *testing.F) {
	for _, s := range []string{
		"IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=22&IpPermissions.1.ToPort=22&IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0/0",
		"IpPermissions.1.IpProtocol=icmp&IpPermissions.1.FromPort=3&IpPermissions.1.ToPort=4&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8",
		"IpPermissions.1.IpProtocol=-1&IpPermissions.1.Groups.1.GroupId=sg-0123456789abcdef0",
		"IpPermissions.1.IpProtocol=47&IpPermissions.1.Ipv6Ranges.1.CidrIpv6=2001:db8::/32",
		"IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=9&IpPermissions.1.ToPort=1&IpPermissions.1.IpRanges.1.CidrIp=1.2.3.4/33",
		"IpPermissions.0.IpProtocol=tcp",
		"IpProtocol=tcp&FromPort=1&ToPort=2&CidrIp=1.2.3.0/24",
		"IpPermissions.1.PrefixListIds.1.PrefixListId=pl-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := parseParams(raw)
		if err != nil {
			return
		}
		perms, err := decodePermissions(p)
		if err != nil {
			if model.KindOf(err) == model.KindInternal {
				t.Fatalf("%q: non-domain error %v", raw, err)
			}
			return
		}
		for _, perm := range perms {
			_, err := service.ExpandForCheck(perm)
			if err != nil && model.KindOf(err) == model.KindInternal {
				t.Fatalf("%q: non-domain error %v", raw, err)
			}
		}
	})
}
