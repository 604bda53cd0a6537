package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/clipper-cloud/clipper/internal/ec2"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/sigv4"
)

// sigAuth authenticates EC2 and native API requests with SigV4 against the
// account keys in the store.
type sigAuth struct {
	svc    *service.Service
	region string
	once   sync.Once
	v      *sigv4.Verifier
}

func (a *sigAuth) verifier() *sigv4.Verifier {
	a.once.Do(func() {
		a.v = &sigv4.Verifier{
			Lookup: func(ctx context.Context, id string) (string, any, error) {
				k, err := a.svc.LookupKey(ctx, id)
				if errors.Is(err, model.ErrNotFound) {
					return "", nil, fmt.Errorf("%w: %s", sigv4.ErrUnknownKey, id)
				}
				if err != nil {
					return "", nil, err
				}
				return k.Secret, k, nil
			},
			AllowedServices: []string{"ec2", "clipper"},
			Regions:         []string{a.region},
		}
	})
	return a.v
}

// Authenticate implements ec2.Authenticator.
func (a *sigAuth) Authenticate(r *http.Request, body []byte) (service.Caller, error) {
	res, err := a.verifier().Verify(r, body)
	return a.caller(res, err)
}

// AuthenticateStream authenticates a request whose body is streamed: the
// signature covers the declared payload hash, returned for the handler to
// check against the body.
func (a *sigAuth) AuthenticateStream(r *http.Request) (service.Caller, string, error) {
	res, err := a.verifier().VerifyStream(r)
	c, err := a.caller(res, err)
	return c, res.PayloadHash, err
}

func (a *sigAuth) caller(res sigv4.Result, err error) (service.Caller, error) {
	if err != nil {
		code := sigv4.Code(err)
		status := http.StatusBadRequest
		switch code {
		case "AuthFailure":
			status = http.StatusUnauthorized
		case "MissingAuthenticationToken":
			status = http.StatusForbidden
		case "InternalError":
			status = http.StatusInternalServerError
		}
		return service.Caller{}, &ec2.Error{Code: code, Message: err.Error(), Status: status}
	}
	k := res.Principal.(model.AccessKey)
	return service.Caller{AccountID: k.AccountID, AccessKey: k.ID}, nil
}
