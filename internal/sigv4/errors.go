package sigv4

import (
	"errors"
	"fmt"
)

// Sentinels for each kind of verification failure. Verify returns an *Error
// that wraps exactly one of them; test with errors.Is.
var (
	// ErrMissingAuth: the request carries no signature at all.
	ErrMissingAuth = errors.New("sigv4: missing authentication")
	// ErrMalformed: the Authorization header, the X-Amz-* query parameters
	// or the credential scope cannot be parsed, or break a rule of the
	// scheme (Host not signed, two ways of authenticating at once, ...).
	ErrMalformed = errors.New("sigv4: malformed signature")
	// ErrUnsupportedAlgorithm: signed with something other than
	// AWS4-HMAC-SHA256 (Signature Version 2, SigV4a, another scheme).
	ErrUnsupportedAlgorithm = errors.New("sigv4: unsupported signing algorithm")
	// ErrWrongScope: a well-formed credential scope for a region or service
	// this verifier does not serve.
	ErrWrongScope = errors.New("sigv4: credential scope not accepted")
	// ErrUnknownKey: the access key ID is not known. Lookup functions return
	// it (possibly wrapped) for keys they do not have.
	ErrUnknownKey = errors.New("sigv4: unknown access key")
	// ErrSignatureMismatch: the signature is not the one the secret key
	// gives for this request (wrong secret, altered request, client bug).
	ErrSignatureMismatch = errors.New("sigv4: signature does not match")
	// ErrExpired: the request time is too far from the server's clock, or a
	// presigned URL is past its X-Amz-Expires.
	ErrExpired = errors.New("sigv4: request expired")
	// ErrInternal: the Lookup failed for a reason other than an unknown
	// key, or the Verifier is misconfigured.
	ErrInternal = errors.New("sigv4: internal error")
)

// EC2 answers every credential problem it detects after parsing the
// signature with AuthFailure (HTTP 401): AWS's EC2 API reference lists it as
// the code for credentials that could not be validated, and real EC2
// responses for unknown keys, wrong secrets and (in older reports) clock
// skew all carry AuthFailure (aws/aws-sdk-java#519, timkay/aws#97,
// hashicorp/terraform-provider-aws#9597). EC2 did answer
// SignatureDoesNotMatch (HTTP 403) in reports from 2010 to 2014
// (aws/aws-cli#134, mitchellh/vagrant-aws#138) but the code is not in the
// EC2 common error list, so it is not used here. IncompleteSignature ("the
// signature does not conform to AWS standards"), MissingAuthenticationToken
// ("the request must contain valid credentials") and RequestExpired (15
// minutes either side of the request date, or after a presigned URL's
// expiry; HTTP 400 with "Request has expired." in aws/aws-sdk-java#1443) are
// all in the EC2 common client error list.
const (
	codeAuthFailure       = "AuthFailure"
	codeIncomplete        = "IncompleteSignature"
	codeMissingToken      = "MissingAuthenticationToken"
	codeRequestExpired    = "RequestExpired"
	codeInternalError     = "InternalError"
	maxMessageValueLength = 64
)

// Code returns the EC2 error code for a verification failure, or "" when err
// does not come from this package.
func Code(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Kind {
	case ErrMissingAuth:
		return codeMissingToken
	case ErrMalformed, ErrUnsupportedAlgorithm:
		return codeIncomplete
	case ErrWrongScope, ErrUnknownKey, ErrSignatureMismatch:
		return codeAuthFailure
	case ErrExpired:
		return codeRequestExpired
	case ErrInternal:
		return codeInternalError
	}
	return ""
}

// Error is a verification failure. Its message is meant for the client: it
// names what was wrong without revealing the secret key or the signature
// the server computed.
type Error struct {
	// Kind is one of the Err* sentinels.
	Kind error
	// Message explains the failure to the client.
	Message string
	// CanonicalRequest and StringToSign are what the server signed when the
	// signature did not match. They help an operator compare against a
	// client's debug log; they may contain a session token, so log them
	// only at debug level and do not send them to the client.
	CanonicalRequest string
	StringToSign     string
	// Err is the underlying cause, such as a Lookup failure.
	Err error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel and, when there is one, the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func newError(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// quote renders a client-supplied value for a message, cut short so that a
// hostile request cannot make the response large.
func quote(s string) string {
	if len(s) > maxMessageValueLength {
		s = s[:maxMessageValueLength] + "..."
	}
	return fmt.Sprintf("%q", s)
}
