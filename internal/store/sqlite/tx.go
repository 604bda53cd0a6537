package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// tx implements store.Tx over one database/sql transaction.
type tx struct {
	ctx context.Context // what statements run with
	// cancel, when set, is the caller's context, checked before each
	// statement (see View).
	cancel context.Context
	tx     *sql.Tx
	stmts  *stmtCache
}

var _ store.Tx = (*tx)(nil)

// stmtCtx is the context for the next statement: the caller's once it has
// ended, so that database/sql fails the statement with its error.
func (t *tx) stmtCtx() context.Context {
	if t.cancel != nil && t.cancel.Err() != nil {
		return t.cancel
	}
	return t.ctx
}

// stmt returns the transaction's handle on the cached prepared statement
// for q, or nil to run q unprepared.
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	st := t.stmts.get(q)
	if st == nil {
		return nil
	}
	return t.tx.StmtContext(ctx, st)
}

func (t *tx) exec(q string, args ...any) (sql.Result, error) {
	ctx := t.stmtCtx()
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t *tx) query(q string, args ...any) (*sql.Rows, error) {
	ctx := t.stmtCtx()
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

func (t *tx) row(q string, args ...any) *sql.Row {
	ctx := t.stmtCtx()
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

// ms converts a time to the stored form; the zero time is stored as 0.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// notFound turns sql.ErrNoRows into a domain not-found error.
func notFound(err error, resource, id string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return model.NotFound(resource, id)
	}
	return err
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY constraint failure.
func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// placeholders returns "?,?,?" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func (t *tx) NextRev() (int64, error) {
	var v int64
	err := t.row(`UPDATE meta SET value = value + 1 WHERE key = 'rev' RETURNING value`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("next revision: %w", err)
	}
	return v, nil
}

func (t *tx) NextRevs(n int) (int64, error) {
	var v int64
	err := t.row(`UPDATE meta SET value = value + ? WHERE key = 'rev' RETURNING value`, n).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("next revisions: %w", err)
	}
	return v - int64(n) + 1, nil
}

func (t *tx) Rev() (int64, error) {
	var v int64
	err := t.row(`SELECT value FROM meta WHERE key = 'rev'`).Scan(&v)
	return v, err
}

func (t *tx) CreateAccount(a model.Account) error {
	_, err := t.exec(`INSERT INTO accounts (id, name, created) VALUES (?, ?, ?)`, a.ID, a.Name, ms(a.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, model.ResAccount, a.Name, "account %q already exists", a.Name)
	}
	return err
}

func (t *tx) GetAccount(id string) (model.Account, error) {
	var a model.Account
	var created int64
	err := t.row(`SELECT id, name, created FROM accounts WHERE id = ?`, id).Scan(&a.ID, &a.Name, &created)
	a.Created = fromMS(created)
	return a, notFound(err, model.ResAccount, id)
}

func (t *tx) GetAccountByName(name string) (model.Account, error) {
	var a model.Account
	var created int64
	err := t.row(`SELECT id, name, created FROM accounts WHERE name = ?`, name).Scan(&a.ID, &a.Name, &created)
	a.Created = fromMS(created)
	return a, notFound(err, model.ResAccount, name)
}

func (t *tx) CreateAccessKey(k model.AccessKey) error {
	_, err := t.exec(`INSERT INTO access_keys (id, secret, account_id, created) VALUES (?, ?, ?, ?)`,
		k.ID, k.Secret, k.AccountID, ms(k.Created))
	return err
}

func (t *tx) GetAccessKey(id string) (model.AccessKey, error) {
	var k model.AccessKey
	var created int64
	err := t.row(`SELECT id, secret, account_id, created FROM access_keys WHERE id = ?`, id).
		Scan(&k.ID, &k.Secret, &k.AccountID, &created)
	k.Created = fromMS(created)
	return k, notFound(err, "accesskey", id)
}

func (t *tx) AccessKeys(accountID string) ([]model.AccessKey, error) {
	rows, err := t.query(`SELECT id, secret, account_id, created FROM access_keys WHERE account_id = ? ORDER BY created, id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list access keys: %w", err)
	}
	defer rows.Close()
	var out []model.AccessKey
	for rows.Next() {
		var k model.AccessKey
		var created int64
		if err := rows.Scan(&k.ID, &k.Secret, &k.AccountID, &created); err != nil {
			return nil, err
		}
		k.Created = fromMS(created)
		out = append(out, k)
	}
	return out, rows.Err()
}

func (t *tx) InsertReservation(r model.Reservation) error {
	_, err := t.exec(`INSERT INTO reservations (id, account_id, client_token, created) VALUES (?, ?, ?, ?)`,
		r.ID, r.AccountID, r.ClientToken, ms(r.Created))
	if isUnique(err) {
		return model.Errorf(model.KindDuplicate, "reservation", r.ClientToken, "client token %q already used", r.ClientToken)
	}
	return err
}

func (t *tx) GetReservationByToken(accountID, token string) (model.Reservation, error) {
	var r model.Reservation
	var created int64
	err := t.row(`SELECT id, account_id, client_token, created FROM reservations WHERE account_id = ? AND client_token = ? AND client_token <> ''`,
		accountID, token).Scan(&r.ID, &r.AccountID, &r.ClientToken, &created)
	r.Created = fromMS(created)
	return r, notFound(err, "reservation", token)
}

func (t *tx) SetTags(accountID, resourceID string, tags []model.Tag) error {
	for _, tg := range tags {
		_, err := t.exec(`INSERT INTO tags (resource_id, account_id, key, value) VALUES (?, ?, ?, ?)
			ON CONFLICT (resource_id, key) DO UPDATE SET value = excluded.value`,
			resourceID, accountID, tg.Key, tg.Value)
		if err != nil {
			return fmt.Errorf("set tag: %w", err)
		}
	}
	return nil
}

func (t *tx) DeleteTags(resourceID string, tags []store.TagMatch) error {
	if tags == nil {
		_, err := t.exec(`DELETE FROM tags WHERE resource_id = ?`, resourceID)
		return err
	}
	for _, m := range tags {
		var err error
		if m.HasValue {
			_, err = t.exec(`DELETE FROM tags WHERE resource_id = ? AND key = ? AND value = ?`, resourceID, m.Key, m.Value)
		} else {
			_, err = t.exec(`DELETE FROM tags WHERE resource_id = ? AND key = ?`, resourceID, m.Key)
		}
		if err != nil {
			return fmt.Errorf("delete tag: %w", err)
		}
	}
	return nil
}

func (t *tx) Tags(accountID string, ids []string) (map[string][]model.Tag, error) {
	out := map[string][]model.Tag{}
	if ids != nil && len(ids) == 0 {
		return out, nil
	}
	q := `SELECT resource_id, key, value FROM tags WHERE account_id = ?`
	args := []any{accountID}
	if ids != nil {
		// Chunk to stay under SQLite's variable limit.
		for start := 0; start < len(ids); start += 500 {
			end := min(start+500, len(ids))
			chunk := ids[start:end]
			a := append([]any{accountID}, anySlice(chunk)...)
			if err := t.scanTags(q+` AND resource_id IN (`+placeholders(len(chunk))+`) ORDER BY resource_id, key`, a, out); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return out, t.scanTags(q+` ORDER BY resource_id, key`, args, out)
}

func (t *tx) scanTags(q string, args []any, out map[string][]model.Tag) error {
	rows, err := t.query(q, args...)
	if err != nil {
		return fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var tg model.Tag
		if err := rows.Scan(&id, &tg.Key, &tg.Value); err != nil {
			return err
		}
		out[id] = append(out[id], tg)
	}
	return rows.Err()
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (t *tx) PutConsole(c model.Console) error {
	_, err := t.exec(`INSERT INTO consoles (instance_id, output, updated) VALUES (?, ?, ?)
		ON CONFLICT (instance_id) DO UPDATE SET output = excluded.output, updated = excluded.updated`,
		c.InstanceID, c.Output, ms(c.Updated))
	return err
}

func (t *tx) GetConsole(instanceID string) (model.Console, error) {
	c := model.Console{InstanceID: instanceID}
	var updated int64
	err := t.row(`SELECT output, updated FROM consoles WHERE instance_id = ?`, instanceID).Scan(&c.Output, &updated)
	c.Updated = fromMS(updated)
	return c, notFound(err, "console", instanceID)
}

func (t *tx) PutBlob(b model.BlobRef) error {
	_, err := t.exec(`INSERT INTO blobs (sha256, size, created) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING`,
		b.SHA256, b.Size, time.Now().UnixMilli())
	return err
}

func (t *tx) GetBlob(sha string) (model.BlobRef, error) {
	b := model.BlobRef{SHA256: sha}
	err := t.row(`SELECT size FROM blobs WHERE sha256 = ?`, sha).Scan(&b.Size)
	return b, notFound(err, model.ResUpload, sha)
}
