package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test with what it
// waited for after a minute: long enough for a loaded CI machine, and a
// bound on a test that would otherwise hang.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
