package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// ManifestPrefix starts the location of an uploaded image manifest.
const ManifestPrefix = "sha256:"

// MaxManifestSize bounds the manifest JSON.
const MaxManifestSize = 64 * 1024

var (
	hexSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	amiNameRE  = regexp.MustCompile(`^[a-zA-Z0-9()\[\] ./\-'@_]{3,128}$`)
	cmdlineBad = regexp.MustCompile(`[\x00-\x1f\x7f]`)
)

// ParseManifest decodes and validates an image manifest.
func ParseManifest(b []byte) (model.ImageManifest, error) {
	var m model.ImageManifest
	if len(b) > MaxManifestSize {
		return m, model.InvalidParam("ImageLocation", "The image manifest is larger than %d bytes", MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, model.InvalidParam("ImageLocation", "The image manifest is not valid: %v", err)
	}
	if dec.More() {
		return m, model.InvalidParam("ImageLocation", "The image manifest has trailing data")
	}
	for name, r := range map[string]model.BlobRef{"kernel": m.Kernel, "initrd": m.Initrd, "disk": m.Disk} {
		if r.IsZero() {
			continue
		}
		if !hexSHA256.MatchString(r.SHA256) || r.Size <= 0 {
			return m, model.InvalidParam("ImageLocation", "The image manifest's %s is not a valid blob reference", name)
		}
	}
	switch {
	case m.Kernel.IsZero() && m.Disk.IsZero():
		return m, model.InvalidParam("ImageLocation", "An image needs a kernel or a disk")
	case m.Kernel.IsZero() && !m.Initrd.IsZero():
		return m, model.InvalidParam("ImageLocation", "An initrd needs a kernel")
	case m.Kernel.IsZero() && m.Cmdline != "":
		return m, model.InvalidParam("ImageLocation", "A kernel command line needs a kernel")
	}
	if !m.Disk.IsZero() && m.DiskFormat != "qcow2" && m.DiskFormat != "raw" {
		return m, model.InvalidParam("ImageLocation", "disk_format must be qcow2 or raw, not %q", m.DiskFormat)
	}
	if m.Disk.IsZero() && (m.DiskFormat != "" || m.DiskSize != 0) {
		return m, model.InvalidParam("ImageLocation", "disk_format and disk_virtual_size need a disk")
	}
	if m.DiskSize < 0 || m.DiskSize > 16<<40 {
		return m, model.InvalidParam("ImageLocation", "disk_virtual_size is out of range")
	}
	if len(m.Cmdline) > 2048 || cmdlineBad.MatchString(m.Cmdline) {
		return m, model.InvalidParam("ImageLocation", "The kernel command line must be printable and at most 2048 bytes")
	}
	switch m.Machine {
	case "", "microvm", "q35":
	default:
		return m, model.InvalidParam("ImageLocation", "machine must be microvm or q35, not %q", m.Machine)
	}
	if m.Machine == "microvm" && m.Kernel.IsZero() {
		return m, model.InvalidParam("ImageLocation", "microvm needs a kernel (direct boot)")
	}
	switch m.Arch {
	case "", "x86_64":
	default:
		return m, model.InvalidParam("Architecture", "Unsupported architecture %q", m.Arch)
	}
	return m, nil
}

// RegisterInput is a RegisterImage request.
type RegisterInput struct {
	Name           string
	Description    string
	Location       string
	Architecture   string
	RootDeviceName string
	Tags           []model.Tag
}

// RegisterImage creates an AMI from an uploaded manifest.
func (s *Service) RegisterImage(ctx context.Context, c Caller, in RegisterInput) (model.Image, error) {
	if in.Name == "" {
		return model.Image{}, model.MissingParam("Name")
	}
	if !amiNameRE.MatchString(in.Name) {
		return model.Image{}, model.InvalidParam("Name", "AMI names must be 3 to 128 characters of letters, digits and ()[] ./-'@_")
	}
	if len(in.Description) > 255 {
		return model.Image{}, model.InvalidParam("Description", "The description must be at most 255 characters")
	}
	if in.Location == "" {
		return model.Image{}, model.MissingParam("ImageLocation")
	}
	sha, ok := strings.CutPrefix(in.Location, ManifestPrefix)
	if !ok || !hexSHA256.MatchString(sha) {
		return model.Image{}, model.InvalidParam("ImageLocation", "ImageLocation must be %s<hex> as printed by 'clipper image import --upload-only'", ManifestPrefix)
	}
	if in.Architecture == "" {
		in.Architecture = "x86_64"
	}
	if in.Architecture != "x86_64" {
		return model.Image{}, model.InvalidParam("Architecture", "Unsupported architecture %q", in.Architecture)
	}
	if in.RootDeviceName == "" {
		in.RootDeviceName = "/dev/xvda"
	}
	if err := validateTags(in.Tags); err != nil {
		return model.Image{}, err
	}
	m, err := s.readManifest(sha)
	if err != nil {
		return model.Image{}, err
	}
	img := model.Image{
		ID: model.NewID(model.PrefixImage), OwnerID: c.AccountID, Name: in.Name, Description: in.Description,
		State: "available", Location: in.Location, Manifest: m, Architecture: in.Architecture,
		RootDeviceName: in.RootDeviceName, Created: s.nowMS(), Tags: in.Tags,
	}
	err = s.update(ctx, func(tx store.Tx) error {
		for _, r := range []model.BlobRef{m.Kernel, m.Initrd, m.Disk} {
			if r.IsZero() {
				continue
			}
			b, err := tx.GetBlob(r.SHA256)
			if err != nil || b.Size != r.Size {
				return model.InvalidParam("ImageLocation", "The manifest refers to blob %s, which has not been uploaded", r.SHA256)
			}
		}
		if err := tx.InsertImage(img); err != nil {
			return err
		}
		return tx.SetTags(c.AccountID, img.ID, in.Tags)
	})
	return img, err
}

func (s *Service) readManifest(sha string) (model.ImageManifest, error) {
	if s.blobs == nil {
		return model.ImageManifest{}, fmt.Errorf("no blob store configured")
	}
	rc, _, err := s.blobs.Open(sha)
	if err != nil {
		return model.ImageManifest{}, model.InvalidParam("ImageLocation", "No uploaded manifest at %s%s", ManifestPrefix, sha)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestSize+1))
	if err != nil {
		return model.ImageManifest{}, fmt.Errorf("read manifest: %w", err)
	}
	return ParseManifest(b)
}

// DeregisterImage removes an AMI; running instances keep their disks.
func (s *Service) DeregisterImage(ctx context.Context, c Caller, id string) error {
	if !model.ValidID(model.PrefixImage, id) {
		return model.Malformed(model.ResImage, id)
	}
	return s.update(ctx, func(tx store.Tx) error {
		img, err := tx.GetImage(id)
		if err != nil || img.State == "deregistered" {
			return model.NotFound(model.ResImage, id)
		}
		if img.OwnerID != c.AccountID {
			return model.Errorf(model.KindUnauthorized, model.ResImage, id, "You are not authorized to deregister image %s", id)
		}
		img.State = "deregistered"
		if err := tx.UpdateImage(img); err != nil {
			return err
		}
		return tx.DeleteTags(id, nil)
	})
}

func imageFields(img *model.Image) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "image-id":
			return []string{img.ID}, true
		case "name":
			return []string{img.Name}, true
		case "description":
			return []string{img.Description}, true
		case "state":
			return []string{img.State}, true
		case "owner-id":
			return []string{img.OwnerID}, true
		case "architecture":
			return []string{img.Architecture}, true
		case "image-type":
			return []string{"machine"}, true
		case "is-public":
			return []string{strconv.FormatBool(img.Public)}, true
		case "root-device-type":
			return []string{"ebs"}, true
		case "root-device-name":
			return []string{img.RootDeviceName}, true
		case "virtualization-type":
			return []string{"hvm"}, true
		case "hypervisor":
			return []string{"kvm"}, true
		case "manifest-location":
			return []string{img.Location}, true
		case "platform-details":
			return []string{"Linux/UNIX"}, true
		}
		return tagField(img.Tags, name)
	}
}

// DescribeImages lists the images the caller can see.
func (s *Service) DescribeImages(ctx context.Context, c Caller, ids, owners []string, filters []Filter, pg Page) ([]model.Image, string, error) {
	for _, id := range ids {
		if !model.ValidID(model.PrefixImage, id) {
			return nil, "", model.Malformed(model.ResImage, id)
		}
	}
	if err := checkMaxResults(pg, 5, 1000, len(ids) > 0); err != nil {
		return nil, "", err
	}
	if err := checkFilters(filters, imageFields(&model.Image{})); err != nil {
		return nil, "", err
	}
	var imgs []model.Image
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if imgs, err = tx.ListImages(c.AccountID); err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		for i := range imgs {
			imgs[i].Tags = tags[imgs[i].ID]
		}
		return err
	})
	if err != nil {
		return nil, "", err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	kept := imgs[:0]
	for i := range imgs {
		img := &imgs[i]
		if img.State == "deregistered" || (len(ids) > 0 && !want[img.ID]) || !ownerMatch(c, img, owners) {
			continue
		}
		delete(want, img.ID)
		if matchFilters(filters, imageFields(img)) {
			kept = append(kept, *img)
		}
	}
	if len(want) > 0 {
		var missing []string
		for id := range want {
			missing = append(missing, id)
		}
		sort.Strings(missing)
		return nil, "", &model.Error{Kind: model.KindNotFound, Resource: model.ResImage, ID: missing[0],
			Msg: fmt.Sprintf("The image id '[%s]' does not exist", strings.Join(missing, ", "))}
	}
	sort.Slice(kept, func(a, b int) bool { return kept[a].ID < kept[b].ID })
	idList := make([]string, len(kept))
	for i := range kept {
		idList[i] = kept[i].ID
	}
	start, end, next, err := pageIDs(idList, pg)
	if err != nil {
		return nil, "", err
	}
	return kept[start:end], next, nil
}

func ownerMatch(c Caller, img *model.Image, owners []string) bool {
	if len(owners) == 0 {
		return true
	}
	for _, o := range owners {
		switch o {
		case "self":
			if img.OwnerID == c.AccountID {
				return true
			}
		case img.OwnerID:
			return true
		}
	}
	return false
}
