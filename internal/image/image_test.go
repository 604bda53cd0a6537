package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
)

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestBlobsRejectWrongDigest(t *testing.T) {
	b, err := NewBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("kernel bytes")
	if _, err := b.Put(bytes.NewReader(data), digest([]byte("other")), 100); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong digest accepted: %v", err)
	}
	if _, err := b.Put(bytes.NewReader(data), digest(data), 5); err == nil {
		t.Fatal("oversized blob accepted")
	}
	if n, err := b.Put(bytes.NewReader(data), digest(data), 100); err != nil || n != int64(len(data)) {
		t.Fatalf("put: %d %v", n, err)
	}
	if !b.Has(digest(data)) {
		t.Fatal("blob missing after put")
	}
}

func TestCacheFetchesOnceAndVerifies(t *testing.T) {
	data := []byte("an image disk")
	var fetches atomic.Int32
	good := func(ctx context.Context, sha string) (io.ReadCloser, error) {
		fetches.Add(1)
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	c, err := NewCache(t.TempDir(), good)
	if err != nil {
		t.Fatal(err)
	}
	ref := model.BlobRef{SHA256: digest(data), Size: int64(len(data))}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Ensure(context.Background(), ref); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := c.Ensure(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("fetched %d times", n)
	}
	bad, _ := NewCache(t.TempDir(), func(ctx context.Context, sha string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader([]byte("tampered"))), nil
	})
	if _, err := bad.Ensure(context.Background(), ref); !errors.Is(err, ErrChecksum) {
		t.Fatalf("tampered blob: %v", err)
	}
}
