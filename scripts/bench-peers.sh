#!/usr/bin/env bash
# bench-peers.sh — RS-1 side by side in three rows: shardfn in-process,
# shardfn over HTTP through cmd/engine, and Restate over HTTP
# (loadgen/peers/restate); same load generator, same flags, same machine, one
# after the other, and a Markdown table in results/peers-restate.md. The two
# HTTP rows are the same race: the same client speaking HTTP to a durable
# server process on loopback.
#
# What it does:
#   1. installs the pinned Restate server (npm ci of loadgen/peers/restate,
#      no install scripts) and builds the peer service and cmd/loadgen;
#   2. runs cmd/loadgen --target inproc;
#   3. starts cmd/engine (durable, RS-1 built in, its data in the temporary
#      directory) and runs cmd/loadgen --target http://<ingress> against it;
#   4. starts restate-server and the peer service on loopback with their
#      data in a temporary directory, registers the deployment, and runs
#      cmd/loadgen --target restate:<ingress> with the same flags;
#   5. reads CPU time (utime+stime of /proc/<pid>/stat) and RSS (VmRSS,
#      VmHWM of /proc/<pid>/status) of Restate and the peer service, and the
#      load generator's own CPU time (bash `times`), and writes the report.
# Every process it starts is stopped on exit (trap), and the temporary
# directory removed (KEEP_WORK=1 keeps it, with the logs).
#
# Environment (defaults in brackets): DURATION [30s], WARMUP [10s],
# CONCURRENCY [64], SEED [1], FINISH_DELAY [2s], OUT
# [results/peers-restate.md], LOADGEN_FLAGS (extra flags for both runs), and
# the Restate tuning variables of loadgen/peers/restate/start.sh
# (RESTATE_PARTITIONS, RESTATE_PROVIDER, RESTATE_JOURNAL_RETENTION,
# RESTATE_EXTRA_TOML, RESTATE_PORT_BASE). ENGINE_PORT_BASE [18180]: cmd/engine
# listens on it (ingress) and the next port (admin).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-10s}
CONCURRENCY=${CONCURRENCY:-64}
SEED=${SEED:-1}
FINISH_DELAY=${FINISH_DELAY:-2s}
OUT=${OUT:-results/peers-restate.md}
LOADGEN_FLAGS=${LOADGEN_FLAGS:-}
ENGINE_PORT_BASE=${ENGINE_PORT_BASE:-18180}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
# cmd/engine runs RS-1 with its built-in finish delay (rides.Config's 2s).
if [ "$FINISH_DELAY" != 2s ]; then
	echo "bench-peers: FINISH_DELAY must be 2s, the finish delay cmd/engine's RS-1 functions use" >&2
	exit 2
fi

# shellcheck source=../loadgen/peers/restate/start.sh
source "$ROOT/loadgen/peers/restate/start.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardfn-peers.XXXXXX")
LOADGEN_PID=
ENGINE_PID=
engine_stop() {
	if [ -n "$ENGINE_PID" ]; then
		kill -TERM "$ENGINE_PID" 2>/dev/null || true
		wait "$ENGINE_PID" 2>/dev/null || true
		ENGINE_PID=
	fi
}
cleanup() {
	local rc=$?
	if [ -n "$LOADGEN_PID" ]; then kill -TERM "$LOADGEN_PID" 2>/dev/null || true; fi
	engine_stop
	restate_stop
	if [ "${KEEP_WORK:-0}" = 1 ]; then echo "bench-peers: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in go node npm curl jq; do
	command -v "$tool" >/dev/null || { echo "bench-peers: $tool is required" >&2; exit 1; }
done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== install and build" >&2
RESTATE_VERSION=$(restate_install)
restate_build
go build -o "$WORK/loadgen" ./cmd/loadgen
go build -o "$WORK/engine" ./cmd/engine

FLAGS=(--duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" --seed "$SEED"
	--finish-delay "$FINISH_DELAY")
COMMON=("${FLAGS[@]}" --out "$WORK/reports")
# shellcheck disable=SC2206
EXTRA=($LOADGEN_FLAGS)
RIDES_FLAGS="-finish-delay $FINISH_DELAY"
export RIDES_FLAGS

# ticks PID: utime+stime of PID in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# kb PID FIELD: a /proc/PID/status field in kB.
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz}'; }

# run_loadgen NAME TARGET: runs cmd/loadgen; its JSON line goes to
# $WORK/NAME.json, its stderr to $WORK/loadgen-NAME.log, its CPU seconds (user+sys,
# from `times` of a child shell) to $WORK/NAME.cpu and its exit status (1
# when an invariant failed) to $WORK/NAME.rc.
run_loadgen() {
	local name=$1 target=$2
	echo "== $name: loadgen --target $target ${COMMON[*]} ${EXTRA[*]}" >&2
	OUTJSON="$WORK/$name.out" OUTLOG="$WORK/loadgen-$name.log" OUTRC="$WORK/$name.rc" OUTTIMES="$WORK/$name.times" \
		bash -c '"$@" >"$OUTJSON" 2>"$OUTLOG"; echo $? >"$OUTRC"; times >"$OUTTIMES"' \
		_ "$WORK/loadgen" --target "$target" "${COMMON[@]}" "${EXTRA[@]}" || true
	tail -n 1 "$WORK/$name.out" >"$WORK/$name.json"
	# Second line of `times`: children's user and system time, "XmY.YYYs".
	awk 'NR == 2 {
		n = split($1 " " $2, a, " "); s = 0
		for (i = 1; i <= n; i++) { split(a[i], b, "m"); sub("s", "", b[2]); s += b[1] * 60 + b[2] }
		printf "%.1f", s }' "$WORK/$name.times" >"$WORK/$name.cpu"
	tail -n 3 "$WORK/loadgen-$name.log" >&2
	if ! jq -e . "$WORK/$name.json" >/dev/null 2>&1; then
		echo "bench-peers: $name run produced no result line; its log:" >&2
		tail -n 30 "$WORK/loadgen-$name.log" >&2
		return 1
	fi
}

run_loadgen inproc inproc

ENGINE_INGRESS=127.0.0.1:$ENGINE_PORT_BASE ENGINE_ADMIN=127.0.0.1:$((ENGINE_PORT_BASE + 1))
echo "== http: starting cmd/engine on $ENGINE_INGRESS (admin $ENGINE_ADMIN)" >&2
"$WORK/engine" --data-dir "$WORK/engine-data" --ingress-addr "$ENGINE_INGRESS" --admin-addr "$ENGINE_ADMIN" \
	--log-level warn 2>"$WORK/engine.log" &
ENGINE_PID=$!
for _ in $(seq 1 200); do curl -sf "http://$ENGINE_ADMIN/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://$ENGINE_ADMIN/ready" >/dev/null || { echo "bench-peers: cmd/engine not ready; its log:" >&2; tail -n 30 "$WORK/engine.log" >&2; exit 1; }
E0=$(ticks "$ENGINE_PID")
COMMON_HTTP=("${COMMON[@]}")
COMMON=("${COMMON_HTTP[@]}" --admin "http://$ENGINE_ADMIN")
run_loadgen http "http://$ENGINE_INGRESS"
COMMON=("${COMMON_HTTP[@]}")
E1=$(ticks "$ENGINE_PID")
ENGINE_CPU=$(secs $((E1 - E0)))
ENGINE_RSS=$(kb "$ENGINE_PID" VmRSS) ENGINE_HWM=$(kb "$ENGINE_PID" VmHWM)
engine_stop

echo "== restate: starting restate-server and the peer service" >&2
restate_start "$WORK" >&2
R0=$(ticks "$RESTATE_PID") S0=$(ticks "$RIDES_PID")
run_loadgen restate "restate:$RESTATE_INGRESS"
R1=$(ticks "$RESTATE_PID") S1=$(ticks "$RIDES_PID")
RESTATE_CPU=$(secs $((R1 - R0))) RIDES_CPU=$(secs $((S1 - S0)))
RESTATE_RSS=$(kb "$RESTATE_PID" VmRSS) RESTATE_HWM=$(kb "$RESTATE_PID" VmHWM)
RIDES_RSS=$(kb "$RIDES_PID" VmRSS) RIDES_HWM=$(kb "$RIDES_PID" VmHWM)
cp "$WORK/restate.toml" "$WORK/restate.toml.used"
restate_stop

# ---- report ----
j() { jq -r "$2 // \"-\"" "$WORK/$1.json"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.1f", a / b }'; }
I_EPS=$(j inproc .events_per_s) R_EPS=$(j restate .events_per_s) H_EPS=$(j http .events_per_s)
I_RQ99=$(j inproc .request_p99_ms) R_RQ99=$(j restate .request_p99_ms) H_RQ99=$(j http .request_p99_ms)
I_RSS_MIB=$(awk -v b="$(j inproc .rss_bytes)" 'BEGIN {printf "%.0f", b / 1048576}')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo " (work tree has uncommitted changes)" || true)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
DISK=$(df -h "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $1 ", " $2 " total, " $4 " free"}')
mkdir -p "$(dirname "$OUT")"
{
	cat <<EOF
# RS-1: shardfn vs Restate

Same workload, same machine, one after the other: closed loop, concurrency
$CONCURRENCY, warm-up $WARMUP, window $DURATION, seed $SEED, finish delay
$FINISH_DELAY, 10,000 drivers, 100,000 passengers, 100 x 100 cells, 90 %
location / 10 % request${LOADGEN_FLAGS:+, extra flags \`$LOADGEN_FLAGS\`}.
Written by \`scripts/bench-peers.sh\` on $(date -u +%Y-%m-%dT%H:%MZ).

| | shardfn in-process | shardfn over HTTP (cmd/engine) | $RESTATE_VERSION over HTTP | over HTTP, shardfn / Restate |
| --- | ---: | ---: | ---: | ---: |
| events/s | $I_EPS | $H_EPS | $R_EPS | $(ratio "$H_EPS" "$R_EPS") x (in-process: $(ratio "$I_EPS" "$R_EPS") x) |
| location p50 / p99 (ms) | $(j inproc .location_p50_ms) / $(j inproc .location_p99_ms) | $(j http .location_p50_ms) / $(j http .location_p99_ms) | $(j restate .location_p50_ms) / $(j restate .location_p99_ms) | |
| request p50 / p99 / p99.9 (ms) | $(j inproc .request_p50_ms) / $I_RQ99 / $(j inproc .request_p999_ms) | $(j http .request_p50_ms) / $H_RQ99 / $(j http .request_p999_ms) | $(j restate .request_p50_ms) / $R_RQ99 / $(j restate .request_p999_ms) | p99: 1/$(ratio "$R_RQ99" "$H_RQ99") |
| rides started / failed / refused | $(j inproc .rides_started) / $(j inproc .rides_failed) / $(j inproc .requests_refused) | $(j http .rides_started) / $(j http .rides_failed) / $(j http .requests_refused) | $(j restate .rides_started) / $(j restate .rides_failed) / $(j restate .requests_refused) | |
| errors | $(j inproc .errors) | $(j http .errors) | $(j restate .errors) | |
| invariants | $(j inproc .invariants) | $(j http .invariants) | $(j restate .invariants) | |
| CPU seconds, whole run | $(cat "$WORK/inproc.cpu") (engine and load generator, one process) | engine $ENGINE_CPU; load generator $(cat "$WORK/http.cpu") | server $RESTATE_CPU + peer service $RIDES_CPU; load generator $(cat "$WORK/restate.cpu") | |
| RSS at end (MiB) | $I_RSS_MIB (engine and load generator) | engine $(mib "$ENGINE_RSS") (peak $(mib "$ENGINE_HWM")) | server $(mib "$RESTATE_RSS") (peak $(mib "$RESTATE_HWM")) + peer service $(mib "$RIDES_RSS") (peak $(mib "$RIDES_HWM")) | |

Issue target, over the same wire (the HTTP columns): shardfn's events/s at
least 100 x Restate's, and its request p99 at most 1/100 of Restate's.
Measured: $(ratio "$H_EPS" "$R_EPS") x and 1/$(ratio "$R_RQ99" "$H_RQ99"). The
in-process column is the engine without HTTP (load generator and engine in
one process), for scale only: it is not the same race.

CPU seconds cover the whole run of each system: seeding (one location per
driver), warm-up, window, drain and the invariant checker's state reads. For
cmd/engine and Restate they are read from /proc before and after the load
generator runs, so start-up and registration are excluded. Errors are failed or timed-out
events (the load generator gives each event 5 s, so a percentile that
reaches 5000 ms is capped by that timeout and the true one is higher).

## How the peer is built

RS-1 as Restate virtual objects (\`loadgen/peers/restate\`, Restate Go SDK
v1.2.0): Driver, Passenger, GeoCell, Ride, with the same state and message
flow as the engine's \`rides\` package. Hops between objects are one-way
sends; a driver's finish is a delayed send to itself. \`request\` is a
request-response ingress call to the shared handler Passenger.request, which
creates an awakeable, sends its id to the exclusive Passenger.start (one-way)
and returns what the ride resolves it with; being shared, it does not hold
the passenger's lock while it waits. Restate has no egress log, so
ride-events is the state of one Events object (key "ride-events"), one more
one-way hop per record. Location is \`POST /Driver/<id>/location/send\`, which
Restate answers 202 once the invocation is durably in its log.

## Restate configuration

\`\`\`toml
$(cat "$WORK/restate.toml.used")
\`\`\`

Tuning applied, and why: see \`loadgen/peers/restate/start.sh\` (partitions
sized to the cores, journal retention off, telemetry and web UI off;
everything else at Restate's defaults, fsync on).

## Machine

- CPU: $CPU_MODEL, $(nproc) cores; memory $MEM; disk $DISK
- $(go version); Node $(node --version); restate-server $RESTATE_VERSION
- git commit $COMMIT$DIRTY
- load average (1, 5, 15 min) before the runs: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg). Above $(nproc), other work shared the machine during the runs, and every figure here is lower than on a quiet machine, and as the rows ran one after the other, the load may have differed between them.

## Commands

\`\`\`sh
$(printf '%s ' "${RESTATE_PARTITIONS:+RESTATE_PARTITIONS=$RESTATE_PARTITIONS}" "${RESTATE_PROVIDER:+RESTATE_PROVIDER=$RESTATE_PROVIDER}" "DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY SEED=$SEED" | sed 's/^ *//')scripts/bench-peers.sh
# which runs:
go run ./cmd/loadgen --target inproc ${FLAGS[*]} ${EXTRA[*]}
go run ./cmd/engine --data-dir DIR --ingress-addr $ENGINE_INGRESS --admin-addr $ENGINE_ADMIN --log-level warn &
go run ./cmd/loadgen --target http://$ENGINE_INGRESS --admin http://$ENGINE_ADMIN ${FLAGS[*]} ${EXTRA[*]}
go run ./cmd/loadgen --target restate:$RESTATE_INGRESS ${FLAGS[*]} ${EXTRA[*]}
\`\`\`

## Result lines

\`\`\`json
$(cat "$WORK/inproc.json")
$(cat "$WORK/http.json")
$(cat "$WORK/restate.json")
\`\`\`
EOF
} >"$OUT"
echo "bench-peers: wrote $OUT" >&2
cat "$OUT"
