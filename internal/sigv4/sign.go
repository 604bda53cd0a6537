package sigv4

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sign signs r in place with an Authorization header, the way the AWS SDKs
// do: it sets X-Amz-Date (and X-Amz-Security-Token for temporary
// credentials) and signs Host and every other header already on r except
// those proxies and HTTP libraries add or rewrite (User-Agent, Expect,
// hop-by-hop headers). body is the exact payload r will send. Sign sets
// r.Host to the host it signed, without a default port.
func Sign(r *http.Request, body []byte, creds Credentials, region, service string, t time.Time) error {
	return SignHash(r, hashHex(body), creds, region, service, t)
}

// SignHash is Sign for a payload given by its lower-case hex SHA-256, for
// bodies the caller streams rather than holds in memory.
func SignHash(r *http.Request, payloadHash string, creds Credentials, region, service string, t time.Time) error {
	if _, err := prepare(r, creds, region, service); err != nil {
		return err
	}
	if payloadHash != unsignedPayload && !validSignature(payloadHash) {
		return errors.New("sigv4: payload hash must be 64 lower-case hexadecimal digits")
	}
	t = t.UTC()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Del("Authorization")
	r.Header.Set("X-Amz-Date", t.Format(timeFormat))
	if creds.SessionToken != "" {
		r.Header.Set("X-Amz-Security-Token", creds.SessionToken)
	} else {
		r.Header.Del("X-Amz-Security-Token")
	}
	names := []string{"host"}
	for k := range r.Header {
		if n := strings.ToLower(k); !unsignedHeader(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	path, rawQuery := requestTarget(r)
	params, err := parseQuery(rawQuery)
	if err != nil {
		return fmt.Errorf("sigv4: query string: %w", err)
	}
	headers, _ := canonicalHeaders(names, headerGetter(r))
	list := strings.Join(names, ";")
	creq := canonicalRequest(method(r), canonicalURI(path, true), canonicalQuery(params, ""), headers, list, payloadHash)
	date := t.Format(dateFormat)
	credScope := scope(date, region, service)
	sig := hex.EncodeToString(hmacSHA256(signingKey(creds.SecretAccessKey, date, region, service),
		stringToSign(t, credScope, creq)))
	r.Header.Set("Authorization", algorithm+" Credential="+creds.AccessKeyID+"/"+credScope+
		", SignedHeaders="+list+", Signature="+sig)
	return nil
}

// Presign signs r in place as a presigned URL valid for expires (a whole
// number of seconds, at most seven days) from t: the X-Amz-* parameters
// are added to r.URL's query, replacing any already there. Only Host is
// signed, and the payload is taken to be empty, so the URL can be used by
// anyone with a plain GET.
func Presign(r *http.Request, creds Credentials, region, service string, t time.Time, expires time.Duration) error {
	host, err := prepare(r, creds, region, service)
	if err != nil {
		return err
	}
	if expires < time.Second || expires > maxExpires || expires%time.Second != 0 {
		return fmt.Errorf("sigv4: expiry %s is not a whole number of seconds from 1s to %s", expires, maxExpires)
	}
	t = t.UTC()
	path, rawQuery := requestTarget(r)
	params, err := parseQuery(rawQuery)
	if err != nil {
		return fmt.Errorf("sigv4: query string: %w", err)
	}
	params = removeAuthParams(params)
	date := t.Format(dateFormat)
	credScope := scope(date, region, service)
	params = append(params,
		param{"X-Amz-Algorithm", algorithm},
		param{"X-Amz-Credential", creds.AccessKeyID + "/" + credScope},
		param{"X-Amz-Date", t.Format(timeFormat)},
		param{"X-Amz-Expires", strconv.FormatInt(int64(expires/time.Second), 10)},
		param{"X-Amz-SignedHeaders", "host"})
	if creds.SessionToken != "" {
		params = append(params, param{"X-Amz-Security-Token", creds.SessionToken})
	}
	query := canonicalQuery(params, "")
	creq := canonicalRequest(method(r), canonicalURI(path, true), query, "host:"+host+"\n", "host", emptyHash)
	sig := hex.EncodeToString(hmacSHA256(signingKey(creds.SecretAccessKey, date, region, service),
		stringToSign(t, credScope, creq)))
	r.URL.RawQuery = query + "&X-Amz-Signature=" + sig
	return nil
}

// prepare checks the arguments common to Sign and Presign and settles the
// host to sign.
func prepare(r *http.Request, creds Credentials, region, service string) (string, error) {
	switch {
	case r == nil || r.URL == nil:
		return "", errors.New("sigv4: request has no URL")
	case creds.AccessKeyID == "" || creds.SecretAccessKey == "":
		return "", errors.New("sigv4: credentials need an access key ID and a secret access key")
	case strings.Contains(creds.AccessKeyID, "/"):
		return "", errors.New("sigv4: access key ID cannot contain '/'")
	case region == "" || service == "" || strings.Contains(region, "/") || strings.Contains(service, "/"):
		return "", errors.New("sigv4: region and service must be non-empty and cannot contain '/'")
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	// Clients leave a scheme's default port out of the Host header.
	switch {
	case r.URL.Scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	case r.URL.Scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	}
	if host == "" {
		return "", errors.New("sigv4: request has no host")
	}
	r.Host = host
	return host, nil
}

// unsignedHeader reports headers Sign leaves out: Host is added separately,
// Authorization cannot sign itself, and the rest are set or changed by HTTP
// libraries and proxies.
func unsignedHeader(name string) bool {
	switch name {
	case "host", "authorization", "user-agent", "x-amzn-trace-id", "expect", "content-length",
		"transfer-encoding", "connection", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade":
		return true
	}
	return false
}

// removeAuthParams drops the X-Amz-* parameters Presign sets.
func removeAuthParams(ps []param) []param {
	out := ps[:0]
	for _, p := range ps {
		switch p.key {
		case "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
			"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token":
			continue
		}
		out = append(out, p)
	}
	return out
}

// method returns r's method, with "" meaning GET as in net/http.
func method(r *http.Request) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}
