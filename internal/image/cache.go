package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/clipper-cloud/clipper/internal/model"
)

// Fetcher downloads a blob from the controller.
type Fetcher func(ctx context.Context, sha string) (io.ReadCloser, error)

// Cache is a node's local copy of the blobs its instances need. A blob is
// fetched once, verified against its digest, and kept read-only.
type Cache struct {
	blobs *Blobs
	fetch Fetcher

	mu       sync.Mutex
	inflight map[string]*fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewCache returns a cache in dir that downloads with fetch.
func NewCache(dir string, fetch Fetcher) (*Cache, error) {
	b, err := NewBlobs(dir)
	if err != nil {
		return nil, err
	}
	return &Cache{blobs: b, fetch: fetch, inflight: map[string]*fetchCall{}}, nil
}

// Ensure returns the local path of a blob, downloading it if needed.
// Concurrent calls for one blob share a single download.
func (c *Cache) Ensure(ctx context.Context, ref model.BlobRef) (string, error) {
	if !ValidSHA256(ref.SHA256) {
		return "", fmt.Errorf("invalid blob reference %q", ref.SHA256)
	}
	path := c.blobs.Path(ref.SHA256)
	if st, err := os.Stat(path); err == nil && st.Size() == ref.Size {
		return path, nil
	}
	c.mu.Lock()
	call, ok := c.inflight[ref.SHA256]
	if !ok {
		call = &fetchCall{done: make(chan struct{})}
		c.inflight[ref.SHA256] = call
		go func() {
			// Detached from the first caller's ctx so that a cancelled
			// caller does not fail the others; bounded by the fetcher.
			call.err = c.download(context.WithoutCancel(ctx), ref)
			c.mu.Lock()
			delete(c.inflight, ref.SHA256)
			c.mu.Unlock()
			close(call.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		if call.err != nil {
			return "", call.err
		}
		return path, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *Cache) download(ctx context.Context, ref model.BlobRef) error {
	rc, err := c.fetch(ctx, ref.SHA256)
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", ref.SHA256[:12], err)
	}
	defer rc.Close()
	n, err := c.blobs.Put(rc, ref.SHA256, ref.Size)
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", ref.SHA256[:12], err)
	}
	if n != ref.Size {
		os.Remove(c.blobs.Path(ref.SHA256))
		return fmt.Errorf("fetch blob %s: got %d bytes, want %d", ref.SHA256[:12], n, ref.Size)
	}
	return os.Chmod(c.blobs.Path(ref.SHA256), 0o400)
}
