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
			return cp, p.errf(f, "set twice")
		}
		seen[k] = true
		if why, ok := refusedProps[k]; ok {
			return cp, p.errf(f, "not supported: %s", why)
		}
		if !contains(allowed, k) {
			if contains(other, k) {
				what := "an egress"
				if !ingress {
					what = "an ingress"
				}
				return cp, p.errf(f, "applies to %s, not here", what)
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
		return cp, p.errf("spec.properties", "unknown or unsupported Kafka client properties %s; supported here: %s",
			strings.Join(unknown, ", "), strings.Join(allowed, ", "))
	}
	return cp, cp.finish(p, ingress)
}

func (cp *ClientProps) set(p *parser, f, k, v string) error {
	ms := func() (time.Duration, error) {
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < 0 {
			return 0, p.errf(f, "%q: want milliseconds, a non-negative integer", v)
		}
		return time.Duration(i) * time.Millisecond, nil
	}
	num := func(min int64) (int64, error) {
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < min || i > 1<<31-1 {
			return 0, p.errf(f, "%q: want an integer from %d", v, min)
		}
		return i, nil
	}
	readFile := func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, p.errf(f, "%v", err)
		}
		return b, nil
	}
	var err error
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
			return p.errf(f, "%q: want earliest or latest", v)
		}
	case "enable.auto.commit":
		if v != "false" {
			return p.errf(f, "%q: shardfn commits offsets itself once the records are durable; only false is accepted", v)
		}
	case "isolation.level":
		if v != "read_committed" && v != "read_uncommitted" {
			return p.errf(f, "%q: want read_committed or read_uncommitted", v)
		}
		cp.isolation = v
	case "security.protocol":
		switch strings.ToUpper(v) {
		case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
			cp.protocol = strings.ToUpper(v)
		default:
			return p.errf(f, "%q: want PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", v)
		}
	case "sasl.mechanism":
		switch strings.ToUpper(v) {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
			cp.mechanism = strings.ToUpper(v)
		default:
			return p.errf(f, "%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (OAUTHBEARER and GSSAPI are not supported)", v)
		}
	case "sasl.jaas.config":
		cp.jaas = v
	case "ssl.truststore.type", "ssl.keystore.type":
		if strings.ToUpper(v) != "PEM" {
			return p.errf(f, "%q: only PEM stores are supported (convert a JKS or PKCS12 store with keytool/openssl)", v)
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
		return p.errf(f, "encrypted private keys are not supported; give an unencrypted PEM key")
	case "ssl.endpoint.identification.algorithm":
		switch strings.ToLower(v) {
		case "https":
		case "":
			cp.noVerify = true
		default:
			return p.errf(f, "%q: want https or an empty string", v)
		}
	case "request.timeout.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.RequestTimeoutOverhead(d))
	case "retry.backoff.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.RetryBackoffFn(func(int) time.Duration { return d }))
	case "metadata.max.age.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.MetadataMaxAge(d))
	case "socket.connection.setup.timeout.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.DialTimeout(d))
	case "connections.max.idle.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.ConnIdleTimeout(d))
	case "fetch.max.bytes":
		i, err := num(1)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.FetchMaxBytes(int32(i)))
	case "max.partition.fetch.bytes":
		i, err := num(1)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.FetchMaxPartitionBytes(int32(i)))
	case "fetch.min.bytes":
		i, err := num(1)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.FetchMinBytes(int32(i)))
	case "fetch.max.wait.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.FetchMaxWait(d))
	case "max.poll.records":
		i, err := num(1)
		if err != nil {
			return err
		}
		cp.MaxPollRecords = int(i)
	case "session.timeout.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.SessionTimeout(d))
	case "heartbeat.interval.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.HeartbeatInterval(d))
	case "max.poll.interval.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.RebalanceTimeout(d))
	case "partition.assignment.strategy":
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
				return p.errf(f, "%q: want range, roundrobin, sticky or cooperative-sticky", s)
			}
		}
		cp.Opts = append(cp.Opts, kgo.Balancers(bs...))
	case "acks":
		switch v {
		case "all", "-1", "1", "0":
			cp.acks = v
		default:
			return p.errf(f, "%q: want all, -1, 1 or 0", v)
		}
	case "linger.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.ProducerLinger(d))
	case "batch.size", "max.request.size":
		i, err := num(1024)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.ProducerBatchMaxBytes(int32(i)))
	case "compression.type":
		var c kgo.CompressionCodec
		switch v {
		case "none":
			c = kgo.NoCompression()
		case "gzip":
			c = kgo.GzipCompression()
		case "snappy":
			c = kgo.SnappyCompression()
		case "lz4":
			c = kgo.Lz4Compression()
		case "zstd":
			c = kgo.ZstdCompression()
		default:
			return p.errf(f, "%q: want none, gzip, snappy, lz4 or zstd", v)
		}
		cp.Opts = append(cp.Opts, kgo.ProducerBatchCompression(c))
	case "delivery.timeout.ms":
		d, err := ms()
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.RecordDeliveryTimeout(d))
	case "retries":
		i, err := num(0)
		if err != nil {
			return err
		}
		cp.Opts = append(cp.Opts, kgo.RecordRetries(int(i)))
	case "enable.idempotence":
		if v != "true" {
			return p.errf(f, "%q: the delivery semantic decides idempotence (none: off; at-least-once and exactly-once: on)", v)
		}
	case "max.in.flight.requests.per.connection":
		i, err := num(1)
		if err != nil {
			return err
		}
		if i > 5 {
			return p.errf(f, "%d: at most 5 keeps the order of an idempotent producer", i)
		}
		cp.Opts = append(cp.Opts, kgo.MaxProduceRequestsInflightPerBroker(int(i)))
	case "transactional.id":
		cp.txnID = v
	case "transaction.timeout.ms":
		if cp.txnTimeout, err = ms(); err != nil {
			return err
		}
	}
	return nil
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
		return p.errf("spec.properties.security.protocol", "%s with ssl.* settings: want SSL or SASL_SSL", proto)
	}
	if useTLS {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(cp.trustPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(cp.trustPEM) {
				return p.errf("spec.properties.ssl.truststore", "no PEM certificate found")
			}
			c.RootCAs = pool
		}
		if len(cp.certPEM) > 0 || len(cp.keyPEM) > 0 {
			cert, err := tls.X509KeyPair(cp.certPEM, cp.keyPEM)
			if err != nil {
				return p.errf("spec.properties.ssl.keystore", "%v", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		if cp.noVerify {
			// Keep the chain check, skip the host name check (the Java
			// client's empty ssl.endpoint.identification.algorithm).
			c.InsecureSkipVerify = true
			roots := c.RootCAs
			c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
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
		cp.tls = c
		cp.Opts = append(cp.Opts, kgo.DialTLSConfig(c), kgo.Dialer((&net.Dialer{Timeout: 10 * time.Second}).DialContext))
	}
	if useSASL {
		if cp.jaas == "" {
			return p.errf("spec.properties.sasl.jaas.config", "missing: %s needs username=\"...\" password=\"...\"", proto)
		}
		kv := map[string]string{}
		for _, m := range jaasKV.FindAllStringSubmatch(cp.jaas, -1) {
			kv[m[1]] = strings.ReplaceAll(strings.ReplaceAll(m[2], `\"`, `"`), `\\`, `\`)
		}
		user, pass := kv["username"], kv["password"]
		if user == "" {
			return p.errf("spec.properties.sasl.jaas.config", "no username=\"...\" found")
		}
		switch cp.mechanism {
		case "", "PLAIN":
			cp.Opts = append(cp.Opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			cp.Opts = append(cp.Opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			cp.Opts = append(cp.Opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
		}
	} else if cp.mechanism != "" || cp.jaas != "" {
		return p.errf("spec.properties.security.protocol", "%s with SASL settings: want SASL_PLAINTEXT or SASL_SSL", proto)
	}
	return nil
}
