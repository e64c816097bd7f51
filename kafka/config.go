package kafka

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shardfn/shardfn/internal/yamldoc"
	"github.com/shardfn/shardfn/remote"
)

// Component kinds of a StateFun module.yaml that this package implements.
const (
	KindIngress = "io.statefun.kafka.v1/ingress"
	KindEgress  = "io.statefun.kafka.v1/egress"
)

// ErrConfig is wrapped by every error about a Kafka document of a
// module.yaml.
var ErrConfig = errors.New("kafka: bad module configuration")

// Config is the Kafka part of a module.yaml.
type Config struct {
	Ingresses []IngressSpec
	Egresses  []EgressSpec
}

// StartupType is where an ingress starts consuming a partition the
// engine has never consumed.
type StartupType string

// Startup positions, as StateFun names them.
const (
	StartGroupOffsets    StartupType = "group-offsets"
	StartEarliest        StartupType = "earliest"
	StartLatest          StartupType = "latest"
	StartSpecificOffsets StartupType = "specific-offsets"
	StartDate            StartupType = "date"
)

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// IngressTopic routes one topic: every record becomes a message of
// ValueType (the record value, not transcoded) to each target function
// type, at the instance named by the record key.
type IngressTopic struct {
	Topic     string
	ValueType string
	Targets   []FunctionType
}

// FunctionType is a namespace/name pair.
type FunctionType struct{ Namespace, Type string }

func (f FunctionType) String() string { return f.Namespace + "/" + f.Type }

// IngressSpec is one io.statefun.kafka.v1/ingress document.
type IngressSpec struct {
	// ID is the ingress identifier (namespace/name).
	ID string
	// Brokers are the bootstrap servers (spec.address, comma separated, or
	// the bootstrap.servers property).
	Brokers []string
	// Group is the consumer group (consumerGroupId, or the group.id
	// property; default "shardfn-<id>").
	Group string
	// Startup applies to partitions the engine has never consumed; a
	// partition it has consumed resumes at its durable position.
	Startup StartupType
	// SpecificOffsets holds the offsets of StartSpecificOffsets.
	SpecificOffsets map[TopicPartition]int64
	// StartDate is the timestamp of StartDate.
	StartDate time.Time
	// ResetEarliest: autoOffsetResetPosition is earliest (default latest).
	ResetEarliest bool
	Topics        []IngressTopic
	// Client holds what the properties set.
	Client ClientProps
	// Source names the document.
	Source string
}

// Semantic is an egress delivery guarantee.
type Semantic string

// Delivery semantics, as StateFun names them.
const (
	SemanticNone        Semantic = "none"
	SemanticAtLeastOnce Semantic = "at-least-once"
	SemanticExactlyOnce Semantic = "exactly-once"
)

// EgressSpec is one io.statefun.kafka.v1/egress document.
type EgressSpec struct {
	// ID is the egress identifier (namespace/name). Functions write to it
	// by this name: an embedded function with ctx.Egress(ID, ...), a remote
	// one with KafkaEgressBuilder's target; "shardfn/<name>" is the
	// engine's egress log <name> (as for every remote egress).
	ID      string
	Brokers []string
	// Semantic defaults to at-least-once, as in StateFun.
	Semantic Semantic
	// TransactionTimeout of exactly-once (required there, as in StateFun).
	TransactionTimeout time.Duration
	// TransactionalID of exactly-once (default "shardfn-egress-<id>").
	TransactionalID string
	// Client holds what the properties set.
	Client ClientProps
	Source string
}

// Log is the engine egress log an egress ships: its ID, or for
// "shardfn/<name>" the name (remote.EgressNamespace).
func (s *EgressSpec) Log() string { return EgressLog(s.ID) }

// EgressLog maps an egress identifier to the engine's egress log name,
// as the remote codec does for outgoing_egresses.
func EgressLog(id string) string {
	if ns, name, ok := strings.Cut(id, "/"); ok && ns == remote.EgressNamespace && !strings.Contains(name, "/") {
		return name
	}
	return id
}

// Group is the consumer group whose committed offset is the egress's
// shipped position: "shardfn-egress-<id>".
func (s *EgressSpec) Group() string { return "shardfn-egress-" + s.ID }

// Parse reads the Kafka documents of a module (remote.Module.Components).
func Parse(comps []remote.Component) (*Config, error) {
	c := &Config{}
	ids := map[string]string{}
	for _, comp := range comps {
		p := &parser{yamldoc.Parser{Where: comp.Source, Err: ErrConfig}}
		if comp.Spec == nil {
			return nil, p.Errf("spec", "missing")
		}
		switch comp.Kind {
		case KindIngress:
			in, err := p.ingress(comp.Spec)
			if err != nil {
				return nil, err
			}
			if prev, dup := ids["i"+in.ID]; dup {
				return nil, p.Errf("spec.id", "ingress %s already declared in %s", in.ID, prev)
			}
			ids["i"+in.ID] = comp.Source
			c.Ingresses = append(c.Ingresses, *in)
		case KindEgress:
			eg, err := p.egress(comp.Spec)
			if err != nil {
				return nil, err
			}
			if prev, dup := ids["e"+eg.Log()]; dup {
				return nil, p.Errf("spec.id", "egress %s already declared in %s", eg.ID, prev)
			}
			ids["e"+eg.Log()] = comp.Source
			c.Egresses = append(c.Egresses, *eg)
		default:
			return nil, p.Errf("kind", "not a Kafka kind (%s, %s)", KindIngress, KindEgress)
		}
	}
	return c, nil
}

// parser reads one Kafka document of a module.
type parser struct{ yamldoc.Parser }

func (p *parser) strList(n *yaml.Node, field string) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		s, err := p.Str(n, field)
		return []string{s}, err
	case yaml.SequenceNode:
		var out []string
		for i, c := range n.Content {
			s, err := p.Str(c, fmt.Sprintf("%s[%d]", field, i))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		if len(out) == 0 {
			return nil, p.Errf(field, "empty list")
		}
		return out, nil
	}
	return nil, p.Errf(field, "want a string or a list of strings, have %s", yamldoc.NodeKind(n))
}

// keyValues reads StateFun's list of single-key mappings ("- key: value"),
// or a plain mapping.
func (p *parser) keyValues(n *yaml.Node, field string) ([][2]string, error) {
	var out [][2]string
	add := func(k, v *yaml.Node, f string) error {
		if v.Kind != yaml.ScalarNode {
			return p.Errf(f+"."+k.Value, "want a scalar value, have %s", yamldoc.NodeKind(v))
		}
		out = append(out, [2]string{k.Value, v.Value})
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := add(n.Content[i], n.Content[i+1], field); err != nil {
				return nil, err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			f := fmt.Sprintf("%s[%d]", field, i)
			if c.Kind != yaml.MappingNode || len(c.Content) != 2 {
				return nil, p.Errf(f, "want one \"key: value\" entry, have %s", yamldoc.NodeKind(c))
			}
			if err := add(c.Content[0], c.Content[1], f); err != nil {
				return nil, err
			}
		}
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		fallthrough
	default:
		return nil, p.Errf(field, "want a list of \"- key: value\" entries, have %s", yamldoc.NodeKind(n))
	}
	return out, nil
}

func (p *parser) id(n *yaml.Node, field string) (string, error) {
	s, err := p.Str(n, field)
	if err != nil {
		return "", err
	}
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return "", p.Errf(field, "%q: want namespace/name", s)
	}
	return s, nil
}

func brokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// client reads what ingresses and egresses share: the id, the client
// properties and the brokers (spec.address, else bootstrap.servers).
func (p *parser) client(spec map[string]*yaml.Node, ingress bool) (id string, props ClientProps, brokerList []string, err error) {
	idn, ok := spec["id"]
	if !ok {
		return "", props, nil, p.Errf("spec.id", "missing")
	}
	if id, err = p.id(idn, "spec.id"); err != nil {
		return "", props, nil, err
	}
	if props, err = p.properties(spec, ingress); err != nil {
		return "", props, nil, err
	}
	if an, ok := spec["address"]; ok {
		s, err := p.Str(an, "spec.address")
		if err != nil {
			return "", props, nil, err
		}
		brokerList = brokers(s)
	} else if props.bootstrap != "" {
		brokerList = brokers(props.bootstrap)
	}
	if len(brokerList) == 0 {
		return "", props, nil, p.Errf("spec.address", "missing (or set the bootstrap.servers property)")
	}
	return id, props, brokerList, nil
}

func (p *parser) ingress(n *yaml.Node) (*IngressSpec, error) {
	spec, err := p.Mapping(n, "spec", "id", "address", "consumerGroupId", "startupPosition", "autoOffsetResetPosition", "topics", "properties")
	if err != nil {
		return nil, err
	}
	in := &IngressSpec{Startup: StartGroupOffsets, Source: p.Where}
	if in.ID, in.Client, in.Brokers, err = p.client(spec, true); err != nil {
		return nil, err
	}
	in.Group = "shardfn-" + in.ID
	if gn, ok := spec["consumerGroupId"]; ok {
		if in.Group, err = p.Str(gn, "spec.consumerGroupId"); err != nil {
			return nil, err
		}
	} else if in.Client.groupID != "" {
		in.Group = in.Client.groupID
	}
	in.ResetEarliest = in.Client.resetEarliest
	if rn, ok := spec["autoOffsetResetPosition"]; ok {
		if in.ResetEarliest, err = p.resetEarliest(rn); err != nil {
			return nil, err
		}
	}
	if sn, ok := spec["startupPosition"]; ok {
		if err := p.startup(sn, in); err != nil {
			return nil, err
		}
	}
	tn, ok := spec["topics"]
	if !ok {
		return nil, p.Errf("spec.topics", "missing")
	}
	if in.Topics, err = p.topics(tn); err != nil {
		return nil, err
	}
	if in.Startup == StartSpecificOffsets {
		for tp := range in.SpecificOffsets {
			if !slices.ContainsFunc(in.Topics, func(t IngressTopic) bool { return t.Topic == tp.Topic }) {
				return nil, p.Errf("spec.startupPosition.offsets", "%s: topic %q is not in spec.topics", tp, tp.Topic)
			}
		}
	}
	return in, nil
}

// resetEarliest reads spec.autoOffsetResetPosition.
func (p *parser) resetEarliest(n *yaml.Node) (bool, error) {
	s, err := p.Str(n, "spec.autoOffsetResetPosition")
	if err != nil {
		return false, err
	}
	switch strings.ToLower(s) {
	case "earliest":
		return true, nil
	case "latest":
		return false, nil
	}
	return false, p.Errf("spec.autoOffsetResetPosition", "%q: want earliest or latest", s)
}

// topics reads spec.topics: a non-empty list of {topic, valueType,
// targets}, each topic once.
func (p *parser) topics(tn *yaml.Node) ([]IngressTopic, error) {
	if tn.Kind != yaml.SequenceNode || len(tn.Content) == 0 {
		return nil, p.Errf("spec.topics", "want a non-empty list of {topic, valueType, targets}, have %s", yamldoc.NodeKind(tn))
	}
	var out []IngressTopic
	seen := map[string]bool{}
	for i, c := range tn.Content {
		f := fmt.Sprintf("spec.topics[%d]", i)
		it, err := p.topic(c, f, seen)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}

// topic reads one entry of spec.topics, the field f; seen holds the
// topics of the entries before it.
func (p *parser) topic(c *yaml.Node, f string, seen map[string]bool) (IngressTopic, error) {
	var it IngressTopic
	t, err := p.Mapping(c, f, "topic", "valueType", "targets")
	if err != nil {
		return it, err
	}
	for _, k := range []string{"topic", "valueType", "targets"} {
		if _, ok := t[k]; !ok {
			return it, p.Errf(f+"."+k, "missing")
		}
	}
	if it.Topic, err = p.Str(t["topic"], f+".topic"); err != nil {
		return it, err
	}
	if seen[it.Topic] {
		return it, p.Errf(f+".topic", "topic %q listed twice", it.Topic)
	}
	seen[it.Topic] = true
	if it.ValueType, err = p.Str(t["valueType"], f+".valueType"); err != nil {
		return it, err
	}
	if !strings.Contains(it.ValueType, "/") {
		return it, p.Errf(f+".valueType", "%q: want a type name namespace/name", it.ValueType)
	}
	targets, err := p.strList(t["targets"], f+".targets")
	if err != nil {
		return it, err
	}
	for j, s := range targets {
		k := strings.LastIndexByte(s, '/')
		if k <= 0 || k == len(s)-1 {
			return it, p.Errf(fmt.Sprintf("%s.targets[%d]", f, j), "%q: want a function type namespace/name", s)
		}
		it.Targets = append(it.Targets, FunctionType{Namespace: s[:k], Type: s[k+1:]})
	}
	return it, nil
}

// typedMapping reads a mapping, the field f, with a required string
// member "type" beside the members other: it returns the mapping and the
// type.
func (p *parser) typedMapping(n *yaml.Node, f string, other ...string) (map[string]*yaml.Node, string, error) {
	m, err := p.Mapping(n, f, append([]string{"type"}, other...)...)
	if err != nil {
		return nil, "", err
	}
	tn, ok := m["type"]
	if !ok {
		return nil, "", p.Errf(f+".type", "missing")
	}
	typ, err := p.Str(tn, f+".type")
	return m, typ, err
}

// DateLayout is StateFun's startupPosition date pattern
// (yyyy-MM-dd HH:mm:ss.SSS Z) in Go's notation.
const DateLayout = "2006-01-02 15:04:05.000 -0700"

func (p *parser) startup(n *yaml.Node, in *IngressSpec) error {
	const f = "spec.startupPosition"
	m, s, err := p.typedMapping(n, f, "offsets", "date")
	if err != nil {
		return err
	}
	in.Startup = StartupType(s)
	need := ""
	switch in.Startup {
	case StartGroupOffsets, StartEarliest, StartLatest:
	case StartSpecificOffsets:
		need = "offsets"
	case StartDate:
		need = "date"
	default:
		return p.Errf(f+".type", "%q: want group-offsets, earliest, latest, specific-offsets or date", s)
	}
	for _, k := range []string{"offsets", "date"} {
		if _, ok := m[k]; ok && k != need {
			return p.Errf(f+"."+k, "only for type %s", map[string]string{"offsets": "specific-offsets", "date": "date"}[k])
		}
	}
	if need == "" {
		return nil
	}
	vn, ok := m[need]
	if !ok {
		return p.Errf(f+"."+need, "missing (type %s needs it)", s)
	}
	if need == "date" {
		ds, err := p.Str(vn, f+".date")
		if err != nil {
			return err
		}
		if in.StartDate, err = time.Parse(DateLayout, ds); err != nil {
			return p.Errf(f+".date", "%q: want yyyy-MM-dd HH:mm:ss.SSS Z, e.g. 2020-02-01 04:15:00.000 +0000", ds)
		}
		return nil
	}
	kvs, err := p.keyValues(vn, f+".offsets")
	if err != nil {
		return err
	}
	if len(kvs) == 0 {
		return p.Errf(f+".offsets", "empty")
	}
	in.SpecificOffsets = map[TopicPartition]int64{}
	for _, kv := range kvs {
		i := strings.LastIndexByte(kv[0], '/')
		part, perr := strconv.ParseInt(kv[0][i+1:], 10, 32)
		if i <= 0 || perr != nil || part < 0 {
			return p.Errf(f+".offsets."+kv[0], "want topic/partition, e.g. orders/0")
		}
		off, err := strconv.ParseInt(kv[1], 10, 64)
		if err != nil || off < 0 {
			return p.Errf(f+".offsets."+kv[0], "%q: want an offset, a non-negative integer", kv[1])
		}
		in.SpecificOffsets[TopicPartition{Topic: kv[0][:i], Partition: int32(part)}] = off
	}
	return nil
}

func (p *parser) egress(n *yaml.Node) (*EgressSpec, error) {
	spec, err := p.Mapping(n, "spec", "id", "address", "deliverySemantic", "properties")
	if err != nil {
		return nil, err
	}
	eg := &EgressSpec{Semantic: SemanticAtLeastOnce, Source: p.Where}
	if eg.ID, eg.Client, eg.Brokers, err = p.client(spec, false); err != nil {
		return nil, err
	}
	props := eg.Client
	eg.TransactionTimeout = props.txnTimeout
	eg.TransactionalID = props.txnID
	if dn, ok := spec["deliverySemantic"]; ok {
		if err := p.deliverySemantic(dn, eg); err != nil {
			return nil, err
		}
	}
	if eg.Semantic != SemanticExactlyOnce && (props.txnID != "" || props.txnTimeout != 0) {
		return nil, p.Errf("spec.properties", "transactional.id and transaction.timeout.ms apply only to deliverySemantic exactly-once")
	}
	if eg.Semantic == SemanticExactlyOnce && eg.TransactionalID == "" {
		eg.TransactionalID = "shardfn-egress-" + eg.ID
	}
	if eg.Semantic != SemanticNone && props.acks != "" && props.acks != "all" && props.acks != "-1" {
		return nil, p.Errf("spec.properties.acks", "%q: delivery semantic %s needs acks=all", props.acks, eg.Semantic)
	}
	return eg, nil
}

// deliverySemantic reads spec.deliverySemantic into eg: the type and, for
// exactly-once, the transaction timeout.
func (p *parser) deliverySemantic(dn *yaml.Node, eg *EgressSpec) error {
	const f = "spec.deliverySemantic"
	m, s, err := p.typedMapping(dn, f, "transactionTimeout", "transactionTimeoutMillis")
	if err != nil {
		return err
	}
	eg.Semantic = Semantic(s)
	switch eg.Semantic {
	case SemanticNone, SemanticAtLeastOnce:
		for _, k := range []string{"transactionTimeout", "transactionTimeoutMillis"} {
			if _, ok := m[k]; ok {
				return p.Errf(f+"."+k, "only for type exactly-once")
			}
		}
	case SemanticExactlyOnce:
		if ms, ok := m["transactionTimeoutMillis"]; ok { // StateFun's deprecated form wins, as there
			v, err := strconv.ParseInt(ms.Value, 10, 64)
			if err != nil || v <= 0 {
				return p.Errf(f+".transactionTimeoutMillis", "%q: want a positive number of milliseconds", ms.Value)
			}
			eg.TransactionTimeout = time.Duration(v) * time.Millisecond
		} else if tt, ok := m["transactionTimeout"]; ok {
			if eg.TransactionTimeout, err = remote.ParseDuration(tt.Value); err != nil {
				return p.Errf(f+".transactionTimeout", "%v", err)
			}
		} else if eg.TransactionTimeout == 0 {
			return p.Errf(f+".transactionTimeout", "missing (exactly-once needs it, e.g. 15min)")
		}
		if eg.TransactionTimeout < time.Second {
			return p.Errf(f+".transactionTimeout", "%v is below 1s", eg.TransactionTimeout)
		}
	default:
		return p.Errf(f+".type", "%q: want none, at-least-once or exactly-once", s)
	}
	return nil
}
