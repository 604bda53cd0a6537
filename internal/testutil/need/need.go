// Package need decides what a test does when the host lacks something it
// needs (root, a tool, the test guest): it skips, with the reason, except
// under `make test`, which installs and builds everything first and sets
// CLIPPER_TEST_STRICT=1, so that a missing part there fails the run instead
// of passing it with the real-VM and namespace tests quietly skipped.
package need

import (
	"fmt"
	"os"
	"testing"
)

// StrictEnv is the variable `make test` sets.
const StrictEnv = "CLIPPER_TEST_STRICT"

// Strict reports whether missing parts fail tests (StrictEnv set, and not
// -short, whose skips are the point of -short).
func Strict() bool { return os.Getenv(StrictEnv) != "" && !testing.Short() }

// Missing skips t, or fails it when Strict, saying what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s is set: make test provides every part, so a missing one is a failure)", msg, StrictEnv)
	}
	t.Skip(msg)
}
