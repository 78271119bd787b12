// Package interop runs other people's gRPC clients against ProgLog: the book's client (generated
// from proto/proto/log/v1/log.proto into ./logv1) and grpcurl. The cluster comes from the
// caller: PROGLOG_ADDRS=host:port,host:port,... (logserver/tests/interop_go.rs starts three
// members on loopback and runs this suite); without it the tests skip.
package interop

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	api "proglog.dev/interop/logv1"
)

// The book's ErrOffsetOutOfRange code (api/v1/error.go: status.New(404, ...)).
const bookOffsetOutOfRange = codes.Code(404)

// addrs is the cluster under test, or the test skips.
func addrs(t *testing.T) []string {
	t.Helper()
	v := os.Getenv("PROGLOG_ADDRS")
	if v == "" {
		t.Skip("PROGLOG_ADDRS is not set (logserver/tests/interop_go.rs sets it)")
	}
	return strings.Split(v, ",")
}

func dial(t *testing.T, addr string) api.LogClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewLogClient(conn)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// eventually retries f every 50 ms until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leader asks GetServers (the book's call) until one member says it leads.
func leader(t *testing.T, members []string) (leaderAddr string, followers []string) {
	t.Helper()
	eventually(t, "GetServers to name a leader", func() error {
		res, err := dial(t, members[0]).GetServers(ctx(t), &api.GetServersRequest{})
		if err != nil {
			return err
		}
		if len(res.Servers) != len(members) {
			return fmt.Errorf("GetServers lists %d servers, want %d: %v", len(res.Servers), len(members), res.Servers)
		}
		followers = nil
		leaderAddr = ""
		for _, s := range res.Servers {
			if s.Id == "" || s.RpcAddr == "" {
				return fmt.Errorf("server without id or address: %v", s)
			}
			if s.IsLeader {
				leaderAddr = s.RpcAddr
			} else {
				followers = append(followers, s.RpcAddr)
			}
		}
		if leaderAddr == "" {
			return fmt.Errorf("no server is the leader: %v", res.Servers)
		}
		return nil
	})
	return leaderAddr, followers
}

// The book's client, as its chapters use it: Produce to the leader, Consume from every member,
// the streaming calls, and the documented out-of-range error.
func TestBookClientProduceConsume(t *testing.T) {
	members := addrs(t)
	leaderAddr, followers := leader(t, members)
	client := dial(t, leaderAddr)

	want := &api.Record{Value: []byte("hello world")}
	produce, err := client.Produce(ctx(t), &api.ProduceRequest{Record: want})
	if err != nil {
		t.Fatalf("Produce on the leader %s: %v", leaderAddr, err)
	}
	for _, m := range members {
		var got *api.ConsumeResponse
		// A follower serves up to its commit index, which may trail the leader's for a moment.
		eventually(t, "Consume on "+m, func() error {
			got, err = dial(t, m).Consume(ctx(t), &api.ConsumeRequest{Offset: produce.Offset})
			return err
		})
		r := got.Record
		if string(r.Value) != string(want.Value) || r.Offset != produce.Offset {
			t.Fatalf("Consume(%d) on %s = %q at %d, want %q at %d", produce.Offset, m, r.Value, r.Offset, want.Value, produce.Offset)
		}
		if r.Term == 0 {
			t.Fatalf("Consume on %s: the record's term is 0, want the Raft term it committed in", m)
		}
	}

	// Past the end: the book's ErrOffsetOutOfRange (its server_test compares the codes).
	past := produce.Offset + 1000
	_, err = client.Consume(ctx(t), &api.ConsumeRequest{Offset: past})
	st := status.Convert(err)
	if st.Code() != bookOffsetOutOfRange {
		t.Fatalf("Consume past the end: code %v (%v), want the book's %v", st.Code(), err, bookOffsetOutOfRange)
	}
	if want := fmt.Sprintf("offset out of range: %d", past); st.Message() != want {
		t.Fatalf("Consume past the end: message %q, want %q", st.Message(), want)
	}
	var localized *errdetails.LocalizedMessage
	for _, d := range st.Details() {
		if m, ok := d.(*errdetails.LocalizedMessage); ok {
			localized = m
		}
	}
	if localized == nil || localized.Locale != "en-US" || !strings.Contains(localized.Message, fmt.Sprint(past)) {
		t.Fatalf("Consume past the end: details %v, want a LocalizedMessage naming offset %d", st.Details(), past)
	}

	// ProduceStream: one response per request, in order, offsets dense.
	stream, err := client.ProduceStream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	values := []string{"first", "second", "third"}
	for _, v := range values {
		if err := stream.Send(&api.ProduceRequest{Record: &api.Record{Value: []byte(v)}}); err != nil {
			t.Fatalf("ProduceStream send: %v", err)
		}
	}
	var offsets []uint64
	for range values {
		res, err := stream.Recv()
		if err != nil {
			t.Fatalf("ProduceStream recv: %v", err)
		}
		offsets = append(offsets, res.Offset)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := range offsets {
		if offsets[i] != offsets[0]+uint64(i) || offsets[0] <= produce.Offset {
			t.Fatalf("ProduceStream offsets %v after Produce's %d: want dense and later", offsets, produce.Offset)
		}
	}

	// ConsumeStream from a follower: the records in order, then it waits at the tail.
	follower := dial(t, followers[0])
	cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := follower.ConsumeStream(cctx, &api.ConsumeRequest{Offset: offsets[0]})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		res, err := cs.Recv()
		if err != nil {
			t.Fatalf("ConsumeStream recv %d on %s: %v", i, followers[0], err)
		}
		if string(res.Record.Value) != v || res.Record.Offset != offsets[i] {
			t.Fatalf("ConsumeStream record %d = %q at %d, want %q at %d", i, res.Record.Value, res.Record.Offset, v, offsets[i])
		}
	}
	// It follows the tail: a record produced now arrives on the open stream.
	tail, err := client.Produce(ctx(t), &api.ProduceRequest{Record: &api.Record{Value: []byte("tail")}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.Recv()
	if err != nil || string(res.Record.Value) != "tail" || res.Record.Offset != tail.Offset {
		t.Fatalf("ConsumeStream at the tail: %v %v, want %q at %d", res, err, "tail", tail.Offset)
	}
}

// A Produce sent to a follower is refused with UNAVAILABLE and names the leader in the
// `proglog-leader` metadata, so a client without the book's picker can find the leader.
func TestBookProduceOnFollowerNamesTheLeader(t *testing.T) {
	members := addrs(t)
	leaderAddr, followers := leader(t, members)
	var header, trailer metadata.MD
	_, err := dial(t, followers[0]).Produce(ctx(t), &api.ProduceRequest{Record: &api.Record{Value: []byte("x")}},
		grpc.Header(&header), grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Produce on follower %s: %v, want UNAVAILABLE", followers[0], err)
	}
	hint := append(header.Get("proglog-leader"), trailer.Get("proglog-leader")...)
	if len(hint) != 1 || hint[0] != leaderAddr {
		t.Fatalf("Produce on follower: proglog-leader = %v, want [%s]", hint, leaderAddr)
	}
}

// Produce with no record is a clear INVALID_ARGUMENT, not a crash or an empty append.
func TestBookProduceWithoutRecord(t *testing.T) {
	leaderAddr, _ := leader(t, addrs(t))
	_, err := dial(t, leaderAddr).Produce(ctx(t), &api.ProduceRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Produce without a record: %v, want INVALID_ARGUMENT", err)
	}
}
