package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// builtinHooks maps iptables' built-in chains to netfilter hooks.
var builtinHooks = map[string]string{
	"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward",
	"OUTPUT": "output", "POSTROUTING": "postrouting",
}

// icmpTypeNames maps iptables' ICMP type names to type[/code].
var icmpTypeNames = map[string]string{
	"any": "", "echo-reply": "0", "pong": "0", "destination-unreachable": "3",
	"network-unreachable": "3/0", "host-unreachable": "3/1", "protocol-unreachable": "3/2",
	"port-unreachable": "3/3", "fragmentation-needed": "3/4", "source-route-failed": "3/5",
	"network-unknown": "3/6", "host-unknown": "3/7", "network-prohibited": "3/9",
	"host-prohibited": "3/10", "tos-network-unreachable": "3/11", "tos-host-unreachable": "3/12",
	"communication-prohibited": "3/13", "host-precedence-violation": "3/14", "precedence-cutoff": "3/15",
	"source-quench": "4", "redirect": "5", "echo-request": "8", "ping": "8",
	"router-advertisement": "9", "router-solicitation": "10", "time-exceeded": "11", "ttl-exceeded": "11",
	"parameter-problem": "12", "timestamp-request": "13", "timestamp-reply": "14",
	"address-mask-request": "17", "address-mask-reply": "18",
}

// icmp6TypeNames maps ip6tables' ICMPv6 type names to type[/code].
var icmp6TypeNames = map[string]string{
	"destination-unreachable": "1", "no-route": "1/0", "communication-prohibited": "1/1",
	"address-unreachable": "1/3", "port-unreachable": "1/4", "packet-too-big": "2",
	"time-exceeded": "3", "ttl-exceeded": "3", "parameter-problem": "4",
	"echo-request": "128", "ping": "128", "echo-reply": "129", "pong": "129",
	"router-solicitation": "133", "router-advertisement": "134",
	"neighbour-solicitation": "135", "neighbor-solicitation": "135",
	"neighbour-advertisement": "136", "neighbor-advertisement": "136", "redirect": "137",
}

// ParseIPTablesSave reads iptables-save (family "ip") or ip6tables-save
// (family "ip6") output into the audit's model. Matches it does not know
// become conditions it cannot judge, never errors; malformed structure
// (a rule outside a table, an unknown chain) is an error.
func ParseIPTablesSave(source, family string, b []byte) (*Ruleset, error) {
	rs := &Ruleset{Source: source, Syntax: "iptables"}
	if family == "ip6" {
		rs.Syntax = "ip6tables"
	}
	var table string
	chains := map[string]*Chain{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimSpace(line[1:])
			if table == "" {
				return nil, fmt.Errorf("line %d: empty table name", lineNo)
			}
			chains = map[string]*Chain{}
		case line == "COMMIT":
			table = ""
		case strings.HasPrefix(line, ":"):
			if table == "" {
				return nil, fmt.Errorf("line %d: chain outside a table", lineNo)
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("line %d: malformed chain line", lineNo)
			}
			c := &Chain{Family: family, Table: table, Name: f[0]}
			if f[1] != "-" {
				c.Hook = builtinHooks[f[0]]
				c.Policy = strings.ToLower(f[1])
				c.Type = "filter"
				if table == "nat" {
					c.Type = "nat"
				}
			}
			chains[c.Name] = c
			rs.Chains = append(rs.Chains, c)
		default:
			if table == "" {
				return nil, fmt.Errorf("line %d: rule outside a table", lineNo)
			}
			args, err := splitArgs(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			if len(args) > 0 && strings.HasPrefix(args[0], "[") { // counters from iptables-save -c
				args = args[1:]
			}
			if len(args) < 2 || args[0] != "-A" {
				return nil, fmt.Errorf("line %d: want a rule (-A CHAIN)", lineNo)
			}
			c := chains[args[1]]
			if c == nil {
				return nil, fmt.Errorf("line %d: rule for undeclared chain %q", lineNo, args[1])
			}
			r := parseIPTRule(args[2:], chains, family == "ip6")
			r.Handle = len(c.Rules) + 1
			r.Text = line
			c.Rules = append(c.Rules, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rs, nil
}

// splitArgs splits a rule line like a shell would for iptables-save output:
// double-quoted strings with backslash escapes.
func splitArgs(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			quoted = !quoted
			in = true
		case !quoted && (ch == ' ' || ch == '\t'):
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(ch)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if in {
		args = append(args, cur.String())
	}
	return args, nil
}

// parseIPTRule reads the matches and target of one rule.
func parseIPTRule(args []string, chains map[string]*Chain, v6 bool) Rule {
	var r Rule
	neg := false
	module := ""
	// values returns the arguments of the option at i (up to the next option).
	values := func(i int) ([]string, int) {
		j := i + 1
		for j < len(args) && !strings.HasPrefix(args[j], "-") && args[j] != "!" {
			j++
		}
		return args[i+1 : j], j
	}
	add := func(c Cond) {
		c.Neg = c.Neg != neg
		r.Conds = append(r.Conds, c)
		neg = false
	}
	for i := 0; i < len(args); {
		a := args[i]
		if a == "!" {
			neg = true
			i++
			continue
		}
		vals, next := values(i)
		first := ""
		if len(vals) > 0 {
			first = vals[0]
		}
		switch a {
		case "-p", "--protocol":
			if p := strings.ToLower(first); p != "all" && p != "0" {
				add(Cond{Key: "l4proto", Values: []string{p}})
			} else {
				neg = false
			}
		case "-m", "--match":
			module = first
		case "-j", "--jump", "-g", "--goto":
			r.Verdict, r.Target = iptTarget(first, chains)
			if a == "-g" || a == "--goto" {
				r.Verdict, r.Target = "goto", first
			}
			// Target options follow; nothing after them is a match.
			i = len(args)
			continue
		case "--icmp-type":
			if module == "icmp" || module == "" {
				addICMP(first, false, add)
			} else {
				add(Cond{Key: "other"})
			}
		case "--icmpv6-type":
			addICMP(first, true, add)
		case "--ctstate", "--state":
			add(Cond{Key: "ct.state", Values: strings.Split(strings.ToLower(first), ",")})
		case "--comment":
			// no effect on packets
		case "-i", "--in-interface", "-o", "--out-interface":
			add(Cond{Key: "iface", Values: []string{first}})
		case "-s", "--source", "-d", "--destination", "-f", "--fragment":
			add(Cond{Key: "other"})
		default:
			switch {
			case module == "tcp" || module == "udp" || module == "sctp" || module == "dccp" || module == "udplite":
				add(Cond{Key: "tcp"})
			case module == "comment":
			default:
				add(Cond{Key: "other"}) // limit, recent, set, mark, addrtype...
			}
		}
		i = next
	}
	return r
}

// addICMP adds the conditions of an ICMP type match ("3/4", "3",
// "fragmentation-needed", "any").
func addICMP(spec string, v6 bool, add func(Cond)) {
	names, prefix := icmpTypeNames, "icmp"
	if v6 {
		names, prefix = icmp6TypeNames, "icmpv6"
	}
	spec = strings.ToLower(spec)
	if s, ok := names[spec]; ok {
		spec = s
	}
	if spec == "" { // any
		add(Cond{Key: "l4proto", Values: []string{prefix}})
		return
	}
	if strings.Contains(spec, "/") {
		add(Cond{Key: prefix + ".typecode", Values: []string{spec}})
		return
	}
	add(Cond{Key: prefix + ".type", Values: []string{spec}})
}

// iptTarget classifies a -j target.
func iptTarget(t string, chains map[string]*Chain) (verdict, target string) {
	switch t {
	case "ACCEPT":
		return "accept", ""
	case "DROP":
		return "drop", ""
	case "REJECT":
		return "reject", ""
	case "RETURN":
		return "return", ""
	}
	if _, ok := chains[t]; ok {
		return "jump", t
	}
	return "", "" // LOG, MARK, TCPMSS, CT...: no verdict
}
