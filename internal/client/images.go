package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"

	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// UploadFile uploads a file as a blob and returns its reference.
func (c *Client) UploadFile(ctx context.Context, path string) (model.BlobRef, error) {
	sha, size, err := image.HashFile(path)
	if err != nil {
		return model.BlobRef{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return model.BlobRef{}, err
	}
	defer f.Close()
	if err := c.Do(ctx, "PUT", "/clipper/v1/blobs/"+sha, f, size, "UNSIGNED-PAYLOAD", nil); err != nil {
		return model.BlobRef{}, fmt.Errorf("upload %s: %w", path, err)
	}
	return model.BlobRef{SHA256: sha, Size: size}, nil
}

// UploadBytes uploads a small blob held in memory.
func (c *Client) UploadBytes(ctx context.Context, b []byte) (model.BlobRef, error) {
	h := sha256.Sum256(b)
	sha := hex.EncodeToString(h[:])
	if err := c.Do(ctx, "PUT", "/clipper/v1/blobs/"+sha, bytesReader(b), int64(len(b)), sha, nil); err != nil {
		return model.BlobRef{}, err
	}
	return model.BlobRef{SHA256: sha, Size: int64(len(b))}, nil
}

// UploadManifest uploads an image manifest and returns the ImageLocation
// that RegisterImage takes.
func (c *Client) UploadManifest(ctx context.Context, m model.ImageManifest) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if _, err := service.ParseManifest(b); err != nil {
		return "", err
	}
	ref, err := c.UploadBytes(ctx, b)
	if err != nil {
		return "", err
	}
	return service.ManifestPrefix + ref.SHA256, nil
}

// RegisterImage registers an uploaded manifest and returns the AMI ID.
func (c *Client) RegisterImage(ctx context.Context, name, description, location string) (string, error) {
	params := url.Values{"Name": {name}, "ImageLocation": {location}}
	if description != "" {
		params.Set("Description", description)
	}
	var out struct {
		ImageID string `xml:"imageId"`
	}
	if err := c.Call(ctx, "RegisterImage", params, &out); err != nil {
		return "", err
	}
	return out.ImageID, nil
}
