// Package reqreply holds the generated Go code of StateFun's remote
// request-reply protocol (proto package io.statefun.sdk.reqreply), from
// remote/proto/request-reply.proto. Regenerate with scripts/proto.sh; never
// edit the .pb.go file by hand. Messages are plain protobuf structs: not safe
// for concurrent mutation.
package reqreply
