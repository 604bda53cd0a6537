package need

import (
	"testing"
)

// TestStrictNeedsTheVariable: without CLIPPER_TEST_STRICT nothing is strict.
func TestStrictNeedsTheVariable(t *testing.T) {
	t.Setenv(StrictEnv, "")
	if Strict() {
		t.Fatal("strict without the variable")
	}
	t.Setenv(StrictEnv, "1")
	if got, want := Strict(), !testing.Short(); got != want {
		t.Fatalf("Strict() = %v with the variable set (short %v)", got, testing.Short())
	}
}
