package sqlite

import (
	"fmt"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

const instCols = `id, account_id, reservation_id, image_id, instance_type, vcpus, memory_mib, disk_gib,
	key_name, user_data, launch_index, client_token, zone, node_id, state, reason_code, reason_message,
	transition_note, launch_time, state_changed, power, reboot_seq, rev, vpc_id, subnet_id, private_ip, mac,
	metadata_tokens, metadata_endpoint, metadata_hop_limit, metadata_tags, disable_api_termination, disable_api_stop,
	move_to, move_addr, drop_node`

func scanInstance(sc interface{ Scan(...any) error }) (model.Instance, error) {
	var i model.Instance
	var launch, changed int64
	err := sc.Scan(&i.ID, &i.AccountID, &i.ReservationID, &i.ImageID, &i.InstanceType, &i.VCPUs,
		&i.MemoryMiB, &i.DiskGiB, &i.KeyName, &i.UserData, &i.LaunchIndex, &i.ClientToken, &i.Zone,
		&i.NodeID, &i.State, &i.StateReason.Code, &i.StateReason.Message, &i.TransitionNote,
		&launch, &changed, &i.Power, &i.RebootSeq, &i.Rev, &i.VPCID, &i.SubnetID, &i.PrivateIP, &i.MAC,
		&i.Metadata.HTTPTokens, &i.Metadata.HTTPEndpoint, &i.Metadata.HopLimit, &i.Metadata.Tags,
		&i.DisableAPITermination, &i.DisableAPIStop, &i.MoveTo, &i.MoveAddr, &i.DropNode)
	i.LaunchTime, i.StateChanged = fromMS(launch), fromMS(changed)
	return i, err
}

func instanceArgs(i model.Instance) []any {
	return []any{i.ID, i.AccountID, i.ReservationID, i.ImageID, i.InstanceType, i.VCPUs, i.MemoryMiB, i.DiskGiB,
		i.KeyName, i.UserData, i.LaunchIndex, i.ClientToken, i.Zone, i.NodeID, i.State,
		i.StateReason.Code, i.StateReason.Message, i.TransitionNote, ms(i.LaunchTime), ms(i.StateChanged),
		i.Power, i.RebootSeq, i.Rev, i.VPCID, i.SubnetID, i.PrivateIP, i.MAC,
		i.Metadata.HTTPTokens, i.Metadata.HTTPEndpoint, i.Metadata.HopLimit, i.Metadata.Tags,
		i.DisableAPITermination, i.DisableAPIStop, i.MoveTo, i.MoveAddr, i.DropNode}
}

var instRow = "(" + placeholders(len(instanceArgs(model.Instance{}))) + ")"

func (t *tx) InsertInstance(i model.Instance) error {
	_, err := t.exec(`INSERT INTO instances (`+instCols+`) VALUES `+instRow, instanceArgs(i)...)
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResInstance, i.ID, "instance %s already exists", i.ID)
	}
	return err
}

// insertBatch is how many rows one multi-row INSERT carries: statement
// overhead, not row work, dominated bursts of launches.
const insertBatch = 50

func (t *tx) InsertInstances(is []model.Instance) error {
	for start := 0; start < len(is); start += insertBatch {
		chunk := is[start:min(start+insertBatch, len(is))]
		rows := make([]string, len(chunk))
		var args []any
		var gRows []string
		var gArgs []any
		for k, i := range chunk {
			rows[k] = instRow
			args = append(args, instanceArgs(i)...)
			for pos, g := range i.Groups {
				gRows = append(gRows, "(?, ?, ?)")
				gArgs = append(gArgs, i.ID, g, pos)
			}
		}
		if _, err := t.exec(`INSERT INTO instances (`+instCols+`) VALUES `+strings.Join(rows, ","), args...); err != nil {
			if isUnique(err) {
				return model.Errorf(model.KindDuplicate, model.ResInstance, chunk[0].ID, "instance already exists")
			}
			return fmt.Errorf("insert instances: %w", err)
		}
		if len(gRows) > 0 {
			if _, err := t.exec(`INSERT INTO instance_groups (instance_id, group_id, position) VALUES `+strings.Join(gRows, ","), gArgs...); err != nil {
				return fmt.Errorf("insert instance groups: %w", err)
			}
		}
	}
	return nil
}

func (t *tx) UpdateInstance(i model.Instance) error {
	res, err := t.exec(`UPDATE instances SET node_id = ?, state = ?, reason_code = ?, reason_message = ?,
		transition_note = ?, state_changed = ?, power = ?, reboot_seq = ?, rev = ?, private_ip = ?, mac = ?,
		vpc_id = ?, subnet_id = ?, instance_type = ?, vcpus = ?, memory_mib = ?, user_data = ?,
		metadata_tokens = ?, metadata_endpoint = ?, metadata_hop_limit = ?, metadata_tags = ?,
		disable_api_termination = ?, disable_api_stop = ?, move_to = ?, move_addr = ?, drop_node = ?
		WHERE id = ?`,
		i.NodeID, i.State, i.StateReason.Code, i.StateReason.Message, i.TransitionNote, ms(i.StateChanged),
		i.Power, i.RebootSeq, i.Rev, i.PrivateIP, i.MAC, i.VPCID, i.SubnetID, i.InstanceType, i.VCPUs,
		i.MemoryMiB, i.UserData, i.Metadata.HTTPTokens, i.Metadata.HTTPEndpoint, i.Metadata.HopLimit, i.Metadata.Tags,
		i.DisableAPITermination, i.DisableAPIStop, i.MoveTo, i.MoveAddr, i.DropNode, i.ID)
	if err != nil {
		return fmt.Errorf("update instance %s: %w", i.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return model.NotFound(model.ResInstance, i.ID)
	}
	return nil
}

func (t *tx) GetInstance(id string) (model.Instance, error) {
	i, err := scanInstance(t.row(`SELECT `+instCols+` FROM instances WHERE id = ?`, id))
	return i, notFound(err, model.ResInstance, id)
}

func (t *tx) ListInstances(q store.InstanceQuery) ([]model.Instance, error) {
	var where []string
	var args []any
	if q.AccountID != "" {
		where = append(where, "account_id = ?")
		args = append(args, q.AccountID)
	}
	if q.IDs != nil {
		if len(q.IDs) == 0 {
			return nil, nil
		}
		where = append(where, "id IN ("+placeholders(len(q.IDs))+")")
		args = append(args, anySlice(q.IDs)...)
	}
	if q.ReservationID != "" {
		where = append(where, "reservation_id = ?")
		args = append(args, q.ReservationID)
	}
	if q.NodeID != "" {
		where = append(where, "node_id = ?")
		args = append(args, q.NodeID)
	}
	if q.Involving != "" {
		where = append(where, "(node_id = ? OR move_to = ? OR drop_node = ?)")
		args = append(args, q.Involving, q.Involving, q.Involving)
	}
	if q.SinceRev > 0 {
		where = append(where, "rev > ?")
		args = append(args, q.SinceRev)
	}
	if q.Live {
		where = append(where, "state <> 'terminated'")
	}
	sqlq := `SELECT ` + instCols + ` FROM instances`
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	if q.SinceRev > 0 {
		sqlq += " ORDER BY rev"
	} else {
		sqlq += " ORDER BY id"
	}
	rows, err := t.query(sqlq, args...)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
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

func (t *tx) PurgeInstances(before time.Time) (int, error) {
	rows, err := t.query(`SELECT id FROM instances WHERE state = 'terminated' AND state_changed < ?`, ms(before))
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := t.exec(`DELETE FROM tags WHERE resource_id = ?`, id); err != nil {
			return 0, err
		}
		if _, err := t.exec(`DELETE FROM instances WHERE id = ?`, id); err != nil {
			return 0, err
		}
	}
	// Reservations left without instances go too.
	if len(ids) > 0 {
		if _, err := t.exec(`DELETE FROM reservations WHERE NOT EXISTS
			(SELECT 1 FROM instances WHERE instances.reservation_id = reservations.id)`); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

func (t *tx) NodeUsage() (map[string]model.Capacity, error) {
	rows, err := t.query(`SELECT id, used_vcpus, used_memory_mib, used_disk_mib FROM nodes`)
	if err != nil {
		return nil, fmt.Errorf("node usage: %w", err)
	}
	defer rows.Close()
	out := map[string]model.Capacity{}
	for rows.Next() {
		var id string
		var c model.Capacity
		if err := rows.Scan(&id, &c.VCPUs, &c.MemoryMiB, &c.DiskMiB); err != nil {
			return nil, err
		}
		out[id] = c
	}
	return out, rows.Err()
}

func (t *tx) AddressInUse(subnetID, ip string) (bool, error) {
	var n int
	err := t.row(`SELECT COUNT(*) FROM instances WHERE subnet_id = ? AND private_ip = ? AND state <> 'terminated'`, subnetID, ip).Scan(&n)
	return n > 0, err
}
