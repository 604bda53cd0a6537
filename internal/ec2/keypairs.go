package ec2

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/service"
)

type createKeyPairResponse struct {
	Meta
	KeyName        string       `xml:"keyName"`
	KeyFingerprint string       `xml:"keyFingerprint"`
	KeyMaterial    string       `xml:"keyMaterial,omitempty"`
	KeyPairID      string       `xml:"keyPairId"`
	TagSet         List[TagXML] `xml:"tagSet"`
}

type keyPairXML struct {
	KeyPairID      string       `xml:"keyPairId"`
	KeyName        string       `xml:"keyName"`
	KeyFingerprint string       `xml:"keyFingerprint"`
	KeyType        string       `xml:"keyType"`
	TagSet         List[TagXML] `xml:"tagSet"`
	PublicKey      string       `xml:"publicKey,omitempty"`
	CreateTime     Time         `xml:"createTime"`
}

type describeKeyPairsResponse struct {
	Meta
	KeySet List[keyPairXML] `xml:"keySet"`
}

type deleteKeyPairResponse struct {
	Meta
	Return    bool   `xml:"return"`
	KeyPairID string `xml:"keyPairId,omitempty"`
}

func (h *Handler) registerKeyPairs() {
	h.actions["CreateKeyPair"] = h.createKeyPair
	h.actions["ImportKeyPair"] = h.importKeyPair
	h.actions["DescribeKeyPairs"] = h.describeKeyPairs
	h.actions["DeleteKeyPair"] = h.deleteKeyPair
}

func (h *Handler) createKeyPair(p *Params) (exec, error) {
	name, err := p.Required("KeyName")
	if err != nil {
		return nil, err
	}
	typ, format := p.Str("KeyType"), p.Str("KeyFormat")
	tags, err := p.TagSpecifications("key-pair")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		k, err := h.svc.CreateKeyPair(ctx, c, name, typ, format, tags)
		if err != nil {
			return nil, err
		}
		return &createKeyPairResponse{KeyName: k.Name, KeyFingerprint: k.Fingerprint, KeyMaterial: k.Material,
			KeyPairID: k.ID, TagSet: tagsXML(k.Tags)}, nil
	}, nil
}

func (h *Handler) importKeyPair(p *Params) (exec, error) {
	name, err := p.Required("KeyName")
	if err != nil {
		return nil, err
	}
	if _, err := p.Required("PublicKeyMaterial"); err != nil {
		return nil, err
	}
	material, err := p.Base64("PublicKeyMaterial")
	if err != nil {
		return nil, err
	}
	tags, err := p.TagSpecifications("key-pair")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		k, err := h.svc.ImportKeyPair(ctx, c, name, material, tags)
		if err != nil {
			return nil, err
		}
		return &createKeyPairResponse{KeyName: k.Name, KeyFingerprint: k.Fingerprint, KeyPairID: k.ID, TagSet: tagsXML(k.Tags)}, nil
	}, nil
}

func (h *Handler) describeKeyPairs(p *Params) (exec, error) {
	names, err := p.List("KeyName")
	if err != nil {
		return nil, err
	}
	ids, err := p.List("KeyPairId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	withPub, err := p.Bool("IncludePublicKey")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		keys, err := h.svc.DescribeKeyPairs(ctx, c, names, ids, filters)
		if err != nil {
			return nil, err
		}
		out := &describeKeyPairsResponse{KeySet: List[keyPairXML]{}}
		for _, k := range keys {
			x := keyPairXML{KeyPairID: k.ID, KeyName: k.Name, KeyFingerprint: k.Fingerprint, KeyType: k.Type,
				TagSet: tagsXML(k.Tags), CreateTime: Time(k.Created)}
			if withPub {
				x.PublicKey = k.PublicKey
			}
			out.KeySet = append(out.KeySet, x)
		}
		return out, nil
	}, nil
}

func (h *Handler) deleteKeyPair(p *Params) (exec, error) {
	name, id := p.Str("KeyName"), p.Str("KeyPairId")
	return func(ctx context.Context, c service.Caller) (response, error) {
		deleted, err := h.svc.DeleteKeyPair(ctx, c, name, id)
		if err != nil {
			return nil, err
		}
		return &deleteKeyPairResponse{Return: true, KeyPairID: deleted}, nil
	}, nil
}
