package nftcheck

import (
	"strings"
	"testing"
)

// sample is nft 1.0.6's listing of an instance chain (trimmed).
const sample = `{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"chain": {"family": "inet", "table": "clipper_filter", "name": "in-i-a"}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "destination-unreachable"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "code"}}, "right": "frag-needed"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": "packet-too-big"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 68}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 67}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "comment": "clipper group=sg-x", "expr": [{"jump": {"target": "g-sg-x-in"}}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "g-sg-x-in", "expr": [{"drop": null}]}}]}`

func TestFirstRules(t *testing.T) {
	chains, err := FirstRules([]byte(sample), "clipper_filter")
	if err != nil || len(chains) != 1 || chains[0] != "in-i-a" {
		t.Fatalf("chains %v, err %v", chains, err)
	}
	// A user rule before the fixed ones.
	bad := strings.Replace(sample, `"chain": "in-i-a", "expr": [{"match": {"op": "in"`,
		`"chain": "in-i-a", "expr": [{"jump": {"target": "g-sg-x-in"}}]}},
{"rule": {"family": "inet", "table": "clipper_filter", "chain": "in-i-a", "expr": [{"match": {"op": "in"`, 1)
	if _, err := FirstRules([]byte(bad), "clipper_filter"); err == nil {
		t.Error("a jump before the fixed rules passed")
	}
	// The frag-needed rule missing.
	missing := strings.Replace(sample, `"right": "frag-needed"`, `"right": "port-unreachable"`, 1)
	if _, err := FirstRules([]byte(missing), "clipper_filter"); err == nil || !strings.Contains(err.Error(), "fragmentation") {
		t.Errorf("a chain without frag-needed: %v", err)
	}
}
