package sqlite

import (
	"encoding/json"
	"fmt"

	"github.com/clipper-cloud/clipper/internal/model"
)

const imageCols = `id, owner_id, name, description, state, location, manifest, architecture, root_device_name, public, created`

func scanImage(sc interface{ Scan(...any) error }) (model.Image, error) {
	var img model.Image
	var manifest string
	var created int64
	err := sc.Scan(&img.ID, &img.OwnerID, &img.Name, &img.Description, &img.State, &img.Location,
		&manifest, &img.Architecture, &img.RootDeviceName, &img.Public, &created)
	if err != nil {
		return img, err
	}
	img.Created = fromMS(created)
	if err := json.Unmarshal([]byte(manifest), &img.Manifest); err != nil {
		return img, fmt.Errorf("image %s: bad manifest: %w", img.ID, err)
	}
	return img, nil
}

func (t *tx) InsertImage(img model.Image) error {
	m, err := json.Marshal(img.Manifest)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO images (`+imageCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
		img.ID, img.OwnerID, img.Name, img.Description, img.State, img.Location, string(m),
		img.Architecture, img.RootDeviceName, img.Public, ms(img.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResImage, img.Name,
			"AMI name %s is already in use by an existing AMI", img.Name)
	}
	return err
}

func (t *tx) UpdateImage(img model.Image) error {
	res, err := t.exec(`UPDATE images SET name = ?, description = ?, state = ?, public = ? WHERE id = ?`,
		img.Name, img.Description, img.State, img.Public, img.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return model.NotFound(model.ResImage, img.ID)
	}
	return nil
}

func (t *tx) GetImage(id string) (model.Image, error) {
	img, err := scanImage(t.row(`SELECT `+imageCols+` FROM images WHERE id = ?`, id))
	return img, notFound(err, model.ResImage, id)
}

func (t *tx) ListImages(ownerID string) ([]model.Image, error) {
	rows, err := t.query(`SELECT `+imageCols+` FROM images WHERE owner_id = ? OR public = 1 ORDER BY id`, ownerID)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	var out []model.Image
	for rows.Next() {
		img, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, rows.Err()
}

const keyCols = `id, account_id, name, type, fingerprint, public_key, created`

func scanKey(sc interface{ Scan(...any) error }) (model.KeyPair, error) {
	var k model.KeyPair
	var created int64
	err := sc.Scan(&k.ID, &k.AccountID, &k.Name, &k.Type, &k.Fingerprint, &k.PublicKey, &created)
	k.Created = fromMS(created)
	return k, err
}

func (t *tx) InsertKeyPair(k model.KeyPair) error {
	_, err := t.exec(`INSERT INTO key_pairs (`+keyCols+`) VALUES (?,?,?,?,?,?,?)`,
		k.ID, k.AccountID, k.Name, k.Type, k.Fingerprint, k.PublicKey, ms(k.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResKeyPair, k.Name, "The keypair '%s' already exists.", k.Name)
	}
	return err
}

func (t *tx) GetKeyPair(accountID, name string) (model.KeyPair, error) {
	k, err := scanKey(t.row(`SELECT `+keyCols+` FROM key_pairs WHERE account_id = ? AND name = ?`, accountID, name))
	if err != nil {
		return k, notFoundKey(err, name)
	}
	return k, nil
}

func notFoundKey(err error, name string) error {
	if e := notFound(err, model.ResKeyPair, name); e != err {
		return model.Errorf(model.KindNotFound, model.ResKeyPair, name, "The key pair '%s' does not exist", name)
	}
	return err
}

func (t *tx) ListKeyPairs(accountID string) ([]model.KeyPair, error) {
	rows, err := t.query(`SELECT `+keyCols+` FROM key_pairs WHERE account_id = ? ORDER BY name`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list key pairs: %w", err)
	}
	defer rows.Close()
	var out []model.KeyPair
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (t *tx) DeleteKeyPair(accountID, id string) error {
	_, err := t.exec(`DELETE FROM key_pairs WHERE account_id = ? AND id = ?`, accountID, id)
	if err != nil {
		return err
	}
	_, err = t.exec(`DELETE FROM tags WHERE resource_id = ?`, id)
	return err
}

const nodeCols = `id, name, zone, address, state, schedule, vcpus, memory_mib, disk_mib, version, last_seen, created`

func scanNode(sc interface{ Scan(...any) error }) (model.Node, error) {
	var n model.Node
	var seen, created int64
	err := sc.Scan(&n.ID, &n.Name, &n.Zone, &n.Address, &n.State, &n.Schedule, &n.Capacity.VCPUs,
		&n.Capacity.MemoryMiB, &n.Capacity.DiskMiB, &n.Version, &seen, &created)
	n.LastSeen, n.Created = fromMS(seen), fromMS(created)
	return n, err
}

func (t *tx) UpsertNode(n model.Node) error {
	_, err := t.exec(`INSERT INTO nodes (`+nodeCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, zone = excluded.zone, address = excluded.address,
		state = excluded.state, schedule = excluded.schedule, vcpus = excluded.vcpus, memory_mib = excluded.memory_mib,
		disk_mib = excluded.disk_mib, version = excluded.version, last_seen = excluded.last_seen`,
		n.ID, n.Name, n.Zone, n.Address, n.State, n.Schedule, n.Capacity.VCPUs, n.Capacity.MemoryMiB,
		n.Capacity.DiskMiB, n.Version, ms(n.LastSeen), ms(n.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResNode, n.Name, "a node named %q already exists", n.Name)
	}
	return err
}

func (t *tx) GetNode(id string) (model.Node, error) {
	n, err := scanNode(t.row(`SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
	return n, notFound(err, model.ResNode, id)
}

func (t *tx) GetNodeByName(name string) (model.Node, error) {
	n, err := scanNode(t.row(`SELECT `+nodeCols+` FROM nodes WHERE name = ?`, name))
	return n, notFound(err, model.ResNode, name)
}

func (t *tx) DeleteNode(id string) error {
	res, err := t.exec(`DELETE FROM nodes WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return model.NotFound(model.ResNode, id)
	}
	return nil
}

func (t *tx) ListNodes() ([]model.Node, error) {
	rows, err := t.query(`SELECT ` + nodeCols + ` FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []model.Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
