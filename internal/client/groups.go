package client

import (
	"context"
	"errors"
	"net/url"

	"github.com/clipper-cloud/clipper/internal/api"
)

// SecurityGroup is a security group as DescribeSecurityGroups answers it.
type SecurityGroup struct {
	ID          string       `xml:"groupId"`
	Name        string       `xml:"groupName"`
	Description string       `xml:"groupDescription"`
	VPCID       string       `xml:"vpcId"`
	Ingress     []Permission `xml:"ipPermissions>item"`
	Egress      []Permission `xml:"ipPermissionsEgress>item"`
}

// Permission is one IpPermission of a group.
type Permission struct {
	Protocol string `xml:"ipProtocol"`
	// FromPort and ToPort are nil where the answer leaves them out (all
	// ports); for ICMP they are the type and code.
	FromPort   *int   `xml:"fromPort"`
	ToPort     *int   `xml:"toPort"`
	IPRanges   []CIDR `xml:"ipRanges>item"`
	IPv6Ranges []CIDR `xml:"ipv6Ranges>item"`
	Groups     []struct {
		GroupID string `xml:"groupId"`
	} `xml:"groups>item"`
	PrefixLists []struct {
		ID string `xml:"prefixListId"`
	} `xml:"prefixListIds>item"`
}

// CIDR is one address range of a permission.
type CIDR struct {
	V4 string `xml:"cidrIp"`
	V6 string `xml:"cidrIpv6"`
}

// DescribeSecurityGroups returns every security group of the caller's
// account, following nextToken.
func (c *Client) DescribeSecurityGroups(ctx context.Context) ([]SecurityGroup, error) {
	var all []SecurityGroup
	token := ""
	for {
		params := url.Values{"MaxResults": {"1000"}}
		if token != "" {
			params.Set("NextToken", token)
		}
		var out struct {
			Groups    []SecurityGroup `xml:"securityGroupInfo>item"`
			NextToken string          `xml:"nextToken"`
		}
		if err := c.Call(ctx, "DescribeSecurityGroups", params, &out); err != nil {
			return nil, err
		}
		all = append(all, out.Groups...)
		if out.NextToken == "" || out.NextToken == token {
			return all, nil
		}
		token = out.NextToken
	}
}

// IsClipper reports whether the endpoint is a Clipper controller: its
// native API answers (the node listing, or a JSON refusal with an error
// code for accounts that may not list nodes). A plain EC2 endpoint has no
// such API.
func (c *Client) IsClipper(ctx context.Context) (bool, error) {
	var nodes []api.NodeInfo
	err := c.Do(ctx, "GET", api.Prefix+"nodes", nil, 0, emptyPayload, &nodes)
	var ae *APIError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ae):
		return ae.Code != "HTTP", nil // a JSON error body: Clipper's API
	}
	return false, err
}

// emptyPayload is the SHA-256 of an empty body.
const emptyPayload = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
