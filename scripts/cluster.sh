#!/usr/bin/env bash
# cluster.sh: a three-node shardfn cluster on this machine, on the Kafka
# brokers of SHARDFN_BROKERS (default: the development broker that
# `make kfake` runs on 127.0.0.1:9092). Node i serves HTTP ingress on
# 127.0.0.1:808i and its admin API on 127.0.0.1:919i, with its data in
# data-cluster/ni. Ctrl-C stops the three (they keep their partitions and
# data: run it again to restart them).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
BROKERS=${SHARDFN_BROKERS:-127.0.0.1:9092}
mkdir -p bin data-cluster
go build -o bin/engine ./cmd/engine
pids=()
stop() {
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT
for i in $(seq 1 "$NODES"); do
	bin/engine --cluster --brokers "$BROKERS" --cluster-name "${CLUSTER_NAME:-dev}" --node "n$i" \
		--data-dir "data-cluster/n$i" --ingress-addr "127.0.0.1:808$i" --admin-addr "127.0.0.1:919$i" \
		--log-format text > >(sed -u "s/^/n$i | /") 2>&1 &
	pids+=($!)
done
for i in $(seq 1 "$NODES"); do
	until curl -sf "127.0.0.1:919$i/ready" >/dev/null 2>&1; do sleep 0.5; done
done
echo "cluster ready: ingress 127.0.0.1:8081..808$NODES, admin 127.0.0.1:9191..919$NODES (Ctrl-C stops it)"
wait
