// Package wal is shardfn's write-ahead log: a segmented, append-only log of
// opaque records with group commit and crash recovery.
//
// # What it promises
//
//   - Append copies a Batch of records into the log atomically with respect
//     to other Appends: the batch's records get consecutive LSNs, in order.
//     Append does not wait for durability and does not allocate in steady
//     state.
//   - One flusher goroutine writes whatever has been appended with one write
//     and one fdatasync per batch (one per segment touched) and then releases
//     every waiter of that batch at once. WaitDurable(end) returns nil only
//     once every record before end is on stable storage; OnDurable reports
//     the same positions.
//   - Recovery (Open) yields exactly the records of a prefix of the log that
//     contains every record ever reported durable. A torn tail (bytes of a
//     write that was never acknowledged) is cut; corruption of data that had
//     been reported durable refuses to open with an error wrapping
//     ErrCorrupt that names the segment file and offset.
//   - A failed write or sync stops the log for good (fail-stop): every later
//     Append and WaitDurable returns an error wrapping ErrFailed and the
//     cause, the durable position never advances again, and fsync is never
//     retried on the same file (after a failed fsync the kernel may have
//     dropped the dirty pages, so a retry could falsely succeed).
//
// # What it relies on
//
//   - Options.Dir is used by one Log at a time.
//   - The filesystem's fdatasync makes the written data and the file size
//     durable, and fsync of the directory makes created and renamed entries
//     durable.
//   - The caller does not RemoveBefore past a position a Reader still needs.
//
// # Concurrency
//
// Append, WaitDurable, DurableLSN, EndLSN, FirstLSN, NewReader, RemoveBefore
// and Err are safe for concurrent use. A Batch and a Reader each belong to
// one goroutine. Close is called once, after the last Append.
//
// # On-disk format (never change; add a version instead)
//
// A log is a directory of segment files named by their segment number,
// 16 lowercase hex digits plus ".wal" (0000000000000001.wal). Retired files
// waiting to be reused are named "recycle-<16 hex>.wal". Every segment file
// is preallocated to Options.SegmentSize and starts with a header:
//
//	+--------+--------+---------+----------+-------------+-------------+
//	| CRC    | magic  | version | reserved | segment num | base LSN    |
//	| 4 B    | "SFWL" | 4 B = 1 | 4 B = 0  | 8 B         | 8 B         |
//	+--------+--------+---------+----------+-------------+-------------+
//	  0        4        8         12         16            24          32
//
// The CRC is CRC-32C (Castagnoli) of bytes [4,32). All integers are little
// endian. The segment number must equal the file name's.
//
// Frames follow at file offset 32. The frame of LSN x in a segment with base
// b sits at file offset 32 + (x - b). Each frame is
//
//	+--------+--------+------------+------------+--------------+---------+
//	| CRC    | length | LSN        | synced     | payload      | padding |
//	| 4 B    | 4 B    | 8 B        | 8 B        | length B     | 0-7 B   |
//	+--------+--------+------------+------------+--------------+---------+
//	  0        4        8            16           24
//
// where length is the payload length, LSN is the frame's own LSN, synced is
// the durable end of the log when the record was appended (synced <= LSN),
// and padding (zero, not checksummed) rounds the frame to a multiple of 8
// bytes. The CRC is CRC-32C of the payload followed by header bytes [4,24).
// LSNs are contiguous: the next frame's LSN is this LSN plus the padded
// frame size, and a new segment's base is the previous segment's end.
//
// Because the CRC covers the frame's own LSN, stale bytes can never pass as
// a frame: a recycled file holds frames with older (smaller) LSNs, and
// preallocated space holds zeros.
//
// # Torn tail versus corruption
//
// Every byte below a frame's synced value, and below a segment's base LSN,
// was durable before that frame or header was written. So:
//
//   - a segment that is not the last must hold valid frames from its base
//     up to exactly the next segment's base; anything else is corruption;
//   - in the last segment, the first position p that does not hold a valid
//     frame is the end of the log, unless some valid frame later in the
//     segment (every 8-byte-aligned position whose LSN field matches is
//     tried) has synced > p: then p had been durable and Open fails with
//     ErrCorrupt. Otherwise everything from p on is a torn tail, truncated
//     away and synced before new appends go to a fresh segment;
//   - trailing segment files with an invalid header were being set up when
//     the process stopped and are recycled; an invalid header before a
//     valid one is corruption.
//
// Limitation: damage to the very last durable records, with nothing written
// after them that claims them durable, looks exactly like a torn tail and is
// cut. No log format can tell the two apart without another synced write.
package wal
