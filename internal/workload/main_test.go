package workload

import (
	"testing"

	"go.uber.org/goleak"
)

// LoadCorpus tokenizes in goroutines: none may outlive it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
