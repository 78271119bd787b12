package interop

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	api "proglog.dev/interop/logv1"
)

// The book's client-side discovery (its chapter "Discover Servers and Load Balance from the
// Client"), written from its description: a resolver that asks GetServers of the member it was
// given and marks the leader, and a picker that sends Produce to the leader and spreads Consume
// over the followers. It runs against ProgLog unchanged, since ProgLog's GetServers answers as
// the book's does.
const bookScheme = "proglogbook"

type bookResolver struct {
	mu     sync.Mutex
	cc     resolver.ClientConn
	conn   *grpc.ClientConn
	config *serviceconfig.ParseResult
}

func (r *bookResolver) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	conn, err := grpc.NewClient(t.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	r.cc, r.conn = cc, conn
	r.config = cc.ParseServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{"%s":{}}]}`, bookScheme))
	r.ResolveNow(resolver.ResolveNowOptions{})
	return r, nil
}

func (r *bookResolver) Scheme() string { return bookScheme }

func (r *bookResolver) ResolveNow(resolver.ResolveNowOptions) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := api.NewLogClient(r.conn).GetServers(ctx, &api.GetServersRequest{})
	if err != nil {
		r.cc.ReportError(err)
		return
	}
	var addrs []resolver.Address
	for _, s := range res.Servers {
		addrs = append(addrs, resolver.Address{
			Addr:       s.RpcAddr,
			Attributes: attributes.New("is_leader", s.IsLeader),
		})
	}
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs, ServiceConfig: r.config})
}

func (r *bookResolver) Close() { r.conn.Close() }

type bookPicker struct {
	leader    balancer.SubConn
	followers []balancer.SubConn
	next      atomic.Uint64
}

func (p *bookPicker) Build(info base.PickerBuildInfo) balancer.Picker {
	picker := &bookPicker{}
	for sc, sci := range info.ReadySCs {
		if leader, _ := sci.Address.Attributes.Value("is_leader").(bool); leader {
			picker.leader = sc
		} else {
			picker.followers = append(picker.followers, sc)
		}
	}
	return picker
}

func (p *bookPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	var sc balancer.SubConn
	switch {
	case info.FullMethodName == "/log.v1.Log/Produce" || info.FullMethodName == "/log.v1.Log/ProduceStream":
		sc = p.leader
	case len(p.followers) > 0 && (info.FullMethodName == "/log.v1.Log/Consume" || info.FullMethodName == "/log.v1.Log/ConsumeStream"):
		sc = p.followers[p.next.Add(1)%uint64(len(p.followers))]
	default:
		sc = p.leader
	}
	if sc == nil {
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	return balancer.PickResult{SubConn: sc}, nil
}

func init() {
	resolver.Register(&bookResolver{})
	balancer.Register(base.NewBalancerBuilder(bookScheme, &bookPicker{}, base.Config{}))
}

// The book's resolver and picker: Produce lands on the leader GetServers names, Consume on the
// followers, in turn.
func TestBookResolverAndPicker(t *testing.T) {
	members := addrs(t)
	leaderAddr, followers := leader(t, members)
	conn, err := grpc.NewClient(fmt.Sprintf("%s:///%s", bookScheme, members[0]),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := api.NewLogClient(conn)

	var offsets []uint64
	for i := 0; i < 4; i++ {
		var p peer.Peer
		res, err := client.Produce(ctx(t), &api.ProduceRequest{Record: &api.Record{Value: []byte(fmt.Sprint("picked-", i))}},
			grpc.WaitForReady(true), grpc.Peer(&p))
		if err != nil {
			t.Fatalf("Produce %d: %v", i, err)
		}
		if p.Addr.String() != leaderAddr {
			t.Fatalf("Produce %d was answered by %s, the leader is %s", i, p.Addr, leaderAddr)
		}
		offsets = append(offsets, res.Offset)
	}
	answered := map[string]int{}
	for i, off := range offsets {
		var p peer.Peer
		var res *api.ConsumeResponse
		eventually(t, fmt.Sprint("Consume ", off), func() error {
			var err error
			res, err = client.Consume(ctx(t), &api.ConsumeRequest{Offset: off}, grpc.WaitForReady(true), grpc.Peer(&p))
			return err
		})
		if string(res.Record.Value) != fmt.Sprint("picked-", i) {
			t.Fatalf("Consume(%d) = %q", off, res.Record.Value)
		}
		if p.Addr.String() == leaderAddr {
			t.Fatalf("Consume(%d) was answered by the leader %s, want a follower of %v", off, p.Addr, followers)
		}
		answered[p.Addr.String()]++
	}
	// Round robin over the followers: every follower answers (a follower's connection may
	// become ready after the first reads, so read on until each has).
	eventually(t, "every follower to answer a Consume", func() error {
		var p peer.Peer
		if _, err := client.Consume(ctx(t), &api.ConsumeRequest{Offset: offsets[0]}, grpc.WaitForReady(true), grpc.Peer(&p)); err != nil {
			return err
		}
		if p.Addr.String() == leaderAddr {
			t.Fatalf("Consume was answered by the leader %s", p.Addr)
		}
		answered[p.Addr.String()]++
		if len(answered) < len(followers) {
			return fmt.Errorf("reads answered by %v, want every follower of %v", answered, followers)
		}
		return nil
	})
}
