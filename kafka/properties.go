package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"gopkg.in/yaml.v3"
)

// ClientProps is what the Kafka client properties of a document set,
// turned into franz-go options. Properties are the Java client's names;
// the ones that have no meaning here, or that shardfn sets itself, are
// refused by name.
type ClientProps struct {
	// Opts are the franz-go options the properties map to.
	Opts []kgo.Opt
	// MaxPollRecords is max.poll.records (ingress; default 500).
	MaxPollRecords int

	bootstrap     string
	groupID       string
	resetEarliest bool
	txnID         string
	txnTimeout    time.Duration
	acks          string

	protocol  string
	mechanism string
	jaas      string
	tls       *tls.Config
	tlsSet    bool
	trustPEM  []byte
	certPEM   []byte
	keyPEM    []byte
	noVerify  bool
	isolation string
}

// commonProps are accepted by ingresses and egresses.
var commonProps = []string{
	"bootstrap.servers", "client.id", "security.protocol", "sasl.mechanism", "sasl.jaas.config",
	"ssl.truststore.location", "ssl.truststore.type", "ssl.truststore.certificates",
	"ssl.keystore.location", "ssl.keystore.type", "ssl.keystore.certificate.chain", "ssl.keystore.key",
	"ssl.key.password", "ssl.endpoint.identification.algorithm",
	"request.timeout.ms", "retry.backoff.ms", "metadata.max.age.ms", "socket.connection.setup.timeout.ms",
	"connections.max.idle.ms",
}

var ingressProps = []string{
	"group.id", "auto.offset.reset", "enable.auto.commit", "isolation.level",
	"fetch.max.bytes", "max.partition.fetch.bytes", "fetch.min.bytes", "fetch.max.wait.ms",
	"max.poll.records", "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
	"partition.assignment.strategy", "group.instance.id",
}

var egressProps = []string{
	"acks", "linger.ms", "batch.size", "max.request.size", "compression.type", "delivery.timeout.ms",
	"retries", "enable.idempotence", "transactional.id", "transaction.timeout.ms", "max.in.flight.requests.per.connection",
}

// refusedProps explain why a known Kafka property is not accepted.
var refusedProps = map[string]string{
	"key.deserializer":        "records are routed by StateFun's rules (key = instance id, value wrapped as valueType); no deserializer is configured",
	"value.deserializer":      "records are routed by StateFun's rules (key = instance id, value wrapped as valueType); no deserializer is configured",
	"key.serializer":          "egress records carry their key and value as bytes; no serializer is configured",
	"value.serializer":        "egress records carry their key and value as bytes; no serializer is configured",
	"auto.commit.interval.ms": "shardfn commits offsets itself, after the records are durable in its log",
}

func (p *parser) properties(spec map[string]*yaml.Node, ingress bool) (ClientProps, error) {
	cp := ClientProps{MaxPollRecords: 500}
	n, ok := spec["properties"]
	if !ok {
		return cp, cp.finish(p, ingress)
	}
	kvs, err := p.keyValues(n, "spec.properties")
	if err != nil {
		return cp, err
	}
	allowed := append([]string(nil), commonProps...)
	other := egressProps
	if ingress {
		allowed = append(allowed, ingressProps...)
	} else {
		allowed = append(allowed, egressProps...)
		other = ingressProps
	}
	var unknown []string
	seen := map[string]bool{}
	for _, kv := range kvs {
		k, v := kv[0], strings.TrimSpace(kv[1])
		f := "spec.properties." + k
		if seen[k] {
			return cp, p.Errf(f, "set twice")
		}
		seen[k] = true
		if why, ok := refusedProps[k]; ok {
			return cp, p.Errf(f, "not supported: %s", why)
		}
		if !slices.Contains(allowed, k) {
			if slices.Contains(other, k) {
				what := "an egress"
				if !ingress {
					what = "an ingress"
				}
				return cp, p.Errf(f, "applies to %s, not here", what)
			}
			unknown = append(unknown, k)
			continue
		}
		if err := cp.set(p, f, k, v); err != nil {
			return cp, err
		}
	}
	if len(unknown) > 0 {
		slices.Sort(allowed)
		return cp, p.Errf("spec.properties", "unknown or unsupported Kafka client properties %s; supported here: %s",
			strings.Join(unknown, ", "), strings.Join(allowed, ", "))
	}
	return cp, cp.finish(p, ingress)
}

// millisProps are the properties in milliseconds that map to one franz-go
// option.
var millisProps = map[string]func(time.Duration) kgo.Opt{
	"request.timeout.ms":                 func(d time.Duration) kgo.Opt { return kgo.RequestTimeoutOverhead(d) },
	"retry.backoff.ms":                   func(d time.Duration) kgo.Opt { return kgo.RetryBackoffFn(func(int) time.Duration { return d }) },
	"metadata.max.age.ms":                func(d time.Duration) kgo.Opt { return kgo.MetadataMaxAge(d) },
	"socket.connection.setup.timeout.ms": func(d time.Duration) kgo.Opt { return kgo.DialTimeout(d) },
	"connections.max.idle.ms":            func(d time.Duration) kgo.Opt { return kgo.ConnIdleTimeout(d) },
	"fetch.max.wait.ms":                  func(d time.Duration) kgo.Opt { return kgo.FetchMaxWait(d) },
	"session.timeout.ms":                 func(d time.Duration) kgo.Opt { return kgo.SessionTimeout(d) },
	"heartbeat.interval.ms":              func(d time.Duration) kgo.Opt { return kgo.HeartbeatInterval(d) },
	"max.poll.interval.ms":               func(d time.Duration) kgo.Opt { return kgo.RebalanceTimeout(d) },
	"linger.ms":                          func(d time.Duration) kgo.Opt { return kgo.ProducerLinger(d) },
	"delivery.timeout.ms":                func(d time.Duration) kgo.Opt { return kgo.RecordDeliveryTimeout(d) },
}

// countProp is a property that is an integer from min to 2^31-1 and maps
// to one franz-go option.
type countProp struct {
	min int64
	opt func(int64) kgo.Opt
}

var countProps = map[string]countProp{
	"fetch.max.bytes":           {1, func(i int64) kgo.Opt { return kgo.FetchMaxBytes(int32(i)) }},
	"max.partition.fetch.bytes": {1, func(i int64) kgo.Opt { return kgo.FetchMaxPartitionBytes(int32(i)) }},
	"fetch.min.bytes":           {1, func(i int64) kgo.Opt { return kgo.FetchMinBytes(int32(i)) }},
	"batch.size":                {1024, func(i int64) kgo.Opt { return kgo.ProducerBatchMaxBytes(int32(i)) }},
	"max.request.size":          {1024, func(i int64) kgo.Opt { return kgo.ProducerBatchMaxBytes(int32(i)) }},
	"retries":                   {0, func(i int64) kgo.Opt { return kgo.RecordRetries(int(i)) }},
}

// parseMillis reads a property in milliseconds, f's value v.
func parseMillis(p *parser, f, v string) (time.Duration, error) {
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil || i < 0 {
		return 0, p.Errf(f, "%q: want milliseconds, a non-negative integer", v)
	}
	return time.Duration(i) * time.Millisecond, nil
}

// parseCount reads an integer property from min to 2^31-1, f's value v.
func parseCount(p *parser, f, v string, min int64) (int64, error) {
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil || i < min || i > 1<<31-1 {
		return 0, p.Errf(f, "%q: want an integer from %d", v, min)
	}
	return i, nil
}

// set applies property k, the field f, with value v.
func (cp *ClientProps) set(p *parser, f, k, v string) error {
	if opt, ok := millisProps[k]; ok {
		d, err := parseMillis(p, f, v)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, opt(d))
		return nil
	}
	if c, ok := countProps[k]; ok {
		i, err := parseCount(p, f, v, c.min)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, c.opt(i))
		return nil
	}
	if strings.HasPrefix(k, "security.") || strings.HasPrefix(k, "sasl.") || strings.HasPrefix(k, "ssl.") {
		return cp.setSecurity(p, f, k, v)
	}
	switch k {
	case "bootstrap.servers":
		cp.bootstrap = v
	case "client.id":
		cp.Opts = append(cp.Opts, kgo.ClientID(v))
	case "group.id":
		cp.groupID = v
	case "group.instance.id":
		cp.Opts = append(cp.Opts, kgo.InstanceID(v))
	case "auto.offset.reset":
		switch v {
		case "earliest":
			cp.resetEarliest = true
		case "latest":
		default:
			return p.Errf(f, "%q: want earliest or latest", v)
		}
	case "enable.auto.commit":
		if v != "false" {
			return p.Errf(f, "%q: shardfn commits offsets itself once the records are durable; only false is accepted", v)
		}
	case "isolation.level":
		if v != "read_committed" && v != "read_uncommitted" {
			return p.Errf(f, "%q: want read_committed or read_uncommitted", v)
		}
		cp.isolation = v
	case "max.poll.records":
		i, err := parseCount(p, f, v, 1)
		if err != nil {
			return err
		}
		cp.MaxPollRecords = int(i)
	case "partition.assignment.strategy":
		bs, err := balancers(p, f, v)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.Balancers(bs...))
	default:
		return cp.setProducer(p, f, k, v)
	}
	return nil
}

// setProducer applies an egress property that is not a duration or a
// count.
func (cp *ClientProps) setProducer(p *parser, f, k, v string) error {
	var err error
	switch k {
	case "acks":
		switch v {
		case "all", "-1", "1", "0":
			cp.acks = v
		default:
			return p.Errf(f, "%q: want all, -1, 1 or 0", v)
		}
	case "compression.type":
		c, err := compression(p, f, v)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.ProducerBatchCompression(c))
	case "enable.idempotence":
		if v != "true" {
			return p.Errf(f, "%q: the delivery semantic decides idempotence (none: off; at-least-once and exactly-once: on)", v)
		}
	case "max.in.flight.requests.per.connection":
		i, err := parseCount(p, f, v, 1)
		if err != nil {
			return err
		}
		if i > 5 {
			return p.Errf(f, "%d: at most 5 keeps the order of an idempotent producer", i)
		}
		cp.Opts = append(cp.Opts, kgo.MaxProduceRequestsInflightPerBroker(int(i)))
	case "transactional.id":
		cp.txnID = v
	case "transaction.timeout.ms":
		if cp.txnTimeout, err = parseMillis(p, f, v); err != nil {
			return err
		}
	}
	return nil
}

// setSecurity applies a security.*, sasl.* or ssl.* property; finish turns
// them into options.
func (cp *ClientProps) setSecurity(p *parser, f, k, v string) error {
	readFile := func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, p.Errf(f, "%v", err)
		}
		return b, nil
	}
	var err error
	switch k {
	case "security.protocol":
		switch strings.ToUpper(v) {
		case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
			cp.protocol = strings.ToUpper(v)
		default:
			return p.Errf(f, "%q: want PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", v)
		}
	case "sasl.mechanism":
		switch strings.ToUpper(v) {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
			cp.mechanism = strings.ToUpper(v)
		default:
			return p.Errf(f, "%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (OAUTHBEARER and GSSAPI are not supported)", v)
		}
	case "sasl.jaas.config":
		cp.jaas = v
	case "ssl.truststore.type", "ssl.keystore.type":
		if strings.ToUpper(v) != "PEM" {
			return p.Errf(f, "%q: only PEM stores are supported (convert a JKS or PKCS12 store with keytool/openssl)", v)
		}
	case "ssl.truststore.location":
		if cp.trustPEM, err = readFile(v); err != nil {
			return err
		}
		cp.tlsSet = true
	case "ssl.truststore.certificates":
		cp.trustPEM, cp.tlsSet = []byte(v), true
	case "ssl.keystore.location":
		b, err := readFile(v)
		if err != nil {
			return err
		}
		cp.certPEM, cp.keyPEM, cp.tlsSet = b, b, true
	case "ssl.keystore.certificate.chain":
		cp.certPEM, cp.tlsSet = []byte(v), true
	case "ssl.keystore.key":
		cp.keyPEM, cp.tlsSet = []byte(v), true
	case "ssl.key.password":
		return p.Errf(f, "encrypted private keys are not supported; give an unencrypted PEM key")
	case "ssl.endpoint.identification.algorithm":
		switch strings.ToLower(v) {
		case "https":
		case "":
			cp.noVerify = true
		default:
			return p.Errf(f, "%q: want https or an empty string", v)
		}
	}
	return nil
}

// balancers reads partition.assignment.strategy: names or Java class names
// separated by commas.
func balancers(p *parser, f, v string) ([]kgo.GroupBalancer, error) {
	var bs []kgo.GroupBalancer
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if i := strings.LastIndexByte(s, '.'); i >= 0 { // Java class names
			s = s[i+1:]
		}
		switch strings.ToLower(s) {
		case "range", "rangeassignor":
			bs = append(bs, kgo.RangeBalancer())
		case "roundrobin", "roundrobinassignor":
			bs = append(bs, kgo.RoundRobinBalancer())
		case "sticky", "stickyassignor":
			bs = append(bs, kgo.StickyBalancer())
		case "cooperative-sticky", "cooperativestickyassignor":
			bs = append(bs, kgo.CooperativeStickyBalancer())
		default:
			return nil, p.Errf(f, "%q: want range, roundrobin, sticky or cooperative-sticky", s)
		}
	}
	return bs, nil
}

// compression reads compression.type.
func compression(p *parser, f, v string) (kgo.CompressionCodec, error) {
	switch v {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, p.Errf(f, "%q: want none, gzip, snappy, lz4 or zstd", v)
}

var jaasKV = regexp.MustCompile(`(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"`)

// finish turns the security settings into options.
func (cp *ClientProps) finish(p *parser, ingress bool) error {
	if ingress && cp.isolation != "read_uncommitted" {
		cp.Opts = append(cp.Opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	proto := cp.protocol
	if proto == "" {
		proto = "PLAINTEXT"
		if cp.tlsSet {
			proto = "SSL"
		}
		if cp.mechanism != "" || cp.jaas != "" {
			proto = "SASL_" + proto
		}
	}
	useTLS := proto == "SSL" || proto == "SASL_SSL"
	useSASL := strings.HasPrefix(proto, "SASL_")
	if cp.tlsSet && !useTLS {
		return p.Errf("spec.properties.security.protocol", "%s with ssl.* settings: want SSL or SASL_SSL", proto)
	}
	if useTLS {
		c, err := cp.tlsConfig(p)
		if err != nil {
			return err
		}
		cp.tls = c
		cp.Opts = append(cp.Opts, kgo.DialTLSConfig(c), kgo.Dialer((&net.Dialer{Timeout: 10 * time.Second}).DialContext))
	}
	if useSASL {
		opt, err := cp.sasl(p, proto)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, opt)
	} else if cp.mechanism != "" || cp.jaas != "" {
		return p.Errf("spec.properties.security.protocol", "%s with SASL settings: want SASL_PLAINTEXT or SASL_SSL", proto)
	}
	return nil
}

// tlsConfig is the TLS configuration of the ssl.* settings.
func (cp *ClientProps) tlsConfig(p *parser) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cp.trustPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cp.trustPEM) {
			return nil, p.Errf("spec.properties.ssl.truststore", "no PEM certificate found")
		}
		c.RootCAs = pool
	}
	if len(cp.certPEM) > 0 || len(cp.keyPEM) > 0 {
		cert, err := tls.X509KeyPair(cp.certPEM, cp.keyPEM)
		if err != nil {
			return nil, p.Errf("spec.properties.ssl.keystore", "%v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if cp.noVerify {
		// Keep the chain check, skip the host name check (the Java
		// client's empty ssl.endpoint.identification.algorithm).
		c.InsecureSkipVerify = true
		c.VerifyPeerCertificate = verifyChain(c.RootCAs)
	}
	return c, nil
}

// verifyChain checks the broker's certificate chain against roots (the
// system's when nil), without checking the host name.
func verifyChain(roots *x509.CertPool) func(raw [][]byte, _ [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			var err error
			if certs[i], err = x509.ParseCertificate(r); err != nil {
				return err
			}
		}
		if len(certs) == 0 {
			return fmt.Errorf("kafka: the broker sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, ic := range certs[1:] {
			inter.AddCert(ic)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}

// sasl is the SASL option of sasl.mechanism and sasl.jaas.config.
func (cp *ClientProps) sasl(p *parser, proto string) (kgo.Opt, error) {
	if cp.jaas == "" {
		return nil, p.Errf("spec.properties.sasl.jaas.config", "missing: %s needs username=\"...\" password=\"...\"", proto)
	}
	kv := map[string]string{}
	for _, m := range jaasKV.FindAllStringSubmatch(cp.jaas, -1) {
		kv[m[1]] = strings.ReplaceAll(strings.ReplaceAll(m[2], `\"`, `"`), `\\`, `\`)
	}
	user, pass := kv["username"], kv["password"]
	if user == "" {
		return nil, p.Errf("spec.properties.sasl.jaas.config", "no username=\"...\" found")
	}
	switch cp.mechanism {
	case "SCRAM-SHA-256":
		return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()), nil
	case "SCRAM-SHA-512":
		return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()), nil
	}
	return kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()), nil // "" or PLAIN
}
