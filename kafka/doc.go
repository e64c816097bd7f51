// Package kafka implements StateFun's Kafka ingress and egress
// (module.yaml kinds io.statefun.kafka.v1/ingress and
// io.statefun.kafka.v1/egress) for a shardfn engine, with franz-go.
//
// # Ingress: exactly once
//
// Each Kafka record becomes one message per target function type, to the
// instance named by the record key, of type valueType with the record value
// as bytes (not transcoded, as in StateFun). Every message of the record
// carries the idempotency key "kafka/<ingress id>/<topic>/<partition>/<offset>"
// (engine.Outgoing.Key). The engine writes the keys of the messages an
// invocation consumed into that invocation's effect record and keeps them
// for Options.IdempotencyRetention (default 24h): a message with a key
// already consumed is not applied again.
//
// Each assigned partition has one worker that hands its records to the
// engine with SendBatch, one batch at a time: a batch is admitted (whole or
// not at all; ErrOverloaded is retried) only once the previous one is
// durable, so records of one partition, hence of one key, are applied in
// order. After each batch the partition's acknowledged position (the next
// offset after it) moves on. Every Options.CommitInterval (1s) the
// acknowledged positions are recorded in the engine (state "next" of the
// built-in function shardfn-kafka/positions/<ingress id>/<topic>/<partition>)
// and then committed to the consumer group.
//
// When a partition is assigned (start, restart, rebalance) it starts at the
// engine's recorded position, or, if the group committed further (another
// member consumed meanwhile), at the group's offset. A partition the engine
// never consumed starts at startupPosition (group-offsets by default), and
// that start is recorded before anything is consumed, so that a restart
// never skips to a later "latest".
//
// Why no record is skipped: a position is recorded only after every record
// before it is durably consumed. Why none is applied twice: the records
// between the recorded position and what was really consumed before a
// crash (at most one CommitInterval's worth, plus the batch in flight) are
// read again, and their keys are found. The window is far shorter than
// the key retention; an engine kept down for longer than the retention
// could apply the records of that last interval again.
//
// Backpressure: the records fetched and not yet durable are bounded
// (Options.MaxPendingRecords, MaxPendingBytes); at the bound the ingress
// stops polling, so the client stops fetching. Records that cannot be
// delivered (no key, a key that is not UTF-8 or longer than an instance id
// may be, a value over the engine's message limit, an unregistered target
// type) become dead letters: records of the engine's dead-letters egress,
// written once (keyed) by the built-in function shardfn-kafka/dead-letters,
// with the topic, partition and offset.
//
// # Egress
//
// An egress ships the engine's egress log named by its id (for
// "shardfn/<name>", the log <name>, as for remote functions), in offset
// order, from its own goroutine: Kafka being down or slow never blocks the
// shards, the durable egress log is the buffer. Records must be
// KafkaProducerRecords (RecordType: remote functions write them with the
// SDKs' KafkaEgressBuilder, embedded ones with Write); others become dead
// letters.
//
//   - exactly-once: one Kafka transaction per batch (up to
//     Options.EgressBatch records) that also commits the egress offset after
//     the batch as the offset of the consumer group "shardfn-egress-<id>"
//     (TxnOffsetCommit, the way Kafka Streams commits). On start the
//     transactional producer is initialised first, which fences a previous
//     incarnation and aborts its open transaction, then the group's offset
//     is read with require_stable: it names exactly the records that are
//     committed in Kafka. A read_committed consumer sees every record
//     once, in order per key.
//   - at-least-once: the idempotent producer; the shipped offset is
//     committed to the same group every CommitInterval, so a crash ships
//     again at most that interval.
//   - none: fire and forget (no acks, no idempotence).
//
// Committed offsets carry the identity of the engine's egress log (kept in
// the engine) in their metadata: a new data directory does not take the
// position of an old one.
package kafka
