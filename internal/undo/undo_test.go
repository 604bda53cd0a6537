package undo

import (
	"reflect"
	"testing"
)

func TestRunsInReverseUnlessSucceeded(t *testing.T) {
	var got []int
	func() {
		u := New()
		defer u.Run()
		u.Add(func() { got = append(got, 1) })
		u.Add(func() { got = append(got, 2) })
	}()
	if !reflect.DeepEqual(got, []int{2, 1}) {
		t.Fatalf("got %v", got)
	}
	got = nil
	func() {
		u := New()
		defer u.Run()
		u.Add(func() { got = append(got, 1) })
		u.Success()
	}()
	if got != nil {
		t.Fatalf("ran after success: %v", got)
	}
}
