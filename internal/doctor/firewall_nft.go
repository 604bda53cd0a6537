package doctor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ParseNftJSON reads the output of `nft -j list ruleset` into the audit's
// model. Statements the audit does not know become conditions it cannot
// judge (a rule that may or may not match), never errors.
func ParseNftJSON(source string, b []byte) (*Ruleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("nft JSON: %w", err)
	}
	if doc.Nftables == nil {
		return nil, fmt.Errorf("nft JSON: no \"nftables\" array")
	}
	rs := &Ruleset{Source: source, Syntax: "nft"}
	chains := map[string]*Chain{}
	key := func(family, table, name string) string { return family + "\x00" + table + "\x00" + name }
	type nftRule struct {
		Family  string            `json:"family"`
		Table   string            `json:"table"`
		Chain   string            `json:"chain"`
		Handle  int               `json:"handle"`
		Comment string            `json:"comment"`
		Expr    []json.RawMessage `json:"expr"`
	}
	var rules []nftRule
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Family string `json:"family"`
				Table  string `json:"table"`
				Name   string `json:"name"`
				Type   string `json:"type"`
				Hook   string `json:"hook"`
				Policy string `json:"policy"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, fmt.Errorf("nft JSON chain: %w", err)
			}
			ch := &Chain{Family: c.Family, Table: c.Table, Name: c.Name, Type: c.Type, Hook: c.Hook, Policy: c.Policy}
			if ch.Hook != "" && ch.Policy == "" {
				ch.Policy = "accept"
			}
			chains[key(c.Family, c.Table, c.Name)] = ch
			rs.Chains = append(rs.Chains, ch)
		}
		if raw, ok := obj["rule"]; ok {
			var r nftRule
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("nft JSON rule: %w", err)
			}
			rules = append(rules, r)
		}
	}
	for _, r := range rules {
		ch := chains[key(r.Family, r.Table, r.Chain)]
		if ch == nil {
			// A rule of a chain the listing did not show: keep it in a
			// regular chain so jumps to it still resolve.
			ch = &Chain{Family: r.Family, Table: r.Table, Name: r.Chain}
			chains[key(r.Family, r.Table, r.Chain)] = ch
			rs.Chains = append(rs.Chains, ch)
		}
		rule := Rule{Handle: r.Handle}
		var text []string
		for _, e := range r.Expr {
			t := parseNftStmt(e, &rule)
			if t != "" {
				text = append(text, t)
			}
		}
		rule.Text = strings.Join(text, " ")
		if r.Comment != "" {
			rule.Text += fmt.Sprintf(" comment %q", r.Comment)
		}
		ch.Rules = append(ch.Rules, rule)
	}
	return rs, nil
}

// parseNftStmt adds one statement of a rule to r and returns it as text.
func parseNftStmt(raw json.RawMessage, r *Rule) string {
	var stmt map[string]json.RawMessage
	if err := json.Unmarshal(raw, &stmt); err != nil || len(stmt) != 1 {
		r.Conds = append(r.Conds, Cond{Key: "other"})
		return "?"
	}
	for name, body := range stmt {
		switch name {
		case "match":
			return nftMatch(body, r)
		case "accept", "drop", "continue", "return":
			r.Verdict = name
			if name == "continue" {
				r.Verdict = ""
			}
			return name
		case "reject":
			r.Verdict = "reject"
			return "reject"
		case "jump", "goto":
			var t struct {
				Target string `json:"target"`
			}
			_ = json.Unmarshal(body, &t)
			r.Verdict, r.Target = name, t.Target
			return name + " " + t.Target
		case "vmap":
			return nftVmapStmt(body, r)
		case "xt":
			return nftXt(body, r)
		case "limit", "quota", "ct count", "connlimit":
			r.Conds = append(r.Conds, Cond{Key: "other"})
			return name + " " + compactJSON(body)
		case "counter", "log", "mangle", "meta", "ct", "notrack", "set", "flow", "dup", "fwd", "nflog", "synproxy", "secmark", "tproxy":
			if name == "counter" {
				return "counter"
			}
			return name + " " + compactJSON(body)
		case "queue":
			r.Conds = append(r.Conds, Cond{Key: "other"})
			return "queue"
		default: // nat statements and newer ones: no verdict on filter
			return name + " " + compactJSON(body)
		}
	}
	return ""
}

// nftMatch adds the conditions of a match statement to r.
func nftMatch(body json.RawMessage, r *Rule) string {
	var m struct {
		Op    string          `json:"op"`
		Left  json.RawMessage `json:"left"`
		Right json.RawMessage `json:"right"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		r.Conds = append(r.Conds, Cond{Key: "other"})
		return "?"
	}
	conds, ltext := nftLeft(m.Left)
	vals, rtext, ok := nftRight(m.Right)
	last := &conds[len(conds)-1]
	judged := last.Key != "tcp" && last.Key != "udp" && last.Key != "ip4" && last.Key != "ip6"
	op := m.Op
	switch op {
	case "==", "in", "":
		op = "=="
	case "!=":
		last.Neg = true
	default: // <, >, <=, >=: not judged
		ok = false
	}
	if !ok && judged {
		last.Key = "other"
	}
	last.Values = vals
	r.Conds = append(r.Conds, conds...)
	if op == "==" {
		return ltext + " " + rtext
	}
	return ltext + " " + op + " " + rtext
}

// nftVmapStmt reads a verdict map statement into r.
func nftVmapStmt(body json.RawMessage, r *Rule) string {
	var v struct {
		Key  json.RawMessage `json:"key"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		r.Conds = append(r.Conds, Cond{Key: "other"})
		return "vmap ?"
	}
	conds, ktext := nftLeft(v.Key)
	r.Conds = append(r.Conds, conds[:len(conds)-1]...)
	r.MapKey = conds[len(conds)-1].Key
	r.Verdict = "vmap"
	r.Map = nftVmap(v.Data)
	return ktext + " vmap " + vmapText(r.Map)
}

// nftXt reads an iptables-nft match or target that nft cannot show.
func nftXt(body json.RawMessage, r *Rule) string {
	var x struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	_ = json.Unmarshal(body, &x)
	if x.Type == "target" {
		switch x.Name {
		case "REJECT", "DROP":
			r.Verdict = "reject"
		case "ACCEPT":
			r.Verdict = "accept"
		}
	} else {
		r.Conds = append(r.Conds, Cond{Key: "other"})
	}
	return "xt " + x.Type + " " + x.Name
}

func compactJSON(b json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return "?"
	}
	s := buf.String()
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// nftLeft turns the left side of a match into conditions (the last one
// carries the values) and text.
func nftLeft(raw json.RawMessage) ([]Cond, string) {
	var e map[string]json.RawMessage
	if err := json.Unmarshal(raw, &e); err != nil || len(e) != 1 {
		return []Cond{{Key: "other"}}, "?"
	}
	for name, body := range e {
		switch name {
		case "meta":
			var m struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal(body, &m)
			switch m.Key {
			case "l4proto":
				return []Cond{{Key: "l4proto"}}, "meta l4proto"
			case "nfproto", "protocol":
				return []Cond{{Key: "nfproto"}}, "meta " + m.Key
			case "iifname", "oifname":
				return []Cond{{Key: "iface"}}, m.Key
			}
			return []Cond{{Key: "other"}}, "meta " + m.Key
		case "payload":
			var p struct {
				Protocol string `json:"protocol"`
				Field    string `json:"field"`
			}
			_ = json.Unmarshal(body, &p)
			text := p.Protocol + " " + p.Field
			switch p.Protocol {
			case "ip":
				if p.Field == "protocol" {
					return []Cond{{Key: "nfproto", Values: []string{"ipv4"}}, {Key: "l4proto"}}, text
				}
				return []Cond{{Key: "ip4"}}, text
			case "ip6":
				if p.Field == "nexthdr" {
					return []Cond{{Key: "nfproto", Values: []string{"ipv6"}}, {Key: "l4proto"}}, text
				}
				return []Cond{{Key: "ip6"}}, text
			case "icmp", "icmpv6":
				if p.Field == "type" || p.Field == "code" {
					return []Cond{{Key: p.Protocol + "." + p.Field}}, text
				}
				// Other ICMP fields: only ICMP of that version can match.
				fam := "ipv4"
				if p.Protocol == "icmpv6" {
					fam = "ipv6"
				}
				return []Cond{{Key: "l4proto", Values: []string{p.Protocol}}, {Key: "nfproto", Values: []string{fam}}, {Key: "other"}}, text
			case "tcp", "udp", "udplite", "sctp", "dccp":
				return []Cond{{Key: "tcp"}}, text
			case "":
				return []Cond{{Key: "other"}}, "payload " + compactJSON(body)
			}
			return []Cond{{Key: "other"}}, text
		case "ct":
			var c struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal(body, &c)
			if c.Key == "state" {
				return []Cond{{Key: "ct.state"}}, "ct state"
			}
			return []Cond{{Key: "other"}}, "ct " + c.Key
		case "&", "|", "^":
			var parts []json.RawMessage
			if json.Unmarshal(body, &parts) == nil && len(parts) == 2 {
				conds, text := nftLeft(parts[0])
				k := conds[len(conds)-1].Key
				if k != "tcp" && k != "ip4" && k != "ip6" {
					conds[len(conds)-1].Key = "other"
				}
				return conds, text + " " + name + " " + compactJSON(parts[1])
			}
		}
		return []Cond{{Key: "other"}}, name + " " + compactJSON(body)
	}
	return []Cond{{Key: "other"}}, "?"
}

// nftRight turns the right side of a match into values; ok is false for
// what the audit cannot compare (named sets, prefixes...).
func nftRight(raw json.RawMessage) ([]string, string, bool) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, "?", false
	}
	vals, ok := nftValues(v)
	text := strings.Join(vals, ", ")
	if len(vals) > 1 {
		text = "{ " + text + " }"
	}
	if !ok {
		text = compactJSON(raw)
	}
	return vals, text, ok
}

func nftValues(v any) ([]string, bool) {
	switch x := v.(type) {
	case string:
		if strings.HasPrefix(x, "@") || strings.HasPrefix(x, "$") {
			return []string{x}, false
		}
		return []string{x}, true
	case json.Number:
		return []string{x.String()}, true
	case bool:
		return []string{strconv.FormatBool(x)}, true
	case []any:
		var out []string
		ok := true
		for _, e := range x {
			vs, k := nftValues(e)
			out = append(out, vs...)
			ok = ok && k
		}
		return out, ok
	case map[string]any:
		if s, has := x["set"]; has {
			return nftValues(s)
		}
		if r, has := x["range"].([]any); has && len(r) == 2 {
			a, ok1 := nftValues(r[0])
			b, ok2 := nftValues(r[1])
			if ok1 && ok2 && len(a) == 1 && len(b) == 1 {
				return []string{"range:" + a[0] + "-" + b[0]}, true
			}
		}
		if e, has := x["elem"].(map[string]any); has {
			return nftValues(e["val"])
		}
	}
	return []string{"?"}, false
}

// nftVmap reads the elements of an anonymous verdict map.
func nftVmap(raw json.RawMessage) map[string]string {
	out := map[string]string{}
	var d struct {
		Set [][2]json.RawMessage `json:"set"`
	}
	if json.Unmarshal(raw, &d) != nil {
		out["?"] = "" // a named map: unknown contents
		return out
	}
	for _, el := range d.Set {
		var k any
		dec := json.NewDecoder(bytes.NewReader(el[0]))
		dec.UseNumber()
		if dec.Decode(&k) != nil {
			continue
		}
		keys, _ := nftValues(k)
		var verdict map[string]json.RawMessage
		if json.Unmarshal(el[1], &verdict) != nil {
			continue
		}
		for name, body := range verdict {
			v := name
			if name == "jump" || name == "goto" {
				var t struct {
					Target string `json:"target"`
				}
				_ = json.Unmarshal(body, &t)
				v = name + ":" + t.Target
			}
			out[strings.Join(keys, ",")] = v
		}
	}
	return out
}

func vmapText(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+" : "+strings.Replace(v, ":", " ", 1))
	}
	sort.Strings(parts)
	return "{ " + strings.Join(parts, ", ") + " }"
}
