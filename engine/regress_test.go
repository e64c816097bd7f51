package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
)

// Regression tests of the exactly-once review (each failed before its fix).

var probeSpec = ValueSpec{Name: "probe", Type: TypeBytes}

// probeFunc: "setfail" writes state then fails; "unknown" sends to an
// unregistered type, then to a counter, then replies; "big" writes large
// values and sends to counter "b"; "slowget" asks itself for "get" later.
func probeFuncSpec() FunctionSpec {
	return FunctionSpec{Namespace: "t", Type: "probe", States: []ValueSpec{probeSpec, countSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			switch msg.Type {
			case "setfail":
				if err := ctx.Set(probeSpec, []byte("written-before-failing")); err != nil {
					return err
				}
				return errors.New("fails after writing")
			case "unknown":
				ctx.Send(Address{Namespace: "nope", Type: "missing", ID: "x"}, Message{Type: "hello", Value: []byte("lost?")})
				ctx.Send(addr("after"), Message{Type: "inc"})
				ctx.Reply(String("replied"))
			case "big":
				v := make([]byte, 40<<10)
				if err := ctx.Set(probeSpec, v); err != nil {
					return err
				}
				if err := ctx.Set(countSpec, v); err != nil {
					return err
				}
				ctx.Send(addr("b"), Message{Type: "inc"})
			}
			return nil
		})}
}

func probe(id string) Address { return Address{Namespace: "t", Type: "probe", ID: id} }

// Bug 1: a failed invocation committed its state writes.
func TestFailedInvocationWritesNothing(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o, counterSpec(), probeFuncSpec())
		defer e.Close()
		ctx := context.Background()
		if _, err := e.Send(ctx, probe("p"), Message{Type: "setfail"}); err != nil {
			t.Fatal(err)
		}
		vals, err := e.State(ctx, probe("p"))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if v.Present {
				t.Fatalf("a failed invocation left state %s=%q", v.Spec.Name, v.Value)
			}
		}
		recs, err := e.ReadEgress(ctx, "dead-letters", 0, 10, 0, time.Second)
		if err != nil || len(recs) != 1 {
			t.Fatalf("dead letters %v %v", recs, err)
		}
	})
}

// Bug 2: a send to an unregistered type from inside a function panicked the
// shard when another send followed, or lost the reply and wrote a garbled
// dead letter.
func TestSendToUnknownTypeFromFunction(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o, counterSpec(), probeFuncSpec())
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := e.Request(ctx, probe("p"), Message{Type: "unknown"})
		if err != nil {
			t.Fatalf("the reply was lost: %v", err)
		}
		if s, _ := r.AsString(); s != "replied" {
			t.Fatalf("reply %q", s)
		}
		if n := count(t, e, "after"); n != 1 {
			t.Fatalf("the send after the unroutable one was applied %d times", n)
		}
		recs, err := e.ReadEgress(ctx, "dead-letters", 0, 10, 0, time.Second)
		if err != nil || len(recs) != 1 {
			t.Fatalf("dead letters %v %v", recs, err)
		}
		var dl struct{ Target, Caller, Type, Error string }
		if err := json.Unmarshal(recs[0].Message.Value, &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Target != "nope/missing/x" || dl.Caller != "t/probe/p" || dl.Type != "hello" || !strings.Contains(dl.Error, "nope/missing") {
			t.Fatalf("dead letter %+v", dl)
		}
		if err := e.Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// Bug 3: effects larger than a segment failed Append; the shard went on and
// handed the lost batch's messages to its peers.
func TestEffectsLargerThanARecordAreDeadLettered(t *testing.T) {
	o := Options{DataDir: t.TempDir(), Shards: 2, SegmentSize: 64 << 10}
	e := openTest(t, o, counterSpec(), probeFuncSpec())
	ctx := context.Background()
	if _, err := e.Send(ctx, probe("p"), Message{Type: "big"}); err != nil {
		t.Fatalf("big: %v", err)
	}
	if err := e.Err(); err != nil {
		t.Fatalf("engine failed: %v", err)
	}
	if n := count(t, e, "b"); n != 0 {
		t.Fatalf("a send of the refused invocation was delivered (%d)", n)
	}
	recs, err := e.ReadEgress(ctx, "dead-letters", 0, 10, 0, time.Second)
	if err != nil || len(recs) != 1 || !strings.Contains(string(recs[0].Message.Value), "exceed") {
		t.Fatalf("dead letters %v %v", recs, err)
	}
	if _, err := e.Send(ctx, addr("c"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeStore writes entries into the store of a data directory before the
// engine opens it (a state left by an earlier run).
func writeStore(t *testing.T, dir string, f func(b store.Batch)) {
	t.Helper()
	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	f(b)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func storedMsg(id uint64, fireAt int64, caller, target Address, typ string, replyTo uint64, token string) []byte {
	return format.AppendStoredMessage(nil, id, fireAt, format.AppendAddress(nil, caller), format.AppendAddress(nil, target),
		[]byte(typ), nil, replyTo, []byte(token), nil)
}

func oldBoot(b store.Batch, boot uint16) {
	b.Set([]byte("Mboot"), binary.LittleEndian.AppendUint16(nil, boot))
}

// Bug 4: two stored delayed messages with one token (the older had fired,
// its delivery not yet durable, when the sender re-armed the token): restore
// cancelled the older in memory only, so it fired after the next restart.
func TestRestoredTimersWithOneTokenFireOnce(t *testing.T) {
	dir := t.TempDir()
	x := addr("x")
	at := time.Now().Add(50 * time.Millisecond).UnixNano()
	writeStore(t, dir, func(b store.Batch) {
		oldBoot(b, 5)
		b.PutTimer(3<<48|1, storedMsg(3<<48|1, at, x, x, "inc", 0, "tok"))
		b.PutTimer(4<<48|1, storedMsg(4<<48|1, at, x, x, "inc", 0, "tok"))
	})
	o := Options{DataDir: dir, Shards: 1}
	e := openTest(t, o)
	time.Sleep(200 * time.Millisecond)
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "x"); n != 2 {
		t.Fatalf("first boot: %d of 2 delayed messages delivered", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, o)
	time.Sleep(200 * time.Millisecond)
	if n := count(t, e, "x"); n != 2 {
		t.Fatalf("second boot: %d deliveries in all, want 2 (a delayed message fired twice)", n)
	}
	_ = e.Close()
}

// Bug 5: request ids restarted at 1 on every boot, so a restored message
// carrying an old request id answered a new request.
func TestRestoredReplyDoesNotAnswerANewRequest(t *testing.T) {
	dir := t.TempDir()
	x := addr("x")
	at := time.Now().Add(100 * time.Millisecond).UnixNano()
	writeStore(t, dir, func(b store.Batch) {
		oldBoot(b, 1)
		raw := format.AppendAddress(nil, x)
		b.SetState(format.KeyGroup(x.Hash()), raw, []byte("count"), time.Now().UnixNano(), AppendLongWrapper(nil, 5))
		for req := uint64(1); req <= 4; req++ {
			id := 1<<48 | req
			b.PutTimer(id, storedMsg(id, at, x, x, "get", req, ""))
		}
	})
	slow := FunctionSpec{Namespace: "t", Type: "slow", Function: FunctionFunc(func(ctx Context, msg Message) error {
		if msg.Type == "ask" {
			ctx.SendAfter(400*time.Millisecond, ctx.Self(), Message{Type: "answer"}, "")
			return nil
		}
		ctx.Reply(Int64(0))
		return nil
	})}
	e := openTest(t, Options{DataDir: dir, Shards: 1}, counterSpec(), slow)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := e.Request(ctx, Address{Namespace: "t", Type: "slow", ID: "s"}, Message{Type: "ask"})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.AsInt64(); n != 0 {
		t.Fatalf("a new request received %d, the reply of a request made before the restart", n)
	}
}

// Bug 9: the 16-bit boot number wrapped after 65,536 opens and reused
// message ids under which delayed and in-flight messages are stored.
func TestMessageIDsNotReusedAfterManyBoots(t *testing.T) {
	dir := t.TempDir()
	x := addr("x")
	stored := uint64(255<<40 | 1) // ingress id 1 of boot 0
	writeStore(t, dir, func(b store.Batch) {
		oldBoot(b, 65535)
		b.PutTimer(stored, storedMsg(stored, time.Now().Add(time.Hour).UnixNano(), x, x, "inc", 0, ""))
	})
	o := Options{DataDir: dir, Shards: 1}
	for boot := 0; boot < 3; boot++ {
		e := openTest(t, o)
		id, err := e.Send(context.Background(), addr("y"), Message{Type: "inc"})
		if err != nil {
			t.Fatal(err)
		}
		if id <= stored {
			t.Fatalf("boot %d: new message id %#x is not above the stored %#x", boot, id, stored)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// copyDir copies a data directory (of a live engine: what a crash at this
// moment would leave, since everything acknowledged is synced).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Bug 10: truncating the newest log segment silently lost acknowledged
// writes. Open now refuses, naming the segment, and changes nothing; the
// explicit AcceptLogLoss opens what is left.
func TestTruncatedLogSegmentRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, Options{DataDir: dir, Shards: 1, CheckpointInterval: time.Hour, SegmentSize: 1 << 20})
	for i := 0; i < 300; i++ {
		if _, err := e.Send(context.Background(), addr("x"), Message{Type: "inc", Value: make([]byte, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	_ = e.Close()
	segs, _ := filepath.Glob(filepath.Join(crashed, "wal", "0*.wal"))
	newest := segs[len(segs)-1]
	if err := os.Truncate(newest, 16<<10); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(newest)
	_, err := Open(Options{DataDir: crashed, Shards: 1, SegmentSize: 1 << 20, Logger: quiet}, counterSpec())
	if err == nil || !strings.Contains(err.Error(), filepath.Base(newest)) || !strings.Contains(err.Error(), "AcceptLogLoss") {
		t.Fatalf("Open of a truncated log: %v", err)
	}
	after, _ := os.ReadFile(newest)
	if !bytes.Equal(before, after) {
		t.Fatal("the refused Open changed the segment")
	}
	if segs2, _ := filepath.Glob(filepath.Join(crashed, "wal", "*.wal")); len(segs2) != len(segs) {
		t.Fatalf("the refused Open changed the log directory: %v", segs2)
	}
	e = openTest(t, Options{DataDir: crashed, Shards: 1, SegmentSize: 1 << 20, AcceptLogLoss: true})
	if n := count(t, e, "x"); n <= 0 || n >= 300 {
		t.Fatalf("after accepting the loss: %d", n)
	}
	_ = e.Close()
}

// Bug 13: after the data directory was removed under a running engine,
// writes were still acknowledged, /health stayed ok, the checkpoint hung in
// Pebble's flush and Close never returned.
func TestRemovedDataDirectoryStopsTheEngine(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, Options{DataDir: dir, Shards: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	acked := 0
	for i := 0; i < 200; i++ {
		_, err := e.Send(ctx, addr("x"), Message{Type: "inc"})
		if err != nil {
			if !errors.Is(err, ErrFailed) {
				t.Fatalf("send after the removal: %v, want ErrFailed", err)
			}
			break
		}
		acked++
	}
	if acked > 0 {
		t.Fatalf("%d writes acknowledged after the data directory was removed", acked)
	}
	if err := e.Err(); err == nil || !(strings.Contains(err.Error(), "removed") || strings.Contains(err.Error(), "no such file")) {
		t.Fatalf("Err after the removal: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Close() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
}

// Bug 7: a store flush that kept failing was retried without end; the
// checkpoint and Close hung and Pebble's error was discarded.
func TestFailingStoreFlushStopsTheEngine(t *testing.T) {
	toggle := &errorfs.Toggle{Injector: errorfs.ErrInjected}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	sfs := errorfs.Wrap(vfs.Default, errorfs.Any(toggle))
	e := openTest(t, Options{DataDir: dir, Shards: 1, fs: fileSystems{Store: sfs}})
	ctx := context.Background()
	if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	toggle.On()
	ckpt := make(chan error, 1)
	go func() { ckpt <- e.Checkpoint() }()
	select {
	case err := <-ckpt:
		if err == nil {
			t.Fatal("a checkpoint whose flush failed succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the checkpoint hung on a failing flush")
	}
	if err := e.Err(); err == nil || !strings.Contains(err.Error(), "pebble") {
		t.Fatalf("engine not failed after the store failed: %v", err)
	}
	if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); !errors.Is(err, ErrFailed) {
		t.Fatalf("send after the store failed: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Close() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
}
