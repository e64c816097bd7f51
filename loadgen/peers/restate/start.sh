# shellcheck shell=bash
# start.sh — sourced by scripts/bench-peers.sh (and usable by hand): installs
# the pinned Restate server, builds the RS-1 peer service, starts both on
# loopback with their data under a temporary directory, and registers the
# deployment. It defines functions only; nothing runs when it is sourced.
#
#   restate_install            npm ci of the pinned @restatedev/restate-server (no install scripts)
#   restate_build              go build of the peer service into bin/restate-rides
#   restate_start WORKDIR      start restate-server + restate-rides, register; sets
#                              RESTATE_PID, RIDES_PID, RESTATE_INGRESS, RESTATE_ADMIN
#   restate_stop               stop both (TERM, then KILL after 10 s)
#
# Tuning (environment, defaults in brackets):
#   RESTATE_PARTITIONS [2]     default-num-partitions; Restate's default is 24, one
#                              partition processor each, sized for many cores. On a
#                              2-core machine 24 processors mostly add per-partition
#                              overhead (each has its own leader loop, RocksDB column
#                              family, timers and shuffle); 2 = one per core.
#   RESTATE_PROVIDER [replicated]  bifrost default-provider; "local" is the
#                              single-node RocksDB loglet (replicated is the default
#                              and also runs on one node; both fsync).
#   RESTATE_JOURNAL_RETENTION [0s]  default-journal-retention; Restate keeps the journal
#                              of completed invocations for 1d by default (for
#                              introspection); 0s drops it at completion, which
#                              is what a benchmark of the work itself wants.
#   RESTATE_EXTRA_TOML         inserted verbatim after the top-level keys of the
#                              generated restate.toml (top-level keys, then tables).
#   RESTATE_PORT_BASE [28000]  ingress = base+80, admin = base+70, node = base+22,
#                              SDK endpoint = base+81 (clear of shardfn's 8080/9090).

RESTATE_PEER_DIR=${RESTATE_PEER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
RESTATE_BIN="$RESTATE_PEER_DIR/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
RIDES_BIN="$RESTATE_PEER_DIR/bin/restate-rides"

restate_install() {
	# A stamp holding the lock file's checksum says whether node_modules
	# matches package-lock.json (npm ci wipes and reinstalls, so skip it
	# when it does).
	local stamp="$RESTATE_PEER_DIR/node_modules/.shardfn-lock-sum" sum
	sum=$(cksum <"$RESTATE_PEER_DIR/package-lock.json")
	if [ ! -x "$RESTATE_BIN" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
		(cd "$RESTATE_PEER_DIR" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
		echo "$sum" >"$stamp"
	fi
	"$RESTATE_BIN" --version
}

restate_build() {
	(cd "$RESTATE_PEER_DIR" && go build -o bin/restate-rides .)
}

# restate_wait_http URL SECONDS: wait until URL answers 2xx.
restate_wait_http() {
	local url=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if curl -sf -o /dev/null "$url"; then return 0; fi
		sleep 0.1
	done
	echo "restate: $url did not come up in ${secs}s" >&2
	return 1
}

restate_start() {
	local work=$1
	local base=${RESTATE_PORT_BASE:-28000}
	local partitions=${RESTATE_PARTITIONS:-2}
	local provider=${RESTATE_PROVIDER:-replicated}
	local retention=${RESTATE_JOURNAL_RETENTION:-0s}
	RESTATE_INGRESS="http://127.0.0.1:$((base + 80))"
	RESTATE_ADMIN="http://127.0.0.1:$((base + 70))"
	local rides_addr="127.0.0.1:$((base + 81))"
	mkdir -p "$work/restate-data"
	cat >"$work/restate.toml" <<EOF
node-name = "shardfn-peer"
cluster-name = "shardfn-peer"
base-dir = "$work/restate-data"
bind-address = "127.0.0.1:$((base + 22))"
advertised-address = "http://127.0.0.1:$((base + 22))/"
default-num-partitions = $partitions
default-journal-retention = "$retention"
disable-telemetry = true
log-filter = "warn"
${RESTATE_EXTRA_TOML:-}

[bifrost]
default-provider = "$provider"

[ingress]
bind-address = "127.0.0.1:$((base + 80))"

[admin]
bind-address = "127.0.0.1:$((base + 70))"
disable-web-ui = true
EOF
	"$RESTATE_BIN" --config-file "$work/restate.toml" --no-logo --log-disable-ansi-codes true \
		>"$work/restate.log" 2>&1 &
	RESTATE_PID=$!
	"$RIDES_BIN" -listen "$rides_addr" ${RIDES_FLAGS:-} >"$work/restate-rides.log" 2>&1 &
	RIDES_PID=$!
	restate_wait_http "$RESTATE_ADMIN/health" 60
	restate_wait_http "$RESTATE_INGRESS/restate/health" 60 ||
		restate_wait_http "$RESTATE_INGRESS/" 1 || true
	local i out
	for ((i = 0; i < 50; i++)); do
		if out=$(curl -sf -X POST "$RESTATE_ADMIN/deployments" -H 'content-type: application/json' \
			-d "{\"uri\":\"http://$rides_addr\",\"force\":true}"); then
			echo "restate: deployment registered: $(echo "$out" | head -c 60)..."
			break
		fi
		sleep 0.2
	done
	if ((i == 50)); then
		echo "restate: registering http://$rides_addr failed" >&2
		return 1
	fi
	# The ingress learns the new services asynchronously: wait until a
	# getter answers.
	for ((i = 0; i < 100; i++)); do
		if curl -sf -o /dev/null -X POST "$RESTATE_INGRESS/GeoCell/0-0/get"; then return 0; fi
		sleep 0.1
	done
	echo "restate: ingress does not serve the peer's objects" >&2
	return 1
}

restate_stop() {
	local p
	for p in ${RIDES_PID:-} ${RESTATE_PID:-}; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in ${RIDES_PID:-} ${RESTATE_PID:-}; do
		for ((i = 0; i < 100; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	RIDES_PID= RESTATE_PID=
}
