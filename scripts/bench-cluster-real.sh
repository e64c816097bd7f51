#!/usr/bin/env bash
# bench-cluster-real.sh: RS-1 against a shardfn cluster on a real Kafka
# cluster, the measurement the figures on kfake (results/cluster.md) cannot
# make: scaling with nodes on separate machines, replication, real
# transaction-marker latency and disks.
#
# Before running it, on each of N machines (N = 1, then 3, ...), start a node
# against the same Kafka cluster and cluster name, with its ingress and
# admin listeners reachable from this machine:
#
#   engine --cluster --brokers k1:9092,k2:9092,k3:9092 --cluster-name rs1 \
#     --node "$(hostname)" --replication-factor 3 --min-insync-replicas 2 \
#     --ingress-addr 0.0.0.0:8080 --admin-addr 0.0.0.0:9090 \
#     --advertise-admin "http://$(hostname):9090"
#
# then, from a load machine:
#
#   scripts/bench-cluster-real.sh http://node1:8080 http://node1:9090 3
#
# It runs cmd/loadgen's RS-1 (closed loop) through the first node (any node
# takes ingress for any address; state reads for the invariant checks are
# forwarded to their owners) and writes the report under results/
# (label it with the Kafka cluster, the node count and the machines).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: bench-cluster-real.sh <ingress url> <admin url> <node count>}
admin=${2:?admin url}
nodes=${3:?node count}
curl -sf "${admin}/ready" >/dev/null || { echo "node at ${admin} is not ready" >&2; exit 1; }
go run ./cmd/loadgen --target "$target" --admin "$admin" \
	--duration "${DURATION:-60s}" --warmup 10s --concurrency "${CONCURRENCY:-256}" \
	--drivers 10000 --passengers 100000 --grid 100 --requests 0.1 \
	--out "results/cluster-real-${nodes}nodes"
