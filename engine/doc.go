// Package engine is shardfn's public Go API and the orchestration of the
// runtime: function registration, routing of addresses to shards, ingress
// (Send, SendBatch, Request), egress reads, the store applier, checkpoints
// and recovery.
//
// # What it promises
//
//  1. One message at a time per address; messages from one sender to one
//     address are processed in the order they were accepted.
//  2. Exactly-once effects: the state writes, sends, delayed messages and
//     cancellations, egress records, the reply and the consumption of the
//     input of one invocation are one effect record in the write-ahead log;
//     after a crash (SIGKILL, power loss) every acknowledged input is
//     processed exactly once and nothing half-applied is visible.
//  3. Output commit: Send returns, a Request's reply is delivered and an
//     egress record becomes readable only once the effects that made them
//     are durable. Messages between functions flow before they are durable;
//     recovery restores a prefix of the log, which never holds a consumer
//     without its producer (see shard.Shard.Step and docs/design.md).
//  4. A storage failure puts the engine in failed-stop: Err returns the
//     cause, nothing more is acknowledged (waiters get ErrFailed), and a
//     restart recovers.
//
// # What it relies on
//
// The caller registers every embedded function type at Open (remote
// wildcard types are resolved on first use); functions do not block, do not
// keep their Context, and do not mutate a Message's bytes after handing them
// to the engine. One Engine at a time uses a data directory.
//
// # Concurrency
//
// Every Engine method is safe for concurrent use. A Context belongs to one
// invocation on one shard goroutine. Close may be called once; later calls
// return the same result.
//
// # Data path
//
//	ingress -> shard mailbox -> per-address queue -> invoke -> effect record
//	  -> shard batch -> wal.Append (group commit) -> fdatasync -> acks, replies
//	  -> applier (reads the durable log in order) -> Pebble (state, timers, egress)
//	  -> checkpoint: in-flight messages + egress offsets + log position, flush, drop old segments
package engine
