package sqlite

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
)

func (t *tx) InsertVPC(v model.VPC) error {
	if v.VNI == 0 {
		if err := t.row(`SELECT COALESCE(MAX(vni), 0) + 1 FROM vpcs`).Scan(&v.VNI); err != nil {
			return err
		}
	}
	_, err := t.exec(`INSERT INTO vpcs (id, account_id, cidr, is_default, vni, uplink, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.AccountID, v.CIDR, v.Default, v.VNI, v.Uplink, ms(v.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResVPC, v.ID, "VPC %s already exists", v.ID)
	}
	return err
}

func scanVPC(sc interface{ Scan(...any) error }) (model.VPC, error) {
	var v model.VPC
	var created int64
	err := sc.Scan(&v.ID, &v.AccountID, &v.CIDR, &v.Default, &v.VNI, &v.Uplink, &created)
	v.Created = fromMS(created)
	return v, err
}

const vpcCols = `id, account_id, cidr, is_default, vni, uplink, created`

func (t *tx) GetVPC(id string) (model.VPC, error) {
	v, err := scanVPC(t.row(`SELECT `+vpcCols+` FROM vpcs WHERE id = ?`, id))
	return v, notFound(err, model.ResVPC, id)
}

func (t *tx) ListVPCs(accountID string) ([]model.VPC, error) {
	rows, err := t.query(`SELECT `+vpcCols+` FROM vpcs WHERE account_id = ? ORDER BY id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list vpcs: %w", err)
	}
	defer rows.Close()
	var out []model.VPC
	for rows.Next() {
		v, err := scanVPC(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (t *tx) InsertSubnet(s model.Subnet) error {
	_, err := t.exec(`INSERT INTO subnets (`+subnetCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.VPCID, s.AccountID, s.Zone, s.CIDR, s.Default, s.Gateway, s.RangeFirst, s.RangeLast, ms(s.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResSubnet, s.ID, "subnet %s already exists", s.ID)
	}
	return err
}

const subnetCols = `id, vpc_id, account_id, zone, cidr, is_default, gateway, range_first, range_last, created`

func scanSubnet(sc interface{ Scan(...any) error }) (model.Subnet, error) {
	var s model.Subnet
	var created int64
	err := sc.Scan(&s.ID, &s.VPCID, &s.AccountID, &s.Zone, &s.CIDR, &s.Default, &s.Gateway, &s.RangeFirst, &s.RangeLast, &created)
	s.Created = fromMS(created)
	return s, err
}

func (t *tx) GetSubnet(id string) (model.Subnet, error) {
	s, err := scanSubnet(t.row(`SELECT `+subnetCols+` FROM subnets WHERE id = ?`, id))
	return s, notFound(err, model.ResSubnet, id)
}

func (t *tx) ListSubnets(accountID string) ([]model.Subnet, error) {
	rows, err := t.query(`SELECT `+subnetCols+` FROM subnets WHERE account_id = ? ORDER BY id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	defer rows.Close()
	var out []model.Subnet
	for rows.Next() {
		s, err := scanSubnet(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (t *tx) SubnetUsed(subnetID string) (int, error) {
	var n int
	err := t.row(`SELECT COUNT(*) FROM instances WHERE subnet_id = ? AND state <> 'terminated'`, subnetID).Scan(&n)
	return n, err
}

const groupCols = `id, account_id, vpc_id, name, description, rev, created`

func scanGroup(sc interface{ Scan(...any) error }) (model.SecurityGroup, error) {
	var g model.SecurityGroup
	var created int64
	err := sc.Scan(&g.ID, &g.AccountID, &g.VPCID, &g.Name, &g.Description, &g.Rev, &created)
	g.Created = fromMS(created)
	return g, err
}

func (t *tx) InsertGroup(g model.SecurityGroup) error {
	_, err := t.exec(`INSERT INTO security_groups (`+groupCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.AccountID, g.VPCID, g.Name, g.Description, g.Rev, ms(g.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResGroup, g.Name,
			"The security group '%s' already exists for VPC '%s'", g.Name, g.VPCID)
	}
	return err
}

func (t *tx) GetGroup(id string) (model.SecurityGroup, error) {
	g, err := scanGroup(t.row(`SELECT `+groupCols+` FROM security_groups WHERE id = ?`, id))
	return g, notFound(err, model.ResGroup, id)
}

func (t *tx) GetGroupByName(vpcID, name string) (model.SecurityGroup, error) {
	g, err := scanGroup(t.row(`SELECT `+groupCols+` FROM security_groups WHERE vpc_id = ? AND name = ?`, vpcID, name))
	if err != nil {
		if e := notFound(err, model.ResGroup, name); e != err {
			return g, model.Errorf(model.KindNotFound, model.ResGroup, name,
				"The security group '%s' does not exist in VPC '%s'", name, vpcID)
		}
	}
	return g, err
}

func (t *tx) listGroups(q string, args ...any) ([]model.SecurityGroup, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	defer rows.Close()
	var out []model.SecurityGroup
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

func (t *tx) ListGroups(accountID string) ([]model.SecurityGroup, error) {
	return t.listGroups(`SELECT `+groupCols+` FROM security_groups WHERE account_id = ? ORDER BY id`, accountID)
}

func (t *tx) GroupsByID(ids []string) ([]model.SecurityGroup, error) {
	var out []model.SecurityGroup
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		gs, err := t.listGroups(`SELECT `+groupCols+` FROM security_groups WHERE id IN (`+placeholders(len(chunk))+`) ORDER BY id`, anySlice(chunk)...)
		if err != nil {
			return nil, err
		}
		out = append(out, gs...)
	}
	return out, nil
}

func (t *tx) DeleteGroup(id string) error {
	if _, err := t.exec(`DELETE FROM tags WHERE resource_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM security_groups WHERE id = ?`, id)
	return err
}

func (t *tx) SetGroupRev(id string, rev int64) error {
	_, err := t.exec(`UPDATE security_groups SET rev = ? WHERE id = ?`, rev, id)
	return err
}

const ruleCols = `id, group_id, egress, protocol, from_port, to_port, cidr, peer_group, description, created`

func (t *tx) InsertRule(r model.GroupRule) error {
	_, err := t.exec(`INSERT INTO security_group_rules (`+ruleCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.GroupID, r.Egress, r.Protocol, r.FromPort, r.ToPort, r.CIDR, r.PeerGroup, r.Description, ms(r.Created))
	return err
}

func (t *tx) DeleteRule(id string) error {
	_, err := t.exec(`DELETE FROM security_group_rules WHERE id = ?`, id)
	return err
}

func (t *tx) listRules(q string, args ...any) ([]model.GroupRule, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	var out []model.GroupRule
	for rows.Next() {
		var r model.GroupRule
		var created int64
		if err := rows.Scan(&r.ID, &r.GroupID, &r.Egress, &r.Protocol, &r.FromPort, &r.ToPort, &r.CIDR,
			&r.PeerGroup, &r.Description, &created); err != nil {
			return nil, err
		}
		r.Created = fromMS(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *tx) Rules(accountID string, groupIDs []string) ([]model.GroupRule, error) {
	if groupIDs == nil {
		return t.listRules(`SELECT `+prefixed("r.", ruleCols)+` FROM security_group_rules r JOIN security_groups g ON g.id = r.group_id
			WHERE g.account_id = ? ORDER BY r.group_id, r.created, r.id`, accountID)
	}
	var out []model.GroupRule
	for start := 0; start < len(groupIDs); start += 500 {
		chunk := groupIDs[start:min(start+500, len(groupIDs))]
		rs, err := t.listRules(`SELECT `+ruleCols+` FROM security_group_rules WHERE group_id IN (`+placeholders(len(chunk))+`)
			ORDER BY group_id, created, id`, anySlice(chunk)...)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i := range parts {
		parts[i] = p + strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ", ")
}

func (t *tx) RulesReferencing(groupID string) ([]model.GroupRule, error) {
	return t.listRules(`SELECT `+ruleCols+` FROM security_group_rules WHERE peer_group = ?`, groupID)
}

func (t *tx) SetInstanceGroups(instanceID string, groupIDs []string) error {
	if _, err := t.exec(`DELETE FROM instance_groups WHERE instance_id = ?`, instanceID); err != nil {
		return err
	}
	return t.AddInstanceGroups(instanceID, groupIDs)
}

func (t *tx) AddInstanceGroups(instanceID string, groupIDs []string) error {
	for i, g := range groupIDs {
		if _, err := t.exec(`INSERT INTO instance_groups (instance_id, group_id, position) VALUES (?, ?, ?)`, instanceID, g, i); err != nil {
			return fmt.Errorf("set instance groups: %w", err)
		}
	}
	return nil
}

// InstanceGroups returns each instance's groups in position order. The
// rows are put in that order here: ORDER BY position made SQLite build a
// temporary sorter for every call, mostly for one instance in one group.
func (t *tx) InstanceGroups(ids []string) (map[string][]string, error) {
	type member struct {
		group string
		pos   int
	}
	byInst := map[string][]member{}
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		rows, err := t.query(`SELECT instance_id, group_id, position FROM instance_groups WHERE instance_id IN (`+
			placeholders(len(chunk))+`)`, anySlice(chunk)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var i string
			var m member
			if err := rows.Scan(&i, &m.group, &m.pos); err != nil {
				rows.Close()
				return nil, err
			}
			byInst[i] = append(byInst[i], m)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	out := make(map[string][]string, len(byInst))
	for i, ms := range byInst {
		slices.SortStableFunc(ms, func(a, b member) int { return cmp.Compare(a.pos, b.pos) })
		gs := make([]string, len(ms))
		for k, m := range ms {
			gs[k] = m.group
		}
		out[i] = gs
	}
	return out, nil
}

func (t *tx) GroupInUse(groupID string) (int, error) {
	var n int
	err := t.row(`SELECT COUNT(*) FROM instance_groups ig JOIN instances i ON i.id = ig.instance_id
		WHERE ig.group_id = ? AND i.state <> 'terminated'`, groupID).Scan(&n)
	return n, err
}

func (t *tx) strings(q string, args ...any) ([]string, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (t *tx) NodeGroups(nodeID string) ([]string, error) {
	return t.strings(`SELECT group_id FROM node_groups WHERE node_id = ? AND n > 0 ORDER BY group_id`, nodeID)
}

func (t *tx) NodeVPCs(nodeID string) ([]string, error) {
	return t.strings(`SELECT vpc_id FROM node_vpcs WHERE node_id = ? AND n > 0 ORDER BY vpc_id`, nodeID)
}

func (t *tx) VPCNodes(vpcIDs []string) ([]string, error) {
	if len(vpcIDs) == 0 {
		return nil, nil
	}
	return t.strings(`SELECT DISTINCT node_id FROM node_vpcs WHERE vpc_id IN (`+placeholders(len(vpcIDs))+`) AND n > 0`, anySlice(vpcIDs)...)
}

func (t *tx) GroupNodes(groupIDs []string) ([]string, error) {
	if len(groupIDs) == 0 {
		return nil, nil
	}
	return t.strings(`SELECT DISTINCT node_id FROM node_groups WHERE group_id IN (`+placeholders(len(groupIDs))+`) AND n > 0`, anySlice(groupIDs)...)
}

func (t *tx) VPCInstances(vpcIDs []string, sinceRev int64) ([]model.Instance, error) {
	if len(vpcIDs) == 0 {
		return nil, nil
	}
	q := `SELECT ` + instCols + ` FROM instances WHERE vpc_id IN (` + placeholders(len(vpcIDs)) + `)`
	args := anySlice(vpcIDs)
	if sinceRev > 0 {
		q += ` AND rev > ? ORDER BY rev`
		args = append(args, sinceRev)
	} else {
		q += ` AND state <> 'terminated' ORDER BY id`
	}
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("vpc instances: %w", err)
	}
	defer rows.Close()
	var out []model.Instance
	for rows.Next() {
		i, err := scanInstance(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

// DeleteVPC removes a VPC with its subnets and its default security group;
// other groups must have been deleted. Terminated instances keep their
// record (for the hour EC2 shows them) but lose their group memberships.
func (t *tx) DeleteVPC(id string) error {
	var others int
	if err := t.row(`SELECT COUNT(*) FROM security_groups WHERE vpc_id = ? AND name <> ?`, id, model.DefaultGroup).Scan(&others); err != nil {
		return err
	}
	if others > 0 {
		return model.Errorf(model.KindDependencyViolation, model.ResVPC, id,
			"The vpc '%s' has %d security groups besides its default one: delete them first", id, others)
	}
	for _, q := range []string{
		`DELETE FROM instance_groups WHERE group_id IN (SELECT id FROM security_groups WHERE vpc_id = ?)`,
		`DELETE FROM security_group_rules WHERE peer_group IN (SELECT id FROM security_groups WHERE vpc_id = ?)`,
		`DELETE FROM tags WHERE resource_id IN (SELECT id FROM security_groups WHERE vpc_id = ?
			UNION SELECT id FROM subnets WHERE vpc_id = ?1 UNION SELECT ?1)`,
		`DELETE FROM security_groups WHERE vpc_id = ?`,
		`DELETE FROM vpcs WHERE id = ?`,
	} {
		if _, err := t.exec(q, id); err != nil {
			return fmt.Errorf("delete vpc %s: %w", id, err)
		}
	}
	return nil
}
