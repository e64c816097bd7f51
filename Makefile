# shardfn — make verbs that name the workflow.
GO ?= go
export GOFLAGS := -buildvcs=false

# test-ui: installs Chromium (Debian's package) when missing and runs the
# console's browser test, saving screenshots into results/.
.PHONY: kfake cluster cluster-crash bench-cluster run build test sim test-ui soak bench bench-micro bench-rs1 bench-peers bench-scaling bench-http bench-kafka lint crash kafka-crash fuzz proto results

# kfake: a development Kafka-protocol broker (franz-go's kfake, in memory,
# three brokers on 127.0.0.1:9092-9094), for cluster mode and the Kafka
# example. Not Kafka: figures measured on it say "on kfake".
kfake:
	$(GO) run ./cmd/kfake

# cluster: three cluster-mode nodes on this machine against the broker of
# `make kfake` (or SHARDFN_BROKERS): ingress 127.0.0.1:8081-8083, admin
# 127.0.0.1:9191-9193, data in data-cluster/. See README "Cluster mode".
cluster:
	scripts/cluster.sh

# bench-cluster: RS-1 on a single node and on 1 and 3 cluster nodes over an
# in-process kfake, in one run, and a restore; writes results/cluster.md.
bench-cluster:
	CLUSTER_FIGURES=$(CURDIR)/results/cluster.md $(GO) test -count=1 -run TestClusterFigures -timeout 30m -v ./cluster/

# run: the standalone server with the ride-sharing (RS-1) functions built in.
run:
	$(GO) run ./cmd/engine

build:
	$(GO) build -o bin/ ./cmd/...

# test: what CI runs (.ci/run). Under ten minutes on 2 cores: vet, every
# test with the race detector (the simulator's short set among them), then
# the simulator's fixed seeds without it.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 9m ./...
	$(MAKE) sim

# sim: the deterministic simulator (engine/sim_test.go). SIM_SEEDS=N runs N
# seeds from SIM_FIRST (default 1); a failing seed prints the command that
# replays it.
SIM_SEEDS ?= 600
SIM_FIRST ?= 1
sim:
	SIM_SEEDS=$(SIM_SEEDS) $(GO) test -count=1 -timeout 0 -run 'TestSim$$' ./engine/ -sim.first=$(SIM_FIRST) -v

test-ui:
	scripts/install-chromium.sh
	SHARDFN_REQUIRE_BROWSER=1 SHARDFN_SCREENSHOT_DIR=$(CURDIR)/results $(GO) test -count=1 -timeout 5m -run TestConsoleInBrowser -v ./console/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# soak: cmd/soak against a real cmd/engine child on loopback (minutes;
# not part of make test): ten times the sustainable rate with every hostile
# request shape of issue 10, RSS sampled every second, a probe client, then
# SIGTERM, a restart and a check of every acknowledged write. Writes
# results/soak.md; exits non-zero when a pass criterion fails.
# SOAK_DURATION (default 3m) sets the load's length, SOAK_FLAGS adds flags
# (go run ./cmd/soak -h).
SOAK_DURATION ?= 3m
SOAK_FLAGS ?=
soak:
	$(GO) build -o bin/ ./cmd/engine
	SOAK_COMMAND="make soak SOAK_DURATION=$(SOAK_DURATION) SOAK_FLAGS='$(SOAK_FLAGS)'" \
		$(GO) run ./cmd/soak --engine bin/engine --duration $(SOAK_DURATION) $(SOAK_FLAGS)

# bench: the standard set. Micro-benchmarks go to results/bench-micro.txt,
# the RS-1 runs write their own reports; results/README.md is regenerated.
bench: bench-micro bench-rs1 results

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./shard/ ./engine/ ./wal/ ./remote/ | tee results/bench-micro.txt

bench-rs1:
	$(GO) run ./cmd/loadgen --profile
	$(GO) run ./cmd/loadgen --shards 1,2
	$(GO) run ./cmd/loadgen --memory-scenario=1000000

# bench-peers: RS-1 in three rows, one invocation: shardfn in-process,
# shardfn over HTTP (cmd/engine) and Restate over HTTP (results/peers-restate.md).
bench-peers:
	scripts/bench-peers.sh

# bench-scaling: durable batched RS-1 location events at 1, 2, 4, 8, 16
# shards (capped at the cores), with a CPU profile; report and plot in results/.
bench-scaling:
	$(GO) run ./cmd/loadgen --scaling --profile --duration 10s --warmup 3s

bench-http:
	scripts/bench-http.sh

results:
	$(GO) run ./cmd/loadgen --index

# kafka-crash: cmd/engine with a Kafka module.yaml against cmd/kfake in
# another process, killed with SIGKILL under load (make test runs 3 kills).
kafka-crash:
	KAFKA_CRASH_KILLS=$${KAFKA_CRASH_KILLS:-20} $(GO) test -count=1 -timeout 30m -run TestKafkaCrash -v ./cmd/engine/

# cluster-crash: cmd/kfake and three cmd/engine --cluster nodes, each its
# own process, under HTTP load on example/counter while events strike in a
# random order: SIGKILL + restart of a node, a kill inside an open
# transaction, SIGSTOP of a node for 2x the session timeout, SIGKILL +
# restart of kfake from its data directory. Logs each event's takeover
# time, then checks acked <= count <= acked + in doubt for every counter
# (TestClusterCrash; not part of make test). CLUSTER_CRASH_EVENTS (default
# 12, at least 3); CLUSTER_CRASH_ORDER=kill,stop,kill-in-txn,kill-kfake,...
# fixes the events; CLUSTER_CRASH_REPORT=file writes the takeover table;
# CLUSTER_CRASH_LOGS=dir keeps the processes' logs.
cluster-crash:
	CLUSTER_CRASH_EVENTS=$${CLUSTER_CRASH_EVENTS:-12} $(GO) test -count=1 -timeout 30m -run TestClusterCrash -v ./cmd/engine/

# bench-kafka: Kafka in -> function -> Kafka out beside a bare franz-go
# pipe, on kfake (a test cluster); writes results/kafka.md.
bench-kafka:
	$(GO) run ./cmd/kafkabench

crash:
	CRASH_KILLS=$${CRASH_KILLS:-1000} $(GO) test -count=1 -timeout 120m -run TestCrashRecovery -v ./engine/

# fuzz: every fuzz target for FUZZTIME each (default 60s); their seed
# corpora also run in make test.
FUZZTIME ?= 60s
RIDES_FUZZ := FuzzDecodeID FuzzDecodeFind FuzzDecodeOffer FuzzDecodeInit FuzzDecodeNone \
	FuzzDecodeCellBody FuzzDecodeOutcome FuzzDecodeEvent FuzzDecodeSet
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./wal/
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $(FUZZTIME) ./shard/
	$(GO) test -run '^$$' -fuzz FuzzDecodeResponse -fuzztime $(FUZZTIME) ./remote/
	$(GO) test -run '^$$' -fuzz FuzzParseIngress -fuzztime $(FUZZTIME) ./httpapi/
	$(GO) test -run '^$$' -fuzz FuzzParseBatch -fuzztime $(FUZZTIME) ./httpapi/
	for f in $(RIDES_FUZZ); do $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./rides/ || exit 1; done

proto:
	./scripts/proto.sh
