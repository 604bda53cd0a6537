// Package doctor diagnoses network paths and firewalls for the failures that
// make clouds "half work": Path-MTU black holes (packets above some size
// vanish and no ICMP "fragmentation needed" / "packet too big" comes back),
// the TLS and transfer hangs they cause, and the firewall rules that create
// them.
//
// The parts, one file each:
//   - probe.go: Don't-Fragment probes of exact sizes over raw sockets (ICMP
//     echo, TCP SYN with payload, UDP), IPv4 and IPv6, and the matching of
//     answers and ICMP errors to them.
//   - search.go: the path-MTU search (parallel rounds, loss-aware retries;
//     one size at a time for UDP) and the verdict: ok, pmtud-ok,
//     black-hole, partial, unknown.
//   - pace.go: pacing of probes whose answers the target rate-limits (UDP
//     port unreachable).
//   - locate.go: TTL-limited probes that name the last hop before the
//     bottleneck.
//   - tls.go: the TLS handshake and transfer check and its hang signatures.
//   - path.go, report.go: DiagnosePath, which runs them together, and the
//     plain-words and JSON report with the fix for each party.
//   - firewall*.go: the audit of nftables JSON and iptables-save rule sets,
//     and of an account's security groups (firewall_groups.go).
//   - selfcheck.go: PeerChecker, the probe of the node agents' overlay
//     self-check (internal/agent/selfcheck.go runs it).
package doctor
