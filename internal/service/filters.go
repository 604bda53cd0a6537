package service

import (
	"encoding/base64"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
)

// Filter is one EC2 filter: the resource matches if any of Values matches
// any of the resource's values for Name. Several filters are ANDed.
type Filter struct {
	Name   string
	Values []string
}

// fieldFunc returns the values of a filter field for one resource, and
// whether the field name is known.
type fieldFunc func(name string) ([]string, bool)

// tagField answers the tag filters common to every resource.
func tagField(tags []model.Tag, name string) ([]string, bool) {
	switch {
	case strings.HasPrefix(name, "tag:"):
		key := name[len("tag:"):]
		for _, t := range tags {
			if t.Key == key {
				return []string{t.Value}, true
			}
		}
		return nil, true
	case name == "tag-key":
		out := make([]string, len(tags))
		for i, t := range tags {
			out[i] = t.Key
		}
		return out, true
	case name == "tag-value":
		out := make([]string, len(tags))
		for i, t := range tags {
			out[i] = t.Value
		}
		return out, true
	}
	return nil, false
}

// checkFilters rejects unknown filter names before any matching, using a
// probe resource's field function.
func checkFilters(filters []Filter, probe fieldFunc) error {
	for _, f := range filters {
		if f.Name == "" {
			return model.InvalidParam("Filter", "The filter name must not be empty")
		}
		if _, ok := probe(f.Name); !ok {
			return model.InvalidParam("Filter", "The filter '%s' is invalid", f.Name)
		}
		if len(f.Values) == 0 {
			return model.InvalidParam("Filter", "The filter '%s' needs at least one value", f.Name)
		}
	}
	return nil
}

// matchFilters reports whether a resource passes every filter.
func matchFilters(filters []Filter, fields fieldFunc) bool {
	for _, f := range filters {
		vals, _ := fields(f.Name)
		if !anyMatch(f.Values, vals) {
			return false
		}
	}
	return true
}

func anyMatch(patterns, vals []string) bool {
	for _, p := range patterns {
		for _, v := range vals {
			if Wildcard(p, v) {
				return true
			}
		}
	}
	return false
}

// Wildcard matches s against an EC2 filter pattern: '*' matches any run of
// characters, '?' exactly one, and a backslash escapes either.
func Wildcard(pattern, s string) bool {
	p := []rune(pattern)
	r := []rune(s)
	// Iterative matcher with backtracking to the last '*'.
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(r) {
		if pi < len(p) {
			c := p[pi]
			switch {
			case c == '\\' && pi+1 < len(p) && (p[pi+1] == '*' || p[pi+1] == '?' || p[pi+1] == '\\'):
				if r[si] == p[pi+1] {
					pi += 2
					si++
					continue
				}
			case c == '*':
				starP, starS = pi, si
				pi++
				continue
			case c == '?' || c == r[si]:
				pi++
				si++
				continue
			}
		}
		if starP >= 0 {
			starS++
			pi, si = starP+1, starS
			continue
		}
		return false
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// Page is the paging input of Describe calls.
type Page struct {
	MaxResults int    // 0: no limit
	NextToken  string // opaque, from a previous answer
}

// pageIDs returns the window [start, end) of a sorted ID list for a page,
// and the next token ("" on the last page).
func pageIDs(ids []string, pg Page) (start, end int, next string, err error) {
	start = 0
	if pg.NextToken != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(pg.NextToken)
		if derr != nil || len(raw) == 0 {
			return 0, 0, "", model.Errorf(model.KindInvalidParameter, model.ResToken, pg.NextToken,
				"Invalid NextToken value: %q", pg.NextToken)
		}
		last := string(raw)
		// First ID strictly greater than the last one returned.
		lo, hi := 0, len(ids)
		for lo < hi {
			mid := (lo + hi) / 2
			if ids[mid] <= last {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		start = lo
	}
	end = len(ids)
	if pg.MaxResults > 0 && start+pg.MaxResults < len(ids) {
		end = start + pg.MaxResults
		next = base64.RawURLEncoding.EncodeToString([]byte(ids[end-1]))
	}
	return start, end, next, nil
}

// PageIDs is pageIDs for edges that page lists the service returns whole.
func PageIDs(ids []string, pg Page) (start, end int, next string, err error) { return pageIDs(ids, pg) }

// checkMaxResults validates MaxResults against EC2's bounds for an action.
func checkMaxResults(pg Page, min, max int, withIDs bool) error {
	if pg.MaxResults == 0 {
		return nil
	}
	if withIDs {
		return model.Errorf(model.KindParameterCombination, "", "MaxResults",
			"The parameter instancesSet cannot be used with the parameter maxResults")
	}
	if pg.MaxResults < min || pg.MaxResults > max {
		return model.InvalidParam("MaxResults", "Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", pg.MaxResults, min, max)
	}
	return nil
}
