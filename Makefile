# shardfn — make verbs that name the workflow.
GO ?= go
export GOFLAGS := -buildvcs=false

.PHONY: run build test bench bench-micro bench-rs1 bench-peers bench-http lint crash fuzz proto results

# run: the standalone server with the ride-sharing (RS-1) functions built in.
run:
	$(GO) run ./cmd/engine

build:
	$(GO) build -o bin/ ./cmd/...

# test: what CI runs (.ci/run). Under ten minutes on 2 cores.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 9m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# bench: the standard set. Micro-benchmarks go to results/bench-micro.txt,
# the RS-1 runs write their own reports; results/README.md is regenerated.
bench: bench-micro bench-rs1 results

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./shard/ ./engine/ ./wal/ ./remote/ | tee results/bench-micro.txt

bench-rs1:
	$(GO) run ./cmd/loadgen --profile
	$(GO) run ./cmd/loadgen --shards 1,2
	$(GO) run ./cmd/loadgen --memory-scenario=1000000

bench-peers:
	scripts/bench-peers.sh

bench-http:
	scripts/bench-http.sh

results:
	$(GO) run ./cmd/loadgen --index

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
