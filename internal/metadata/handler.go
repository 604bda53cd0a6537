package metadata

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of IMDSv2.
const (
	hdrTTL   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	hdrToken = "X-Aws-Ec2-Metadata-Token"
	hdrXFF   = "X-Forwarded-For"
)

// tokenPath is where tokens are handed out (PUT only).
const tokenPath = "/latest/api/token"

// Handler returns the HTTP handler. It needs the connection facts the
// server puts in each request's context (see Serve): a request without
// them belongs to no instance and is refused.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "EC2ws")
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	var e *entry
	if ci != nil {
		e = s.lookup(ci.mark)
	}
	if e == nil || e.opts.HTTPEndpoint == "disabled" {
		status(w, http.StatusForbidden)
		return
	}
	if r.URL.Path == tokenPath {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			status(w, http.StatusMethodNotAllowed)
			return
		}
		s.serveToken(w, r, e, ci)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		status(w, http.StatusMethodNotAllowed)
		return
	}
	// A token, when sent, must be good even where tokens are optional.
	tok := r.Header.Get(hdrToken)
	if (tok != "" || e.opts.HTTPTokens != "optional") && !s.valid(tok, e) {
		status(w, http.StatusUnauthorized)
		return
	}
	body, octets, ok := e.find(r.URL.Path)
	if !ok {
		status(w, http.StatusNotFound)
		return
	}
	ctype := "text/plain"
	if octets {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(body))
	}
}

// serveToken hands out a token. Its response leaves with the instance's
// hop limit as IP TTL, so it dies at the first router beyond it.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, e *entry, ci *connInfo) {
	if len(r.Header.Values(hdrXFF)) > 0 {
		status(w, http.StatusForbidden)
		return
	}
	vals := r.Header.Values(hdrTTL)
	if len(vals) != 1 {
		status(w, http.StatusBadRequest)
		return
	}
	ttl, err := strconv.Atoi(strings.TrimSpace(vals[0]))
	if err != nil || ttl < 1 || ttl > maxTokenTTL {
		status(w, http.StatusBadRequest)
		return
	}
	hops := e.opts.HopLimit
	if hops < 1 || hops > 64 {
		hops = 1
	}
	// The TTL stays on the connection: retransmissions of the token
	// must not get further than the first copy.
	if err := ci.setHops(hops); err != nil {
		s.log.Error("cannot set the hop limit of a token response; refusing the token", "instance", e.id, "error", err)
		status(w, http.StatusServiceUnavailable)
		return
	}
	tok := s.issue(e, time.Duration(ttl)*time.Second)
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set(hdrTTL, strconv.Itoa(ttl))
	w.Header().Set("Content-Length", strconv.Itoa(len(tok)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
}

// find answers a GET path: "/" lists the versions, "/<version>/..." walks
// the instance's tree.
func (e *entry) find(path string) (body string, octets bool, ok bool) {
	if path == "/" || path == "" {
		return versionList, false, true
	}
	rest, ok := strings.CutPrefix(path, "/")
	if !ok {
		return "", false, false
	}
	version, sub, _ := strings.Cut(rest, "/")
	if !knownVersion(version) {
		return "", false, false
	}
	n, ok := e.tree.lookup(sub)
	if !ok {
		return "", false, false
	}
	if n.kids != nil {
		return n.list(), false, true
	}
	return n.value, n.octets, true
}

// status answers with an error page the way IMDS does.
func status(w http.ResponseWriter, code int) {
	text := fmt.Sprintf("%d - %s", code, http.StatusText(code))
	body := `<?xml version="1.0" encoding="iso-8859-1"?>` + "\n" +
		`<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">` + "\n" +
		`<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">` + "\n" +
		" <head>\n  <title>" + text + "</title>\n </head>\n <body>\n  <h1>" + text + "</h1>\n </body>\n</html>\n"
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
