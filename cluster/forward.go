package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// State reads on any node. Each node advertises the base URL of its admin
// listener in the meta topic (key "node/<name>", the latest record of a key
// wins; an empty value: the node cannot be asked). A GET /state/... for an
// address whose partition another node owns is forwarded there: the owner
// is the group member the consumer group assigned the partition (kadm
// DescribeGroups, cached for ownerTTL), and the request carries
// ForwardedHeader, so that the node it reaches answers from its own engine
// only (421 if the partition moved in between) and never forwards again.

// ForwardedHeader is httpapi.ForwardedHeader (cluster does not import
// httpapi; a test checks that they agree).
const ForwardedHeader = "X-Shardfn-Forwarded"

const (
	ownerTTL       = time.Second      // how long a group description is trusted
	forwardTimeout = 10 * time.Second // one forwarded read, answer included
	nodeKeyPrefix  = "node/"
)

// forwarder is a node's view of who owns what and where to ask.
type forwarder struct {
	once   sync.Once
	client *http.Client

	mu       sync.Mutex
	owners   map[int32]string // input partition -> node name (group instance id)
	ownersAt time.Time
	urls     map[string]string // node name -> admin URL ("" = none)
	metaNext int64             // the next meta record to read
}

func (f *forwarder) init() {
	f.once.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.IdleConnTimeout = 30 * time.Second
		tr.MaxIdleConnsPerHost = 16
		f.client = &http.Client{Transport: tr, Timeout: forwardTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		f.owners = map[int32]string{}
		f.urls = map[string]string{}
	})
}

// ValidateAdminURL checks a node's advertised admin URL: empty (the node
// cannot be asked), or http(s)://host:port with no path, query or fragment.
func ValidateAdminURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("cluster: admin URL %q: pass the base URL of the node's admin listener as other nodes reach it, e.g. http://10.0.0.5:9090", s)
	}
	return nil
}

// advertise writes this node's admin URL to the meta topic (at Start).
func (n *Node) advertise(ctx context.Context) error {
	if err := ValidateAdminURL(n.cfg.AdminURL); err != nil {
		return err
	}
	u := strings.TrimSuffix(n.cfg.AdminURL, "/")
	r := &kgo.Record{Topic: n.topics.Meta, Partition: 0, Key: []byte(nodeKeyPrefix + n.cfg.Node), Value: []byte(u)}
	if err := n.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("cluster: advertise node %s's admin URL in %s: %w", n.cfg.Node, n.topics.Meta, err)
	}
	return nil
}

// ForwardState implements httpapi.StateForwarder: nil, nil when this node
// is the one to answer (the group assigned it the address's partition);
// otherwise the owner's answer to GET <owner>/state/<ns>/<type>/<id>. A
// 421 from the node asked (the partition moved since the group was
// described) is retried once with a fresh description.
func (n *Node) ForwardState(ctx context.Context, addr engine.Address) (*http.Response, error) {
	p := "/state/" + url.PathEscape(addr.Namespace) + "/" + url.PathEscape(addr.Type) + "/" + url.PathEscape(addr.ID)
	return n.forward(ctx, addr, http.MethodGet, p, nil)
}

// ForwardOps implements httpapi.OpsForwarder: the operator routes about
// one address (state repair, instance inspection) are executed by the
// owner of its partition, as ForwardState reads. pathQuery is the
// request's escaped path and query, body its body (nil: none). A write is
// retried on another answer than 421 only when the first attempt could
// not connect (so it was not sent).
func (n *Node) ForwardOps(ctx context.Context, addr engine.Address, method, pathQuery string, body []byte) (*http.Response, error) {
	if !strings.HasPrefix(pathQuery, "/") {
		return nil, fmt.Errorf("%w: forward %s %q: the path must start with /", engine.ErrBadMessage, method, pathQuery)
	}
	return n.forward(ctx, addr, method, pathQuery, body)
}

// forward sends method pathQuery (body) to the owner of addr's partition
// with ForwardedHeader and returns its answer; nil, nil when this node
// owns the partition.
func (n *Node) forward(ctx context.Context, addr engine.Address, method, pathQuery string, body []byte) (*http.Response, error) {
	p := PartitionOfAddress(addr, n.parts)
	if owned := *n.owned.Load(); int(p) < len(owned) && owned[p] {
		return nil, nil
	}
	f := &n.fwd
	f.init()
	asked := ""
	for attempt := 0; ; attempt++ {
		owner, base, err := n.ownerOf(ctx, p, attempt > 0)
		if err != nil {
			return nil, err
		}
		if owner == n.cfg.Node {
			return nil, nil // assigned here a moment ago: the local engine answers (or says it is not ready)
		}
		if base == "" {
			return nil, fmt.Errorf("%w: %s is in partition %d, owned by node %s, which advertises no admin URL (start it with --advertise-admin, Config.AdminURL); ask that node",
				ErrNotOwner, addr, p, owner)
		}
		if base == asked {
			return nil, fmt.Errorf("%w: node %s (%s) owns partition %d of %s by the group but says it does not: the partitions are moving; retry",
				engine.ErrOverloaded, owner, base, p, addr)
		}
		asked = base
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+pathQuery, rd)
		if err != nil {
			return nil, fmt.Errorf("cluster: forward %s %s of %s: %w", method, pathQuery, addr, err)
		}
		req.Header.Set(ForwardedHeader, n.cfg.Node)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := f.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if attempt == 0 && (method == http.MethodGet || notSent(err)) {
				continue // a restarted owner may advertise another URL: look again
			}
			if method != http.MethodGet {
				return nil, fmt.Errorf("%w: node %s (%s) owns partition %d of %s and did not answer %s: %v; it may have applied it (a repair sets absolute values: read the state, or repeat it)",
					engine.ErrOverloaded, owner, base, p, addr, method, err)
			}
			// Not wrapped: a client timeout is not the caller's deadline.
			return nil, fmt.Errorf("%w: node %s (%s) owns partition %d of %s and did not answer: %v",
				engine.ErrOverloaded, owner, base, p, addr, err)
		}
		if resp.StatusCode == http.StatusMisdirectedRequest && attempt == 0 {
			// Answered before anything was done (the node asked does not
			// own the partition): safe to send again, writes included.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			continue
		}
		return resp, nil
	}
}

// notSent reports whether a client error happened before the request
// could be sent (the connection was refused).
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// ownerOf returns the node the group assigned partition p of the input
// topic, and its admin URL. fresh forces a new group description and a
// new read of the meta topic.
func (n *Node) ownerOf(ctx context.Context, p int32, fresh bool) (owner, base string, err error) {
	f := &n.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	owner, ok := f.owners[p]
	if fresh || !ok || time.Since(f.ownersAt) > ownerTTL {
		if err := n.describeOwners(ctx); err != nil {
			return "", "", err
		}
		if owner, ok = f.owners[p]; !ok {
			return "", "", fmt.Errorf("%w: no node of cluster %s owns partition %d now (a rebalance is under way); retry", engine.ErrOverloaded, n.cfg.Name, p)
		}
	}
	base, ok = f.urls[owner]
	if fresh || !ok {
		if err := n.readNodeURLs(ctx); err != nil {
			return "", "", err
		}
		base = f.urls[owner]
	}
	return owner, base, nil
}

// describeOwners fills f.owners from the group's description (f.mu held).
func (n *Node) describeOwners(ctx context.Context) error {
	f := &n.fwd
	group := "shardfn-" + n.cfg.Name
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	ds, err := n.adm.DescribeGroups(ctx, group)
	if err == nil {
		err = ds.Error()
	}
	if err != nil {
		return fmt.Errorf("%w: describe group %s to find a partition's owner: %v", engine.ErrOverloaded, group, err)
	}
	clear(f.owners)
	for _, g := range ds {
		for _, m := range g.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok || m.InstanceID == nil {
				continue
			}
			for _, t := range a.Topics {
				if t.Topic != n.topics.In {
					continue
				}
				for _, p := range t.Partitions {
					f.owners[p] = *m.InstanceID
				}
			}
		}
	}
	f.ownersAt = time.Now()
	return nil
}

// readNodeURLs reads the meta topic's records from where the last read
// ended to its end, keeping the latest URL of each node (f.mu held).
func (n *Node) readNodeURLs(ctx context.Context) error {
	f := &n.fwd
	meta := n.topics.Meta
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	ends, err := n.adm.ListEndOffsets(ctx, meta)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("%w: end of %s: %v", engine.ErrOverloaded, meta, err)
	}
	o, ok := ends.Lookup(meta, 0)
	if !ok || o.Offset <= f.metaNext {
		return nil
	}
	end := o.Offset
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{meta: {0: kgo.NewOffset().At(f.metaNext)}}),
		kgo.KeepControlRecords()}, n.cfg.ClientOpts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for f.metaNext < end {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: read node URLs from %s: %v", engine.ErrOverloaded, meta, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("%w: read node URLs from %s: %v", engine.ErrOverloaded, meta, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < f.metaNext || r.Offset >= end {
				return
			}
			f.metaNext = r.Offset + 1
			if !r.Attrs.IsControl() && strings.HasPrefix(string(r.Key), nodeKeyPrefix) {
				f.urls[string(r.Key[len(nodeKeyPrefix):])] = string(r.Value)
			}
		})
	}
	return nil
}
