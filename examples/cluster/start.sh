#!/bin/sh
# A three-host muster cluster on this machine: a three-member etcd and three `muster
# up`, each host with its own loopback address (127.0.0.1, .2, .3) and directory.
#
#   sh examples/cluster/start.sh [DIR]
#
# Needs etcd (Debian: apt-get install etcd-server), python3 and muster (on PATH, or
# MUSTER=/path/to/muster; from a checkout, `cargo build --release` first and it uses
# target/release/muster). DIR (default: a new temp directory) holds each host's config,
# state and log, and etcd's data. Ctrl-C stops everything. See README.md for a
# failover to try.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$(mktemp -d /tmp/muster-cluster.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -z "${MUSTER:-}" ]; then
    if [ -x "$here/../../target/release/muster" ]; then
        MUSTER=$here/../../target/release/muster
    else
        MUSTER=muster
    fi
fi
command -v etcd >/dev/null || { echo "start.sh: etcd is not installed (Debian: apt-get install etcd-server)" >&2; exit 2; }
command -v "$MUSTER" >/dev/null || { echo "start.sh: no muster at $MUSTER; build it (cargo build --release) or set MUSTER" >&2; exit 2; }
base=${BASE_PORT:-23790}

pids=""
stop() {
    trap - INT TERM EXIT
    for host in a b c; do
        [ -f "$dir/$host/muster.toml" ] && "$MUSTER" -f "$dir/$host/muster.toml" down >/dev/null 2>&1 &
    done
    wait 2>/dev/null || true
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    echo "stopped; everything is left in $dir"
}
trap stop INT TERM EXIT

# etcd: members e1..e3 on 127.0.0.1, client ports BASE+1..3, peer ports BASE+11..13.
cluster=""
for i in 1 2 3; do
    cluster="${cluster:+$cluster,}e$i=http://127.0.0.1:$((base + 10 + i))"
done
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$dir/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:$((base + i))" \
        --advertise-client-urls "http://127.0.0.1:$((base + i))" \
        --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --heartbeat-interval 100 --election-timeout 1000 \
        >"$dir/etcd-e$i.log" 2>&1 &
    pids="$pids $!"
done

# Hosts a, b, c on 127.0.0.1, .2, .3.
i=0
for host in a b c; do
    i=$((i + 1))
    mkdir -p "$dir/$host"
    cp "$here/muster.toml" "$dir/$host/muster.toml"
    cat >"$dir/$host/.env" <<ENV
HOST=$host
ADDRESS=127.0.0.$i
ETCD1=http://127.0.0.1:$((base + 1))
ETCD2=http://127.0.0.1:$((base + 2))
ETCD3=http://127.0.0.1:$((base + 3))
EXAMPLE=$here
ENV
    "$MUSTER" -f "$dir/$host/muster.toml" up >"$dir/$host/up.log" 2>&1 &
    pids="$pids $!"
done

echo "three hosts in $dir (a: 127.0.0.1, b: 127.0.0.2, c: 127.0.0.3); Ctrl-C stops them"
echo "  $MUSTER -f $dir/a/muster.toml cluster"
echo "  $MUSTER -f $dir/a/muster.toml status --cluster"
echo "  $MUSTER -f $dir/b/muster.toml logs -f worker"
# Until Ctrl-C (or a host's muster ends on its own: then its log says why).
wait
