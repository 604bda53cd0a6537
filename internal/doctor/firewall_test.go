package doctor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// brief is a finding in a form a table can hold.
func brief(f Finding) string {
	s := f.Chain + " v" + string(rune('0'+f.IPv)) + " " + f.Kind
	if !f.Certain {
		s += " (possible)"
	}
	return s
}

func briefs(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, brief(f))
	}
	slices.Sort(out)
	return out
}

func TestAuditFiles(t *testing.T) {
	tests := []struct {
		file, format string
		want         []string
	}{
		{"offending.nft.json", "nft", []string{
			"forward v4 policy-drop", "forward v6 policy-drop",
			"input v4 explicit-drop", "input v6 blanket-icmp-drop",
			"output v6 explicit-drop",
		}},
		{"clean.nft.json", "nft", nil},
		{"offending.iptables", "ip", []string{"FORWARD v4 explicit-drop", "ICMP v4 catch-all-drop"}},
		{"offending.ip6tables", "ip6", []string{"FORWARD v6 policy-drop", "INPUT v6 explicit-drop"}},
		{"clean.iptables", "ip", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readTestdata(t, tt.file)
			var rs *Ruleset
			var err error
			if tt.format == "nft" {
				rs, err = ParseNftJSON(tt.file, b)
			} else {
				rs, err = ParseIPTablesSave(tt.file, tt.format, b)
			}
			if err != nil {
				t.Fatal(err)
			}
			found := Audit([]*Ruleset{rs})
			if got := briefs(found); !slices.Equal(got, tt.want) {
				t.Fatalf("findings %q, want %q", got, tt.want)
			}
			for _, f := range found {
				if f.Fix.Command == "" || f.Why == "" {
					t.Errorf("finding without fix or reason: %+v", f)
				}
				if f.Kind != "policy-drop" && (f.Rule == "" || f.Handle == 0) {
					t.Errorf("finding without its rule: %+v", f)
				}
			}
		})
	}
}

func TestAuditFixCommands(t *testing.T) {
	rs, err := ParseNftJSON("nft", readTestdata(t, "offending.nft.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Audit([]*Ruleset{rs}) {
		if f.Chain == "input" && f.IPv == 4 {
			want := "nft insert rule inet filter input position "
			if !strings.HasPrefix(f.Fix.Command, want) || !strings.HasSuffix(f.Fix.Command, "icmp type destination-unreachable icmp code frag-needed accept") {
				t.Errorf("fix %q, want an insert before the rule", f.Fix.Command)
			}
			if !strings.Contains(f.Rule, "frag-needed") {
				t.Errorf("rule text %q", f.Rule)
			}
		}
	}
	rs, err = ParseIPTablesSave("iptables-save", "ip", readTestdata(t, "offending.iptables"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Audit([]*Ruleset{rs}) {
		if f.Chain == "FORWARD" && f.Fix.Command != "iptables -t filter -I FORWARD 1 -p icmp --icmp-type fragmentation-needed -j ACCEPT" {
			t.Errorf("fix %q", f.Fix.Command)
		}
	}
}

// Rules of the audit's model, judged one at a time.
func TestAuditRules(t *testing.T) {
	base := func(policy string, rules ...Rule) *Ruleset {
		return &Ruleset{Source: "test", Chains: []*Chain{{Family: "inet", Table: "t", Name: "in", Hook: "input", Type: "filter", Policy: policy, Rules: rules}}}
	}
	icmp := Cond{Key: "l4proto", Values: []string{"icmp"}}
	tests := []struct {
		name string
		rs   *Ruleset
		want []string
	}{
		{"icmp drop after related accept", base("accept",
			Rule{Handle: 1, Conds: []Cond{{Key: "ct.state", Values: []string{"established", "related"}}}, Verdict: "accept"},
			Rule{Handle: 2, Conds: []Cond{icmp}, Verdict: "drop"}), nil},
		{"icmp drop before related accept", base("accept",
			Rule{Handle: 1, Conds: []Cond{icmp}, Verdict: "drop"},
			Rule{Handle: 2, Conds: []Cond{{Key: "ct.state", Values: []string{"related"}}}, Verdict: "accept"}),
			[]string{"in v4 blanket-icmp-drop"}},
		{"established only", base("drop",
			Rule{Handle: 1, Conds: []Cond{{Key: "ct.state", Values: []string{"established"}}}, Verdict: "accept"}),
			[]string{"in v4 policy-drop", "in v6 policy-drop"}},
		{"not icmp", base("accept",
			Rule{Handle: 1, Conds: []Cond{{Key: "l4proto", Neg: true, Values: []string{"icmp", "ipv6-icmp"}}}, Verdict: "drop"}), nil},
		{"echo only", base("accept",
			Rule{Handle: 1, Conds: []Cond{{Key: "icmp.type", Values: []string{"echo-request"}}}, Verdict: "drop"}), nil},
		{"type range", base("accept",
			Rule{Handle: 1, Conds: []Cond{{Key: "icmp.type", Values: []string{"range:0-5"}}}, Verdict: "drop"}),
			[]string{"in v4 explicit-drop"}},
		{"from some address", base("accept",
			Rule{Handle: 1, Conds: []Cond{{Key: "ip4"}, icmp}, Verdict: "drop"}),
			[]string{"in v4 blanket-icmp-drop (possible)"}},
		{"rate-limited accept then policy drop", base("drop",
			Rule{Handle: 1, Conds: []Cond{{Key: "icmp.type", Values: []string{"3"}}, {Key: "other"}}, Verdict: "accept"},
			Rule{Handle: 2, Conds: []Cond{{Key: "ct.state", Values: []string{"related"}}}, Verdict: "accept"}), nil},
		{"rate-limited accept only", base("drop",
			Rule{Handle: 1, Conds: []Cond{{Key: "icmp.type", Values: []string{"3"}}, {Key: "other"}}, Verdict: "accept"}),
			[]string{"in v4 policy-drop (possible)", "in v6 policy-drop"}},
		{"jump to a chain that returns", &Ruleset{Source: "t", Chains: []*Chain{
			{Family: "ip", Table: "t", Name: "in", Hook: "input", Policy: "drop", Rules: []Rule{
				{Handle: 1, Verdict: "jump", Target: "sub"},
				{Handle: 2, Conds: []Cond{{Key: "ct.state", Values: []string{"related"}}}, Verdict: "accept"},
			}},
			{Family: "ip", Table: "t", Name: "sub", Rules: []Rule{{Handle: 3, Verdict: "return"}, {Handle: 4, Verdict: "drop"}}},
		}}, nil},
		{"jump loop", &Ruleset{Source: "t", Chains: []*Chain{
			{Family: "ip", Table: "t", Name: "in", Hook: "input", Policy: "accept", Rules: []Rule{{Handle: 1, Verdict: "jump", Target: "a"}}},
			{Family: "ip", Table: "t", Name: "a", Rules: []Rule{{Handle: 2, Verdict: "jump", Target: "in"}}},
		}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := briefs(Audit([]*Ruleset{tt.rs})); !slices.Equal(got, tt.want) {
				t.Fatalf("findings %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseIPTablesSaveErrors(t *testing.T) {
	for _, in := range []string{
		"-A INPUT -j DROP\n",
		"*filter\n-A NOPE -j DROP\n",
		"*filter\n:INPUT\n",
		"*filter\n:INPUT DROP [0:0]\n-A INPUT -m comment --comment \"open\n",
	} {
		if _, err := ParseIPTablesSave("t", "ip", []byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func FuzzParseNftJSON(f *testing.F) {
	f.Add(readTestdata(f, "offending.nft.json"))
	f.Add(readTestdata(f, "clean.nft.json"))
	f.Add([]byte(`{"nftables":[{"chain":{"family":"ip","table":"t","name":"c","hook":"input","type":"filter","policy":"drop"}},` +
		`{"rule":{"family":"ip","table":"t","chain":"c","handle":2,"expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["related"]}},{"vmap":{"key":{"meta":{"key":"l4proto"}},"data":{"set":[["icmp",{"jump":{"target":"c"}}]]}}}]}}]}`))
	f.Add([]byte(`{"nftables":[{"rule":{"family":"inet","table":"t","chain":"x","expr":[{"match":{"op":"<","left":{"&":[{"payload":{"protocol":"icmp","field":"type"}},3]},"right":{"range":[1,4]}}},{"xt":{"type":"target","name":"REJECT"}}]}}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := ParseNftJSON("fuzz", b)
		if err != nil {
			return
		}
		for _, fd := range Audit([]*Ruleset{rs}) {
			if fd.IPv != 4 && fd.IPv != 6 || fd.Kind == "" || fd.Fix.Command == "" {
				t.Fatalf("bad finding %+v", fd)
			}
		}
	})
}

func FuzzParseIPTablesSave(f *testing.F) {
	for _, name := range []string{"offending.iptables", "offending.ip6tables", "clean.iptables"} {
		f.Add(readTestdata(f, name), strings.Contains(name, "ip6"))
	}
	f.Add([]byte("*filter\n:INPUT DROP [0:0]\n:X - [0:0]\n[1:2] -A INPUT ! -p icmp -g X\n-A X ! -i lo -m icmp ! --icmp-type 3/4 -j RETURN\nCOMMIT\n"), false)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		family := "ip"
		if v6 {
			family = "ip6"
		}
		rs, err := ParseIPTablesSave("fuzz", family, b)
		if err != nil {
			return
		}
		for _, fd := range Audit([]*Ruleset{rs}) {
			if fd.IPv != 4 && fd.IPv != 6 || fd.Kind == "" || fd.Fix.Command == "" {
				t.Fatalf("bad finding %+v", fd)
			}
		}
	})
}
