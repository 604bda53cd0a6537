package sqlite

import (
	"fmt"

	"github.com/clipper-cloud/clipper/internal/model"
)

const addrCols = `id, account_id, public_ip, association_id, instance_id, private_ip, created`

func scanAddress(sc interface{ Scan(...any) error }) (model.Address, error) {
	var a model.Address
	var created int64
	err := sc.Scan(&a.ID, &a.AccountID, &a.PublicIP, &a.AssociationID, &a.InstanceID, &a.PrivateIP, &created)
	a.Created = fromMS(created)
	return a, err
}

func (t *tx) InsertAddress(a model.Address) error {
	_, err := t.exec(`INSERT INTO addresses (`+addrCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.AccountID, a.PublicIP, a.AssociationID, a.InstanceID, a.PrivateIP, ms(a.Created))
	if isUnique(err) {
		return model.Errorf(model.KindInUse, model.ResAddress, a.PublicIP, "The address %s is already allocated", a.PublicIP)
	}
	return err
}

func (t *tx) UpdateAddress(a model.Address) error {
	_, err := t.exec(`UPDATE addresses SET association_id = ?, instance_id = ?, private_ip = ? WHERE id = ?`,
		a.AssociationID, a.InstanceID, a.PrivateIP, a.ID)
	return err
}

func (t *tx) DeleteAddress(id string) error {
	if _, err := t.exec(`DELETE FROM tags WHERE resource_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM addresses WHERE id = ?`, id)
	return err
}

func (t *tx) GetAddress(id string) (model.Address, error) {
	a, err := scanAddress(t.row(`SELECT `+addrCols+` FROM addresses WHERE id = ?`, id))
	return a, notFound(err, model.ResAllocation, id)
}

func (t *tx) GetAddressByIP(ip string) (model.Address, error) {
	a, err := scanAddress(t.row(`SELECT `+addrCols+` FROM addresses WHERE public_ip = ?`, ip))
	return a, notFound(err, model.ResAddress, ip)
}

func (t *tx) listAddresses(q string, args ...any) ([]model.Address, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	defer rows.Close()
	var out []model.Address
	for rows.Next() {
		a, err := scanAddress(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (t *tx) ListAddresses(accountID string) ([]model.Address, error) {
	if accountID == "" {
		return t.listAddresses(`SELECT ` + addrCols + ` FROM addresses ORDER BY id`)
	}
	return t.listAddresses(`SELECT `+addrCols+` FROM addresses WHERE account_id = ? ORDER BY id`, accountID)
}

func (t *tx) InstanceAddresses(ids []string) (map[string]model.Address, error) {
	out := map[string]model.Address{}
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		as, err := t.listAddresses(`SELECT `+addrCols+` FROM addresses WHERE instance_id IN (`+placeholders(len(chunk))+`)`, anySlice(chunk)...)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			out[a.InstanceID] = a
		}
	}
	return out, nil
}

const fwdCols = `id, account_id, protocol, listen_ip, listen_port, target_ip, target_port, node_id, rev, created`

func scanForward(sc interface{ Scan(...any) error }) (model.Forward, error) {
	var f model.Forward
	var created int64
	err := sc.Scan(&f.ID, &f.AccountID, &f.Protocol, &f.ListenIP, &f.ListenPort, &f.TargetIP, &f.TargetPort, &f.NodeID, &f.Rev, &created)
	f.Created = fromMS(created)
	return f, err
}

func (t *tx) InsertForward(f model.Forward) error {
	_, err := t.exec(`INSERT INTO forwards (`+fwdCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.ID, f.AccountID, f.Protocol, f.ListenIP, f.ListenPort, f.TargetIP, f.TargetPort, f.NodeID, f.Rev, ms(f.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResForward, f.ListenIP,
			"%s %s:%d is already forwarded", f.Protocol, f.ListenIP, f.ListenPort)
	}
	return err
}

func (t *tx) DeleteForward(id string) error {
	_, err := t.exec(`DELETE FROM forwards WHERE id = ?`, id)
	return err
}

func (t *tx) GetForward(id string) (model.Forward, error) {
	f, err := scanForward(t.row(`SELECT `+fwdCols+` FROM forwards WHERE id = ?`, id))
	return f, notFound(err, model.ResForward, id)
}

func (t *tx) listForwards(q string, args ...any) ([]model.Forward, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list forwards: %w", err)
	}
	defer rows.Close()
	var out []model.Forward
	for rows.Next() {
		f, err := scanForward(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

func (t *tx) ListForwards(accountID string) ([]model.Forward, error) {
	if accountID == "" {
		return t.listForwards(`SELECT ` + fwdCols + ` FROM forwards ORDER BY id`)
	}
	return t.listForwards(`SELECT `+fwdCols+` FROM forwards WHERE account_id = ? ORDER BY id`, accountID)
}

func (t *tx) NodeForwards(nodeID string) ([]model.Forward, error) {
	return t.listForwards(`SELECT `+fwdCols+` FROM forwards WHERE node_id = ? ORDER BY id`, nodeID)
}
