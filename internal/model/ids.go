package model

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// ID prefixes, as AWS shapes them.
const (
	PrefixInstance    = "i-"
	PrefixImage       = "ami-"
	PrefixReservation = "r-"
	PrefixKeyPair     = "key-"
	PrefixNode        = "node-"
	PrefixVPC         = "vpc-"
	PrefixSubnet      = "subnet-"
	PrefixENI         = "eni-"
)

// NewID returns prefix + 17 random lower-case hex digits, the shape of
// modern AWS IDs ("i-0123456789abcdef0").
func NewID(prefix string) string {
	var b [9]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return prefix + hex.EncodeToString(b[:])[:17]
}

// ValidID reports whether id is prefix followed by 8 or 17 lower-case hex
// digits (AWS accepts both the old and the long form).
func ValidID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || (len(rest) != 8 && len(rest) != 17) {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ResourceOf names the resource type of an ID by its prefix ("" if unknown).
func ResourceOf(id string) string {
	switch {
	case strings.HasPrefix(id, PrefixInstance):
		return ResInstance
	case strings.HasPrefix(id, PrefixImage):
		return ResImage
	case strings.HasPrefix(id, PrefixKeyPair):
		return ResKeyPair
	case strings.HasPrefix(id, "sg-"):
		return ResGroup
	case strings.HasPrefix(id, "sgr-"):
		return ResRule
	case strings.HasPrefix(id, PrefixVPC):
		return ResVPC
	case strings.HasPrefix(id, PrefixSubnet):
		return ResSubnet
	}
	return ""
}
