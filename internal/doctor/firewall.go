package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// This file audits rule sets for rules that drop ICMP "fragmentation
// needed" (IPv4) and "packet too big" (IPv6). Every host source (nftables
// JSON, iptables-save text) is turned into one small model, Ruleset, and
// one walker decides per base chain what happens to such a packet. The
// controller's security groups, which are allow lists, have their own
// audit in firewall_groups.go.

// Ruleset is a firewall configuration in the audit's model.
type Ruleset struct {
	// Source names where it came from ("nft", "iptables-save", a file).
	Source string
	// Syntax is the tool whose syntax the fixes use: "nft", "iptables"
	// or "ip6tables".
	Syntax string
	Chains []*Chain
}

// Chain is one chain. Base chains have a Hook; regular chains are only
// entered by jump or goto.
type Chain struct {
	// Family is ip, ip6, inet, bridge, netdev or arp.
	Family string
	Table  string
	Name   string
	// Hook is prerouting, input, forward, output, postrouting, ingress or
	// egress; empty for a regular chain.
	Hook string
	// Type is filter, nat or route (base chains).
	Type string
	// Policy is accept or drop (base chains).
	Policy string
	Rules  []Rule
}

// Rule is one rule: all its conditions must hold for its verdict to apply.
type Rule struct {
	// Handle identifies the rule in its source: the nft handle, or the
	// rule's position in its iptables chain (1-based).
	Handle int
	// Text is the rule as its source shows it, for the report.
	Text  string
	Conds []Cond
	// Verdict is accept, drop, reject, jump, goto, return, vmap or empty
	// (no verdict: counters, logging, marks, MSS clamping...).
	Verdict string
	// Target is the chain of a jump or goto.
	Target string
	// Map is a verdict map: its key is MapKey, each element maps values to
	// a verdict ("accept", "drop", "jump:CHAIN"...).
	MapKey string
	Map    map[string]string
}

// Cond is one condition of a rule on one field of the packet.
type Cond struct {
	// Key is the field: l4proto, icmp.type, icmp.code, icmpv6.type,
	// icmpv6.code, icmp.typecode / icmpv6.typecode ("3/4"), ct.state,
	// nfproto, iface (an interface name), tcp (any match on a TCP/UDP
	// header), ip4 or ip6 (any match on that header), or other (anything
	// the audit cannot judge: addresses, marks, rate limits).
	Key string
	// Neg inverts the match.
	Neg bool
	// Values match if the packet's field has any of them (names or
	// numbers); for ct.state any of the flags.
	Values []string
}

// The packet the audit follows through the chains.
type auditPacket struct {
	v6     bool
	fields map[string]string
}

func fragNeeded(v6 bool) auditPacket {
	if v6 {
		return auditPacket{v6: true, fields: map[string]string{
			"l4proto": "icmpv6", "icmpv6.type": "2", "icmpv6.code": "0", "icmpv6.typecode": "2/0", "ct.state": "related", "nfproto": "ipv6",
		}}
	}
	return auditPacket{fields: map[string]string{
		"l4proto": "icmp", "icmp.type": "3", "icmp.code": "4", "icmp.typecode": "3/4", "ct.state": "related", "nfproto": "ipv4",
	}}
}

// Names of the values the audit compares, folded to one spelling.
var valueAliases = map[string]string{
	"destination-unreachable": "3", "frag-needed": "4", "fragmentation-needed": "4",
	"packet-too-big": "2", "ipv6-icmp": "icmpv6", "icmp6": "icmpv6", "58": "icmpv6",
	"1": "icmp", "ipv4": "ipv4", "ip": "ipv4", "ip6": "ipv6", "ipv6": "ipv6",
	"6": "tcp", "17": "udp",
}

// norm folds a value for key to the audit's spelling.
func norm(key, v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	switch key {
	case "l4proto":
		switch v {
		case "1":
			return "icmp"
		case "58", "ipv6-icmp", "icmp6", "icmpv6":
			return "icmpv6"
		case "6":
			return "tcp"
		case "17":
			return "udp"
		}
		return v
	case "icmp.type", "icmpv6.type", "icmp.code", "icmpv6.code":
		if n, ok := valueAliases[v]; ok {
			if _, err := strconv.Atoi(n); err == nil {
				return n
			}
		}
		return v
	case "nfproto":
		if n, ok := valueAliases[v]; ok {
			return n
		}
	}
	return v
}

// tri is a three-valued truth: the audit knows some fields of the packet,
// not its addresses or interfaces.
type tri int

const (
	no tri = iota
	maybe
	yes
)

// eval judges one condition against the packet.
func (c Cond) eval(p auditPacket) tri {
	var r tri
	switch c.Key {
	case "tcp", "udp":
		r = no // a match on a TCP/UDP header never holds for ICMP
	case "ip4":
		if p.v6 {
			r = no
		} else {
			r = maybe
		}
	case "ip6":
		if p.v6 {
			r = maybe
		} else {
			r = no
		}
	case "icmp.type", "icmp.code", "icmp.typecode":
		if p.v6 {
			return no // a match on an ICMP header fails on ICMPv6, negated or not
		}
		r = c.match(p.fields[c.Key])
	case "icmpv6.type", "icmpv6.code", "icmpv6.typecode":
		if !p.v6 {
			return no
		}
		r = c.match(p.fields[c.Key])
	case "l4proto", "nfproto", "ct.state":
		r = c.match(p.fields[c.Key])
	case "iface":
		// frag-needed comes in on a real interface, never on loopback;
		// any other name may or may not be the one.
		r = no
		for _, v := range c.Values {
			if v != "lo" {
				return maybe
			}
		}
	default:
		return maybe
	}
	if c.Neg && r != maybe {
		r = yes - r
	}
	return r
}

func (c Cond) match(v string) tri {
	for _, x := range c.Values {
		if lo, hi, ok := strings.Cut(strings.TrimPrefix(x, "range:"), "-"); ok && strings.HasPrefix(x, "range:") {
			a, err1 := strconv.Atoi(norm(c.Key, lo))
			b, err2 := strconv.Atoi(norm(c.Key, hi))
			n, err3 := strconv.Atoi(v)
			if err1 != nil || err2 != nil || err3 != nil {
				return maybe
			}
			if a <= n && n <= b {
				return yes
			}
			continue
		}
		if norm(c.Key, x) == v {
			return yes
		}
	}
	return no
}

// mentionsICMP reports whether a rule is about ICMP (so a possible drop by
// it is worth reporting).
func (r Rule) mentionsICMP() bool {
	for _, c := range r.Conds {
		if strings.HasPrefix(c.Key, "icmp") {
			return true
		}
		if c.Key == "l4proto" && !c.Neg {
			for _, v := range c.Values {
				if n := norm("l4proto", v); n == "icmp" || n == "icmpv6" {
					return true
				}
			}
		}
	}
	return false
}

// matchesType reports whether the rule names the frag-needed / packet-too-big
// type itself (rather than all ICMP).
func (r Rule) matchesType() bool {
	for _, c := range r.Conds {
		if strings.HasSuffix(c.Key, ".type") || strings.HasSuffix(c.Key, ".typecode") {
			if c.Neg {
				continue
			}
			return true
		}
	}
	return false
}

func (r Rule) eval(p auditPacket) tri {
	res := yes
	for _, c := range r.Conds {
		res = min(res, c.eval(p))
		if res == no {
			return no
		}
	}
	return res
}

// Finding is one rule (or chain policy) that drops frag-needed or
// packet-too-big.
type Finding struct {
	Source string `json:"source"`
	Family string `json:"family"`
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	// Hook is the base chain the packet enters by (the chain itself, or
	// the base chain that jumps to it).
	Hook string `json:"hook"`
	// Handle and Rule identify the rule; empty Rule means the chain policy.
	Handle int    `json:"handle,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// IPv is 4 (frag-needed) or 6 (packet-too-big).
	IPv int `json:"ipv"`
	// Kind is explicit-drop, blanket-icmp-drop, catch-all-drop or
	// policy-drop.
	Kind string `json:"kind"`
	// Certain is false when the rule applies only to some addresses or
	// interfaces, or when a rule before it may accept the packet.
	Certain bool   `json:"certain"`
	Why     string `json:"why"`
	Fix     Fix    `json:"fix"`
}

// Audit lists every rule in the rule sets that drops frag-needed or
// packet-too-big on its way into, through or out of the host.
func Audit(sets []*Ruleset) []Finding {
	var out []Finding
	for _, rs := range sets {
		for _, c := range rs.Chains {
			if c.Hook == "" || c.Type == "nat" {
				continue // regular chains are walked from their base chains; NAT sees no ICMP errors
			}
			for _, v6 := range []bool{false, true} {
				if (c.Family == "ip" && v6) || (c.Family == "ip6" && !v6) || c.Family == "arp" {
					continue
				}
				w := walker{rs: rs, base: c, pkt: fragNeeded(v6), seen: map[*Chain]bool{}}
				w.walkBase()
				out = append(out, w.found...)
			}
		}
	}
	return out
}

type walker struct {
	rs    *Ruleset
	base  *Chain
	pkt   auditPacket
	found []Finding
	seen  map[*Chain]bool
}

// end says how a walk through a chain ended.
type end int

const (
	fallThrough end = iota // end of chain or return: back to the caller
	accepted
	dropped
)

func (w *walker) chain(name string) *Chain {
	for _, c := range w.rs.Chains {
		if c.Name == name && c.Table == w.base.Table && c.Family == w.base.Family {
			return c
		}
	}
	return nil
}

func (w *walker) walkBase() {
	e, certain := w.walk(w.base, true)
	if e == fallThrough && w.base.Policy == "drop" {
		w.add(w.base, Rule{}, "policy-drop", certain,
			fmt.Sprintf("the %s chain's policy is drop and no rule before the end accepts %s (no ICMP exception, no ct state related accept)", w.base.Hook, w.pktName()))
	}
}

func (w *walker) pktName() string {
	if w.pkt.v6 {
		return "ICMPv6 packet-too-big"
	}
	return "ICMP frag-needed"
}

// walk follows the packet through c and says how the chain ended for it.
// certain (in and out) is false once a rule that may or may not match
// (addresses, interfaces, rate limits) could have accepted the packet or
// sent it elsewhere; findings after that are possible, not certain.
func (w *walker) walk(c *Chain, certain bool) (end, bool) {
	if w.seen[c] {
		return fallThrough, certain // a loop: the kernel refuses those; be safe
	}
	w.seen[c] = true
	defer delete(w.seen, c)
	for _, r := range c.Rules {
		m := r.eval(w.pkt)
		if m == no {
			continue
		}
		verdict, target := r.Verdict, r.Target
		if verdict == "vmap" {
			verdict, target, m = w.vmap(r, m)
			if m == no {
				continue
			}
		}
		sure := certain && m == yes
		switch verdict {
		case "accept":
			if m == yes {
				return accepted, certain
			}
			certain = false
		case "drop", "reject":
			if r.mentionsICMP() || m == yes {
				w.add(c, r, dropKind(r), sure, w.dropWhy(r))
			}
			if m == yes {
				return dropped, certain
			}
		case "jump", "goto":
			sub := w.chain(target)
			if sub == nil {
				certain = false
				continue
			}
			e, subCertain := w.walk(sub, sure)
			if m == yes && (e != fallThrough || verdict == "goto") {
				return e, subCertain
			}
			if m == yes {
				certain = subCertain
			} else {
				certain = false
			}
		case "return":
			if m == yes {
				return fallThrough, certain
			}
			certain = false
		}
	}
	return fallThrough, certain
}

// vmap resolves a verdict map for the packet.
func (w *walker) vmap(r Rule, m tri) (string, string, tri) {
	key := Cond{Key: r.MapKey}
	keys := slices.Sorted(maps.Keys(r.Map))
	for _, vals := range keys {
		key.Values = strings.Split(vals, ",")
		switch key.eval(w.pkt) {
		case yes:
			verdict, target, _ := strings.Cut(r.Map[vals], ":")
			return verdict, target, m
		case maybe:
			// A key the audit cannot judge (an address, an interface): the
			// element may or may not apply.
			verdict, target, _ := strings.Cut(r.Map[vals], ":")
			return verdict, target, maybe
		}
	}
	return "", "", no
}

func dropKind(r Rule) string {
	switch {
	case r.matchesType():
		return "explicit-drop"
	case r.mentionsICMP():
		return "blanket-icmp-drop"
	}
	return "catch-all-drop"
}

func (w *walker) dropWhy(r Rule) string {
	name := w.pktName()
	switch dropKind(r) {
	case "explicit-drop":
		return fmt.Sprintf("drops %s by name", name)
	case "blanket-icmp-drop":
		return fmt.Sprintf("drops all ICMP, %s included, before any ct state related accept", name)
	}
	return fmt.Sprintf("drops everything that reaches it, %s included: no ICMP exception or ct state related accept comes before it", name)
}

func (w *walker) add(c *Chain, r Rule, kind string, certain bool, why string) {
	f := Finding{
		Source: w.rs.Source, Family: c.Family, Table: c.Table, Chain: c.Name, Hook: w.base.Hook,
		Handle: r.Handle, Rule: r.Text, IPv: 4, Kind: kind, Certain: certain, Why: why,
	}
	if w.pkt.v6 {
		f.IPv = 6
	}
	if !certain {
		f.Why += " (for some addresses or interfaces only, or when an earlier rule does not match)"
	}
	switch w.base.Hook {
	case "input", "prerouting":
		f.Why += ": this host never learns the path MTU of its own connections"
	case "forward":
		f.Why += ": hosts behind this router never learn the path MTU"
	case "output", "postrouting":
		f.Why += ": this router's own frag-needed messages never leave, so it makes a black hole for everyone it forwards for"
	}
	f.Fix = fixFor(w.rs.Syntax, c, r, w.pkt.v6)
	if !slices.ContainsFunc(w.found, func(g Finding) bool { return g == f }) {
		w.found = append(w.found, f)
	}
}

// fixFor says what to change: an accept for the packet before the rule.
func fixFor(syntax string, c *Chain, r Rule, v6 bool) Fix {
	if syntax == "iptables" || syntax == "ip6tables" {
		tool, match := "iptables", "-p icmp --icmp-type fragmentation-needed -j ACCEPT"
		if v6 {
			tool, match = "ip6tables", "-p ipv6-icmp --icmpv6-type packet-too-big -j ACCEPT"
		}
		action := fmt.Sprintf("accept it before this rule (or accept ctstate RELATED first) in chain %s of table %s", c.Name, c.Table)
		if r.Text == "" {
			action = fmt.Sprintf("accept it in chain %s of table %s, before the policy applies", c.Name, c.Table)
		}
		return Fix{
			Party:   "firewall",
			Action:  action,
			Command: fmt.Sprintf("%s -t %s -I %s %d %s", tool, c.Table, c.Name, max(r.Handle, 1), match),
		}
	}
	match := "icmp type destination-unreachable icmp code frag-needed accept"
	if v6 {
		match = "icmpv6 type packet-too-big accept"
	}
	cmd := fmt.Sprintf("nft insert rule %s %s %s %s", c.Family, c.Table, c.Name, match)
	if r.Handle > 0 {
		cmd = fmt.Sprintf("nft insert rule %s %s %s position %d %s", c.Family, c.Table, c.Name, r.Handle, match)
	}
	action := "accept it before this rule (or put ct state established,related accept first)"
	if r.Text == "" {
		action = "accept it in the chain, before the policy applies"
	}
	return Fix{Party: "firewall", Action: action, Command: cmd}
}

// RuleSource yields rule sets to audit: the host's nftables and iptables,
// or saved files.
type RuleSource interface {
	// Name says where the rules come from, for the report.
	Name() string
	// Rulesets reads the rules. An ErrNoRules error means the source does
	// not exist here (no nft binary, no controller) and is skipped.
	Rulesets(ctx context.Context) ([]*Ruleset, error)
}

// ErrNoRules means a rule source is not present on this host.
var ErrNoRules = errors.New("no rules from this source")

// FirewallReport is the result of a firewall audit.
type FirewallReport struct {
	// Sources lists the sources read; Skipped those absent, with why.
	Sources  []string          `json:"sources"`
	Skipped  map[string]string `json:"skipped,omitempty"`
	Chains   int               `json:"chains"`
	Findings []Finding         `json:"findings"`
	// GroupsRead counts the security groups read from a controller;
	// Groups lists those that do not let frag-needed / packet-too-big in
	// from everywhere (informational where the nodes accept them anyway).
	GroupsRead int            `json:"security_groups_read,omitempty"`
	Groups     []GroupFinding `json:"security_groups,omitempty"`
}

// ExitCode is ExitHealthy with no findings, ExitProblem with some (a rule
// that drops, or a security group that does), and ExitUnknown when no
// source could be read.
func (r *FirewallReport) ExitCode() int {
	groupProblem := false
	for _, g := range r.Groups {
		groupProblem = groupProblem || g.Problem()
	}
	switch {
	case len(r.Findings) > 0 || groupProblem:
		return ExitProblem
	case len(r.Sources) == 0:
		return ExitUnknown
	}
	return ExitHealthy
}

// AuditSources reads every source and audits what they hold. A source that
// is absent is skipped; one that fails is an error.
func AuditSources(ctx context.Context, log *slog.Logger, srcs ...RuleSource) (*FirewallReport, error) {
	rep := &FirewallReport{Skipped: map[string]string{}, Findings: []Finding{}}
	var all []*Ruleset
	for _, s := range srcs {
		sets, err := s.Rulesets(ctx)
		if errors.Is(err, ErrNoRules) {
			rep.Skipped[s.Name()] = err.Error()
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name(), err)
		}
		rep.Sources = append(rep.Sources, s.Name())
		for _, rs := range sets {
			rep.Chains += len(rs.Chains)
		}
		all = append(all, sets...)
		log.Debug("rules read", "source", s.Name(), "sets", len(sets))
	}
	rep.Findings = append(rep.Findings, Audit(all)...)
	return rep, nil
}

// WriteText writes the audit in plain words.
func (r *FirewallReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "read %s: %d chains\n", strings.Join(r.Sources, ", "), r.Chains)
	for _, name := range slices.Sorted(maps.Keys(r.Skipped)) {
		fmt.Fprintf(&b, "skipped %s: %s\n", name, r.Skipped[name])
	}
	if len(r.Findings) == 0 {
		b.WriteString("no rule drops ICMP frag-needed (type 3 code 4) or ICMPv6 packet-too-big (type 2)\n")
	}
	for _, f := range r.Findings {
		where := fmt.Sprintf("%s: %s %s, chain %s (%s hook)", f.Source, f.Family, f.Table, f.Chain, f.Hook)
		fmt.Fprintf(&b, "\n%s\n", where)
		if f.Rule != "" {
			fmt.Fprintf(&b, "  rule   %s", f.Rule)
			if f.Handle > 0 {
				fmt.Fprintf(&b, "   [handle %d]", f.Handle)
			}
			b.WriteString("\n")
		} else {
			b.WriteString("  rule   (chain policy drop)\n")
		}
		sure := "certain"
		if !f.Certain {
			sure = "possible"
		}
		fmt.Fprintf(&b, "  what   IPv%d %s, %s: %s\n", f.IPv, f.Kind, sure, f.Why)
		fmt.Fprintf(&b, "  fix    %s\n         %s\n", f.Fix.Action, f.Fix.Command)
	}
	r.writeGroups(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// HostSources are the rule sources of this host: nftables, and iptables
// tables that nftables does not show (legacy iptables, and the tables of
// iptables-nft, whose matches nft shows only as opaque xt expressions).
func HostSources() []RuleSource {
	return []RuleSource{hostRules{}}
}

type hostRules struct{}

func (hostRules) Name() string { return "host" }

func (hostRules) Rulesets(ctx context.Context) ([]*Ruleset, error) {
	var sets []*Ruleset
	// iptables-save of the nf_tables flavour shows the tables iptables-nft
	// made; read them there (full match details) and leave them out of nft.
	ipt := map[string]bool{}
	for _, tool := range []struct{ save, family string }{{"iptables-save", "ip"}, {"ip6tables-save", "ip6"}} {
		out, err := runTool(ctx, tool.save)
		if err != nil {
			continue
		}
		rs, err := ParseIPTablesSave(tool.save, tool.family, out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tool.save, err)
		}
		for _, c := range rs.Chains {
			ipt[c.Family+" "+c.Table] = true
		}
		sets = append(sets, rs)
	}
	for _, tool := range []struct{ save, family string }{{"iptables-legacy-save", "ip"}, {"ip6tables-legacy-save", "ip6"}} {
		out, err := runTool(ctx, tool.save)
		if err != nil || len(strings.TrimSpace(string(out))) == 0 {
			continue
		}
		rs, err := ParseIPTablesSave(tool.save, tool.family, out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tool.save, err)
		}
		sets = append(sets, rs)
	}
	out, err := runTool(ctx, "nft", "-j", "list", "ruleset")
	if err == nil {
		rs, err := ParseNftJSON("nft", out)
		if err != nil {
			return nil, fmt.Errorf("nft -j list ruleset: %w", err)
		}
		rs.Chains = slices.DeleteFunc(rs.Chains, func(c *Chain) bool { return ipt[c.Family+" "+c.Table] })
		sets = append(sets, rs)
	} else if !errors.Is(err, exec.ErrNotFound) {
		return nil, fmt.Errorf("nft -j list ruleset: %w", err)
	}
	if len(sets) == 0 {
		return nil, fmt.Errorf("%w: neither nft nor iptables-save found", ErrNoRules)
	}
	return sets, nil
}

func runTool(ctx context.Context, argv ...string) ([]byte, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// FileSource audits a saved rule set: nft -j list ruleset output
// (format "nft-json") or iptables-save / ip6tables-save output
// ("iptables-save", "ip6tables-save").
type FileSource struct {
	Path   string
	Format string
	Read   func(string) ([]byte, error)
}

// Name is the file's path.
func (f FileSource) Name() string { return f.Path }

// Rulesets parses the file.
func (f FileSource) Rulesets(context.Context) ([]*Ruleset, error) {
	b, err := f.Read(f.Path)
	if err != nil {
		return nil, err
	}
	switch f.Format {
	case "nft-json":
		rs, err := ParseNftJSON(f.Path, b)
		return []*Ruleset{rs}, err
	case "iptables-save":
		rs, err := ParseIPTablesSave(f.Path, "ip", b)
		return []*Ruleset{rs}, err
	case "ip6tables-save":
		rs, err := ParseIPTablesSave(f.Path, "ip6", b)
		return []*Ruleset{rs}, err
	}
	return nil, fmt.Errorf("unknown rule file format %q", f.Format)
}
