// Package format holds shardfn's encodings, shared by the shard runtime,
// the store and the engine: the Address of an instance with its hash and
// key group, the effect record (one per invocation, the unit of the log),
// the stored encodings of pending messages and egress records, the
// in-memory instance blob of the state cache, and the Envelope that carries
// a message through mailboxes.
//
// # What it promises
//
//  1. Every encoding marked "on-disk format; never change" decodes what
//     every earlier version wrote. A new need gets a new record kind or a
//     new version byte, never a changed meaning.
//  2. Decoders never panic and never allocate in proportion to a count
//     they have not checked against the bytes present: a hostile or corrupt
//     input is an error wrapping ErrCorrupt.
//  3. Address.Hash, KeyGroup and ShardOf are pure functions; persisted data
//     is partitioned by key group, so a restart with another shard count
//     only remaps key groups.
//
// # What it relies on
//
// Nothing: it is a leaf package (standard library only).
//
// # Concurrency
//
// Everything is safe for concurrent use except a RecordBuilder, which
// belongs to one goroutine, and an Envelope, which belongs to whoever holds
// it (see its comment). Ack is safe for concurrent use.
package format
