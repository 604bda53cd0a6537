// Package ec2 serves the EC2 Query API (version 2016-11-15): it decodes
// Query parameters, authenticates with SigV4, calls the service layer and
// writes the AWS XML shapes and error codes that the AWS CLI and SDKs parse.
package ec2

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// MaxBody is the largest request body accepted (user data is 16 KiB, so
// 1 MiB leaves room for long lists).
const MaxBody = 1 << 20

// Authenticator checks a request's signature and names its caller.
type Authenticator interface {
	Authenticate(r *http.Request, body []byte) (service.Caller, error)
}

// exec carries out a parsed action.
type exec func(ctx context.Context, c service.Caller) (response, error)

// parser reads an action's parameters and returns what to run. Parsing
// happens before anything changes, so unknown parameters and DryRun are
// answered without side effects.
type parser func(p *Params) (exec, error)

// Handler is the EC2 API endpoint.
type Handler struct {
	// Endpoint is the URL clients use, reported by DescribeRegions.
	Endpoint string

	svc     *service.Service
	auth    Authenticator
	log     *slog.Logger
	actions map[string]parser
	bufs    sync.Pool // *bytes.Buffer for encoding responses
}

// maxPooledBuf bounds the response buffers kept for reuse, so one huge
// answer (a DescribeInstances of thousands) is not held on to.
const maxPooledBuf = 64 << 10

// New returns the EC2 API handler.
func New(svc *service.Service, auth Authenticator, log *slog.Logger) *Handler {
	h := &Handler{svc: svc, auth: auth, log: log}
	h.actions = map[string]parser{}
	h.registerInstances()
	h.registerImages()
	h.registerKeyPairs()
	h.registerTags()
	h.registerCatalog()
	h.registerGroups()
	h.registerNetwork()
	h.registerAddresses()
	return h
}

// Actions lists the supported action names.
func (h *Handler) Actions() []string {
	out := make([]string, 0, len(h.actions))
	for a := range h.actions {
		out = append(out, a)
	}
	return out
}

// authParams are protocol parameters every request may carry.
var authParams = []string{"Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
	"X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
	"AWSAccessKeyId", "SignatureVersion", "SignatureMethod", "Signature", "Timestamp", "Expires"}

// EC2 action names start with a verb; an unknown name that does is an
// operation Clipper does not implement, anything else is no action at all.
var ec2Verb = regexp.MustCompile(`^(Accept|Advertise|Allocate|Apply|Assign|Associate|Attach|Authorize|Bundle|Cancel|Confirm|Copy|Create|Delete|Deprovision|Deregister|Describe|Detach|Disable|Disassociate|Enable|Export|Get|Import|List|Lock|Modify|Monitor|Move|Provision|Purchase|Reboot|Register|Reject|Release|Replace|Report|Request|Reset|Restore|Revoke|Run|Search|Send|Start|Stop|Terminate|Unassign|Unlock|Unmonitor|Update|Withdraw)[A-Z][A-Za-z0-9]*$`)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := requestID()
	action := ""
	defer func() {
		if v := recover(); v != nil {
			h.log.Error("panic in EC2 handler", "request", reqID, "action", action, "panic", v, "stack", string(debug.Stack()))
			writeError(w, reqID, newError(http.StatusInternalServerError, "InternalError", "An internal error has occurred."))
		}
	}()
	resp, err := h.serve(r, &action)
	if err != nil {
		e := toEC2(err)
		lvl := slog.LevelDebug
		if e.Status >= 500 {
			lvl = slog.LevelError
		}
		h.log.Log(r.Context(), lvl, "ec2 request failed", "request", reqID, "action", action, "code", e.Code, "error", err, "took", time.Since(start))
		writeError(w, reqID, e)
		return
	}
	m := resp.meta()
	m.XMLName = xml.Name{Local: action + "Response"}
	m.Xmlns = Namespace
	m.RequestID = reqID
	buf, _ := h.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= maxPooledBuf {
			buf.Reset()
			h.bufs.Put(buf)
		}
	}()
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(buf).Encode(resp); err != nil {
		h.log.Error("encode response", "request", reqID, "action", action, "error", err)
		writeError(w, reqID, newError(http.StatusInternalServerError, "InternalError", "An internal error has occurred."))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-RequestId", reqID)
	// The whole answer is at hand: say its length rather than have the
	// server chunk it.
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
	h.log.Debug("ec2 request", "request", reqID, "action", action, "took", time.Since(start))
}

func (h *Handler) serve(r *http.Request, action *string) (response, error) {
	var raw string
	var body []byte
	switch r.Method {
	case http.MethodGet:
		raw = r.URL.RawQuery
	case http.MethodPost:
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, newError(http.StatusRequestEntityTooLarge, "InvalidParameterValue", fmt.Sprintf("The request body is larger than %d bytes", MaxBody))
			}
			return nil, newError(http.StatusBadRequest, "InvalidParameterValue", "The request body could not be read")
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
				return nil, newError(http.StatusBadRequest, "InvalidParameterValue", "POST requests must be application/x-www-form-urlencoded")
			}
		}
		raw = string(body)
		if len(bytes.TrimSpace(body)) == 0 {
			raw = r.URL.RawQuery
		}
	default:
		return nil, newError(http.StatusMethodNotAllowed, "InvalidAction", "The EC2 API accepts GET and POST requests only")
	}
	p, err := parseParams(raw)
	if err != nil {
		return nil, err
	}
	caller, err := h.auth.Authenticate(r, body)
	if err != nil {
		return nil, err
	}
	*action = p.Str("Action")
	p.Ignore(authParams...)
	if *action == "" {
		return nil, model.MissingParam("Action")
	}
	parse, ok := h.actions[*action]
	if !ok {
		if ec2Verb.MatchString(*action) {
			return nil, newError(http.StatusBadRequest, "UnsupportedOperation", fmt.Sprintf("The action %s is not supported by Clipper.", *action))
		}
		return nil, newError(http.StatusBadRequest, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", *action))
	}
	dryRun, err := p.Bool("DryRun")
	if err != nil {
		return nil, err
	}
	run, err := parse(p)
	if err != nil {
		return nil, err
	}
	if u := p.unused(); len(u) > 0 {
		return nil, model.Errorf(model.KindUnknownParameter, "", u[0], "The parameter %s is not recognized", u[0])
	}
	if dryRun {
		return nil, newError(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	return run(r.Context(), caller)
}

func writeError(w http.ResponseWriter, reqID string, e *Error) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	_ = xml.NewEncoder(&buf).Encode(errorResponse{Errors: []errorItem{{Code: e.Code, Message: e.Message}}, RequestID: reqID})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-RequestId", reqID)
	w.WriteHeader(e.Status)
	w.Write(buf.Bytes())
}

// requestID returns a random UUID (version 4), the shape of AWS request IDs.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
