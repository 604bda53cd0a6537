// Package image keeps image files: the controller's content-addressed blob
// store that uploads land in, and the node's cache that fetches blobs from
// the controller and verifies them before use.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

var hexSHA = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 reports whether s is a lower-case hex SHA-256.
func ValidSHA256(s string) bool { return hexSHA.MatchString(s) }

// ErrChecksum means the bytes did not hash to the expected digest.
var ErrChecksum = errors.New("checksum mismatch")

// Blobs is a directory of files named by their SHA-256.
type Blobs struct {
	dir string
}

// NewBlobs opens (creating) a blob directory.
func NewBlobs(dir string) (*Blobs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &Blobs{dir: dir}, nil
}

// Path is where a blob lives (whether or not it exists).
func (b *Blobs) Path(sha string) string { return filepath.Join(b.dir, sha) }

// Has reports whether a blob is present.
func (b *Blobs) Has(sha string) bool {
	_, err := os.Stat(b.Path(sha))
	return err == nil
}

// Open opens a blob for reading.
func (b *Blobs) Open(sha string) (io.ReadCloser, int64, error) {
	if !ValidSHA256(sha) {
		return nil, 0, fmt.Errorf("invalid blob name %q", sha)
	}
	f, err := os.Open(b.Path(sha))
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// Put stores r under want (its expected SHA-256), at most max bytes. The
// blob appears atomically and only if the digest matches.
func (b *Blobs) Put(r io.Reader, want string, max int64) (int64, error) {
	if !ValidSHA256(want) {
		return 0, fmt.Errorf("invalid blob name %q", want)
	}
	tmp, err := os.CreateTemp(b.dir, ".upload-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err == nil && n > max {
		err = fmt.Errorf("blob larger than %d bytes", max)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return 0, fmt.Errorf("%w: got sha256 %s, want %s", ErrChecksum, got, want)
	}
	if err := os.Rename(tmp.Name(), b.Path(want)); err != nil {
		return 0, err
	}
	return n, nil
}

// HashFile returns the SHA-256 and size of a file.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
