// Package nftcheck reads a live nftables rule set the way nft prints it
// (nft -j list ruleset) and checks what Clipper promises about it, for
// tests: every instance chain of the filter table starts with the fixed
// rules, before any rule a user can write.
package nftcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The fixed first rules of every instance chain, as nft -j prints their
// expressions (counters left out).
var firstRules = []struct{ what, expr string }{
	{"ct state established,related accept",
		`[{"match":{"left":{"ct":{"key":"state"}},"op":"in","right":["established","related"]}},{"accept":null}]`},
	{"icmp type 3 code 4 (fragmentation needed) accept",
		`[{"match":{"left":{"payload":{"field":"type","protocol":"icmp"}},"op":"==","right":"destination-unreachable"}},` +
			`{"match":{"left":{"payload":{"field":"code","protocol":"icmp"}},"op":"==","right":"frag-needed"}},{"accept":null}]`},
	{"icmpv6 packet-too-big accept",
		`[{"match":{"left":{"payload":{"field":"type","protocol":"icmpv6"}},"op":"==","right":"packet-too-big"}},{"accept":null}]`},
	{"DHCP to the node (udp 68 -> 67) accept",
		`[{"match":{"left":{"meta":{"key":"nfproto"}},"op":"==","right":"ipv4"}},` +
			`{"match":{"left":{"payload":{"field":"sport","protocol":"udp"}},"op":"==","right":68}},` +
			`{"match":{"left":{"payload":{"field":"dport","protocol":"udp"}},"op":"==","right":67}},{"accept":null}]`},
}

type ruleset struct {
	Nftables []struct {
		Rule *struct {
			Family string            `json:"family"`
			Table  string            `json:"table"`
			Chain  string            `json:"chain"`
			Expr   []json.RawMessage `json:"expr"`
		} `json:"rule"`
	} `json:"nftables"`
}

// FirstRules checks every instance chain (in-*, eg-*) of table inet
// <table> in the output of nft -j list ruleset: it must begin with the
// fixed rules, in order, and hold nothing else before them. It returns
// the instance chains it checked; an error names every chain that fails.
func FirstRules(rulesetJSON []byte, table string) ([]string, error) {
	var rs ruleset
	if err := json.Unmarshal(rulesetJSON, &rs); err != nil {
		return nil, fmt.Errorf("nftcheck: %w", err)
	}
	chains := map[string][]string{}
	var order []string
	for _, o := range rs.Nftables {
		r := o.Rule
		if r == nil || r.Family != "inet" || r.Table != table {
			continue
		}
		if !strings.HasPrefix(r.Chain, "in-") && !strings.HasPrefix(r.Chain, "eg-") {
			continue
		}
		if _, ok := chains[r.Chain]; !ok {
			order = append(order, r.Chain)
		}
		e, err := canonical(r.Expr)
		if err != nil {
			return nil, err
		}
		chains[r.Chain] = append(chains[r.Chain], e)
	}
	var errs []error
	for _, ch := range order {
		rules := chains[ch]
		for i, want := range firstRules {
			if i >= len(rules) {
				errs = append(errs, fmt.Errorf("chain %s: rule %d missing, want %s", ch, i+1, want.what))
				break
			}
			if rules[i] != want.expr {
				errs = append(errs, fmt.Errorf("chain %s: rule %d is %s, want %s", ch, i+1, rules[i], want.what))
			}
		}
	}
	return order, errors.Join(errs...)
}

// canonical renders a rule's expressions as compact JSON with sorted keys,
// counters left out.
func canonical(exprs []json.RawMessage) (string, error) {
	var out []any
	for _, raw := range exprs {
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", fmt.Errorf("nftcheck: %w", err)
		}
		if _, ok := v["counter"]; ok && len(v) == 1 {
			continue
		}
		out = append(out, v)
	}
	b, err := json.Marshal(out)
	return string(b), err
}
