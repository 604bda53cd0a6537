package metadata

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// Tokens are stateless: version (1 byte) | expiry, Unix seconds (8) |
// HMAC-SHA256 over those, the instance ID and its mark, cut to 16 bytes;
// base64url. A token is only good for the instance (and the port) it was
// issued to, until it expires or the node's service restarts (a new key:
// clients get 401 and take a new token, as they do when one expires).
const (
	tokenVersion = 1
	tokenMACLen  = 16
	tokenRawLen  = 1 + 8 + tokenMACLen
	tokenMaxLen  = 64 // longer strings are not even decoded
	maxTokenTTL  = 21600
)

func (s *Server) tokenMAC(head []byte, id string, mark uint32) []byte {
	m := hmac.New(sha256.New, s.key[:])
	m.Write(head)
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(binary.BigEndian.AppendUint32(nil, mark))
	return m.Sum(nil)[:tokenMACLen]
}

// issue returns a token for e valid for ttl.
func (s *Server) issue(e *entry, ttl time.Duration) string {
	head := []byte{tokenVersion}
	head = binary.BigEndian.AppendUint64(head, uint64(s.now().Add(ttl).Unix()))
	return base64.RawURLEncoding.EncodeToString(append(head, s.tokenMAC(head, e.id, e.mark)...))
}

// valid reports whether tok was issued to e and has not expired.
func (s *Server) valid(tok string, e *entry) bool {
	if len(tok) == 0 || len(tok) > tokenMaxLen {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != tokenRawLen || raw[0] != tokenVersion {
		return false
	}
	head, mac := raw[:9], raw[9:]
	if !hmac.Equal(mac, s.tokenMAC(head, e.id, e.mark)) {
		return false
	}
	exp := int64(binary.BigEndian.Uint64(head[1:9]))
	return s.now().Unix() < exp
}
