package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// fwdEntry is a parsed port forward.
type fwdEntry struct {
	id         string
	proto      int // protoTCP or protoUDP
	listen     netip.Addr
	listenPort uint16
	target     netip.Addr
	targetPort uint16
}

// SetForwards implements agent.Network: it replaces the node's port
// forwards with fs (the whole list) in one transaction. Each forward
// DNATs listen:port to target:port and masquerades the connection, so the
// target answers through the node whatever its own route: the target may
// be an instance on this node or any address the node reaches. The node
// answers ARP for a listen address on its uplink unless the address is
// already one of its own.
//
// Forwards do not bypass security groups: a forward to an instance is
// filtered by the instance's ingress rules like any other traffic, and
// the rules see the real client address (the masquerade happens after
// them). Open the target port in the target's group for the forward to
// work. A forward that is invalid is skipped with an error; the others
// are applied.
func (h *Host) SetForwards(ctx context.Context, fs []nodeproto.Forward) error {
	var out []fwdEntry
	var bad []string
	seen := map[string]bool{}
	for _, f := range fs {
		e, err := parseForward(f)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		key := fmt.Sprintf("%d %s %d", e.proto, e.listen, e.listenPort)
		if seen[key] {
			bad = append(bad, fmt.Sprintf("forward %s: %s:%d is forwarded twice", f.ID, e.listen, e.listenPort))
			continue
		}
		seen[key] = true
		out = append(out, e)
	}
	sortForwards(out)
	h.mu.Lock()
	defer h.mu.Unlock()
	var err error
	if h.pub.stale || !slices.Equal(out, h.pub.forwards) {
		h.pub.forwards = out
		if err = h.applyPublic(nil); err == nil {
			h.log.Info("port forwards applied", "forwards", len(out))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("network: %s", strings.Join(append(bad, errString(err)), "; "))
	}
	return err
}

func errString(err error) string {
	if err == nil {
		return "the other forwards are applied"
	}
	return err.Error()
}

func parseForward(f nodeproto.Forward) (fwdEntry, error) {
	e := fwdEntry{id: f.ID}
	switch strings.ToLower(f.Protocol) {
	case "tcp":
		e.proto = protoTCP
	case "udp":
		e.proto = protoUDP
	default:
		return e, fmt.Errorf("forward %s: protocol %q is not tcp or udp", f.ID, f.Protocol)
	}
	var err error
	if e.listen, err = netip.ParseAddr(f.ListenIP); err != nil || !e.listen.Is4() || e.listen.IsUnspecified() ||
		e.listen.IsMulticast() || e.listen.IsLoopback() {
		return e, fmt.Errorf("forward %s: bad listen address %q", f.ID, f.ListenIP)
	}
	if e.target, err = netip.ParseAddr(f.TargetIP); err != nil || !e.target.Is4() || e.target.IsUnspecified() ||
		e.target.IsMulticast() || e.target.IsLoopback() {
		return e, fmt.Errorf("forward %s: bad target address %q", f.ID, f.TargetIP)
	}
	if f.ListenPort < 1 || f.ListenPort > 65535 || f.TargetPort < 1 || f.TargetPort > 65535 {
		return e, fmt.Errorf("forward %s: ports must be 1-65535", f.ID)
	}
	if f.ID == "" || strings.ContainsAny(f.ID, " =\t\n") || len(f.ID) > 40 {
		return e, fmt.Errorf("forward: bad ID %q", f.ID)
	}
	e.listenPort, e.targetPort = uint16(f.ListenPort), uint16(f.TargetPort)
	return e, nil
}

func sortForwards(fs []fwdEntry) {
	slices.SortFunc(fs, func(a, b fwdEntry) int { return strings.Compare(a.id, b.id) })
}

// fwdMatch: ip daddr <listen> meta l4proto <proto> th dport <port>.
func fwdMatch(f fwdEntry) []expr.Any {
	return join(payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, f.listen.AsSlice()),
		l4proto(f.proto),
		payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(f.listenPort)))
}

// comment is the forward's record in the state chain.
func (f fwdEntry) comment() string {
	return fmt.Sprintf("%sfwd id=%s proto=%d lip=%s lport=%d tip=%s tport=%d",
		commentPrefix, f.id, f.proto, f.listen, f.listenPort, f.target, f.targetPort)
}

func fwdFromRecord(kv map[string]string) (fwdEntry, error) {
	proto, _ := strconv.Atoi(kv["proto"])
	name := map[int]string{protoTCP: "tcp", protoUDP: "udp"}[proto]
	lport, _ := strconv.Atoi(kv["lport"])
	tport, _ := strconv.Atoi(kv["tport"])
	return parseForward(nodeproto.Forward{ID: kv["id"], Protocol: name, ListenIP: kv["lip"], ListenPort: lport,
		TargetIP: kv["tip"], TargetPort: tport})
}
