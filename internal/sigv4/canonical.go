package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"sort"
	"strings"
	"time"
)

const (
	algorithm       = "AWS4-HMAC-SHA256"
	timeFormat      = "20060102T150405Z"
	dateFormat      = "20060102"
	terminator      = "aws4_request"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// emptyHash is the hex SHA-256 of an empty payload.
	emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// hashHex returns the lower-case hex SHA-256 of b.
func hashHex(b []byte) string {
	if len(b) == 0 {
		return emptyHash
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives the key for one day, region and service.
func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, terminator)
}

// scope is the credential scope: date/region/service/aws4_request.
func scope(date, region, service string) string {
	return date + "/" + region + "/" + service + "/" + terminator
}

// stringToSign joins the algorithm, timestamp, scope and the hash of the
// canonical request.
func stringToSign(t time.Time, credScope, canonicalRequest string) string {
	return algorithm + "\n" + t.UTC().Format(timeFormat) + "\n" + credScope + "\n" +
		hashHex([]byte(canonicalRequest))
}

// canonicalRequest joins the six parts of a canonical request.
func canonicalRequest(method, uri, query, headers, signedHeaders, payloadHash string) string {
	var b strings.Builder
	b.Grow(len(method) + len(uri) + len(query) + len(headers) + len(signedHeaders) + len(payloadHash) + 5)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(query)
	b.WriteByte('\n')
	b.WriteString(headers)
	b.WriteByte('\n')
	b.WriteString(signedHeaders)
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// unreserved reports whether c is in RFC 3986's unreserved set, the only
// bytes SigV4 leaves unencoded.
func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// encode percent-encodes every byte of s outside the unreserved set (and
// outside keep), with upper-case hex digits.
func encode(s string, keep byte) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) && s[i] != keep {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) || c == keep {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return string(b)
}

// normalizePath removes empty, "." and ".." segments from a path, keeping a
// trailing slash, the way AWS does for services other than S3.
func normalizePath(p string) string {
	if p == "/" || p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return "/"
	}
	res := "/" + strings.Join(out, "/")
	if strings.HasSuffix(p, "/") {
		res += "/"
	}
	return res
}

// canonicalURI turns the path as it appears on the request line (already
// percent-encoded by the client) into the canonical URI: normalised when
// normalize is set, then encoded again, '/' excepted. Encoding the wire form
// a second time is what "double encoding" means for non-S3 services.
func canonicalURI(rawPath string, normalize bool) string {
	if rawPath == "" {
		return "/"
	}
	if normalize {
		rawPath = normalizePath(rawPath)
	}
	return encode(rawPath, '/')
}

// param is one decoded query parameter.
type param struct{ key, value string }

// parseQuery splits a raw query string into decoded parameters, in order.
// '+' decodes to a space, as in HTML forms and Go's url.ParseQuery. It
// fails on invalid percent-encoding.
func parseQuery(raw string) ([]param, error) {
	if raw == "" {
		return nil, nil
	}
	ps := make([]param, 0, strings.Count(raw, "&")+1)
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		v, err = url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		ps = append(ps, param{k, v})
	}
	return ps, nil
}

// canonicalQuery encodes the parameters, leaving out any named skip, and
// sorts them by encoded name, then encoded value.
func canonicalQuery(ps []param, skip string) string {
	enc := make([]param, 0, len(ps))
	size := 0
	for _, p := range ps {
		if skip != "" && p.key == skip {
			continue
		}
		e := param{encode(p.key, 0), encode(p.value, 0)}
		size += len(e.key) + len(e.value) + 2
		enc = append(enc, e)
	}
	sort.Slice(enc, func(i, j int) bool {
		if enc[i].key != enc[j].key {
			return enc[i].key < enc[j].key
		}
		return enc[i].value < enc[j].value
	})
	var b strings.Builder
	b.Grow(size)
	for i, p := range enc {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String()
}

// canonicalValue trims each value, collapses inner runs of spaces and joins
// multiple values with commas.
func canonicalValue(b *strings.Builder, values []string) {
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		v = strings.Trim(v, " \t")
		space := false
		for j := 0; j < len(v); j++ {
			c := v[j]
			if c == ' ' {
				if space {
					continue
				}
				space = true
			} else {
				space = false
			}
			b.WriteByte(c)
		}
	}
}

// canonicalHeaders writes "name:value\n" for each signed header name, in
// the order given, taking values from get. It returns the name of the first
// header get does not have.
func canonicalHeaders(names []string, get func(name string) ([]string, bool)) (string, string) {
	var b strings.Builder
	for _, name := range names {
		values, ok := get(name)
		if !ok {
			return "", name
		}
		b.WriteString(name)
		b.WriteByte(':')
		canonicalValue(&b, values)
		b.WriteByte('\n')
	}
	return b.String(), ""
}
