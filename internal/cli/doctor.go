package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/doctor"
)

const doctorExitCodes = `Exit status:
  0  healthy: nothing wrong found
  1  the check could not run (bad arguments, no privileges, name not found)
  2  a problem was found
  3  could not tell (the target never answered, or no rule set was found)`

func newDoctorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Find Path-MTU black holes, TLS hangs and firewall rules that cause them",
		Long: `doctor diagnoses the network failures that make a cloud half work: packets
above some size that vanish without an ICMP error (Path-MTU black holes), the
TLS handshakes and downloads they hang, and the firewall rules behind them.

` + doctorExitCodes,
	}
	cmd.AddCommand(newDoctorPathCmd(), newDoctorFirewallCmd())
	return cmd
}

// doctorLogger logs to stderr: warnings, or everything with --verbose.
func doctorLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDoctorPathCmd() *cobra.Command {
	var (
		o       doctor.PathOptions
		asJSON  bool
		v4, v6  bool
		methods []string
		timeout time.Duration
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "path [HOST]",
		Short: "Find the path MTU to a host, black holes on the way, and TLS hangs",
		Long: `path probes the path to HOST with Don't-Fragment packets of exact sizes
(ICMP echo; TCP SYN to --port or UDP where echo is filtered), finds the
largest packet that passes, and tells working path-MTU discovery (a router
sends "fragmentation needed" / "packet too big") from a black hole (larger
packets vanish, nothing comes back). A black hole is located with
TTL-limited probes: the last hop that still answers full-size probes is
named. Each size is repeated, so plain loss is not taken for a limit.

With --tls (or an https --url) it also runs a TLS handshake, and with --url
a download and an upload, with short timeouts, and recognises the hang
signatures: handshake stalls after the first flight, body stalls at 0 bytes
or after the first window. TCP that works over a black hole means MSS
clamping protects it; UDP stays exposed.

Needs root (raw sockets). Verdicts: ok, pmtud-ok, black-hole, partial,
unknown. --json prints verdict, path_mtu, hop and fix among others.

` + doctorExitCodes,
		Example: `  clipper doctor path 203.0.113.7
  clipper doctor path --url https://example.com/big.iso
  clipper doctor path -6 --port 22 host.example --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Host = args[0]
			}
			if o.Host == "" && o.URL == "" {
				return fmt.Errorf("give a HOST or --url")
			}
			switch {
			case v4 && v6:
				return fmt.Errorf("-4 and -6 exclude each other")
			case v4:
				o.Family = 4
			case v6:
				o.Family = 6
			}
			for _, m := range methods {
				switch doctor.Method(m) {
				case doctor.MethodICMP, doctor.MethodTCP, doctor.MethodUDP:
					o.Methods = append(o.Methods, doctor.Method(m))
				default:
					return fmt.Errorf("--method %q: want icmp, tcp or udp", m)
				}
			}
			o.Log = doctorLogger(cmd.ErrOrStderr(), verbose)
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			rep, err := doctor.DiagnosePath(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				err = writeJSON(cmd.OutOrStdout(), rep)
			} else {
				err = rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if code := rep.ExitCode(); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Port, "port", 0, "TCP port for TCP probes and the TLS check (default: the URL's, else 443)")
	f.BoolVar(&o.TLS, "tls", false, "also check a TLS handshake on --port")
	f.StringVar(&o.URL, "url", "", "also check a TLS handshake, a download and an upload on this http(s) URL")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVarP(&v4, "ipv4", "4", false, "use IPv4")
	f.BoolVarP(&v6, "ipv6", "6", false, "use IPv6")
	f.StringSliceVar(&methods, "method", nil, "probe methods to try, in order (icmp,tcp,udp)")
	f.IntVar(&o.MaxHops, "max-hops", 30, "longest path the locating trace follows")
	f.DurationVar(&o.StepTimeout, "step-timeout", 3*time.Second, "timeout of each TLS step and of silence in a transfer")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	f.BoolVarP(&verbose, "verbose", "v", false, "log progress to stderr")
	return cmd
}

func newDoctorFirewallCmd() *cobra.Command {
	var (
		asJSON             bool
		nftFile, ipt, ip6t string
		verbose            bool
		cf                 clientFlags
	)
	cmd := &cobra.Command{
		Use:   "firewall",
		Short: "List firewall rules that drop ICMP fragmentation-needed / packet-too-big",
		Long: `firewall reads this host's rule sets (nft -j list ruleset, iptables-save and
ip6tables-save, legacy iptables too) — or saved ones given by the flags — and
lists every rule that would drop ICMP "fragmentation needed" (type 3 code 4)
or ICMPv6 "packet too big" (type 2): explicit drops, blanket ICMP drops placed
before a ct state related accept, and drop policies without an ICMP
exception. Each comes with the command that fixes it.

Where a controller is named (AWS_ENDPOINT_URL and credentials, as for the
AWS CLI, or --endpoint-url), the account's security groups are audited too:
groups that do not let those messages in from everywhere are listed. On a
Clipper controller that is for information only: Clipper's nodes accept
both messages before any group rule.

` + doctorExitCodes,
		Example: `  clipper doctor firewall
  nft -j list ruleset > rules.json; clipper doctor firewall --nft-json rules.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := doctorLogger(cmd.ErrOrStderr(), verbose)
			var srcs []doctor.RuleSource
			for _, x := range []struct{ path, format string }{{nftFile, "nft-json"}, {ipt, "iptables-save"}, {ip6t, "ip6tables-save"}} {
				if x.path != "" {
					srcs = append(srcs, doctor.FileSource{Path: x.path, Format: x.format, Read: os.ReadFile})
				}
			}
			if len(srcs) == 0 {
				srcs = doctor.HostSources()
			}
			rep, err := doctor.AuditSources(cmd.Context(), log, srcs...)
			if err != nil {
				return err
			}
			auditGroups(cmd.Context(), rep, cf)
			if asJSON {
				err = writeJSON(cmd.OutOrStdout(), rep)
			} else {
				err = rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if code := rep.ExitCode(); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the findings as JSON")
	f.StringVar(&nftFile, "nft-json", "", "audit this saved `nft -j list ruleset` output instead of the host")
	f.StringVar(&ipt, "iptables-save", "", "audit this saved iptables-save output instead of the host")
	f.StringVar(&ip6t, "ip6tables-save", "", "audit this saved ip6tables-save output instead of the host")
	f.BoolVarP(&verbose, "verbose", "v", false, "log progress to stderr")
	cf.add(cmd)
	return cmd
}

// auditGroups adds the account's security groups to the report when a
// controller is named; why it could not is in the report's skipped list.
func auditGroups(ctx context.Context, rep *doctor.FirewallReport, cf clientFlags) {
	c, err := cf.client()
	if err != nil {
		rep.Skipped["security groups"] = err.Error()
		return
	}
	src := doctor.GroupSource{Endpoint: c.Endpoint, List: func(ctx context.Context) ([]doctor.SecurityGroup, error) {
		gs, err := c.DescribeSecurityGroups(ctx)
		if err != nil {
			return nil, err
		}
		return auditedGroups(gs), nil
	}}
	src.Clipper, err = c.IsClipper(ctx)
	if err != nil {
		rep.Skipped["security groups at "+c.Endpoint] = err.Error()
		return
	}
	rep.AuditGroups(ctx, src)
}

// auditedGroups turns the EC2 answer into the audit's model.
func auditedGroups(gs []client.SecurityGroup) []doctor.SecurityGroup {
	port := func(p *int) int {
		if p == nil {
			return -1
		}
		return *p
	}
	out := make([]doctor.SecurityGroup, 0, len(gs))
	for _, g := range gs {
		dg := doctor.SecurityGroup{ID: g.ID, Name: g.Name, VPCID: g.VPCID}
		for _, p := range g.Ingress {
			dp := doctor.Permission{Protocol: p.Protocol, FromPort: port(p.FromPort), ToPort: port(p.ToPort),
				Others: len(p.Groups) + len(p.PrefixLists)}
			for _, r := range p.IPRanges {
				dp.CIDRs = append(dp.CIDRs, r.V4)
			}
			for _, r := range p.IPv6Ranges {
				dp.CIDRs = append(dp.CIDRs, r.V6)
			}
			dg.Ingress = append(dg.Ingress, dp)
		}
		out = append(out, dg)
	}
	return out
}
