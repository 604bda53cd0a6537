package ec2

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// Limits on what a request may carry.
const (
	maxParams   = 4000 // parameters in one request
	maxListItem = 1000 // highest N in Name.N
)

// Params is the decoded parameter set of one Query request. Handlers read
// what they understand; whatever nobody read is an UnknownParameter.
type Params struct {
	prefix string
	vals   map[string]string
	used   map[string]bool
}

// parseParams decodes a form (POST body or GET query). Duplicate keys and
// empty names are malformed.
func parseParams(raw string) (*Params, error) {
	vs, err := url.ParseQuery(raw)
	if err != nil {
		return nil, model.InvalidParam("", "The request could not be decoded: %v", err)
	}
	if len(vs) > maxParams {
		return nil, model.InvalidParam("", "The request has more than %d parameters", maxParams)
	}
	p := &Params{vals: make(map[string]string, len(vs)), used: map[string]bool{}}
	for k, v := range vs {
		if k == "" {
			return nil, model.InvalidParam("", "The request has a parameter without a name")
		}
		if len(v) > 1 {
			return nil, model.InvalidParam(k, "The parameter %s is given more than once", k)
		}
		p.vals[k] = v[0]
	}
	return p, nil
}

func (p *Params) key(name string) string { return p.prefix + name }

// Has reports whether a parameter is present (and marks it read).
func (p *Params) Has(name string) bool {
	k := p.key(name)
	_, ok := p.vals[k]
	if ok {
		p.used[k] = true
	}
	return ok
}

// Str returns a parameter's value ("" when absent).
func (p *Params) Str(name string) string {
	k := p.key(name)
	v, ok := p.vals[k]
	if ok {
		p.used[k] = true
	}
	return v
}

// Required returns a parameter that must be present and non-empty.
func (p *Params) Required(name string) (string, error) {
	v := p.Str(name)
	if v == "" {
		return "", model.MissingParam(p.key(name))
	}
	return v, nil
}

// Int returns an integer parameter (def when absent).
func (p *Params) Int(name string, def int) (int, error) {
	v := p.Str(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1<<31 || n > 1<<31-1 {
		return 0, model.InvalidParam(p.key(name), "Invalid value '%s' for %s: expected an integer", v, p.key(name))
	}
	return n, nil
}

// Bool returns a boolean parameter (false when absent).
func (p *Params) Bool(name string) (bool, error) {
	switch v := p.Str(name); strings.ToLower(v) {
	case "":
		return false, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, model.InvalidParam(p.key(name), "Invalid value '%s' for %s: expected true or false", v, p.key(name))
	}
}

// Base64 decodes a base64 parameter.
func (p *Params) Base64(name string) ([]byte, error) {
	v := p.Str(name)
	if v == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		if b, err2 := base64.RawStdEncoding.DecodeString(v); err2 == nil {
			return b, nil
		}
		return nil, model.InvalidParam(p.key(name), "Invalid BASE64 encoding of %s", p.key(name))
	}
	return b, nil
}

// indexed groups the keys below prefix "Name." by their index N and returns
// the indices in ascending order. rest says whether keys may continue after
// the index ("Name.N.Sub"), or must end there ("Name.N").
func (p *Params) indexed(name string, rest bool) ([]int, error) {
	pre := p.key(name) + "."
	seen := map[int]bool{}
	for k := range p.vals {
		tail, ok := strings.CutPrefix(k, pre)
		if !ok {
			continue
		}
		num, sub, hasSub := strings.Cut(tail, ".")
		if hasSub != rest || (rest && sub == "") {
			return nil, model.Errorf(model.KindUnknownParameter, "", k, "The parameter %s is not recognized", k)
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > maxListItem || strconv.Itoa(n) != num {
			return nil, model.InvalidParam(k, "Invalid index in parameter %s: indices run from 1 to %d", k, maxListItem)
		}
		seen[n] = true
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

// List returns the values of Name.1, Name.2, ... in index order.
func (p *Params) List(name string) ([]string, error) {
	idx, err := p.indexed(name, false)
	if err != nil || len(idx) == 0 {
		return nil, err
	}
	out := make([]string, len(idx))
	for i, n := range idx {
		out[i] = p.Str(fmt.Sprintf("%s.%d", name, n))
	}
	return out, nil
}

// Structs returns a sub-parameter set for each Name.N.* group.
func (p *Params) Structs(name string) ([]*Params, error) {
	idx, err := p.indexed(name, true)
	if err != nil {
		return nil, err
	}
	out := make([]*Params, len(idx))
	for i, n := range idx {
		out[i] = &Params{prefix: fmt.Sprintf("%s%s.%d.", p.prefix, name, n), vals: p.vals, used: p.used}
	}
	return out, nil
}

// Struct returns the sub-parameter set Name.* (a non-list structure).
func (p *Params) Struct(name string) *Params {
	return &Params{prefix: p.key(name) + ".", vals: p.vals, used: p.used}
}

// Ignore marks parameters (exact names, or prefixes ending in '.') as read:
// they are valid EC2 parameters Clipper accepts and has no use for.
func (p *Params) Ignore(names ...string) {
	for k := range p.vals {
		for _, n := range names {
			full := p.key(n)
			if k == full || (strings.HasSuffix(full, ".") && strings.HasPrefix(k, full)) {
				p.used[k] = true
			}
		}
	}
}

// unused returns the parameters nobody read, sorted.
func (p *Params) unused() []string {
	var out []string
	for k := range p.vals {
		if !p.used[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Filters decodes Filter.N.Name / Filter.N.Value.M.
func (p *Params) Filters() ([]service.Filter, error) {
	subs, err := p.Structs("Filter")
	if err != nil {
		return nil, err
	}
	out := make([]service.Filter, 0, len(subs))
	for _, s := range subs {
		name, err := s.Required("Name")
		if err != nil {
			return nil, err
		}
		vals, err := s.List("Value")
		if err != nil {
			return nil, err
		}
		out = append(out, service.Filter{Name: name, Values: vals})
	}
	return out, nil
}

// Tags decodes Name.N.Key / Name.N.Value.
func (p *Params) Tags(name string) ([]model.Tag, error) {
	subs, err := p.Structs(name)
	if err != nil {
		return nil, err
	}
	out := make([]model.Tag, 0, len(subs))
	for _, s := range subs {
		k, err := s.Required("Key")
		if err != nil {
			return nil, err
		}
		out = append(out, model.Tag{Key: k, Value: s.Str("Value")})
	}
	return out, nil
}

// TagSpecifications decodes TagSpecification.N and returns the tags for
// resourceType. Tags for other types in accepted are allowed and dropped;
// any other type is invalid.
func (p *Params) TagSpecifications(resourceType string, accepted ...string) ([]model.Tag, error) {
	subs, err := p.Structs("TagSpecification")
	if err != nil {
		return nil, err
	}
	var out []model.Tag
	for _, s := range subs {
		rt, err := s.Required("ResourceType")
		if err != nil {
			return nil, err
		}
		tags, err := s.Tags("Tag")
		if err != nil {
			return nil, err
		}
		switch {
		case rt == resourceType:
			out = append(out, tags...)
		case contains(accepted, rt):
		default:
			return nil, model.InvalidParam("TagSpecification.ResourceType", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
	}
	return out, nil
}

// Page decodes MaxResults/NextToken.
func (p *Params) Page() (service.Page, error) {
	n, err := p.Int("MaxResults", 0)
	if err != nil {
		return service.Page{}, err
	}
	if p.Has("MaxResults") && n <= 0 {
		return service.Page{}, model.InvalidParam("MaxResults", "Value ( %d ) for parameter maxResults is invalid. Expecting a positive value.", n)
	}
	return service.Page{MaxResults: n, NextToken: p.Str("NextToken")}, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
