package format

import (
	"encoding/binary"
	"fmt"
)

// Effect records. Every invocation (or remote batch) yields exactly one
// record holding all of its effects; the shard appends it to the log, and
// recovery and the store applier replay it. Nothing in a record depends on
// re-running user code: replay applies effects, it never re-invokes.
//
// On-disk format; never change (add a new record kind instead):
//
//	u8       kind (RecordInvocation = 1, RecordInvocation2 = 2)
//	address  target instance (AppendAddress encoding); also the caller of every message below
//	uvarint  n, then n × u64 LE   ids of the messages this invocation consumed
//	uvarint  n, then n × state write:
//	           string name, u8 op, u64 LE written-at (unix ns), then by op:
//	             1 set          bytes value
//	             2 delete       nothing
//	             3 map set      bytes entry key, bytes value     (an entry of map state name)
//	             4 map delete   bytes entry key
//	             5 map clear    nothing                          (every entry of map state name)
//	uvarint  n, then n × message:
//	           u64 LE id, i64 LE fire-at (unix ns; 0 = now), address target, string type, bytes payload,
//	           u64 LE reply-to, string cancellation token, and in kind 2 only bytes trace context
//	           (TraceContext: empty or 25 bytes)
//	uvarint  n, then n × u64 LE   ids of delayed messages this invocation cancelled
//	uvarint  n, then n × egress:  string name, string type, bytes payload
//
// and, in kind 2 only (what is written now; kind 1 is still read):
//
//	uvarint  n, then n × idempotency key of a consumed message:
//	           u64 LE message id, i64 LE expire-at (unix ns), string key
//	uvarint  n (0 or 1), then the reply to keep (an idempotent request's):
//	           u64 LE request id, i64 LE expire-at (unix ns), string type, bytes payload
//
// string and bytes are uvarint length + bytes.

// Kinds of effect records.
const (
	// RecordInvocation is an invocation record without the key and reply
	// sections (written before they existed).
	RecordInvocation = 1
	// RecordInvocation2 is an invocation record with them.
	RecordInvocation2 = 2
)

// ReplyKeep is set in a request id (Envelope.ReplyTo) whose reply must be
// kept durably: the reply of an idempotent request, answered again to a
// retry. Message ids stay below it.
const ReplyKeep = uint64(1) << 63

// State write operations in records (on-disk format; never change).
const (
	OpSet       = 1
	OpDelete    = 2
	OpMapSet    = 3
	OpMapDelete = 4
	OpMapClear  = 5
)

// RecordBuilder encodes one effect record into a reusable buffer. The
// sections must be written in order: Begin, Consumed*, BeginStates, State*,
// BeginMessages, Message*, BeginCancels, Cancel*, BeginEgress, Egress*,
// BeginKeys, Key*, Reply (at most once), End.
// Counts are written as fixed-width placeholders and patched by End, so a
// record is encoded in one pass without allocation.
type RecordBuilder struct {
	buf      []byte
	countPos int
	count    int
	section  int // 0 consumed … 6 reply
}

// recordSections is the number of count-prefixed sections of a kind 2
// record.
const recordSections = 7

// count placeholders are 5-byte non-minimal uvarints, patched in End of each
// section; binary.Uvarint accepts them.
func (r *RecordBuilder) openCount() {
	r.section++
	r.countPos = len(r.buf)
	r.count = 0
	r.buf = append(r.buf, 0x80, 0x80, 0x80, 0x80, 0x00)
}

func (r *RecordBuilder) closeCount() {
	v := uint32(r.count)
	b := r.buf[r.countPos : r.countPos+5]
	b[0] = byte(v) | 0x80
	b[1] = byte(v>>7) | 0x80
	b[2] = byte(v>>14) | 0x80
	b[3] = byte(v>>21) | 0x80
	b[4] = byte(v >> 28)
}

// Begin starts a record for target in dst's buffer (dst is reused).
func (r *RecordBuilder) Begin(dst []byte, target Address) {
	r.buf = append(dst[:0], RecordInvocation2)
	r.buf = AppendAddress(r.buf, target)
	r.section = -1
	r.openCount()
}

// Consumed adds a consumed message id.
func (r *RecordBuilder) Consumed(id uint64) {
	r.buf = binary.LittleEndian.AppendUint64(r.buf, id)
	r.count++
}

// BeginStates closes the consumed section.
func (r *RecordBuilder) BeginStates() { r.closeCount(); r.openCount() }

// State adds a state write.
func (r *RecordBuilder) State(name string, op byte, writtenAt int64, value []byte) {
	r.buf = appendString(r.buf, name)
	r.buf = append(r.buf, op)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, uint64(writtenAt))
	if op == OpSet {
		r.buf = appendBytes(r.buf, value)
	}
	r.count++
}

// MapState adds a write of an entry of map state name: OpMapSet (key,
// value), OpMapDelete (key) or OpMapClear (neither).
func (r *RecordBuilder) MapState(name string, op byte, writtenAt int64, key, value []byte) {
	r.buf = appendString(r.buf, name)
	r.buf = append(r.buf, op)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, uint64(writtenAt))
	switch op {
	case OpMapSet:
		r.buf = appendBytes(r.buf, key)
		r.buf = appendBytes(r.buf, value)
	case OpMapDelete:
		r.buf = appendBytes(r.buf, key)
	}
	r.count++
}

// BeginMessages closes the state section.
func (r *RecordBuilder) BeginMessages() { r.closeCount(); r.openCount() }

// Message adds a sent (fireAt 0) or delayed message.
func (r *RecordBuilder) Message(e *Envelope, fireAt int64, token string) {
	r.buf = binary.LittleEndian.AppendUint64(r.buf, e.ID)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, uint64(fireAt))
	r.buf = AppendAddress(r.buf, e.Target)
	r.buf = appendString(r.buf, e.Type)
	r.buf = appendBytes(r.buf, e.Payload)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, e.ReplyTo)
	r.buf = appendString(r.buf, token)
	r.buf = appendTrace(r.buf, e.Trace)
	r.count++
}

// BeginCancels closes the message section.
func (r *RecordBuilder) BeginCancels() { r.closeCount(); r.openCount() }

// Cancel adds a cancelled delayed message id.
func (r *RecordBuilder) Cancel(id uint64) {
	r.buf = binary.LittleEndian.AppendUint64(r.buf, id)
	r.count++
}

// BeginEgress closes the cancel section.
func (r *RecordBuilder) BeginEgress() { r.closeCount(); r.openCount() }

// Egress adds an egress record.
func (r *RecordBuilder) Egress(name, typ string, payload []byte) {
	r.buf = appendString(r.buf, name)
	r.buf = appendString(r.buf, typ)
	r.buf = appendBytes(r.buf, payload)
	r.count++
}

// BeginKeys closes the egress section.
func (r *RecordBuilder) BeginKeys() { r.closeCount(); r.openCount() }

// Key adds the idempotency key of consumed message id.
func (r *RecordBuilder) Key(id uint64, expireAt int64, key string) {
	r.buf = binary.LittleEndian.AppendUint64(r.buf, id)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, uint64(expireAt))
	r.buf = appendString(r.buf, key)
	r.count++
}

// BeginReply closes the key section.
func (r *RecordBuilder) BeginReply() { r.closeCount(); r.openCount() }

// Reply adds the reply to keep for request reqID (once).
func (r *RecordBuilder) Reply(reqID uint64, expireAt int64, typ string, payload []byte) {
	r.buf = binary.LittleEndian.AppendUint64(r.buf, reqID)
	r.buf = binary.LittleEndian.AppendUint64(r.buf, uint64(expireAt))
	r.buf = appendString(r.buf, typ)
	r.buf = appendBytes(r.buf, payload)
	r.count++
}

// End closes the record (sections not begun are empty) and returns its
// bytes (aliasing the builder's buffer until the next Begin).
func (r *RecordBuilder) End() []byte {
	r.closeCount()
	for ; r.section < recordSections-1; r.section++ {
		r.buf = append(r.buf, 0)
	}
	return r.buf
}

// Record is a decoded effect record. Byte slices alias the input; the
// address fields are kept both decoded (Target) and raw (TargetRaw, the
// AppendAddress encoding, for building store keys without allocation).
type Record struct {
	Kind      byte
	TargetRaw []byte
	Consumed  []uint64
	States    []RecordState
	Messages  []RecordMessage
	Cancels   []uint64
	Egress    []RecordEgress
	Keys      []RecordKey
	Reply     RecordReply // valid when HasReply
	HasReply  bool
}

// RecordKey is the idempotency key of a message a Record consumed.
type RecordKey struct {
	ID       uint64
	ExpireAt int64
	Key      []byte
}

// RecordReply is the reply a Record keeps for an idempotent request.
type RecordReply struct {
	RequestID uint64
	ExpireAt  int64
	Type      []byte
	Payload   []byte
}

// RecordState is one state write of a Record.
type RecordState struct {
	Name      []byte
	Op        byte
	WrittenAt int64
	Key       []byte // the entry of a map write (OpMapSet, OpMapDelete)
	Value     []byte
}

// RecordMessage is one sent or delayed message of a Record.
type RecordMessage struct {
	ID        uint64
	FireAt    int64
	TargetRaw []byte
	Type      []byte
	Payload   []byte
	ReplyTo   uint64
	Token     []byte
	Trace     []byte // TraceContext encoding (kind 2); empty when not traced
}

// RecordEgress is one egress record of a Record.
type RecordEgress struct {
	Name, Type, Payload []byte
}

// rawAddress returns the raw encoding of an address at the decoder's
// position, validating it.
func (d *decoder) rawAddress() []byte {
	start := d.b
	d.bytes()
	d.bytes()
	d.bytes()
	if d.err != nil {
		return nil
	}
	return start[:len(start)-len(d.b)]
}

// DecodeRecord decodes rec into r, reusing r's slices. Slices alias rec.
// A record that does not parse is an error wrapping ErrCorrupt.
func DecodeRecord(rec []byte, r *Record) error {
	d := decoder{b: rec}
	r.Kind = d.byte1()
	if d.err == nil && r.Kind != RecordInvocation && r.Kind != RecordInvocation2 {
		return fmt.Errorf("%w: unknown record kind %d", ErrCorrupt, r.Kind)
	}
	r.TargetRaw = d.rawAddress()
	n := d.count(8)
	r.Consumed = r.Consumed[:0]
	for i := 0; i < n && d.err == nil; i++ {
		r.Consumed = append(r.Consumed, d.u64())
	}
	n = d.count(10)
	r.States = r.States[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var s RecordState
		s.Name = d.bytes()
		s.Op = d.byte1()
		s.WrittenAt = int64(d.u64())
		switch s.Op {
		case OpSet:
			s.Value = d.bytes()
		case OpDelete, OpMapClear:
		case OpMapSet:
			s.Key = d.bytes()
			s.Value = d.bytes()
		case OpMapDelete:
			s.Key = d.bytes()
		default:
			if d.err == nil {
				d.err = fmt.Errorf("%w: bad state op %d", ErrCorrupt, s.Op)
			}
		}
		r.States = append(r.States, s)
	}
	n = d.count(24)
	r.Messages = r.Messages[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var m RecordMessage
		m.ID = d.u64()
		m.FireAt = int64(d.u64())
		m.TargetRaw = d.rawAddress()
		m.Type = d.bytes()
		m.Payload = d.bytes()
		m.ReplyTo = d.u64()
		m.Token = d.bytes()
		if r.Kind == RecordInvocation2 {
			m.Trace = d.bytes()
		}
		r.Messages = append(r.Messages, m)
	}
	n = d.count(8)
	r.Cancels = r.Cancels[:0]
	for i := 0; i < n && d.err == nil; i++ {
		r.Cancels = append(r.Cancels, d.u64())
	}
	n = d.count(3)
	r.Egress = r.Egress[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var e RecordEgress
		e.Name = d.bytes()
		e.Type = d.bytes()
		e.Payload = d.bytes()
		r.Egress = append(r.Egress, e)
	}
	r.Keys = r.Keys[:0]
	r.HasReply = false
	if r.Kind == RecordInvocation2 {
		n = d.count(17)
		for i := 0; i < n && d.err == nil; i++ {
			var k RecordKey
			k.ID = d.u64()
			k.ExpireAt = int64(d.u64())
			k.Key = d.bytes()
			r.Keys = append(r.Keys, k)
		}
		n = d.count(18)
		if n > 1 && d.err == nil {
			d.err = fmt.Errorf("%w: %d replies in one record", ErrCorrupt, n)
		}
		if n == 1 && d.err == nil {
			r.HasReply = true
			r.Reply.RequestID = d.u64()
			r.Reply.ExpireAt = int64(d.u64())
			r.Reply.Type = d.bytes()
			r.Reply.Payload = d.bytes()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes in record", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		if d.err == ErrCorrupt {
			return fmt.Errorf("%w: truncated effect record", ErrCorrupt)
		}
		return d.err
	}
	return nil
}

// count reads a section count and checks it against the bytes left, given
// the minimum encoded size of one element, so hostile counts cannot make
// the decoder allocate without bound.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minSize) {
		d.err = fmt.Errorf("%w: count %d exceeds record size", ErrCorrupt, n)
		return 0
	}
	return int(n)
}

// DecodeAddress decodes an AppendAddress encoding.
func DecodeAddress(b []byte) (Address, error) {
	d := decoder{b: b}
	a := d.address()
	if d.err != nil {
		return Address{}, fmt.Errorf("%w: bad address encoding", ErrCorrupt)
	}
	return a, nil
}

// DecodeAddressPrefix decodes an AppendAddress encoding at the start of b
// and returns the rest.
func DecodeAddressPrefix(b []byte) (Address, []byte, error) {
	d := decoder{b: b}
	a := d.address()
	if d.err != nil {
		return Address{}, nil, fmt.Errorf("%w: bad address encoding", ErrCorrupt)
	}
	return a, d.b, nil
}
