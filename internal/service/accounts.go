package service

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"sync"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// AdminAccountName is the account created at first start.
const AdminAccountName = "admin"

// EnsureAdmin creates the admin account and its first access key at first
// start and returns that key; later starts return the same key.
func (s *Service) EnsureAdmin(ctx context.Context) (model.AccessKey, error) {
	var key model.AccessKey
	err := s.update(ctx, func(tx store.Tx) error {
		acct, err := tx.GetAccountByName(AdminAccountName)
		if errors.Is(err, model.ErrNotFound) {
			acct = model.Account{ID: randomDigits(12), Name: AdminAccountName, Created: s.nowMS()}
			err = tx.CreateAccount(acct)
		}
		if err != nil {
			return err
		}
		keys, err := tx.AccessKeys(acct.ID)
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			key = keys[0]
			return nil
		}
		key = model.AccessKey{
			ID:        "AKIA" + randomString(16, upperAlnum),
			Secret:    randomString(40, secretChars),
			AccountID: acct.ID,
			Created:   s.nowMS(),
		}
		return tx.CreateAccessKey(key)
	})
	return key, err
}

// keyCache remembers access keys; keys are never modified, only added.
type keyCache struct {
	m sync.Map // id -> model.AccessKey
}

// LookupKey returns the secret and account of an access key.
func (s *Service) LookupKey(ctx context.Context, id string) (model.AccessKey, error) {
	if v, ok := s.keys.m.Load(id); ok {
		return v.(model.AccessKey), nil
	}
	var k model.AccessKey
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		k, err = tx.GetAccessKey(id)
		return err
	})
	if err != nil {
		return k, err
	}
	s.keys.m.Store(id, k)
	return k, nil
}

const (
	upperAlnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	secretChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	digits      = "0123456789"
)

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

func randomDigits(n int) string {
	s := randomString(n, digits)
	if s[0] == '0' {
		s = "1" + s[1:]
	}
	return s
}
