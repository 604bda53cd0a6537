package nodeproto

import "strings"

// PrivateDNSDomain is the domain of instances' private DNS names, the
// one EC2 uses in its first region. Nodes answer names under it.
const PrivateDNSDomain = "ec2.internal"

// PrivateDNSName is the EC2-style host name of a private address,
// "ip-172-31-0-10.ec2.internal"; "" for no address.
func PrivateDNSName(ip string) string {
	if ip == "" {
		return ""
	}
	return "ip-" + strings.ReplaceAll(ip, ".", "-") + "." + PrivateDNSDomain
}
