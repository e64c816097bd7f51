package engine

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// Found by the soak (make soak): Overloaded, which the HTTP ingress asks
// before reading and parsing a batch, reported only pressure (queued
// bytes, state cache, applier lag) and not a full ingress lane, so under a
// flood the lanes stayed full while every batch was still parsed whole
// (half the engine's CPU) only to be refused at SendBatch. A lane with
// less than an eighth of its slots or bytes free now counts.
func TestOverloadedReportsFullLane(t *testing.T) {
	t.Run("slots", func(t *testing.T) {
		e := manualEngine(t, Options{Shards: 1, MailboxCapacity: 64})
		if err := e.Overloaded(); err != nil {
			t.Fatalf("empty lane: %v", err)
		}
		for i := range 64 - 64/laneHeadroom + 1 {
			if err := e.Overloaded(); err != nil {
				t.Fatalf("after %d messages of 64: %v", i, err)
			}
			if err := e.SendAsync(addr("x"+strconv.Itoa(i)), Message{Type: "inc"}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		err := e.Overloaded()
		if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "ingress lane is nearly full") {
			t.Fatalf("lane with %d of 64 slots free: %v", 64/laneHeadroom-1, err)
		}
		e.shards[0].Mailbox().Drain(nil, 64) // the shard catches up
		if err := e.Overloaded(); err != nil {
			t.Fatalf("drained lane: %v", err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		e := manualEngine(t, Options{Shards: 1, MaxQueuedBytes: 1 << 20})
		payload := make([]byte, 8<<10)
		n := 0
		for ; e.Overloaded() == nil; n++ {
			if n > 200 {
				t.Fatal("never overloaded")
			}
			if err := e.SendAsync(addr("x"+strconv.Itoa(n)), Message{Type: "inc", Value: payload}); err != nil {
				t.Fatalf("send %d: %v", n, err)
			}
		}
		// Refused once less than an eighth of the 1 MiB lane is free.
		if free := (1 << 20) - e.shards[0].Mailbox().SharedBytes(); free >= 1<<20/laneHeadroom || n < 100 {
			t.Fatalf("overloaded after %d messages of 8 KiB with %d bytes free", n, free)
		}
	})
}
