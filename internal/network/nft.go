package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Tables Clipper owns. Nothing else should write to them.
const (
	// FilterTable (inet) holds the security groups, the MSS clamp and
	// the guard on traffic from instances to the node.
	FilterTable = "clipper_filter"
	// AntiSpoofTable (bridge) holds one chain per port: the port's mark,
	// and its own MAC, IPv4 address and ARP only.
	AntiSpoofTable = "clipper_antispoof"
)

// Marks: every packet that enters from an instance's port carries
// MarkBase|n (n unique per port on the node, never 0). The metadata
// service identifies instances by it.
const (
	MarkBase uint32 = 0x0c100000
	MarkMask uint32 = 0xfff00000
)

// Metadata service addresses, local on every node.
var (
	MetadataIPv4 = netip.MustParseAddr("169.254.169.254")
	MetadataIPv6 = netip.MustParseAddr("fd00:ec2::254")
)

var (
	filterTable = &nftables.Table{Family: nftables.TableFamilyINet, Name: FilterTable}
	spoofTable  = &nftables.Table{Family: nftables.TableFamilyBridge, Name: AntiSpoofTable}
)

// safeID is what may go into a chain or set name as is; anything else is
// hashed.
var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func nameFor(id string) string {
	if safeID.MatchString(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:8])
}

// Chain and set names.
func egressChainName(id string) string  { return "eg-" + nameFor(id) }
func ingressChainName(id string) string { return "in-" + nameFor(id) }
func portChainName(id string) string    { return "port-" + nameFor(id) }
func groupChainName(g string, dir string) string {
	return "g-" + nameFor(g) + "-" + dir
}
func memberSetName(g string) string { return "m-" + nameFor(g) }

// Directions of group chains.
const (
	dirIn = "in"
	dirEg = "eg"
)

// Named sets and maps. Each call returns a fresh value: AddSet writes into
// it, so values are never shared between transactions.
func setBridges() *nftables.Set {
	return &nftables.Set{Table: filterTable, Name: "bridges", KeyType: nftables.TypeIFName,
		KeyByteOrder: binaryutil.NativeEndian}
}

// setSameBridge holds bridge . bridge for every bridge: forwarded traffic
// between two different networks' bridges is dropped.
func setSameBridge() *nftables.Set {
	return &nftables.Set{Table: filterTable, Name: "same_bridge", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName)}
}

// mapEgress sends a packet from an instance (by its mark) to the
// instance's egress chain.
func mapEgress() *nftables.Set {
	return &nftables.Set{Table: filterTable, Name: "eg_ports", IsMap: true,
		KeyType: nftables.TypeMark, DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

// mapIngress sends a packet to an instance (by bridge and address) to the
// instance's ingress chain.
func mapIngress() *nftables.Set {
	return &nftables.Set{Table: filterTable, Name: "in_ports", IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr),
		DataType: nftables.TypeVerdict}
}

// mapPorts sends a frame entering from a port to the port's anti-spoofing
// chain.
func mapPorts() *nftables.Set {
	return &nftables.Set{Table: spoofTable, Name: "ports", IsMap: true,
		KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

// memberSet holds a group's member addresses (source-group rules).
func memberSet(g string) *nftables.Set {
	return &nftables.Set{Table: filterTable, Name: memberSetName(g), KeyType: nftables.TypeIPAddr}
}

// ifname encodes an interface name as nftables stores it.
func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// ne32 encodes a 32-bit value in host byte order, as meta keys (mark)
// hold it.
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// Expression snippets. Register 1 is the scratch register; concatenations
// use 1 and 2 (16 bytes each).

func metaCmp(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

func nfproto(fam ipFamily) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if fam == 6 {
		p = unix.NFPROTO_IPV6
	}
	return metaCmp(expr.MetaKeyNFPROTO, []byte{p})
}

func l4proto(p int) []expr.Any { return metaCmp(expr.MetaKeyL4PROTO, []byte{byte(p)}) }

func payload(base expr.PayloadBase, off, n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
}

func payloadCmp(base expr.PayloadBase, off uint32, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		payload(base, off, uint32(len(data))),
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// ctEstablished: ct state established,related accept.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: ne32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
		accept(),
	}
}

// fragNeeded: icmp type 3 code 4 accept.
func fragNeeded() []expr.Any {
	return join(nfproto(4), l4proto(protoICMP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{3, 4}), []expr.Any{accept()})
}

// packetTooBig: icmpv6 type 2 accept.
func packetTooBig() []expr.Any {
	return join(nfproto(6), l4proto(protoICMPv6),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{2}), []expr.Any{accept()})
}

// dhcpToNode: udp sport 68 udp dport 67 accept.
func dhcpToNode() []expr.Any {
	return join(nfproto(4), l4proto(protoUDP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{0, 68, 0, 67}), []expr.Any{accept()})
}

// firstRules come first in every instance chain, before any user rule.
func firstRules() [][]expr.Any {
	return [][]expr.Any{ctEstablished(), fragNeeded(), packetTooBig(), dhcpToNode()}
}

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() *expr.Verdict   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func jump(chain string) *expr.Verdict {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// batch collects one nftables transaction; the first error sticks.
type batch struct {
	c   *nftables.Conn
	err error
}

// nlBuffer is the netlink socket buffer size of a batch, both ways: a
// transaction of a thousand rules is hundreds of KB out and as many
// acknowledgements back, past the kernel's 208 KB default.
const nlBuffer = 16 << 20

// bigBuffers raises a netlink socket's buffers to nlBuffer, past the
// rmem_max/wmem_max limits where it may (root), else as far as they allow.
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nlBuffer),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, nlBuffer))
		})
		if err == nil && serr == nil {
			return nil
		}
	}
	return errors.Join(c.SetReadBuffer(nlBuffer), c.SetWriteBuffer(nlBuffer))
}

func newBatch() (*batch, error) {
	c, err := nftables.New(nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return nil, fmt.Errorf("network: nftables: %w", err)
	}
	return &batch{c: c}, nil
}

func (b *batch) rule(t *nftables.Table, ch *nftables.Chain, exprs []expr.Any, comment string) {
	r := &nftables.Rule{Table: t, Chain: ch, Exprs: exprs}
	if comment != "" {
		r.UserData = commentData(comment)
	}
	b.c.AddRule(r)
}

func (b *batch) addSet(s *nftables.Set, elems []nftables.SetElement) {
	if err := b.c.AddSet(s, elems); err != nil && b.err == nil {
		b.err = err
	}
}

func (b *batch) addElems(s *nftables.Set, elems []nftables.SetElement) {
	if len(elems) == 0 {
		return
	}
	if err := b.c.SetAddElements(s, elems); err != nil && b.err == nil {
		b.err = err
	}
}

func (b *batch) delElems(s *nftables.Set, elems []nftables.SetElement) {
	if len(elems) == 0 {
		return
	}
	if err := b.c.SetDeleteElements(s, elems); err != nil && b.err == nil {
		b.err = err
	}
}

// regularChain declares a non-base chain (no-op if it exists).
func (b *batch) regularChain(t *nftables.Table, name string) *nftables.Chain {
	return b.c.AddChain(&nftables.Chain{Name: name, Table: t})
}

func (b *batch) commit(what string) error {
	if b.err != nil {
		return fmt.Errorf("network: %s: %w", what, b.err)
	}
	if err := b.c.Flush(); err != nil {
		return fmt.Errorf("network: %s: %w", what, err)
	}
	return nil
}

// anonSet adds a constant anonymous set for one rule and returns a lookup
// of register 1 in it.
func (b *batch) anonSet(t *nftables.Table, key nftables.SetDatatype, interval bool, elems []nftables.SetElement) *expr.Lookup {
	s := &nftables.Set{Table: t, Anonymous: true, Constant: true, Interval: interval, KeyType: key}
	b.addSet(s, elems)
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}
}

// addrElems turns merged address ranges into interval set elements.
func addrElems(spans []addrSpan) []nftables.SetElement {
	var out []nftables.SetElement
	if len(spans) > 0 && !spans[0].lo.IsUnspecified() {
		zero := make([]byte, spans[0].lo.BitLen()/8)
		out = append(out, nftables.SetElement{Key: zero, IntervalEnd: true})
	}
	for _, s := range spans {
		out = append(out, nftables.SetElement{Key: s.lo.AsSlice()})
		if end := s.hi.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// spanElems turns merged 16-bit spans into interval set elements.
func spanElems(spans []span) []nftables.SetElement {
	var out []nftables.SetElement
	if len(spans) > 0 && spans[0].lo != 0 {
		out = append(out, nftables.SetElement{Key: be16(0), IntervalEnd: true})
	}
	for _, s := range spans {
		out = append(out, nftables.SetElement{Key: be16(s.lo)})
		if s.hi != 0xffff {
			out = append(out, nftables.SetElement{Key: be16(s.hi + 1), IntervalEnd: true})
		}
	}
	return out
}

// pairElems turns disjoint address . port rectangles into the elements of
// a concatenated interval set: each key is the address followed by the
// port padded to four bytes, with the inclusive end in KeyEnd.
func pairElems(pairs []pairSpan) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(pairs))
	for _, p := range pairs {
		out = append(out, nftables.SetElement{
			Key:    append(p.Addr.lo.AsSlice(), byte(p.Port.lo>>8), byte(p.Port.lo), 0, 0),
			KeyEnd: append(p.Addr.hi.AsSlice(), byte(p.Port.hi>>8), byte(p.Port.hi), 0, 0),
		})
	}
	return out
}
