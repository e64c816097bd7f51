package format

import (
	"bytes"
	"testing"
)

func buildRecord() []byte {
	var rb RecordBuilder
	self := Address{Namespace: "n", Type: "t", ID: "self"}
	rb.Begin(nil, self)
	rb.Consumed(7)
	rb.Consumed(9)
	rb.BeginStates()
	rb.State("a", OpSet, 11, []byte("va"))
	rb.State("b", OpDelete, 12, nil)
	rb.BeginMessages()
	rb.Message(&Envelope{ID: 21, Target: Address{Namespace: "n", Type: "u", ID: "x"}, Type: "m", Payload: []byte("p"), ReplyTo: 3}, 0, "")
	rb.Message(&Envelope{ID: 22, Target: self, Type: "later", Payload: nil}, 99, "tok")
	rb.BeginCancels()
	rb.Cancel(5)
	rb.BeginEgress()
	rb.Egress("out", "rec", []byte("e"))
	return append([]byte(nil), rb.End()...)
}

func TestRecordRoundTrip(t *testing.T) {
	b := buildRecord()
	var r Record
	if err := DecodeRecord(b, &r); err != nil {
		t.Fatal(err)
	}
	self, err := DecodeAddress(r.TargetRaw)
	if err != nil || self.ID != "self" {
		t.Fatalf("target %v %v", self, err)
	}
	if len(r.Consumed) != 2 || r.Consumed[1] != 9 {
		t.Fatalf("consumed %v", r.Consumed)
	}
	if len(r.States) != 2 || string(r.States[0].Value) != "va" || r.States[1].Op != OpDelete || r.States[1].WrittenAt != 12 {
		t.Fatalf("states %+v", r.States)
	}
	if len(r.Messages) != 2 || r.Messages[0].ReplyTo != 3 || r.Messages[1].FireAt != 99 || string(r.Messages[1].Token) != "tok" {
		t.Fatalf("messages %+v", r.Messages)
	}
	if len(r.Cancels) != 1 || r.Cancels[0] != 5 || len(r.Egress) != 1 || string(r.Egress[0].Payload) != "e" {
		t.Fatalf("cancels %v egress %+v", r.Cancels, r.Egress)
	}
	h, ok := HashRaw(r.TargetRaw)
	if !ok || h != self.Hash() {
		t.Fatal("HashRaw differs from Address.Hash")
	}
	// Every truncation is an error, never a panic or a silent success.
	for i := 0; i < len(b); i++ {
		if err := DecodeRecord(b[:i], &r); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) decoded", i, len(b))
		}
	}
}

func TestStoredMessageRoundTrip(t *testing.T) {
	caller := AppendAddress(nil, Address{Namespace: "a", Type: "b", ID: "c"})
	target := AppendAddress(nil, Address{Namespace: "d", Type: "e", ID: "f"})
	b := AppendStoredMessage(nil, 1, 2, caller, target, []byte("t"), []byte("p"), 3, []byte("k"), nil)
	m, err := DecodeStoredMessage(b)
	if err != nil || m.Env.ID != 1 || m.FireAt != 2 || m.Env.Caller.ID != "c" || m.Env.Target.ID != "f" || m.Env.ReplyTo != 3 || m.Token != "k" || !bytes.Equal(m.Env.Payload, []byte("p")) {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := DecodeStoredMessage(b[:len(b)-1]); err == nil {
		t.Fatal("truncated stored message decoded")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(buildRecord())
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{1, 1, 'a', 1, 'b', 1, 'c', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := DecodeRecord(b, &r); err != nil {
			return
		}
		// A record that decodes re-encodes to the same bytes' meaning:
		// its address must hash.
		if _, ok := HashRaw(r.TargetRaw); !ok {
			t.Fatal("decoded record with an undecodable target")
		}
		_, _ = DecodeStoredMessage(b)
	})
}

func TestRecordKeysAndReply(t *testing.T) {
	var rb RecordBuilder
	rb.Begin(nil, Address{Namespace: "n", Type: "t", ID: "i"})
	rb.Consumed(7)
	rb.BeginStates()
	rb.BeginMessages()
	rb.BeginCancels()
	rb.BeginEgress()
	rb.BeginKeys()
	rb.Key(7, 1000, "order-42")
	rb.BeginReply()
	rb.Reply(7, 2000, "text", []byte("done"))
	b := append([]byte(nil), rb.End()...)
	var r Record
	if err := DecodeRecord(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Keys) != 1 || r.Keys[0].ID != 7 || r.Keys[0].ExpireAt != 1000 || string(r.Keys[0].Key) != "order-42" {
		t.Fatalf("keys %+v", r.Keys)
	}
	if !r.HasReply || r.Reply.RequestID != 7 || r.Reply.ExpireAt != 2000 || string(r.Reply.Type) != "text" || string(r.Reply.Payload) != "done" {
		t.Fatalf("reply %+v", r.Reply)
	}
	for i := 0; i < len(b); i++ {
		if err := DecodeRecord(b[:i], &r); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) decoded", i, len(b))
		}
	}
}

// Records of kind 1 (written before keys and replies existed) still read.
func TestRecordKind1StillDecodes(t *testing.T) {
	b := []byte{RecordInvocation}
	b = AppendAddress(b, Address{Namespace: "n", Type: "t", ID: "i"})
	b = append(b, 1, 5, 0, 0, 0, 0, 0, 0, 0) // consumed [5]
	b = append(b, 0, 0, 0, 0)                // states, messages, cancels, egress
	var r Record
	if err := DecodeRecord(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Kind != RecordInvocation || len(r.Consumed) != 1 || r.Consumed[0] != 5 || len(r.Keys) != 0 || r.HasReply {
		t.Fatalf("%+v", r)
	}
}

func TestTraceContextRoundTrip(t *testing.T) {
	tc := TraceContext{Flags: 1}
	for i := range tc.TraceID {
		tc.TraceID[i] = byte(i + 1)
	}
	for i := range tc.SpanID {
		tc.SpanID[i] = byte(100 + i)
	}
	var rb RecordBuilder
	rb.Begin(nil, Address{Namespace: "n", Type: "t", ID: "i"})
	rb.BeginStates()
	rb.BeginMessages()
	rb.Message(&Envelope{ID: 1, Target: Address{Namespace: "n", Type: "t", ID: "x"}, Type: "m", Trace: tc}, 0, "")
	rb.Message(&Envelope{ID: 2, Target: Address{Namespace: "n", Type: "t", ID: "y"}, Type: "m"}, 0, "")
	b := append([]byte(nil), rb.End()...)
	var r Record
	if err := DecodeRecord(b, &r); err != nil {
		t.Fatal(err)
	}
	got, err := decodeTrace(r.Messages[0].Trace)
	if err != nil || got != tc || len(r.Messages[1].Trace) != 0 {
		t.Fatalf("trace %+v %v, untraced %x", got, err, r.Messages[1].Trace)
	}
	raw := AppendAddress(nil, Address{Namespace: "a", Type: "b", ID: "c"})
	for _, trace := range [][]byte{nil, r.Messages[0].Trace} {
		m, err := DecodeStoredMessage(AppendStoredMessage(nil, 1, 0, raw, raw, []byte("t"), nil, 0, nil, trace))
		if err != nil {
			t.Fatal(err)
		}
		if (trace == nil) != m.Env.Trace.IsZero() || (trace != nil && m.Env.Trace != tc) {
			t.Fatalf("stored trace %+v for %x", m.Env.Trace, trace)
		}
	}
	if _, err := DecodeStoredMessage(AppendStoredMessage(nil, 1, 0, raw, raw, nil, nil, 0, nil, []byte{1, 2, 3})); err == nil {
		t.Fatal("a 3-byte trace context decoded")
	}
}
