#!/usr/bin/env bash
# HTTP ingest of one event per request: cmd/engine (durable, RS-1 built in)
# against a bare fasthttp server (loadgen --target baseline), same client,
# same flags, one after the other on this machine. Location events only
# (--requests 0), closed loop. Writes the two reports into results/.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
tmp=$(mktemp -d)
# Stop the engine and wait for it before removing its data directory.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/engine" ./cmd/engine
go build -o "$tmp/loadgen" ./cmd/loadgen
"$tmp/engine" --data-dir "$tmp/data" --ingress-addr 127.0.0.1:18080 --admin-addr 127.0.0.1:19090 --log-level warn &
for i in $(seq 1 100); do curl -sf 127.0.0.1:19090/ready >/dev/null && break; sleep 0.1; done
flags=(--duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" --requests 0)
echo "== shardfn over HTTP"
"$tmp/loadgen" --target http://127.0.0.1:18080 --admin http://127.0.0.1:19090 "${flags[@]}" | tail -1
echo "== bare fasthttp baseline"
"$tmp/loadgen" --target baseline "${flags[@]}" | tail -1
