package network

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// adopt rebuilds the host's view from the kernel after an agent restart:
// every port chain in the anti-spoofing table carries its port's record in
// rule comments, and every jump of an instance chain names its group. The
// ports' bridges get their DHCP servers and NAT back. A port whose record
// cannot be read is left as it is, and logged.
func (h *Host) adopt() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("network: list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != AntiSpoofTable || !strings.HasPrefix(ch.Name, "port-") {
			continue
		}
		p, err := readPort(c, ch)
		if err != nil {
			h.log.Warn("cannot adopt port", "chain", ch.Name, "error", err)
			continue
		}
		if portChainName(p.id) != ch.Name {
			h.log.Warn("cannot adopt port: record does not match its chain", "chain", ch.Name, "instance", p.id)
			continue
		}
		if p.groups, err = readGroups(c, p.id); err != nil {
			h.log.Warn("port adopted without its groups", "instance", p.id, "error", err)
		}
		h.ports[p.id] = p
		h.marks[p.mark] = p.id
		h.nextMark = max(h.nextMark, p.mark&^MarkMask)
	}
	for _, p := range h.ports {
		if p.uplink {
			br, err := h.ensureHostBridge(p.bridge, p.gw, p.mtu)
			if err != nil {
				return fmt.Errorf("network: adopt bridged port %s: %w", p.id, err)
			}
			br.dhcp.setLease(p.mac.String(), lease{ip: p.ip, hostname: hostname(p.ip), dns: p.dns})
			h.log.Info("bridged port adopted", "instance", p.id, "device", p.dev, "bridge", p.bridge)
			continue
		}
		br, err := h.ensureBridge(p.bridge, p.gw, p.mtu, nil)
		if err != nil {
			return fmt.Errorf("network: adopt bridge of %s: %w", p.id, err)
		}
		if br.vni == 0 {
			if err := h.adoptOverlay(br); err != nil {
				return fmt.Errorf("network: adopt overlay of %s: %w", p.bridge, err)
			}
		}
		br.dhcp.setLease(p.mac.String(), lease{ip: p.ip, hostname: hostname(p.ip), dns: p.dns})
		h.log.Info("port adopted", "instance", p.id, "device", p.dev, "mark", fmt.Sprintf("%#x", p.mark))
	}
	return nil
}

func readPort(c *nftables.Conn, ch *nftables.Chain) (*port, error) {
	rules, err := c.GetRules(spoofTable, ch)
	if err != nil {
		return nil, err
	}
	var comments []string
	for _, r := range rules {
		if s := commentOf(r.UserData); s != "" {
			comments = append(comments, s)
		}
	}
	return portFromComments(comments)
}

// readGroups lists the groups an instance's ingress chain jumps to, from
// the comments of its jump rules.
func readGroups(c *nftables.Conn, id string) ([]string, error) {
	rules, err := c.GetRules(filterTable, &nftables.Chain{Name: ingressChainName(id), Table: filterTable})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rules {
		g, ok := strings.CutPrefix(commentOf(r.UserData), commentPrefix+"group=")
		if !ok || len(r.Exprs) == 0 {
			continue
		}
		if v, isVerdict := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); isVerdict && v.Kind == expr.VerdictJump {
			out = append(out, g)
		}
	}
	return out, nil
}

// deleteTables removes Clipper's nftables tables; missing ones are fine.
func deleteTables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := c.ListTables()
	if err != nil {
		return err
	}
	found := false
	for _, t := range tables {
		if (t.Family == nftables.TableFamilyINet && t.Name == FilterTable) ||
			(t.Family == nftables.TableFamilyBridge && t.Name == AntiSpoofTable) ||
			(t.Family == nftables.TableFamilyIPv4 && t.Name == NATTable) {
			c.DelTable(t)
			found = true
		}
	}
	if !found {
		return nil
	}
	if err := c.Flush(); err != nil {
		return errors.Join(errors.New("network: delete tables"), err)
	}
	return nil
}
