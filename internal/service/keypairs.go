package service

import (
	"context"
	"crypto/ed25519"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

var keyNameRE = regexp.MustCompile(`^[\x20-\x7e]{1,255}$`)

func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

func sha256Fingerprint(pub ssh.PublicKey) string {
	h := sha256.Sum256(pub.Marshal())
	return base64.StdEncoding.EncodeToString(h[:])
}

func checkKeyName(name string) error {
	if name == "" {
		return model.MissingParam("KeyName")
	}
	if !keyNameRE.MatchString(name) {
		return model.InvalidParam("KeyName", "Key names must be 1 to 255 printable ASCII characters")
	}
	return nil
}

// CreatedKey is a new key pair with its private half, shown once.
type CreatedKey struct {
	model.KeyPair
	Material string
}

// CreateKeyPair generates a key pair; the private key is returned, not kept.
func (s *Service) CreateKeyPair(ctx context.Context, c Caller, name, keyType, format string, tags []model.Tag) (CreatedKey, error) {
	if err := checkKeyName(name); err != nil {
		return CreatedKey{}, err
	}
	if format != "" && format != "pem" {
		return CreatedKey{}, model.InvalidParam("KeyFormat", "Key format '%s' is not supported; use pem", format)
	}
	if err := validateTags(tags); err != nil {
		return CreatedKey{}, err
	}
	var out CreatedKey
	switch keyType {
	case "", "rsa":
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return out, err
		}
		pub, err := ssh.NewPublicKey(&priv.PublicKey)
		if err != nil {
			return out, err
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return out, err
		}
		sum := sha1.Sum(pkcs8)
		out.Type, out.Fingerprint = "rsa", colonHex(sum[:])
		out.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		out.Material = strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})))
	case "ed25519":
		pubRaw, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return out, err
		}
		pub, err := ssh.NewPublicKey(pubRaw)
		if err != nil {
			return out, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			return out, err
		}
		out.Type, out.Fingerprint = "ed25519", sha256Fingerprint(pub)
		out.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		out.Material = strings.TrimSpace(string(pem.EncodeToMemory(block)))
	default:
		return out, model.InvalidParam("KeyType", "Key type '%s' is not supported; use rsa or ed25519", keyType)
	}
	out.ID, out.AccountID, out.Name, out.Created, out.Tags = model.NewID(model.PrefixKeyPair), c.AccountID, name, s.nowMS(), tags
	err := s.update(ctx, func(tx store.Tx) error {
		if err := tx.InsertKeyPair(out.KeyPair); err != nil {
			return err
		}
		return tx.SetTags(c.AccountID, out.ID, tags)
	})
	return out, err
}

// badPublicKey is EC2's InvalidKey.Format.
func badPublicKey(format string, args ...any) error {
	return model.Errorf(model.KindMalformed, model.ResPublicKey, "PublicKeyMaterial", format, args...)
}

// ParsePublicKey reads an OpenSSH public key (authorized_keys line) as
// ImportKeyPair accepts it, and returns its type and EC2 fingerprint.
func ParsePublicKey(material []byte) (pub ssh.PublicKey, typ, fingerprint string, err error) {
	if len(material) == 0 || len(material) > 16*1024 {
		return nil, "", "", badPublicKey("Key is not in valid OpenSSH public key format")
	}
	pub, _, _, _, perr := ssh.ParseAuthorizedKey(material)
	if perr != nil {
		return nil, "", "", badPublicKey("Key is not in valid OpenSSH public key format")
	}
	switch pub.Type() {
	case ssh.KeyAlgoRSA:
		cpk, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return nil, "", "", badPublicKey("Key is not in valid OpenSSH public key format")
		}
		if rk, ok := cpk.CryptoPublicKey().(*rsa.PublicKey); !ok || rk.N.BitLen() < 1024 || rk.N.BitLen() > 16384 {
			return nil, "", "", badPublicKey("RSA keys must be 1024 to 16384 bits")
		}
		sum := md5.Sum(pub.Marshal())
		return pub, "rsa", colonHex(sum[:]), nil
	case ssh.KeyAlgoED25519:
		return pub, "ed25519", sha256Fingerprint(pub), nil
	}
	return nil, "", "", badPublicKey("Key type %s is not supported; use rsa or ed25519", pub.Type())
}

// ImportKeyPair registers a public key.
func (s *Service) ImportKeyPair(ctx context.Context, c Caller, name string, material []byte, tags []model.Tag) (model.KeyPair, error) {
	if err := checkKeyName(name); err != nil {
		return model.KeyPair{}, err
	}
	if err := validateTags(tags); err != nil {
		return model.KeyPair{}, err
	}
	pub, typ, fp, err := ParsePublicKey(material)
	if err != nil {
		return model.KeyPair{}, err
	}
	k := model.KeyPair{ID: model.NewID(model.PrefixKeyPair), AccountID: c.AccountID, Name: name, Type: typ,
		Fingerprint: fp, PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), Created: s.nowMS(), Tags: tags}
	err = s.update(ctx, func(tx store.Tx) error {
		if err := tx.InsertKeyPair(k); err != nil {
			return err
		}
		return tx.SetTags(c.AccountID, k.ID, tags)
	})
	return k, err
}

func keyFields(k *model.KeyPair) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "key-name":
			return []string{k.Name}, true
		case "key-pair-id":
			return []string{k.ID}, true
		case "fingerprint":
			return []string{k.Fingerprint}, true
		case "key-type":
			return []string{k.Type}, true
		}
		return tagField(k.Tags, name)
	}
}

// DescribeKeyPairs lists key pairs by name, ID and filters.
func (s *Service) DescribeKeyPairs(ctx context.Context, c Caller, names, ids []string, filters []Filter) ([]model.KeyPair, error) {
	if err := checkFilters(filters, keyFields(&model.KeyPair{})); err != nil {
		return nil, err
	}
	var keys []model.KeyPair
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if keys, err = tx.ListKeyPairs(c.AccountID); err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		for i := range keys {
			keys[i].Tags = tags[keys[i].ID]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	byName, byID := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		byName[n] = true
	}
	for _, id := range ids {
		byID[id] = true
	}
	var out []model.KeyPair
	for i := range keys {
		k := &keys[i]
		if (len(names) > 0 && !byName[k.Name]) || (len(ids) > 0 && !byID[k.ID]) {
			continue
		}
		delete(byName, k.Name)
		delete(byID, k.ID)
		if matchFilters(filters, keyFields(k)) {
			out = append(out, *k)
		}
	}
	for _, m := range []struct {
		what string
		set  map[string]bool
	}{{"key pair", byName}, {"key pair ID", byID}} {
		if len(m.set) > 0 {
			var list []string
			for k := range m.set {
				list = append(list, k)
			}
			sort.Strings(list)
			return nil, &model.Error{Kind: model.KindNotFound, Resource: model.ResKeyPair, ID: list[0],
				Msg: fmt.Sprintf("The %s '%s' does not exist", m.what, strings.Join(list, "', '"))}
		}
	}
	return out, nil
}

// DeleteKeyPair deletes a key pair by name or ID. Like EC2, deleting a name
// that does not exist succeeds.
func (s *Service) DeleteKeyPair(ctx context.Context, c Caller, name, id string) (string, error) {
	if name == "" && id == "" {
		return "", model.MissingParam("KeyName")
	}
	var deleted string
	err := s.update(ctx, func(tx store.Tx) error {
		keys, err := tx.ListKeyPairs(c.AccountID)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if (name != "" && k.Name == name) || (id != "" && k.ID == id) {
				deleted = k.ID
				return tx.DeleteKeyPair(c.AccountID, k.ID)
			}
		}
		if id != "" {
			return model.Errorf(model.KindNotFound, model.ResKeyPair, id, "The key pair ID '%s' does not exist", id)
		}
		return nil
	})
	return deleted, err
}

// KeyPairByName returns a key pair of the caller's account.
func (s *Service) KeyPairByName(ctx context.Context, accountID, name string) (model.KeyPair, error) {
	var k model.KeyPair
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		k, err = tx.GetKeyPair(accountID, name)
		return err
	})
	return k, err
}
