// Package incluster is the in-cluster half of the interop suite: a Go application in a pod
// routes by role with stock tools. kuberesolver (`kubernetes:///<name>-leader.<ns>:grpc`, which
// watches the EndpointSlices the operator publishes) carries Produce, and grpc-go's
// `round_robin` over `kubernetes:///<name>-followers.<ns>:grpc` spreads Consume; every call's
// answering peer is checked against the ProgLog's `status.leader`. Then the leader's pod is
// deleted and the same client's writes must reach the new leader.
//
// Built as a static test binary, packaged as an image and run as a pod by
// tests/tests/interop_in_cluster.rs. Settings: PROGLOG_NAME, PROGLOG_NAMESPACE; without them
// the test skips. PROGLOG_TLS_DIR (a ProgLogUser's Secret mounted: ca.pem, tls.crt, tls.key)
// turns on mutual TLS, as a ProgLog runs by default; without it the calls are plaintext.
package incluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sercand/kuberesolver/v6"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	api "proglog.dev/interop/logv1"
)

type env struct {
	t        *testing.T
	k        *kube
	ns, name string
}

func setup(t *testing.T) *env {
	name, ns := os.Getenv("PROGLOG_NAME"), os.Getenv("PROGLOG_NAMESPACE")
	if name == "" || ns == "" {
		t.Skip("PROGLOG_NAME and PROGLOG_NAMESPACE are not set (tests/tests/interop_in_cluster.rs runs this in a pod)")
	}
	k, err := inCluster()
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, k: k, ns: ns, name: name}
}

func (e *env) ctx() context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.t.Cleanup(cancel)
	return c
}

// leader is the ProgLog's status.leader and its pod IP, once both are known.
func (e *env) leader(not string) (pod, ip string) {
	e.eventually("status.leader (not "+not+") with a pod IP", 120*time.Second, func() error {
		l, err := e.k.leaderPod(e.ctx(), e.ns, e.name)
		if err != nil {
			return err
		}
		if l == "" || l == not {
			return fmt.Errorf("status.leader is %q", l)
		}
		ips, err := e.k.podIPs(e.ctx(), e.ns, e.name)
		if err != nil {
			return err
		}
		for i, p := range ips {
			if p == l {
				pod, ip = l, i
				return nil
			}
		}
		return fmt.Errorf("leader %s has no pod IP yet (%v)", l, ips)
	})
	return pod, ip
}

func (e *env) eventually(what string, limit time.Duration, f func() error) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: still failing after %v: %v", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// produce sends one record through the leader channel and returns its offset and the IP of
// the member that answered.
func produce(ctx context.Context, c api.LogClient, v string) (uint64, string, error) {
	var p peer.Peer
	res, err := c.Produce(ctx, &api.ProduceRequest{Record: &api.Record{Value: []byte(v)}}, grpc.Peer(&p))
	if err != nil {
		return 0, "", err
	}
	return res.Offset, ipOf(p), nil
}

func ipOf(p peer.Peer) string {
	if p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// transport is plaintext, or mutual TLS with the user's certificate from PROGLOG_TLS_DIR. The
// members are dialed by pod IP (kuberesolver), so the name verified is the Service's: the
// member certificate covers <name>-leader and <name>-followers under <ns>.svc.
func (e *env) transport(svc string) grpc.DialOption {
	dir := os.Getenv("PROGLOG_TLS_DIR")
	if dir == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		e.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		e.t.Fatalf("no certificate in %s/ca.pem", dir)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		e.t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		ServerName:   fmt.Sprintf("%s-%s.%s.svc", e.name, svc, e.ns),
		MinVersion:   tls.VersionTLS12,
	}))
}

func TestKuberesolverRoutesByRole(t *testing.T) {
	e := setup(t)
	kuberesolver.RegisterInCluster()
	target := func(svc string) string { return fmt.Sprintf("kubernetes:///%s-%s.%s:grpc", e.name, svc, e.ns) }

	lconn, err := grpc.NewClient(target("leader"), e.transport("leader"))
	if err != nil {
		t.Fatal(err)
	}
	defer lconn.Close()
	fconn, err := grpc.NewClient(target("followers"),
		e.transport("followers"),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer fconn.Close()
	writer, reader := api.NewLogClient(lconn), api.NewLogClient(fconn)

	// 1. Writes through <name>-leader reach status.leader.
	leaderPod, leaderIP := e.leader("")
	t.Logf("status.leader = %s (%s)", leaderPod, leaderIP)
	// A ProgLogUser's grant reaches the members' ACL shortly after its Secret exists.
	e.eventually("the first write to be allowed", 60*time.Second, func() error {
		_, _, err := produce(e.ctx(), writer, "granted")
		return err
	})
	var offsets []uint64
	for i := 0; i < 10; i++ {
		off, ip, err := produce(e.ctx(), writer, fmt.Sprintf("kuberesolver-%d", i))
		if err != nil {
			t.Fatalf("Produce %d through %s: %v", i, target("leader"), err)
		}
		if ip != leaderIP {
			t.Fatalf("Produce %d was answered by %s, but status.leader is %s (%s)", i, ip, leaderPod, leaderIP)
		}
		offsets = append(offsets, off)
	}
	t.Logf("10 records produced through %s, all answered by %s: offsets %d..%d", target("leader"), leaderPod, offsets[0], offsets[9])

	// 2. Reads through <name>-followers (round_robin) come from followers, spread over them.
	ips, err := e.k.podIPs(e.ctx(), e.ns, e.name)
	if err != nil {
		t.Fatal(err)
	}
	answered := map[string]int{}
	for round := 0; round < 2; round++ {
		for i, off := range offsets {
			var p peer.Peer
			var res *api.ConsumeResponse
			e.eventually(fmt.Sprintf("Consume(%d) through the followers", off), 30*time.Second, func() error {
				var err error
				res, err = reader.Consume(e.ctx(), &api.ConsumeRequest{Offset: off}, grpc.Peer(&p))
				return err
			})
			if want := fmt.Sprintf("kuberesolver-%d", i); string(res.Record.Value) != want {
				t.Fatalf("Consume(%d) = %q, want %q", off, res.Record.Value, want)
			}
			ip := ipOf(p)
			if ip == leaderIP || ips[ip] == "" {
				t.Fatalf("Consume(%d) was answered by %s (%q), not a follower (leader %s at %s; pods %v)",
					off, ip, ips[ip], leaderPod, leaderIP, ips)
			}
			answered[ips[ip]]++
		}
	}
	// round_robin picks among the connections that are READY: a follower whose connection is
	// still being set up joins a moment later, so read on until both have answered.
	e.eventually("both followers to answer through round_robin", 30*time.Second, func() error {
		var p peer.Peer
		if _, err := reader.Consume(e.ctx(), &api.ConsumeRequest{Offset: offsets[0]}, grpc.Peer(&p)); err != nil {
			return err
		}
		ip := ipOf(p)
		if ip == leaderIP || ips[ip] == "" {
			t.Fatalf("Consume was answered by %s (%q), not a follower (leader %s at %s)", ip, ips[ip], leaderPod, leaderIP)
		}
		answered[ips[ip]]++
		if len(answered) < 2 {
			return fmt.Errorf("reads answered by %v, want both followers", answered)
		}
		return nil
	})
	t.Logf("reads through %s answered by followers %v", target("followers"), answered)

	// 3. The leader's pod goes; the same client's writes reach the new leader.
	if err := e.k.deletePod(e.ctx(), e.ns, leaderPod); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	refused := map[codes.Code]int{}
	var first time.Duration
	e.eventually("a write acknowledged by the new leader", 120*time.Second, func() error {
		off, ip, err := produce(e.ctx(), writer, "after-the-leader-change")
		if err != nil {
			refused[status.Code(err)]++
			return err
		}
		newPod, newIP := e.leader(leaderPod)
		if ip != newIP {
			return fmt.Errorf("Produce (offset %d) was answered by %s; status.leader is now %s (%s)", off, ip, newPod, newIP)
		}
		first = time.Since(start)
		t.Logf("after deleting %s: first write acknowledged by the new leader %s (%s) at offset %d after %v (refusals before: %v)",
			leaderPod, newPod, newIP, off, first.Round(time.Millisecond), refused)
		return nil
	})
	// And it stays there.
	newPod, newIP := e.leader(leaderPod)
	for i := 0; i < 5; i++ {
		_, ip, err := produce(e.ctx(), writer, fmt.Sprintf("new-leader-%d", i))
		if err != nil {
			t.Fatalf("Produce %d after the change: %v", i, err)
		}
		if ip != newIP {
			t.Fatalf("Produce %d after the change was answered by %s, status.leader is %s (%s)", i, ip, newPod, newIP)
		}
	}
}
