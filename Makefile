# shardfn — make verbs that name the workflow.
GO ?= go
export GOFLAGS := -buildvcs=false

.PHONY: run test test-short bench bench-peers lint crash fuzz proto results build

build:
	$(GO) build -o bin/ ./cmd/...

# run: the standalone server with the ride-sharing (RS-1) functions built in.
run:
	$(GO) run ./cmd/engine

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 9m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... || echo "staticcheck unavailable or failed"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./shard/ ./engine/ ./wal/

crash:
	CRASH_KILLS=$${CRASH_KILLS:-1000} $(GO) test -count=1 -timeout 120m -run TestCrashRecovery -v ./engine/

fuzz:
	@echo "see docs/design.md: go test -fuzz targets per package"
