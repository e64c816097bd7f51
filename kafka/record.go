package kafka

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shardfn/shardfn/engine"
)

// RecordType is the type name of a Kafka egress record: StateFun's
// KafkaProducerRecord, which remote functions write with the SDKs'
// KafkaEgressBuilder.
const RecordType = "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord"

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record for a Kafka egress.
//
// Encoding (the egress record's payload, type RecordType): StateFun's
// protobuf message io.statefun.sdk.egress.KafkaProducerRecord
//
//	string key = 1;          // empty: a record without a key
//	bytes  value_bytes = 2;
//	string topic = 3;
//
// plus a shardfn extension that StateFun's SDKs never write and its
// runtime would skip:
//
//	repeated Header headers = 100;  // message Header { string key = 1; bytes value = 2; }
type Record struct {
	Topic   string
	Key     string
	Value   []byte
	Headers []Header
}

// ErrRecord is wrapped by the errors of DecodeRecord.
var ErrRecord = errors.New("kafka: bad egress record")

const headersField = 100

// AppendRecord appends the encoding of r to dst.
func AppendRecord(dst []byte, r Record) []byte {
	if r.Key != "" {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, r.Key)
	}
	if len(r.Value) > 0 {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendBytes(dst, r.Value)
	}
	dst = protowire.AppendTag(dst, 3, protowire.BytesType)
	dst = protowire.AppendString(dst, r.Topic)
	for _, h := range r.Headers {
		n := protowire.SizeTag(1) + protowire.SizeBytes(len(h.Key)) + protowire.SizeTag(2) + protowire.SizeBytes(len(h.Value))
		dst = protowire.AppendTag(dst, headersField, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, h.Key)
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendBytes(dst, h.Value)
	}
	return dst
}

// Message returns r as an egress message (type RecordType).
func (r Record) Message() engine.Message {
	return engine.Message{Type: RecordType, Value: AppendRecord(nil, r)}
}

// Write writes r to the Kafka egress egressID (its module.yaml id) from
// an embedded function: the record is part of the invocation's effects,
// durable with them, and shipped to Kafka by the egress.
func Write(ctx engine.Context, egressID string, r Record) {
	ctx.Egress(EgressLog(egressID), r.Message())
}

// DecodeRecord decodes an egress record payload. The returned slices
// alias b.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	var haveTopic bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, fmt.Errorf("%w: %v", ErrRecord, protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2 || num == 3 || num == headersField) && typ != protowire.BytesType {
			return r, fmt.Errorf("%w: field %d has wire type %d, want bytes", ErrRecord, num, typ)
		}
		switch num {
		case 1, 2, 3, headersField:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, fmt.Errorf("%w: field %d: %v", ErrRecord, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				if !utf8.Valid(v) {
					return r, fmt.Errorf("%w: key is not UTF-8", ErrRecord)
				}
				r.Key = string(v)
			case 2:
				r.Value = v
			case 3:
				r.Topic, haveTopic = string(v), true
			case headersField:
				h, err := decodeHeader(v)
				if err != nil {
					return r, err
				}
				r.Headers = append(r.Headers, h)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, fmt.Errorf("%w: field %d: %v", ErrRecord, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !haveTopic || r.Topic == "" {
		return r, fmt.Errorf("%w: no topic", ErrRecord)
	}
	return r, nil
}

func decodeHeader(b []byte) (Header, error) {
	var h Header
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, fmt.Errorf("%w: header: %v", ErrRecord, protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, fmt.Errorf("%w: header: %v", ErrRecord, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 1 {
				h.Key = string(v)
			} else {
				h.Value = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return h, fmt.Errorf("%w: header: %v", ErrRecord, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return h, nil
}
