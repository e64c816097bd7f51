package store

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/shardfn/shardfn/internal/format"
)

// Both stores keep the same contract.
func forEach(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemory()) })
	t.Run("pebble", func(t *testing.T) {
		p, err := OpenPebble(t.TempDir(), PebbleOptions{CacheSize: 1 << 20, MemTableSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		f(t, p)
	})
}

func TestStateEgressTimersMeta(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		defer s.Close()
		a := format.AppendAddress(nil, format.Address{Namespace: "n", Type: "t", ID: "1"})
		other := format.AppendAddress(nil, format.Address{Namespace: "n", Type: "t", ID: "10"})
		b := s.NewBatch()
		b.SetState(7, a, []byte("x"), 5, []byte("v1"))
		b.SetState(7, a, []byte("y"), 6, []byte("v2"))
		b.SetState(7, other, []byte("x"), 5, []byte("other"))
		for i := 0; i < 3; i++ {
			b.PutEgress([]byte("out"), uint64(i), a, []byte("typ"), []byte(fmt.Sprint("rec", i)))
		}
		b.PutTimer(9, []byte("timer"))
		b.PutPending(4, []byte("pending"))
		b.Set(MetaKey, EncodeMeta(Meta{LSN: 42, Egress: map[string]uint64{"out": 3}}))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		got := map[string]string{}
		if err := s.LoadInstance(7, a, func(name []byte, w int64, v []byte) { got[string(name)] = fmt.Sprint(w, string(v)) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got["x"] != "5v1" || got["y"] != "6v2" {
			t.Fatalf("instance state %v", got)
		}
		var recs []string
		if err := s.ReadEgress("out", 1, 10, func(off uint64, rec []byte) bool {
			src, typ, payload, err := format.DecodeEgressValue(rec)
			if err != nil || src.ID != "1" || string(typ) != "typ" {
				t.Fatalf("egress record %d: %v %v %q", off, err, src, typ)
			}
			recs = append(recs, fmt.Sprint(off, string(payload)))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(recs) != "[1rec1 2rec2]" {
			t.Fatalf("egress %v", recs)
		}
		// fn returning false stops the read.
		calls := 0
		if err := s.ReadEgress("out", 1, 10, func(uint64, []byte) bool { calls++; return false }); err != nil || calls != 1 {
			t.Fatalf("stopped read: %d calls, %v", calls, err)
		}
		b.DeleteState(7, a, []byte("x"))
		b.DeleteTimer(9)
		b.ReplacePending()
		b.PutPending(5, []byte("p5"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		got = map[string]string{}
		_ = s.LoadInstance(7, a, func(name []byte, w int64, v []byte) { got[string(name)] = string(v) })
		if len(got) != 1 || got["y"] != "v2" {
			t.Fatalf("after delete %v", got)
		}
		n := 0
		_ = s.ScanTimers(func(id uint64, v []byte) error { n++; return nil })
		if n != 0 {
			t.Fatal("timer not deleted")
		}
		var pend []string
		_ = s.ScanPending(func(id uint64, v []byte) error { pend = append(pend, fmt.Sprint(id, string(v))); return nil })
		if fmt.Sprint(pend) != "[5p5]" {
			t.Fatalf("pending %v", pend)
		}
		mb, _ := s.Get(MetaKey)
		m, err := DecodeMeta(mb)
		if err != nil || m.LSN != 42 || m.Egress["out"] != 3 {
			t.Fatalf("meta %+v %v", m, err)
		}
		if !bytes.Equal(IDKey(nil, 't', 1), []byte{'t', 0, 0, 0, 0, 0, 0, 0, 1}) {
			t.Fatal("id key layout changed")
		}
		b.Reset()
		b.PutSpecs("ns/fn", []byte("specs"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		var specs []string
		_ = s.ScanSpecs(func(fnType string, v []byte) error { specs = append(specs, fnType+"="+string(v)); return nil })
		if fmt.Sprint(specs) != "[ns/fn=specs]" {
			t.Fatalf("specs %v", specs)
		}
	})
}

func TestDecodeMetaRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {2}, {1, 0, 0}, append(EncodeMeta(Meta{LSN: 1, Egress: map[string]uint64{"a": 1}}), 0)[:12]} {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("DecodeMeta(%x) accepted", b)
		}
	}
}

func TestKeysRepliesAndExpiry(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		b := s.NewBatch()
		b.PutKey(11, 100, 7, []byte("id-a"))
		b.PutKey(12, 300, 8, []byte("id-b"))
		b.PutReply(7, 150, []byte("text"), []byte("done"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		e, ok, err := s.GetKey(11)
		if err != nil || !ok || e.ExpireAt != 100 || e.ID != 7 || string(e.Identity) != "id-a" {
			t.Fatalf("key %+v %v %v", e, ok, err)
		}
		r, ok, err := s.GetReply(7)
		if err != nil || !ok || r.ExpireAt != 150 || string(r.Type) != "text" || string(r.Payload) != "done" {
			t.Fatalf("reply %+v %v %v", r, ok, err)
		}
		n, err := s.Expire(b, 200, 100)
		if err != nil || n != 2 {
			t.Fatalf("expired %d %v", n, err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if _, ok, _ := s.GetKey(11); ok {
			t.Fatal("expired key kept")
		}
		if _, ok, _ := s.GetReply(7); ok {
			t.Fatal("expired reply kept")
		}
		if _, ok, _ := s.GetKey(12); !ok {
			t.Fatal("live key dropped")
		}
		if n, _ := s.Expire(b, 200, 100); n != 0 {
			t.Fatalf("expired again: %d", n)
		}
	})
}

func TestMapEntries(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		a := format.AppendAddress(nil, format.Address{Namespace: "n", Type: "t", ID: "1"})
		b := s.NewBatch()
		for _, k := range []string{"d3", "d1", "d2"} {
			b.SetMapEntry(7, a, []byte("free"), []byte(k), []byte("v-"+k))
		}
		b.SetMapEntry(7, a, []byte("other"), []byte("x"), nil)
		b.SetState(7, a, []byte("free"), 1, []byte("scalar")) // a value of the same name is another key
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		list := func(name string) string {
			var out []string
			if err := s.LoadMap(7, a, []byte(name), func(k, v []byte) bool { out = append(out, string(k)+"="+string(v)); return true }); err != nil {
				t.Fatal(err)
			}
			return strings.Join(out, " ")
		}
		if got := list("free"); got != "d1=v-d1 d2=v-d2 d3=v-d3" {
			t.Fatalf("free: %q", got)
		}
		b.DeleteMapEntry(7, a, []byte("free"), []byte("d2"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if got := list("free"); got != "d1=v-d1 d3=v-d3" {
			t.Fatalf("after delete: %q", got)
		}
		b.ClearMap(7, a, []byte("free"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if got := list("free") + "|" + list("other"); got != "|x=" {
			t.Fatalf("after clear: %q", got)
		}
		n := 0
		_ = s.LoadInstance(7, a, func([]byte, int64, []byte) { n++ })
		if n != 1 {
			t.Fatalf("the scalar value: %d", n)
		}
	})
}

// TestBatchWritesInOrder: within one batch, the last write of a key wins
// whatever the order keys are written in, and a map's clearing deletes the
// entries written before it in the batch, not those after (a Pebble batch
// sorts its point writes; see pebbleBatch.flushOps).
func TestBatchWritesInOrder(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		a := format.AppendAddress(nil, format.Address{Namespace: "n", Type: "t", ID: "1"})
		b := s.NewBatch()
		b.SetState(3, a, []byte("z"), 1, []byte("first"))
		b.SetState(3, a, []byte("a"), 1, []byte("kept"))
		b.SetState(3, a, []byte("z"), 2, []byte("second"))
		b.SetState(3, a, []byte("gone"), 1, []byte("x"))
		b.DeleteState(3, a, []byte("gone"))
		b.DeleteState(3, a, []byte("back"))
		b.SetState(3, a, []byte("back"), 3, []byte("again"))
		b.SetMapEntry(3, a, []byte("m"), []byte("before"), nil)
		b.ClearMap(3, a, []byte("m"))
		b.SetMapEntry(3, a, []byte("m"), []byte("after"), []byte("1"))
		b.SetMapEntry(3, a, []byte("m"), []byte("after"), []byte("2"))
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		var got []string
		_ = s.LoadInstance(3, a, func(name []byte, at int64, v []byte) { got = append(got, fmt.Sprintf("%s=%s@%d", name, v, at)) })
		sort.Strings(got)
		if want := "a=kept@1 back=again@3 z=second@2"; strings.Join(got, " ") != want {
			t.Fatalf("state %q, want %q", strings.Join(got, " "), want)
		}
		var entries []string
		_ = s.LoadMap(3, a, []byte("m"), func(k, v []byte) bool { entries = append(entries, string(k)+"="+string(v)); return true })
		if strings.Join(entries, " ") != "after=2" {
			t.Fatalf("map %q, want after=2", entries)
		}
	})
}
