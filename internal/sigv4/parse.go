package sigv4

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// credential is the parsed Credential value: AKID/date/region/service/aws4_request.
type credential struct {
	accessKeyID, date, region, service string
}

// signed is what a request claims about its signature, from either the
// Authorization header or the presigned query parameters.
type signed struct {
	cred          credential
	signedHeaders []string
	headerList    string // the SignedHeaders value as sent
	signature     string
	at            time.Time
	expires       time.Duration // presigned only
	token         string
}

// parseAuthorization parses "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(h string) (signed, *Error) {
	var s signed
	h = strings.TrimSpace(h)
	alg, rest, _ := strings.Cut(h, " ")
	if alg != algorithm {
		return s, newError(ErrUnsupportedAlgorithm,
			"Unsupported authorization scheme %s: only %s (Signature Version 4) is accepted.", quote(alg), algorithm)
	}
	var cred, headers, sig string
	var seen [3]bool
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		var i int
		switch k {
		case "Credential":
			i, cred = 0, v
		case "SignedHeaders":
			i, headers = 1, v
		case "Signature":
			i, sig = 2, v
		default:
			return s, newError(ErrMalformed, "Authorization header has an unexpected element %s.", quote(k))
		}
		if !ok || seen[i] {
			return s, newError(ErrMalformed, "Authorization header element %s is empty or repeated.", quote(k))
		}
		seen[i] = true
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return s, newError(ErrMalformed,
			"Authorization header must contain Credential, SignedHeaders and Signature, separated by commas.")
	}
	return fillSigned(cred, headers, sig)
}

// fillSigned parses the three values both forms of signing share.
func fillSigned(cred, headers, sig string) (signed, *Error) {
	s := signed{headerList: headers, signature: sig}
	var err *Error
	if s.cred, err = parseCredential(cred); err != nil {
		return s, err
	}
	if s.signedHeaders, err = parseSignedHeaders(headers); err != nil {
		return s, err
	}
	if !validSignature(sig) {
		return s, newError(ErrMalformed, "Signature must be 64 lower-case hexadecimal digits.")
	}
	return s, nil
}

func parseCredential(v string) (credential, *Error) {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return credential{}, newError(ErrMalformed,
			"Credential %s is not of the form ACCESS_KEY_ID/YYYYMMDD/region/service/aws4_request.", quote(v))
	}
	if _, err := time.Parse(dateFormat, parts[1]); err != nil || len(parts[1]) != len(dateFormat) {
		return credential{}, newError(ErrMalformed, "Credential date %s is not of the form YYYYMMDD.", quote(parts[1]))
	}
	if parts[4] != terminator {
		return credential{}, newError(ErrMalformed, "Credential must end with %q, not %s.", terminator, quote(parts[4]))
	}
	return credential{accessKeyID: parts[0], date: parts[1], region: parts[2], service: parts[3]}, nil
}

// parseSignedHeaders splits the SignedHeaders list, which must name Host
// and hold only distinct lower-case names.
func parseSignedHeaders(v string) ([]string, *Error) {
	names := strings.Split(v, ";")
	host := false
	for i, n := range names {
		if n == "" || strings.ToLower(n) != n || strings.ContainsAny(n, " \t:,") {
			return nil, newError(ErrMalformed,
				"SignedHeaders %s must be a list of lower-case header names separated by ';'.", quote(v))
		}
		for _, m := range names[:i] {
			if m == n {
				return nil, newError(ErrMalformed, "SignedHeaders names %s twice.", quote(n))
			}
		}
		switch n {
		case "host":
			host = true
		case "authorization":
			return nil, newError(ErrMalformed, "SignedHeaders cannot include the Authorization header.")
		}
	}
	if !host {
		return nil, newError(ErrMalformed, "The Host header must be signed: add 'host' to SignedHeaders.")
	}
	return names, nil
}

func validSignature(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// requestTarget returns the path and query as the client sent them. On a
// server the request line (RequestURI) is the authority: it is what the
// client signed, even when middleware has since rewritten r.URL. A request
// built by a client has no RequestURI; its URL is what goes on the wire.
func requestTarget(r *http.Request) (path, query string) {
	if u := r.RequestURI; u != "" && u != "*" {
		if !strings.HasPrefix(u, "/") {
			// absolute-form, as sent to proxies: scheme://authority/path?query
			if _, rest, ok := strings.Cut(u, "://"); ok {
				if i := strings.IndexAny(rest, "/?"); i >= 0 {
					u = rest[i:]
				} else {
					u = ""
				}
			}
		}
		path, query, _ = strings.Cut(u, "?")
		if path == "" {
			path = "/"
		}
		return path, query
	}
	if r.URL == nil {
		return "/", ""
	}
	path = r.URL.EscapedPath()
	if op := r.URL.Opaque; op != "" {
		// "//host/path" or a raw path the caller wants sent as is.
		path = op
		if strings.HasPrefix(op, "//") {
			if i := strings.Index(op[2:], "/"); i >= 0 {
				path = op[2+i:]
			} else {
				path = "/"
			}
		}
	}
	if path == "" {
		path = "/"
	}
	return path, r.URL.RawQuery
}

// headerGetter returns the values of a lower-case header name as the server
// sees them. Host comes from r.Host; Content-Length from r.ContentLength
// when the header map lacks it, as on requests built by a client.
func headerGetter(r *http.Request) func(string) ([]string, bool) {
	return func(name string) ([]string, bool) {
		if name == "host" {
			h := r.Host
			if h == "" && r.URL != nil {
				h = r.URL.Host
			}
			return []string{h}, h != ""
		}
		if v, ok := r.Header[textproto.CanonicalMIMEHeaderKey(name)]; ok {
			return v, true
		}
		for k, v := range r.Header {
			if strings.EqualFold(k, name) {
				return v, true
			}
		}
		if name == "content-length" && r.ContentLength > 0 {
			return []string{strconv.FormatInt(r.ContentLength, 10)}, true
		}
		return nil, false
	}
}
