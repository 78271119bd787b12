package interop

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// grpcurl runs the grpcurl that go.mod pins (`go tool grpcurl`, built once into Go's cache).
func grpcurl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"tool", "grpcurl", "-plaintext"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// grpcurl needs no .proto files: it lists both Log APIs through server reflection, produces
// through the book's API and reads the record back through ProgLog's own.
func TestGrpcurlReflectionAndProduce(t *testing.T) {
	leaderAddr, followers := leader(t, addrs(t))

	listed := strings.Fields(grpcurl(t, leaderAddr, "list"))
	for _, svc := range []string{"log.v1.Log", "proglog.v1.Log", "proglog.v1.Cluster", "grpc.health.v1.Health"} {
		if !contains(listed, svc) {
			t.Fatalf("grpcurl list: %v lacks %s", listed, svc)
		}
	}
	methods := strings.Fields(grpcurl(t, leaderAddr, "list", "log.v1.Log"))
	for _, m := range []string{"Produce", "Consume", "ProduceStream", "ConsumeStream", "GetServers"} {
		if !contains(methods, "log.v1.Log."+m) {
			t.Fatalf("grpcurl list log.v1.Log: %v lacks %s", methods, m)
		}
	}
	if d := grpcurl(t, leaderAddr, "describe", "log.v1.Record"); !strings.Contains(d, "uint32 type = 4") {
		t.Fatalf("grpcurl describe log.v1.Record lacks the book's type field:\n%s", d)
	}

	value := "from grpcurl"
	body := fmt.Sprintf(`{"record":{"value":%q}}`, base64.StdEncoding.EncodeToString([]byte(value)))
	var produced struct {
		Offset string `json:"offset"` // proto3 JSON writes uint64 as a string, and omits 0
	}
	if err := json.Unmarshal([]byte(grpcurl(t, "-d", body, leaderAddr, "log.v1.Log/Produce")), &produced); err != nil {
		t.Fatal(err)
	}
	offset := uint64(0)
	if produced.Offset != "" {
		var err error
		if offset, err = strconv.ParseUint(produced.Offset, 10, 64); err != nil {
			t.Fatal(err)
		}
	}

	// The same record through proglog.v1.Log on a follower (once it has committed it there).
	eventually(t, "proglog.v1.Log/Consume on a follower", func() error {
		out, err := exec.Command("go", "tool", "grpcurl", "-plaintext", "-d", fmt.Sprintf(`{"offset":%d}`, offset),
			followers[0], "proglog.v1.Log/Consume").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var consumed struct {
			Record struct {
				Value string `json:"value"`
			} `json:"record"`
		}
		if err := json.Unmarshal(out, &consumed); err != nil {
			return err
		}
		got, _ := base64.StdEncoding.DecodeString(consumed.Record.Value)
		if string(got) != value {
			return fmt.Errorf("proglog.v1.Log/Consume(%d) = %q, want %q", offset, got, value)
		}
		return nil
	})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
