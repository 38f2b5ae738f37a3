#!/usr/bin/env bash
# A real Kubernetes API server for tests and people: etcd + kube-apiserver
# on loopback, with an admin token and a kubeconfig.
#
#   hack/kube-apiserver.sh up DIR     # start; writes DIR/kubeconfig, prints it
#   hack/kube-apiserver.sh down DIR   # stop and remove DIR
#
# kube-apiserver is found through $KUBE_APISERVER or PATH, etcd through
# $ETCD or PATH (Debian: apt-get install etcd-server). Exit code 3 means a
# tool is missing.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }

stop() {
  for p in apiserver etcd; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  for p in apiserver etcd; do
    if [ -f "$dir/$p.pid" ]; then
      pid=$(cat "$dir/$p.pid")
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

case "$cmd" in
down)
  stop
  rm -rf "$dir"
  exit 0
  ;;
up) ;;
*) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac

apiserver=${KUBE_APISERVER:-$(command -v kube-apiserver || true)}
etcd=${ETCD:-$(command -v etcd || true)}
[ -n "$apiserver" ] || { echo "kube-apiserver not found (set KUBE_APISERVER or PATH)" >&2; exit 3; }
[ -n "$etcd" ] || { echo "etcd not found (set ETCD or PATH; Debian: etcd-server)" >&2; exit 3; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_client=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)

# Certificates: a CA, a serving cert for 127.0.0.1, and the service-account
# signing key.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rds-csi-test-ca" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" >/dev/null 2>&1
openssl genrsa -out "$dir/sa.key" 2048 >/dev/null 2>&1
openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" >/dev/null 2>&1
token=$(openssl rand -hex 16)
echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"

"$etcd" --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" \
  >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/etcd.pid"

"$apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$dir/server.crt" --tls-private-key-file "$dir/server.key" \
  --client-ca-file "$dir/ca.crt" \
  --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-signing-key-file "$dir/sa.key" --service-account-key-file "$dir/sa.pub" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --disable-admission-plugins ServiceAccount \
  --allow-privileged=true \
  >"$dir/apiserver.log" 2>&1 &
echo $! >"$dir/apiserver.pid"

cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC

for _ in $(seq 300); do
  if curl -sf --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
    echo "$dir/kubeconfig"
    exit 0
  fi
  if ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "kube-apiserver did not become ready; last log lines:" >&2
tail -n 20 "$dir/apiserver.log" >&2
stop
exit 1
