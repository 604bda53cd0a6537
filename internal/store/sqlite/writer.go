package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/clipper-cloud/clipper/internal/store"
)

// Group commit. Every write transaction goes through one writer goroutine,
// which runs the requests that queued up while the previous commit was
// being synced in a single SQLite transaction, each inside its own
// savepoint, and syncs once for all of them. A request that fails rolls
// back to its savepoint and leaves the others alone; each caller gets its
// own result only after the commit that holds its changes is durable. The
// order is the order of arrival, so every request sees the ones before it.
// With one fsync costing about a millisecond here, this is what lets the
// store take more than a thousand writes a second.

// maxBatch bounds how many requests share a commit, so a burst cannot make
// one transaction (and the wait of its first caller) arbitrarily long.
const maxBatch = 128

// errClosed is returned by Update after Close.
var errClosed = errors.New("store: closed")

type writeReq struct {
	ctx  context.Context
	fn   func(store.Tx) error
	done chan error
}

// Update runs fn in a write transaction and commits it if fn returns nil.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.closing:
		return errClosed
	default:
	}
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-s.closing:
		return errClosed
	}
	// The request is queued: its outcome is waited for even when ctx ends,
	// so the caller never mistakes a committed change for a failed one.
	select {
	case err := <-req.done:
		return err
	case <-s.writerDone:
		// Closed while queued: the writer either answered or never will.
		select {
		case err := <-req.done:
			return err
		default:
			return errClosed
		}
	}
}

// writer runs batches until the store closes.
func (s *Store) writer() {
	defer close(s.writerDone)
	for {
		var first *writeReq
		select {
		case first = <-s.writes:
		case <-s.closing:
			s.failQueued()
			return
		}
		batch := []*writeReq{first}
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		s.runBatch(batch)
		s.ws.preparePending(context.Background())
	}
}

func (s *Store) failQueued() {
	for {
		select {
		case r := <-s.writes:
			r.done <- errClosed
		default:
			return
		}
	}
}

// runBatch commits a batch; if the shared transaction itself fails (not a
// request's own function), each request is retried in a transaction of its
// own so that one bad request cannot fail its neighbours.
func (s *Store) runBatch(batch []*writeReq) {
	results, err := s.commitTogether(batch)
	if err == nil {
		for i, r := range batch {
			r.done <- results[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- err
		return
	}
	for _, r := range batch {
		res, err := s.commitTogether([]*writeReq{r})
		if err == nil {
			err = res[0]
		}
		r.done <- err
	}
}

// commitTogether runs the batch in one transaction. It returns each
// request's own error, or an error for the transaction as a whole (in which
// case nothing was committed).
func (s *Store) commitTogether(batch []*writeReq) ([]error, error) {
	ctx := context.Background()
	sqlTx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	savepoints := len(batch) > 1
	results := make([]error, len(batch))
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if savepoints {
			if _, err := sqlTx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				_ = sqlTx.Rollback()
				return nil, fmt.Errorf("savepoint: %w", err)
			}
		}
		// Statements run without the caller's cancellation: interrupting
		// SQLite mid-statement would roll back the whole shared transaction.
		results[i] = call(r.fn, &tx{ctx: context.WithoutCancel(r.ctx), tx: sqlTx, stmts: s.ws})
		switch {
		case results[i] != nil && !savepoints:
			_ = sqlTx.Rollback()
			return results, nil
		case results[i] != nil:
			if _, err := sqlTx.ExecContext(ctx, "ROLLBACK TO w; RELEASE w"); err != nil {
				_ = sqlTx.Rollback()
				return nil, fmt.Errorf("roll back to savepoint: %w", err)
			}
		case savepoints:
			if _, err := sqlTx.ExecContext(ctx, "RELEASE w"); err != nil {
				_ = sqlTx.Rollback()
				return nil, fmt.Errorf("release savepoint: %w", err)
			}
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return results, nil
}

// call runs a transaction function; a panic becomes that request's error
// instead of ending the writer (and with it every other caller).
func call(fn func(store.Tx) error, t *tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: transaction function panicked: %v", p)
		}
	}()
	return fn(t)
}
