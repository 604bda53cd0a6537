package sigv4

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxSkew is how far a request's date may be from the server's
// clock, either way: AWS allows 15 minutes.
const DefaultMaxSkew = 15 * time.Minute

// maxExpires is the longest X-Amz-Expires AWS accepts: seven days.
const maxExpires = 7 * 24 * time.Hour

// defaultService is the one service a Verifier accepts when AllowedServices
// is empty.
const defaultService = "ec2"

// Lookup returns the secret key for an access key ID and whatever the
// caller wants to know about its owner. For a key it does not have it
// returns an error that errors.Is reports as ErrUnknownKey; any other
// error is treated as a failure of the store.
type Lookup func(ctx context.Context, accessKeyID string) (secret string, principal any, err error)

// Verifier authenticates requests signed with Signature Version 4. The zero
// value of each optional field gives the default described; a Verifier is
// safe for concurrent use once set up.
type Verifier struct {
	// Lookup finds secret keys. Required.
	Lookup Lookup
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// MaxSkew is the allowed distance between the request date and Now;
	// DefaultMaxSkew when zero.
	MaxSkew time.Duration
	// AllowedServices are the service names accepted in the credential
	// scope, such as "ec2" and "clipper"; only "ec2" when empty.
	AllowedServices []string
	// Regions are the regions accepted in the credential scope; any region
	// when empty.
	Regions []string
	// AllowUnsignedPayload accepts "X-Amz-Content-Sha256: UNSIGNED-PAYLOAD"
	// on requests with a body, leaving the body unauthenticated. Without it
	// UNSIGNED-PAYLOAD is accepted only when the body is empty.
	AllowUnsignedPayload bool
}

// Result describes an authenticated request.
type Result struct {
	AccessKeyID string
	// Principal is what Lookup returned for the key.
	Principal any
	Region    string
	Service   string
	// SignedAt is the request date (X-Amz-Date or Date).
	SignedAt time.Time
	// SessionToken is the X-Amz-Security-Token sent with the request, if
	// any. Verify does not check it: the caller must, when it issues
	// temporary credentials.
	SessionToken string
	// Presigned is set for requests signed in the query string.
	Presigned bool
	// PayloadHash is the payload hash the signature covers: the body's
	// SHA-256 in lower-case hex, or UNSIGNED-PAYLOAD.
	PayloadHash string
	// UnsignedPayload is set when the body is not covered by the signature.
	UnsignedPayload bool
}

// Verify checks the signature of r, whose body the caller has already read
// (with a size limit) into body. On failure the error is an *Error; pass it
// to Code for the EC2 error code.
func (v *Verifier) Verify(r *http.Request, body []byte) (Result, error) {
	res, err := v.verify(r, body, false)
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// VerifyStream is Verify for a request whose body the caller has not read,
// such as a large upload. The signature then covers the payload hash the
// client declares in X-Amz-Content-Sha256 (required unless presigned),
// which Result.PayloadHash reports: the caller must check the body against
// it as it reads, or, when it is UNSIGNED-PAYLOAD (Result.UnsignedPayload),
// authenticate the body some other way (a content address, for instance).
// A presigned request without the header is taken to have an empty body.
func (v *Verifier) VerifyStream(r *http.Request) (Result, error) {
	res, err := v.verify(r, nil, true)
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func (v *Verifier) verify(r *http.Request, body []byte, stream bool) (Result, *Error) {
	if v.Lookup == nil {
		return Result{}, newError(ErrInternal, "The server has no credential store configured.")
	}
	path, rawQuery := requestTarget(r)
	params, qerr := parseQuery(rawQuery)
	if qerr != nil {
		return Result{}, newError(ErrMalformed, "The query string is not valid percent-encoding.")
	}
	authz := r.Header.Values("Authorization")
	if len(authz) == 1 && strings.TrimSpace(authz[0]) == "" {
		authz = nil
	}
	presigned := slices.ContainsFunc(params, func(p param) bool {
		return p.key == "X-Amz-Algorithm" || p.key == "X-Amz-Credential" || p.key == "X-Amz-Signature"
	})
	var s signed
	var err *Error
	switch {
	case len(authz) > 0 && presigned:
		err = newError(ErrMalformed, "Sign with an Authorization header or with X-Amz-* query parameters, not both.")
	case len(authz) > 1:
		err = newError(ErrMalformed, "The request has more than one Authorization header.")
	case len(authz) == 1:
		s, err = fromHeader(r, authz[0])
	case presigned:
		s, err = fromQuery(params)
	default:
		err = missing(r, params, body)
	}
	if err != nil {
		return Result{}, err
	}
	if err := v.checkScope(s); err != nil {
		return Result{}, err
	}
	if err := v.checkTime(s, presigned); err != nil {
		return Result{}, err
	}
	payloads, err := v.payloadHashes(r, body, presigned, stream)
	if err != nil {
		return Result{}, err
	}

	secret, principal, lerr := v.Lookup(r.Context(), s.cred.accessKeyID)
	switch {
	case errors.Is(lerr, ErrUnknownKey):
		e := newError(ErrUnknownKey, "The access key ID %s is not valid.", quote(s.cred.accessKeyID))
		e.Err = lerr
		return Result{}, e
	case lerr != nil:
		e := newError(ErrInternal, "The credentials could not be checked; try again later.")
		e.Err = lerr
		return Result{}, e
	case secret == "":
		return Result{}, newError(ErrInternal, "The credentials could not be checked; try again later.")
	}

	payload, err := match(r, s, secret, path, params, payloads, presigned)
	if err != nil {
		return Result{}, err
	}
	return Result{
		AccessKeyID:     s.cred.accessKeyID,
		Principal:       principal,
		Region:          s.cred.region,
		Service:         s.cred.service,
		SignedAt:        s.at,
		SessionToken:    s.token,
		Presigned:       presigned,
		PayloadHash:     payload,
		UnsignedPayload: payload == unsignedPayload,
	}, nil
}

// fromHeader reads the Authorization header form.
func fromHeader(r *http.Request, authz string) (signed, *Error) {
	s, err := parseAuthorization(authz)
	if err != nil {
		return s, err
	}
	if d := r.Header.Values("X-Amz-Date"); len(d) > 0 {
		if len(d) > 1 {
			return s, newError(ErrMalformed, "The request has more than one X-Amz-Date header.")
		}
		t, perr := time.Parse(timeFormat, d[0])
		if perr != nil {
			return s, newError(ErrMalformed, "X-Amz-Date %s is not of the form YYYYMMDDTHHMMSSZ.", quote(d[0]))
		}
		s.at = t
	} else if d := r.Header.Get("Date"); d != "" {
		t, perr := http.ParseTime(d)
		if perr != nil {
			return s, newError(ErrMalformed, "Date header %s is not an HTTP date.", quote(d))
		}
		s.at = t.UTC()
	} else {
		return s, newError(ErrMalformed, "The request must carry its signing time in an X-Amz-Date or Date header.")
	}
	tok := r.Header.Values("X-Amz-Security-Token")
	if len(tok) > 1 {
		return s, newError(ErrMalformed, "The request has more than one X-Amz-Security-Token header.")
	}
	if len(tok) == 1 {
		s.token = tok[0]
	}
	return s, nil
}

// fromQuery reads the presigned form. Each X-Amz-* authentication parameter
// must appear exactly once (the security token at most once).
func fromQuery(params []param) (signed, *Error) {
	names := [...]string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
		"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"}
	var vals [len(names)]string
	var seen [len(names)]bool
	for _, p := range params {
		for i, n := range names {
			if p.key != n {
				continue
			}
			if seen[i] {
				return signed{}, newError(ErrMalformed, "Query parameter %s appears more than once.", n)
			}
			seen[i], vals[i] = true, p.value
		}
	}
	for i, n := range names[:6] {
		if !seen[i] {
			return signed{}, newError(ErrMalformed, "A presigned request needs the %s query parameter.", n)
		}
	}
	if vals[0] != algorithm {
		return signed{}, newError(ErrUnsupportedAlgorithm,
			"Unsupported X-Amz-Algorithm %s: only %s (Signature Version 4) is accepted.", quote(vals[0]), algorithm)
	}
	s, err := fillSigned(vals[1], vals[4], vals[5])
	if err != nil {
		return s, err
	}
	t, perr := time.Parse(timeFormat, vals[2])
	if perr != nil {
		return s, newError(ErrMalformed, "X-Amz-Date %s is not of the form YYYYMMDDTHHMMSSZ.", quote(vals[2]))
	}
	secs, perr := strconv.ParseInt(vals[3], 10, 64)
	if perr != nil || secs < 1 || secs > int64(maxExpires/time.Second) {
		return s, newError(ErrMalformed, "X-Amz-Expires must be a number of seconds from 1 to %d.",
			int64(maxExpires/time.Second))
	}
	s.at, s.expires, s.token = t, time.Duration(secs)*time.Second, vals[6]
	return s, nil
}

// missing explains an unsigned request, recognising Signature Version 2,
// whose parameters may sit in the query or in a form body.
func missing(r *http.Request, params []param, body []byte) *Error {
	v2 := func(ps []param) bool {
		return slices.ContainsFunc(ps, func(p param) bool {
			return p.key == "AWSAccessKeyId" || p.key == "SignatureVersion" || p.key == "SignatureMethod"
		})
	}
	isV2 := v2(params)
	if !isV2 && len(body) > 0 {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil &&
			mt == "application/x-www-form-urlencoded" {
			form, _ := parseQuery(string(body))
			isV2 = v2(form)
		}
	}
	if isV2 {
		return newError(ErrUnsupportedAlgorithm,
			"Signature Version 2 is not supported: sign requests with Signature Version 4 (%s).", algorithm)
	}
	return newError(ErrMissingAuth,
		"The request is not signed: send an Authorization header or X-Amz-* query parameters "+
			"signed with AWS Signature Version 4.")
}
