// Package sqlite is the embedded store: SQLite through the pure-Go
// modernc.org/sqlite driver, in WAL mode with foreign keys, one serialised
// writer connection and a pool of readers.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/clipper-cloud/clipper/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a SQLite-backed store.Store.
type Store struct {
	w  *sql.DB // exactly one connection: SQLite has one writer anyway
	r  *sql.DB // readers
	ws *stmtCache
	rs *stmtCache

	writes     chan *writeReq // to the writer goroutine (writer.go)
	closing    chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

// stmtCache keeps prepared statements by SQL text, so that SQLite parses
// each query once rather than on every call (parsing was a quarter of the
// CPU of a launch).
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool
}

// maxCachedStmts bounds the cache: queries with variable IN lists make
// new texts, and those are simply not cached once it is full.
const maxCachedStmts = 256

// get returns the prepared statement for q, or nil the first time: the
// statement is prepared after the transaction ends (preparing during it
// would wait for the writer's only connection, which the transaction holds).
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st
	}
	if len(c.m)+len(c.pending) < maxCachedStmts {
		c.pending[q] = true
	}
	return nil
}

// preparePending prepares the statements first seen in a transaction that
// has now ended.
func (c *stmtCache) preparePending(ctx context.Context) {
	c.mu.Lock()
	var qs []string
	for q := range c.pending {
		qs = append(qs, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	// Prepare without holding the lock: preparing waits for a connection,
	// and a transaction holding one may be waiting for the lock in get.
	for _, q := range qs {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, dup := c.m[q]; dup || c.m == nil {
			st.Close()
		} else {
			c.m[q] = st
		}
		c.mu.Unlock()
	}
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

var _ store.Store = (*Store)(nil)

func dsn(path string, write bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if write {
		q.Set("_txlock", "immediate")
		// Group commit runs each request in a savepoint (writer.go), and
		// SQLite copies every page a savepoint touches to a subjournal,
		// a temporary file by default: a write system call per page. The
		// subjournal only serves rolling back a savepoint, never crash
		// recovery (that is the WAL's job), so memory is as safe.
		q.Add("_pragma", "temp_store(MEMORY)")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and migrates it to
// the latest schema version.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := privateFile(path); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	if err := Migrate(ctx, w, 0); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	s := &Store{w: w, r: r, ws: newStmtCache(w), rs: newStmtCache(r),
		writes: make(chan *writeReq, maxBatch), closing: make(chan struct{}), writerDone: make(chan struct{})}
	go s.writer()
	return s, nil
}

// privateFile creates the database file 0600, or makes an existing one so.
// SQLite gives its -wal and -shm files the database file's mode, so they
// follow; the file holds secrets (access keys).
func privateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Close closes the database; writes still queued fail.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.writerDone
	s.ws.close()
	s.rs.close()
	return errors.Join(s.r.Close(), s.w.Close())
}

// View runs fn in a read-only snapshot.
//
// ctx is checked before the transaction and before each statement rather
// than handed to the driver: with a cancellable context it starts a
// goroutine per statement to interrupt it, which costs more than the short
// reads it could interrupt. A read of a caller that went away thus ends at
// its next statement. (database/sql watches each transaction and result
// set with a goroutine whatever the context: it derives its own.)
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	quiet := context.WithoutCancel(ctx)
	sqlTx, err := s.r.BeginTx(quiet, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer s.rs.preparePending(quiet)
	defer sqlTx.Rollback()
	return fn(&tx{ctx: quiet, cancel: ctx, tx: sqlTx, stmts: s.rs})
}

// migration is one numbered schema step.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and '_'", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// LatestVersion is the schema version this binary migrates to.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// Migrate brings db to schema version target (0: the latest), one
// transaction per step. A database newer than this binary is refused.
func Migrate(ctx context.Context, db *sql.DB, target int) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if target == 0 {
		target = len(ms)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var cur int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > len(ms) {
		return fmt.Errorf("store schema version %d is newer than this clipper (%d): upgrade clipper", cur, len(ms))
	}
	for _, m := range ms[cur:target] {
		if err := apply(ctx, db, m); err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, db *sql.DB, m migration) error {
	t, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback() //nolint:errcheck // no-op after commit
	if _, err := t.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	if _, err := t.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES (?, strftime('%s','now'))`, m.version); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	return t.Commit()
}
