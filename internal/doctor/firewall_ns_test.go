package doctor_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/clipper-cloud/clipper/internal/doctor"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

func ruleFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func kinds(rep *doctor.FirewallReport) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, f.Source+" "+f.Chain+" "+f.Kind)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// `doctor firewall` reads the rule sets of the namespace it runs in: first
// with rules that drop frag-needed, then with clean ones.
func TestFirewallHost(t *testing.T) {
	t.Parallel()
	netns.Require(t)
	ns := netns.New(t, "fw")
	ns.Nft(ruleFile(t, "offending.nft"))
	want := []string{"nft forward policy-drop", "nft input blanket-icmp-drop", "nft input explicit-drop", "nft output explicit-drop"}
	_, err := exec.LookPath("iptables-restore")
	withIPT := err == nil
	if withIPT {
		ns.Run("iptables-restore", "--noflush", filepath.Join("testdata", "offending.iptables"))
		ns.Run("ip6tables-restore", "--noflush", filepath.Join("testdata", "offending.ip6tables"))
		want = append(want, "iptables-save FORWARD explicit-drop", "iptables-save ICMP catch-all-drop",
			"ip6tables-save FORWARD policy-drop", "ip6tables-save INPUT explicit-drop")
		slices.Sort(want)
	} else {
		t.Log("iptables-restore not installed: nftables only")
	}
	var rep doctor.FirewallReport
	code := runJSON(t, ns, &rep, doctorCmd(t, "firewall")...)
	if got := kinds(&rep); !slices.Equal(got, want) || code != doctor.ExitProblem {
		t.Fatalf("exit %d, findings %q, want 2 and %q", code, got, want)
	}

	ns.Run("nft", "flush", "ruleset") // also the tables iptables-nft made
	ns.Nft(ruleFile(t, "clean.nft"))
	if withIPT {
		ns.Run("iptables-restore", filepath.Join("testdata", "clean.iptables"))
	}
	rep = doctor.FirewallReport{}
	code = runJSON(t, ns, &rep, doctorCmd(t, "firewall")...)
	if len(rep.Findings) != 0 || code != doctor.ExitHealthy {
		t.Fatalf("exit %d, findings %q on clean rules, want 0 and none", code, kinds(&rep))
	}
}
