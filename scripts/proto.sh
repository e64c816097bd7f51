#!/usr/bin/env bash
# Regenerates the Go code of remote/proto/*.proto (StateFun's request-reply
# protocol and wrapper types). Installs protoc (Debian protobuf-compiler) and
# protoc-gen-go (pinned) when missing. The generated .pb.go files are
# committed, so building the project never needs this script.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v protoc >/dev/null 2>&1; then
	echo "proto.sh: installing protoc (apt-get install protobuf-compiler)" >&2
	sudo_cmd=""
	if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
	$sudo_cmd apt-get update -qq
	$sudo_cmd apt-get install -y -qq protobuf-compiler
fi

gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"
if ! command -v protoc-gen-go >/dev/null 2>&1 ||
	! protoc-gen-go --version 2>/dev/null | grep -q "${PROTOC_GEN_GO_VERSION}"; then
	echo "proto.sh: installing protoc-gen-go@${PROTOC_GEN_GO_VERSION}" >&2
	GOFLAGS= go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi

protoc --proto_path=remote/proto \
	--go_out=. --go_opt=module=github.com/shardfn/shardfn \
	remote/proto/request-reply.proto remote/proto/types.proto

echo "proto.sh: regenerated remote/proto/reqreply and remote/proto/types" >&2
