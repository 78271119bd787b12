#!/usr/bin/env bash
# `make run`: ProgLog on Kubernetes, under its operator, from nothing.
#
#  1. the cluster: the one KUBECONFIG names when it answers, else the devcluster (built on first use
#     from Go modules, then started; a second run reuses both);
#  2. the images, built from this checkout and loaded on the node (`make images`);
#  3. the CRD and the operator (`make deploy`);
#  4. the sample ProgLog (manifests/samples/proglog.yaml), until it is Ready;
#  5. a few records produced and consumed through the resolver (the `proglog` CLI with --cluster);
#  6. `kubectl get plog` and what to try next.
#
# `make run-local` starts three members on loopback with no Kubernetes instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tests/devcluster/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PROGLOG_CACHE/target}"
NAME=demo
NS="${PROGLOG_NAMESPACE:-default}"
t0=$SECONDS
step=0
stepline() { step=$((step + 1)); printf '\n== make run [%d/7, %ds] %s\n' "$step" "$((SECONDS - t0))" "$*"; }

stepline "the cluster"
if [[ -n "${KUBECONFIG:-}" ]] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "using the cluster KUBECONFIG names ($KUBECONFIG); its nodes must have the images"
  echo "(images/Dockerfile; kind: kind load docker-image), or set OPERATOR_IMAGE and LOGSERVER_IMAGE"
  external=1
else
  if [[ -n "${KUBECONFIG:-}" ]]; then
    echo "KUBECONFIG=$KUBECONFIG does not answer: using the devcluster instead"
    unset KUBECONFIG
  fi
  bash tests/devcluster/k8s-bins.sh
  bash tests/devcluster/up.sh >/dev/null
  eval "$(bash tests/devcluster/env.sh)"
  external=0
fi
kubectl get nodes -o wide

stepline "the images"
if ((external)); then
  LOGSERVER_IMAGE="${LOGSERVER_IMAGE:-$(awk '$1 == "image:" {print $2; exit}' manifests/samples/proglog.yaml)}"
  cargo build -q --bin proglog
else
  if [[ ! -x "$CARGO_TARGET_DIR/debug/logserver" || ! -x "$CARGO_TARGET_DIR/debug/proglog-operator" ]]; then
    echo "first build of the ProgLog binaries (cargo, debug): about 10 min on 2 cores, once"
  fi
  eval "$(bash scripts/images.sh | grep '^[A-Z_]*_IMAGE=')"
  export OPERATOR_IMAGE
fi
echo "member image: $LOGSERVER_IMAGE"

stepline "the operator"
bash scripts/deploy.sh

stepline "the sample ProgLog $NS/$NAME"
sed "s#^\(  image:\).*#\1 $LOGSERVER_IMAGE#" manifests/samples/proglog.yaml \
  | kubectl apply -n "$NS" --server-side -f -
if ! kubectl wait -n "$NS" --for=condition=Ready "plog/$NAME" --timeout=300s; then
  kubectl get -n "$NS" plog,pods,pvc -o wide || true
  kubectl get -n "$NS" events --sort-by=.lastTimestamp | tail -20 || true
  echo "make run: plog/$NAME did not become Ready in 300 s (above: its pods and the last events)" >&2
  exit 1
fi

stepline "the sample ProgLogUser $NS/alice (a certificate, produce and consume)"
# NB: the members run mutual TLS with an ACL: a client needs a user's certificate (--user reads
# alice's Secret through the API).
kubectl apply -n "$NS" --server-side -f manifests/samples/proglog-user.yaml
kubectl wait -n "$NS" --for=condition=Ready pluser/alice --timeout=60s

stepline "produce and consume through the resolver"
P="$CARGO_TARGET_DIR/debug/proglog"
before="$("$P" --cluster "$NAME" --namespace "$NS" status -o json \
  | python3 -c 'import json,sys; print((json.load(sys.stdin).get("status") or {}).get("leader") or "")' 2>/dev/null || true)"
echo "leader: ${before:-unknown}"
# NB: the members read the policy from the ACL ConfigMap's volume, which the kubelet refreshes on
# its own sync (up to about a minute after alice's line was added): until then alice is refused
# and nothing is written, so retry a refusal for a while.
deadline=$((SECONDS + 150))
until out="$(printf 'hello from make run\nrecord two\nrecord three\n' \
  | "$P" --cluster "$NAME" --namespace "$NS" --user alice produce 2>&1)"; do
  if [[ "$out" != *"permission denied"* ]] || ((SECONDS > deadline)); then
    echo "$out" >&2
    exit 1
  fi
  echo "waiting for the members to load alice's grant (the kubelet refreshes their ACL volume within about a minute) ..."
  sleep 5
done
echo "$out"
"$P" --cluster "$NAME" --namespace "$NS" --user alice consume --from 0 | tail -5

stepline "done in $((SECONDS - t0)) s"
kubectl get -n "$NS" plog "$NAME"
kubectl get -n "$NS" pods -l "proglog.dev/cluster=$NAME" -o wide
cat <<EOF

Try next:
  eval "\$(make -s dev-cluster-env)"            # kubectl for this cluster
  P=$P
  \$P --cluster $NAME --namespace $NS status     # leader, members, lag, conditions
  \$P --cluster $NAME --namespace $NS --user alice produce hello world
  \$P --cluster $NAME --namespace $NS --user alice consume --from 0 --follow
  kubectl -n $NS get pluser                      # ProgLogUsers: certificate, actions, discovery
  kubectl -n $NS scale plog/$NAME --replicas=5   # members join as learners, then voters
  kubectl -n $NS delete pod $NAME-0              # a member dies; the others elect, the slices follow
  T=/var/run/proglog/tls; kubectl -n $NS exec $NAME-1 -- proglog --addr $NAME-leader.$NS.svc:8400 \\
    --ca \$T/ca.pem --cert \$T/cert.pem --key \$T/key.pem servers   # in a pod, by Service name, mutual TLS
  make undeploy; make dev-cluster-down           # remove it all (down restores the host)
EOF
