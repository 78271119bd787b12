package interop

import (
	"os/exec"
	"testing"
)

// The checked-in logv1 code matches proto/proto/log/v1/log.proto (regenerate with
// `go generate ./...` in tests/interop).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	out, err := exec.Command("go", "run", "./gen", "-check").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
