package incluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// kube is a few REST calls to the Kubernetes API with the pod's ServiceAccount (kuberesolver
// brings its own client for the EndpointSlices; this one reads what the test checks against).
type kube struct {
	base  string
	token string
	http  *http.Client
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func inCluster() (*kube, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" {
		return nil, fmt.Errorf("not in a pod: KUBERNETES_SERVICE_HOST is not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	return &kube{
		base:  "https://" + net.JoinHostPort(host, port),
		token: strings.TrimSpace(string(token)),
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}, nil
}

func (k *kube) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, body)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// leaderPod is the ProgLog's status.leader (empty while none is known).
func (k *kube) leaderPod(ctx context.Context, ns, name string) (string, error) {
	var p struct {
		Status struct {
			Leader string `json:"leader"`
		} `json:"status"`
	}
	err := k.do(ctx, "GET", fmt.Sprintf("/apis/proglog.dev/v1alpha1/namespaces/%s/proglogs/%s", ns, name), &p)
	return p.Status.Leader, err
}

// podIPs maps the IPs of the ProgLog's pods to their names.
func (k *kube) podIPs(ctx context.Context, ns, name string) (map[string]string, error) {
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				PodIP string `json:"podIP"`
			} `json:"status"`
		} `json:"items"`
	}
	err := k.do(ctx, "GET", fmt.Sprintf("/api/v1/namespaces/%s/pods?labelSelector=proglog.dev/cluster=%s", ns, name), &list)
	ips := map[string]string{}
	for _, p := range list.Items {
		if p.Status.PodIP != "" {
			ips[p.Status.PodIP] = p.Metadata.Name
		}
	}
	return ips, err
}

func (k *kube) deletePod(ctx context.Context, ns, pod string) error {
	return k.do(ctx, "DELETE", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s", ns, pod), nil)
}
