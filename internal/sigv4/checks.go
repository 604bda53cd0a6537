package sigv4

import (
	"crypto/hmac"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"time"
)

// checkScope compares the credential scope with the request date and the
// regions and services this verifier serves.
func (v *Verifier) checkScope(s signed) *Error {
	if d := s.at.Format(dateFormat); s.cred.date != d {
		return newError(ErrMalformed, "Credential date %s does not match the request date %s.", quote(s.cred.date), d)
	}
	services := v.AllowedServices
	if len(services) == 0 {
		services = []string{defaultService}
	}
	if !slices.Contains(services, s.cred.service) {
		return newError(ErrWrongScope, "Credential should be scoped to service %q, not %s.", services[0], quote(s.cred.service))
	}
	if len(v.Regions) > 0 && !slices.Contains(v.Regions, s.cred.region) {
		return newError(ErrWrongScope, "Credential should be scoped to region %q, not %s.", v.Regions[0], quote(s.cred.region))
	}
	return nil
}

// checkTime rejects requests dated too far from now and presigned URLs
// past their expiry.
func (v *Verifier) checkTime(s signed, presigned bool) *Error {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	skew := v.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	at := s.at.Format(timeFormat)
	switch {
	case s.at.After(now.Add(skew)):
		return newError(ErrExpired, "Request has expired: it is dated %s, more than %s after the server time %s.",
			at, skew, now.UTC().Format(timeFormat))
	case presigned && now.After(s.at.Add(s.expires)):
		return newError(ErrExpired, "Request has expired: the presigned URL dated %s expired after %s.", at, s.expires)
	case !presigned && s.at.Before(now.Add(-skew)):
		return newError(ErrExpired, "Request has expired: it is dated %s, more than %s before the server time %s.",
			at, skew, now.UTC().Format(timeFormat))
	}
	return nil
}

// payloadHashes returns the payload hashes to try, best first.
// With stream set the body is unknown and a declared hash is taken as is.
func (v *Verifier) payloadHashes(r *http.Request, body []byte, presigned, stream bool) ([]string, *Error) {
	declared := r.Header.Values("X-Amz-Content-Sha256")
	switch {
	case len(declared) > 1:
		return nil, newError(ErrMalformed, "The request has more than one X-Amz-Content-Sha256 header.")
	case len(declared) == 0:
		if presigned && len(body) == 0 {
			// S3-style presigners sign UNSIGNED-PAYLOAD instead.
			return []string{emptyHash, unsignedPayload}, nil
		}
		if stream {
			return nil, newError(ErrMalformed, "This request must declare its payload hash in X-Amz-Content-Sha256.")
		}
		return []string{hashHex(body)}, nil
	}
	switch d := declared[0]; {
	case d == unsignedPayload:
		if len(body) > 0 && !v.AllowUnsignedPayload {
			return nil, newError(ErrMalformed, "This service needs the body signed: X-Amz-Content-Sha256 cannot be %s.", unsignedPayload)
		}
		return []string{unsignedPayload}, nil
	case strings.HasPrefix(d, "STREAMING-"):
		return nil, newError(ErrMalformed, "Streaming (chunked) payload signing is not supported.")
	case !validSignature(d):
		return nil, newError(ErrMalformed, "X-Amz-Content-Sha256 must be 64 lower-case hexadecimal digits or %s.", unsignedPayload)
	case !stream && d != hashHex(body):
		return nil, newError(ErrSignatureMismatch, "X-Amz-Content-Sha256 is not the SHA-256 of the request body.")
	default:
		return []string{d}, nil
	}
}

// match recomputes the signature and compares it, in constant time, with
// the one sent. It tries the normalised path first and, when normalising
// changed it, the path as sent: AWS normalises, but some SDKs (Go's among
// them) sign the path as it is.
func match(r *http.Request, s signed, secret, path string, params []param, payloads []string, presigned bool) (string, *Error) {
	headers, absent := canonicalHeaders(s.signedHeaders, headerGetter(r))
	if absent != "" {
		return "", newError(ErrSignatureMismatch, "Signed header %s is not in the request.", quote(absent))
	}
	skip := ""
	if presigned {
		skip = "X-Amz-Signature"
	}
	query := canonicalQuery(params, skip)
	uris := []string{canonicalURI(path, true)}
	if raw := canonicalURI(path, false); raw != uris[0] {
		uris = append(uris, raw)
	}
	want, _ := hex.DecodeString(s.signature) // checked by validSignature
	credScope := scope(s.cred.date, s.cred.region, s.cred.service)
	key := signingKey(secret, s.cred.date, s.cred.region, s.cred.service)
	var first *Error
	for _, uri := range uris {
		for _, payload := range payloads {
			creq := canonicalRequest(method(r), uri, query, headers, s.headerList, payload)
			sts := stringToSign(s.at, credScope, creq)
			if hmac.Equal(hmacSHA256(key, sts), want) {
				return payload, nil
			}
			if first == nil {
				first = newError(ErrSignatureMismatch,
					"The request signature does not match the signature computed with the secret key of %s. "+
						"Check the secret key and the signing method.", quote(s.cred.accessKeyID))
				first.CanonicalRequest, first.StringToSign = creq, sts
			}
		}
	}
	return "", first
}
