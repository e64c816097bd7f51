package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
)

// TestEngineErrorIsRetryable: while a node cannot open its engine (it keeps
// retrying), requests get a retryable "not ready" (HTTP 503), not the cause
// as an internal error (HTTP 500): make cluster-crash saw 2,746 answers
// "500 internal error: cluster: changelog stable offsets:
// NOT_LEADER_FOR_PARTITION" while kfake restarted.
func TestEngineErrorIsRetryable(t *testing.T) {
	n := &Node{}
	cause := errors.New("cluster: changelog stable offsets: NOT_LEADER_FOR_PARTITION")
	n.err.Store(&cause)
	_, err := n.engine()
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, engine.ErrOverloaded) {
		t.Fatalf("engine() with an open failure: %v, want ErrNotReady (retryable)", err)
	}
}

// TestRestoreRetriesBrokerErrors: the restore's offset lookups retry the
// errors of a broker that is restarting (NOT_LEADER_FOR_PARTITION) instead
// of failing the engine's open.
func TestRestoreRetriesBrokerErrors(t *testing.T) {
	c := newTestCluster(t, 4)
	n := c.start("n1")
	c.settled(20 * time.Second)
	var failed atomic.Int32
	c.kf.ControlKey(2, func(req kmsg.Request) (kmsg.Response, error, bool) {
		if failed.Add(1) > 3 {
			c.kf.DropControl()
			return nil, nil, false
		}
		c.kf.KeepControl()
		r := req.(*kmsg.ListOffsetsRequest)
		resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range r.Topics {
			t := kmsg.NewListOffsetsResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewListOffsetsResponseTopicPartition()
				p.Partition, p.ErrorCode = rp.Partition, kerr.NotLeaderForPartition.Code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
	owned := make([]bool, c.parts)
	for _, p := range n.Owned() {
		owned[p] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := n.changelogEnds(ctx, owned); err != nil {
		t.Fatalf("changelog ends with a broker answering NOT_LEADER_FOR_PARTITION three times: %v", err)
	}
	if failed.Load() < 3 {
		t.Fatalf("only %d offset lookups were failed", failed.Load())
	}
}
