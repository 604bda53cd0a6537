package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

func blob(i int) model.BlobRef {
	return model.BlobRef{SHA256: fmt.Sprintf("%064x", i), Size: int64(i + 1)}
}

// TestGroupCommitIsolatesRequests runs many concurrent writes, some of which
// fail after writing and one of which panics: the failed ones leave nothing
// behind, every other one is committed, and each caller gets its own result.
func TestGroupCommitIsolatesRequests(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	errBoom := errors.New("boom")
	const n = 300
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.Update(ctx, func(tx store.Tx) error {
				if err := tx.PutBlob(blob(i)); err != nil {
					return err
				}
				switch {
				case i == 7:
					panic("a bug in a transaction function")
				case i%3 == 0:
					return errBoom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range results {
		var got model.BlobRef
		verr := s.View(ctx, func(tx store.Tx) error {
			var err error
			got, err = tx.GetBlob(blob(i).SHA256)
			return err
		})
		switch {
		case i == 7:
			if err == nil || errors.Is(err, errBoom) || !errors.Is(verr, model.ErrNotFound) {
				t.Errorf("the panicking write: %v, then %v %+v", err, verr, got)
			}
		case i%3 == 0:
			if !errors.Is(err, errBoom) || !errors.Is(verr, model.ErrNotFound) {
				t.Errorf("failed write %d: %v, then %v %+v", i, err, verr, got)
			}
		default:
			if err != nil || verr != nil || got != blob(i) {
				t.Errorf("write %d: %v, then %v %+v", i, err, verr, got)
			}
		}
	}
}

// TestGroupCommitOrder: a write sees every write that returned before it
// was made, also within one batch.
func TestGroupCommitOrder(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for i := range 50 {
		if err := s.Update(ctx, func(tx store.Tx) error {
			if i > 0 {
				if _, err := tx.GetBlob(blob(i - 1).SHA256); err != nil {
					return fmt.Errorf("write %d does not see write %d: %w", i, i-1, err)
				}
			}
			return tx.PutBlob(blob(i))
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpdateAfterCloseAndCanceled(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if err := s.Update(ctx, func(store.Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("canceled update: %v (ran %v)", err, ran)
	}
	s.Close()
	if err := s.Update(context.Background(), func(store.Tx) error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("update after close: %v (ran %v)", err, ran)
	}
}

// BenchmarkConcurrentWrites: fsync'd writes from 100 goroutines.
func BenchmarkConcurrentWrites(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir()+"/db")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	next := 0
	b.SetParallelism(50)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutBlob(blob(i)) }); err != nil {
				b.Error(err)
			}
		}
	})
}
