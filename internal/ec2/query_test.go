package ec2

import (
	"reflect"
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

func mustParse(t *testing.T, raw string) *Params {
	t.Helper()
	p, err := parseParams(raw)
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return p
}

func TestListsInIndexOrder(t *testing.T) {
	p := mustParse(t, "InstanceId.2=i-b&InstanceId.10=i-c&InstanceId.1=i-a")
	got, err := p.List("InstanceId")
	if err != nil || !reflect.DeepEqual(got, []string{"i-a", "i-b", "i-c"}) {
		t.Fatalf("got %v %v", got, err)
	}
	if len(p.unused()) != 0 {
		t.Fatalf("unused: %v", p.unused())
	}
}

func TestFilters(t *testing.T) {
	p := mustParse(t, "Filter.1.Name=instance-state-name&Filter.1.Value.1=running&Filter.1.Value.2=pending&Filter.2.Name=tag%3AName&Filter.2.Value.1=web*")
	got, err := p.Filters()
	want := []service.Filter{{Name: "instance-state-name", Values: []string{"running", "pending"}}, {Name: "tag:Name", Values: []string{"web*"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v %v", got, err)
	}
}

func TestTagSpecifications(t *testing.T) {
	p := mustParse(t, "TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=web&TagSpecification.2.ResourceType=volume&TagSpecification.2.Tag.1.Key=x")
	got, err := p.TagSpecifications("instance", "volume")
	if err != nil || !reflect.DeepEqual(got, []model.Tag{{Key: "Name", Value: "web"}}) {
		t.Fatalf("got %v %v", got, err)
	}
	p = mustParse(t, "TagSpecification.1.ResourceType=vpc&TagSpecification.1.Tag.1.Key=x")
	if _, err := p.TagSpecifications("instance"); model.KindOf(err) != model.KindInvalidParameter {
		t.Fatalf("bad resource type: %v", err)
	}
}

func TestMalformedParams(t *testing.T) {
	for _, raw := range []string{"a=1&a=2", "%zz", "=x"} {
		if _, err := parseParams(raw); err == nil {
			t.Errorf("%q accepted", raw)
		}
	}
	for _, c := range []struct {
		raw  string
		kind model.Kind
	}{
		{"InstanceId.0=i-a", model.KindInvalidParameter},
		{"InstanceId.01=i-a", model.KindInvalidParameter},
		{"InstanceId.x=i-a", model.KindInvalidParameter},
		{"InstanceId.1001=i-a", model.KindInvalidParameter},
		{"InstanceId.1.Foo=i-a", model.KindUnknownParameter},
	} {
		p := mustParse(t, c.raw)
		if _, err := p.List("InstanceId"); model.KindOf(err) != c.kind {
			t.Errorf("%q: %v", c.raw, err)
		}
	}
	p := mustParse(t, "MinCount=abc")
	if _, err := p.Int("MinCount", 0); model.KindOf(err) != model.KindInvalidParameter {
		t.Errorf("int: %v", err)
	}
	p = mustParse(t, "DryRun=yes")
	if _, err := p.Bool("DryRun"); model.KindOf(err) != model.KindInvalidParameter {
		t.Errorf("bool: %v", err)
	}
}

func TestErrorTable(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   string
		status int
	}{
		{model.NotFound(model.ResInstance, "i-1"), "InvalidInstanceID.NotFound", 400},
		{model.Malformed(model.ResImage, "x"), "InvalidAMIID.Malformed", 400},
		{model.Errorf(model.KindDuplicate, model.ResKeyPair, "k", "dup"), "InvalidKeyPair.Duplicate", 400},
		{model.Errorf(model.KindParameterCombination, "idempotency", "t", "x"), "IdempotentParameterMismatch", 400},
		{model.Errorf(model.KindIncorrectState, model.ResInstance, "i", "x"), "IncorrectInstanceState", 400},
		{model.Errorf(model.KindUnauthorized, "", "", "x"), "UnauthorizedOperation", 403},
		{model.Errorf(model.KindAuthFailure, "", "", "x"), "AuthFailure", 401},
		{model.MissingParam("ImageId"), "MissingParameter", 400},
		{errFake("boom"), "InternalError", 500},
	} {
		e := toEC2(c.err)
		if e.Code != c.code || e.Status != c.status {
			t.Errorf("%v: got %s %d, want %s %d", c.err, e.Code, e.Status, c.code, c.status)
		}
	}
}

type errFake string

func (e errFake) Error() string { return string(e) }
