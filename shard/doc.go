// Package shard is the per-core runtime: one Shard per core owns the
// instances of its key groups outright and runs them on one goroutine
// locked to an OS thread.
//
// # What it promises
//
//  1. An address's messages run one at a time, in the order they reached the
//     shard; an instance with a remote call in flight queues its further
//     messages for the next batch (never mixing two request chains in one
//     batch).
//  2. Every invocation's effects become one effect record (package
//     internal/format, an on-disk format); a record that consumes a message is always appended
//     to the log after the record that produced it, because cross-shard
//     messages leave a shard only after the append of the batch that made
//     them, and the log is one totally ordered sequence.
//  3. Acknowledgements and replies are released only once the log is
//     durable past the batch that produced them; if the log fails, they are
//     released with the error.
//  4. State lives in an Arena (log-structured slabs, pointer-free index)
//     under a memory budget; an entry is evicted only once the store has
//     applied the log past its last write, so a reload from the store never
//     sees an older value.
//
// # What it relies on
//
// The engine supplies a Handler (function lookup and invocation), a Log
// whose Append keeps a total order, and a StateReader holding every applied
// write. Step runs one round of the loop; the loop goroutine calls it, and
// tests (the Step scripts of step_test.go, the engine's simulator) call it
// directly. Its outcome is fixed by its inputs: the time argument (the
// shard's Clock is read nowhere else), what the mailbox and the completion
// queue hold, the durable and applied positions (atomics other goroutines
// set), and what the store answers when an instance is loaded (Step does
// that I/O itself).
//
// # Concurrency
//
// A Shard's state is owned by its loop goroutine. Other goroutines use only
// Mailbox().Push (any goroutine), a Producer lane (one goroutine each),
// Complete, SetApplied, NotifyDurable and the counters and Stats,
// which are atomics.
package shard
