package service

import (
	"context"
	"sort"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// MaxTags is the most tags one resource may carry.
const MaxTags = 50

func validateTags(tags []model.Tag) error {
	if len(tags) > MaxTags {
		return model.Errorf(model.KindLimitExceeded, model.ResTag, "", "The maximum number of tags per resource is %d", MaxTags)
	}
	seen := map[string]bool{}
	for _, t := range tags {
		switch {
		case t.Key == "":
			return model.InvalidParam("Tag.Key", "Tag keys must not be empty")
		case len([]rune(t.Key)) > 128:
			return model.InvalidParam("Tag.Key", "Tag key exceeds the maximum length of 128 characters")
		case len([]rune(t.Value)) > 256:
			return model.InvalidParam("Tag.Value", "Tag value exceeds the maximum length of 256 characters")
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			return model.InvalidParam("Tag.Key", "Tag keys starting with 'aws:' are reserved for internal use")
		case seen[t.Key]:
			return model.InvalidParam("Tag.Key", "Duplicate tag key '%s'", t.Key)
		}
		seen[t.Key] = true
	}
	return nil
}

// resourceType is the EC2 resource-type name of an ID.
func resourceType(id string) string {
	switch model.ResourceOf(id) {
	case model.ResInstance:
		return "instance"
	case model.ResImage:
		return "image"
	case model.ResKeyPair:
		return "key-pair"
	case model.ResGroup:
		return "security-group"
	case model.ResRule:
		return "security-group-rule"
	case model.ResVPC:
		return "vpc"
	case model.ResSubnet:
		return "subnet"
	}
	return ""
}

// checkTaggable verifies the caller owns every resource.
func (s *Service) checkTaggable(tx store.Tx, c Caller, ids []string) error {
	var keys map[string]bool
	for _, id := range ids {
		switch model.ResourceOf(id) {
		case model.ResInstance:
			if _, err := loadOwned(tx, c, []string{id}); err != nil {
				return err
			}
		case model.ResImage:
			img, err := tx.GetImage(id)
			if err != nil || img.OwnerID != c.AccountID || img.State == "deregistered" {
				return model.NotFound(model.ResImage, id)
			}
		case model.ResKeyPair:
			if keys == nil {
				kps, err := tx.ListKeyPairs(c.AccountID)
				if err != nil {
					return err
				}
				keys = map[string]bool{}
				for _, k := range kps {
					keys[k.ID] = true
				}
			}
			if !keys[id] {
				return model.Errorf(model.KindNotFound, model.ResKeyPair, id, "The key pair ID '%s' does not exist", id)
			}
		case model.ResGroup:
			if g, err := tx.GetGroup(id); err != nil || g.AccountID != c.AccountID {
				return model.Errorf(model.KindNotFound, model.ResGroup, id, "The security group '%s' does not exist", id)
			}
		case model.ResVPC:
			if v, err := tx.GetVPC(id); err != nil || v.AccountID != c.AccountID {
				return model.Errorf(model.KindNotFound, model.ResVPC, id, "The vpc ID '%s' does not exist", id)
			}
		case model.ResSubnet:
			if sn, err := tx.GetSubnet(id); err != nil || sn.AccountID != c.AccountID {
				return model.Errorf(model.KindNotFound, model.ResSubnet, id, "The subnet ID '%s' does not exist", id)
			}
		case model.ResRule:
			rules, err := tx.Rules(c.AccountID, nil)
			if err != nil {
				return err
			}
			found := false
			for _, r := range rules {
				found = found || r.ID == id
			}
			if !found {
				return model.Errorf(model.KindNotFound, model.ResRule, id, "The security group rule ID '%s' does not exist", id)
			}
		default:
			return model.Errorf(model.KindMalformed, model.ResTag, id, "Invalid id: \"%s\"", id)
		}
	}
	return nil
}

// CreateTags adds or overwrites tags on resources.
func (s *Service) CreateTags(ctx context.Context, c Caller, ids []string, tags []model.Tag) error {
	if len(ids) == 0 {
		return model.MissingParam("ResourceId")
	}
	if len(tags) == 0 {
		return model.MissingParam("Tag")
	}
	if err := validateTags(tags); err != nil {
		return err
	}
	return s.update(ctx, func(tx store.Tx) error {
		if err := s.checkTaggable(tx, c, ids); err != nil {
			return err
		}
		existing, err := tx.Tags(c.AccountID, ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			keys := map[string]bool{}
			for _, t := range existing[id] {
				keys[t.Key] = true
			}
			for _, t := range tags {
				keys[t.Key] = true
			}
			if len(keys) > MaxTags {
				return model.Errorf(model.KindLimitExceeded, model.ResTag, id, "The maximum number of tags per resource (%d) would be exceeded for '%s'", MaxTags, id)
			}
			if err := tx.SetTags(c.AccountID, id, tags); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteTags removes tags; nil matches removes every tag.
func (s *Service) DeleteTags(ctx context.Context, c Caller, ids []string, matches []store.TagMatch) error {
	if len(ids) == 0 {
		return model.MissingParam("ResourceId")
	}
	return s.update(ctx, func(tx store.Tx) error {
		if err := s.checkTaggable(tx, c, ids); err != nil {
			return err
		}
		for _, id := range ids {
			if err := tx.DeleteTags(id, matches); err != nil {
				return err
			}
		}
		return nil
	})
}

// TagDescription is one row of DescribeTags.
type TagDescription struct {
	ResourceID   string
	ResourceType string
	Key          string
	Value        string
}

func tagDescFields(t *TagDescription) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "key", "tag-key":
			return []string{t.Key}, true
		case "value", "tag-value":
			return []string{t.Value}, true
		case "resource-id":
			return []string{t.ResourceID}, true
		case "resource-type":
			return []string{t.ResourceType}, true
		}
		if k, ok := strings.CutPrefix(name, "tag:"); ok {
			if k == t.Key {
				return []string{t.Value}, true
			}
			return nil, true
		}
		return nil, false
	}
}

// DescribeTags lists the caller's tags.
func (s *Service) DescribeTags(ctx context.Context, c Caller, filters []Filter, pg Page) ([]TagDescription, string, error) {
	if err := checkMaxResults(pg, 5, 1000, false); err != nil {
		return nil, "", err
	}
	if err := checkFilters(filters, tagDescFields(&TagDescription{})); err != nil {
		return nil, "", err
	}
	var all map[string][]model.Tag
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		all, err = tx.Tags(c.AccountID, nil)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	var rows []TagDescription
	for id, tags := range all {
		for _, t := range tags {
			d := TagDescription{ResourceID: id, ResourceType: resourceType(id), Key: t.Key, Value: t.Value}
			if matchFilters(filters, tagDescFields(&d)) {
				rows = append(rows, d)
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].ResourceID != rows[j].ResourceID {
			return rows[i].ResourceID < rows[j].ResourceID
		}
		return rows[i].Key < rows[j].Key
	})
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = r.ResourceID + "\x00" + r.Key
	}
	start, end, next, err := pageIDs(keys, pg)
	if err != nil {
		return nil, "", err
	}
	return rows[start:end], next, nil
}
