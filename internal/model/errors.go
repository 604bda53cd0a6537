// Package model holds Clipper's domain types (instances, images, key pairs,
// nodes, tags) and its one vocabulary of domain errors. Every layer speaks
// these types; the edges (EC2 XML, JSON API) translate them.
package model

import (
	"errors"
	"fmt"
)

// Kind is the class of a domain error. The EC2 layer maps (Kind, Resource)
// pairs to EC2 error codes in one table; nothing matches on messages.
type Kind int

const (
	KindInternal Kind = iota
	KindNotFound
	KindMalformed
	KindDuplicate
	KindInUse
	KindInvalidParameter
	KindMissingParameter
	KindUnknownParameter
	KindParameterCombination
	KindIncorrectState
	KindUnsupported
	KindDependencyViolation
	KindInsufficientCapacity
	KindLimitExceeded
	KindUnauthorized
	KindAuthFailure
)

// Sentinels for errors.Is: errors.Is(err, model.ErrNotFound).
var (
	ErrNotFound             = &Error{Kind: KindNotFound}
	ErrMalformed            = &Error{Kind: KindMalformed}
	ErrDuplicate            = &Error{Kind: KindDuplicate}
	ErrInUse                = &Error{Kind: KindInUse}
	ErrInvalidParameter     = &Error{Kind: KindInvalidParameter}
	ErrMissingParameter     = &Error{Kind: KindMissingParameter}
	ErrIncorrectState       = &Error{Kind: KindIncorrectState}
	ErrUnsupported          = &Error{Kind: KindUnsupported}
	ErrInsufficientCapacity = &Error{Kind: KindInsufficientCapacity}
)

// Resource names used in errors (and mapped to EC2 codes).
const (
	ResInstance  = "instance"
	ResImage     = "image"
	ResKeyPair   = "keypair"
	ResPublicKey = "publickey"
	ResNode      = "node"
	ResTag       = "tag"
	ResToken     = "token" // paging token
	ResUpload    = "upload"
	ResAccount   = "account"
	ResType      = "instancetype"
	ResZone      = "zone"
	ResFilter    = "filter"
	// ResJoinToken is a node join token (native API only).
	ResJoinToken = "jointoken"
)

// Error is a domain error: a kind, the resource it concerns, and a message
// for the user.
type Error struct {
	Kind     Kind
	Resource string // ResInstance, ...; empty when not about one resource
	ID       string // the offending ID or parameter name
	Msg      string
	Err      error // optional cause
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s error", e.Resource)
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches sentinels by kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Resource == "" && t.ID == "" && t.Msg == "" && t.Kind == e.Kind
}

// Errorf builds a domain error.
func Errorf(kind Kind, resource, id, format string, args ...any) *Error {
	return &Error{Kind: kind, Resource: resource, ID: id, Msg: fmt.Sprintf(format, args...)}
}

// NotFound reports a missing resource in the words EC2 uses.
func NotFound(resource, id string) *Error {
	return &Error{Kind: KindNotFound, Resource: resource, ID: id,
		Msg: fmt.Sprintf("The %s ID '%s' does not exist", resourceNoun(resource), id)}
}

// Malformed reports an ID that does not have the resource's shape.
func Malformed(resource, id string) *Error {
	return &Error{Kind: KindMalformed, Resource: resource, ID: id,
		Msg: fmt.Sprintf("Invalid id: \"%s\"", id)}
}

// InvalidParam reports a bad parameter value.
func InvalidParam(param, format string, args ...any) *Error {
	return &Error{Kind: KindInvalidParameter, ID: param, Msg: fmt.Sprintf(format, args...)}
}

// MissingParam reports a required parameter that is absent.
func MissingParam(param string) *Error {
	return &Error{Kind: KindMissingParameter, ID: param,
		Msg: fmt.Sprintf("The request must contain the parameter %s", param)}
}

// KindOf returns the kind of a domain error, KindInternal for any other error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

func resourceNoun(resource string) string {
	switch resource {
	case ResInstance:
		return "instance"
	case ResImage:
		return "image"
	case ResKeyPair:
		return "key pair"
	}
	return resource
}
