package engine

import (
	"errors"
	"strings"
	"testing"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/wal/vfs"
)

// manualEngine opens an engine in manual mode on in-memory filesystems:
// nothing runs unless the test steps it.
func manualEngine(t *testing.T, o Options, specs ...FunctionSpec) *Engine {
	t.Helper()
	o.DataDir = "/data"
	o.fs = fileSystems{Log: vfs.NewMemFS(), Store: pebblevfs.NewMem()}
	o.Logger = quiet
	o.manual = true
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if len(specs) == 0 {
		specs = []FunctionSpec{counterSpec()}
	}
	e, err := Open(o, specs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.abandon)
	return e
}

// Issue 10, item 5: memory beyond the budget under load. With the shards
// stopped, ingress fills the mailboxes only up to their byte bound; with the
// applier stopped, acknowledgements stop once the store lags the log by
// MaxApplierLag; in both cases ingress is refused with ErrOverloaded
// instead of memory growing.
func TestIngressRefusedUnderPressure(t *testing.T) {
	t.Run("mailbox bytes", func(t *testing.T) {
		e := manualEngine(t, Options{Shards: 1, MaxQueuedBytes: 256 << 10})
		payload := make([]byte, 8<<10)
		n := 0
		var err error
		for ; n < 1000; n++ {
			if err = e.SendAsync(addr("x"), Message{Type: "inc", Value: payload}); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrOverloaded) {
			t.Fatalf("after %d sends: %v, want ErrOverloaded", n, err)
		}
		if b := e.shards[0].Mailbox().SharedBytes(); b > 256<<10 {
			t.Fatalf("the mailbox holds %d bytes, bound %d", b, 256<<10)
		}
		if n == 0 || n > 40 {
			t.Fatalf("%d messages of 8 KiB were taken under a 256 KiB bound", n)
		}
	})
	t.Run("applier lag", func(t *testing.T) {
		e := manualEngine(t, Options{Shards: 1, MaxApplierLag: 64 << 10}, tracedCounterSpec()) // records carry the payload
		payload := make([]byte, 4<<10)
		var err error
		for i := 0; i < 200 && err == nil; i++ {
			err = e.SendAsync(addr("x"), Message{Type: "inc", Value: payload})
			e.shards[0].Step(time.Now().UnixNano())
			if ferr := e.flushLog(); ferr != nil {
				t.Fatal(ferr)
			}
			// The applier never runs: the store falls behind.
		}
		if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "behind the log") {
			t.Fatalf("with the applier stopped: %v, want ErrOverloaded naming the applier's lag", err)
		}
		if lag := e.wal.Durable() - e.ap.applied.Load(); lag > 64<<10+16<<10 {
			t.Fatalf("the store lags by %d bytes", lag)
		}
		if err := e.applyOnce(false); err != nil {
			t.Fatal(err)
		}
		if err := e.SendAsync(addr("x"), Message{Type: "inc"}); err != nil {
			t.Fatalf("after the applier caught up: %v", err)
		}
	})
	t.Run("queued bytes", func(t *testing.T) {
		// A function that fans out: its sends to a stopped peer wait in
		// the sender's outbox and count against its share.
		fan := FunctionSpec{Namespace: "t", Type: "fan", Function: FunctionFunc(func(ctx Context, msg Message) error {
			for i := 0; i < 50; i++ {
				ctx.SendAfter(time.Hour, ctx.Self(), Message{Type: "later", Value: make([]byte, 1<<10)}, "")
			}
			return nil
		})}
		e := manualEngine(t, Options{Shards: 1, MaxQueuedBytes: 128 << 10}, fan)
		var err error
		for i := 0; i < 20 && err == nil; i++ {
			err = e.SendAsync(format.Address{Namespace: "t", Type: "fan", ID: "f"}, Message{Type: "go"})
			e.shards[0].Step(time.Now().UnixNano())
		}
		if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "holds") {
			t.Fatalf("with delayed messages piling up: %v, want ErrOverloaded naming the queued bytes", err)
		}
	})
}
