package kafka

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shardfn/shardfn/remote"
)

// statefunModule is a module.yaml written for StateFun (fields as in its
// documentation and io-bundle), with an HTTP endpoint beside the Kafka I/O.
const statefunModule = `kind: io.statefun.endpoints.v2/http
spec:
  functions: com.example/*
  urlPathTemplate: http://functions:8000/statefun
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: com.example/users
  address: kafka-broker:9092
  consumerGroupId: my-consumer-group
  startupPosition:
    type: specific-offsets
    offsets:
      - user-topic/0: 91
      - user-topic/11: 11
  autoOffsetResetPosition: earliest
  topics:
    - topic: user-topic
      valueType: com.example/User
      targets:
        - com.example/greeter
        - com.example/logger
    - topic: other
      valueType: io.statefun.types/string
      targets: [com.example/greeter]
  properties:
    - client.id: my-client
    - fetch.max.bytes: 1048576
    - max.poll.records: 200
    - isolation.level: read_committed
---
kind: io.statefun.kafka.v1/egress
spec:
  id: com.example/out
  address: kafka-broker:9092,kafka-2:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 15min
  properties:
    - linger.ms: 5
    - compression.type: zstd
---
kind: io.statefun.kafka.v1/egress
spec:
  id: shardfn/plain
  address: kafka-broker:9092
`

func TestParseStateFunModule(t *testing.T) {
	m, err := remote.ParseModule(strings.NewReader(statefunModule))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Endpoints) != 1 || len(m.Components) != 3 {
		t.Fatalf("endpoints %d components %d", len(m.Endpoints), len(m.Components))
	}
	c, err := Parse(m.Components)
	if err != nil {
		t.Fatal(err)
	}
	in := c.Ingresses[0]
	in.Client = ClientProps{}
	want := IngressSpec{ID: "com.example/users", Brokers: []string{"kafka-broker:9092"}, Group: "my-consumer-group",
		Startup: StartSpecificOffsets, SpecificOffsets: map[TopicPartition]int64{{"user-topic", 0}: 91, {"user-topic", 11}: 11},
		ResetEarliest: true,
		Topics: []IngressTopic{
			{Topic: "user-topic", ValueType: "com.example/User", Targets: []FunctionType{{"com.example", "greeter"}, {"com.example", "logger"}}},
			{Topic: "other", ValueType: "io.statefun.types/string", Targets: []FunctionType{{"com.example", "greeter"}}},
		},
		Source: "document 2 (kind io.statefun.kafka.v1/ingress)"}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("ingress\n got %+v\nwant %+v", in, want)
	}
	if c.Ingresses[0].Client.MaxPollRecords != 200 {
		t.Errorf("max.poll.records %d", c.Ingresses[0].Client.MaxPollRecords)
	}
	eg := c.Egresses[0]
	if eg.ID != "com.example/out" || eg.Log() != "com.example/out" || eg.Semantic != SemanticExactlyOnce || eg.TransactionTimeout != 15*time.Minute ||
		eg.TransactionalID != "shardfn-egress-com.example/out" || len(eg.Brokers) != 2 || eg.Group() != "shardfn-egress-com.example/out" {
		t.Errorf("egress %+v", eg)
	}
	if p := c.Egresses[1]; p.Semantic != SemanticAtLeastOnce || p.Log() != "plain" {
		t.Errorf("default egress %+v (log %s)", p, p.Log())
	}
}

func TestParseErrors(t *testing.T) {
	const in = "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: a/b\n  address: k:9092\n"
	const topics = "  topics:\n    - {topic: t, valueType: a/v, targets: [a/f]}\n"
	const eg = "kind: io.statefun.kafka.v1/egress\nspec:\n  id: a/e\n  address: k:9092\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown property", in + topics + "  properties:\n    - ssl.bogus: 1\n    - client.id: x\n    - foo.bar: 2\n",
			"unknown or unsupported Kafka client properties ssl.bogus, foo.bar; supported here:"},
		{"egress property on ingress", in + topics + "  properties:\n    - linger.ms: 5\n", "spec.properties.linger.ms: applies to an egress"},
		{"deserializer", in + topics + "  properties:\n    - value.deserializer: x\n", "value.deserializer: not supported"},
		{"auto commit", in + topics + "  properties:\n    - enable.auto.commit: true\n", "shardfn commits offsets itself"},
		{"jks", in + topics + "  properties:\n    - ssl.truststore.type: JKS\n", "only PEM stores"},
		{"sasl without user", in + topics + "  properties:\n    - security.protocol: SASL_SSL\n    - sasl.mechanism: PLAIN\n", "sasl.jaas.config: missing"},
		{"no topics", in, "spec.topics: missing"},
		{"no address", "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: a/b\n" + topics, "spec.address: missing"},
		{"bad id", "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: nons\n  address: k\n" + topics, `spec.id: "nons": want namespace/name`},
		{"unknown field", in + topics + "  typo: 1\n", "spec.typo: unknown field"},
		{"bad startup", in + topics + "  startupPosition: {type: sometime}\n", "want group-offsets, earliest, latest, specific-offsets or date"},
		{"bad date", in + topics + "  startupPosition: {type: date, date: yesterday}\n", "want yyyy-MM-dd HH:mm:ss.SSS Z"},
		{"offsets of other topic", in + topics + "  startupPosition:\n    type: specific-offsets\n    offsets:\n      - u/0: 1\n", `topic "u" is not in spec.topics`},
		{"bad reset", in + topics + "  autoOffsetResetPosition: middle\n", "want earliest or latest"},
		{"bad target", in + "  topics:\n    - {topic: t, valueType: a/v, targets: [nope]}\n", "want a function type namespace/name"},
		{"eo without timeout", eg + "  deliverySemantic: {type: exactly-once}\n", "transactionTimeout: missing"},
		{"bad semantic", eg + "  deliverySemantic: {type: twice}\n", "want none, at-least-once or exactly-once"},
		{"timeout on alo", eg + "  deliverySemantic: {type: at-least-once, transactionTimeout: 1min}\n", "only for type exactly-once"},
		{"acks 1 with alo", eg + "  properties:\n    - acks: 1\n", "needs acks=all"},
		{"consumer prop on egress", eg + "  properties:\n    - group.id: g\n", "applies to an ingress"},
		{"duplicate egress", eg + "---\n" + eg, "egress a/e already declared"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := remote.ParseModule(strings.NewReader(c.yaml))
			if err == nil {
				_, err = Parse(m.Components)
			}
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrConfig containing %q", err, c.want)
			}
		})
	}
}

func TestDateAndLegacyTimeout(t *testing.T) {
	const y = "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: a/b\n  address: k\n  startupPosition:\n    type: date\n    date: 2020-02-01 04:15:00.000 -0700\n  topics:\n    - {topic: t, valueType: a/v, targets: a/f}\n" +
		"---\nkind: io.statefun.kafka.v1/egress\nspec:\n  id: a/e\n  address: k\n  deliverySemantic:\n    type: exactly-once\n    transactionTimeoutMillis: 90000\n"
	c := parseConfig(t, y)
	if want := time.Date(2020, 2, 1, 11, 15, 0, 0, time.UTC); !c.Ingresses[0].StartDate.Equal(want) {
		t.Errorf("date %v, want %v", c.Ingresses[0].StartDate, want)
	}
	if c.Egresses[0].TransactionTimeout != 90*time.Second {
		t.Errorf("timeout %v", c.Egresses[0].TransactionTimeout)
	}
}

func TestRecordEncoding(t *testing.T) {
	r := Record{Topic: "t", Key: "k", Value: []byte("v"), Headers: []Header{{Key: "h", Value: []byte("1")}, {Key: "e"}}}
	got, err := DecodeRecord(AppendRecord(nil, r))
	if err != nil || !reflect.DeepEqual(got, Record{Topic: "t", Key: "k", Value: []byte("v"), Headers: []Header{{Key: "h", Value: []byte("1")}, {Key: "e", Value: []byte{}}}}) {
		t.Fatalf("round trip %+v %v", got, err)
	}
	// StateFun's KafkaProducerRecord as an SDK writes it: key=1 value_bytes=2 topic=3, plus an unknown field.
	var b []byte
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "orders")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "id-7")
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0, 1})
	b = protowire.AppendTag(b, 9, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	got, err = DecodeRecord(b)
	if err != nil || got.Topic != "orders" || got.Key != "id-7" || string(got.Value) != "\x00\x01" {
		t.Fatalf("statefun record %+v %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"no topic":  AppendRecord(nil, Record{Key: "k"})[:3],
		"truncated": b[:len(b)-3],
		"wire type": protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1),
	} {
		if _, err := DecodeRecord(bad); !errors.Is(err, ErrRecord) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if EgressLog("shardfn/x") != "x" || EgressLog("a/b") != "a/b" || EgressLog("shardfn/a/b") != "shardfn/a/b" {
		t.Error("EgressLog")
	}
	if k := recordKey(strings.Repeat("n", 300)+"/x", TopicPartition{"t", 1}, 5); len(k) > 255 || !strings.HasPrefix(k, "kafka/sha256/") {
		t.Errorf("long key %q", k)
	}
}
