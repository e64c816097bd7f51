// Package types holds the generated Go code of StateFun's built-in wrapper
// types (proto package io.statefun.sdk.types), from remote/proto/types.proto.
// Regenerate with scripts/proto.sh; never edit the .pb.go file by hand.
package types
