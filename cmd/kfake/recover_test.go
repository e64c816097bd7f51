package main

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/testdir"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRestartAfterKillWritesAbortMarkers: kfake restarted from the files a
// kill left, with a transaction open at the kill, aborts it without a
// marker; a later transaction of the same producer id, committed, was then
// invisible to read_committed readers (franz-go drops the producer's
// batches until its abort marker). This is how make cluster-crash lost
// acknowledged increments after a kfake kill: a node restoring a moved
// partition read the changelog across the gap and missed the previous
// owner's later commits. The restart now writes the missing marker.
//
// The kill is simulated in-process: the data directory is copied while the
// transaction is open (kfake writes segment files as records arrive, so the
// copy is what a SIGKILL leaves) and the broker is restarted from the copy
// on the same ports.
func TestRestartAfterKillWritesAbortMarkers(t *testing.T) {
	dir := t.TempDir()
	kf := startKfake(t, filepath.Join(dir, "a"), nil)
	addrs := kf.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx := txnClient(t, addrs)
	commit(ctx, t, tx, "one")
	begin(ctx, t, tx, "two") // open at the "kill"

	testdir.Copy(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	kf.Close()
	kf = startKfake(t, filepath.Join(dir, "b"), addrs)
	n, err := recoverLog(ctx, kf)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("wrote %d abort markers after the kill, want 1 (the open transaction)", n)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("a transaction open at the kill was reported committed after the restart")
	}
	// The same transactional id again: the same producer id, a new epoch.
	commit(ctx, t, txnClient(t, addrs), "three")
	if got := readCommitted(ctx, t, addrs); !slices.Equal(got, []string{"one", "three"}) {
		t.Fatalf("read_committed after the restart: %q, want [one three]", got)
	}
}

// TestRestartAfterKillDedupesRetriedBatch: a batch written just before a
// kill, whose acknowledgement its idempotent producer never got, is sent
// again after the restart. kfake had lost its sequence windows and wrote it
// a second time (make cluster-crash: one acknowledged increment applied
// twice); the restart now answers it with the offset it already has.
func TestRestartAfterKillDedupesRetriedBatch(t *testing.T) {
	dir := t.TempDir()
	kf := startKfake(t, filepath.Join(dir, "a"), nil)
	addrs := kf.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sent *kmsg.ProduceRequest
	kf.ControlKey(0, func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := *req.(*kmsg.ProduceRequest)
		r.Topics = slices.Clone(r.Topics)
		for i := range r.Topics {
			r.Topics[i].Partitions = slices.Clone(r.Topics[i].Partitions)
			for j := range r.Topics[i].Partitions {
				r.Topics[i].Partitions[j].Records = slices.Clone(r.Topics[i].Partitions[j].Records)
			}
		}
		sent = &r
		return nil, nil, false
	})
	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	res := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("once")})
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	if sent == nil {
		t.Fatal("the produce request was not seen")
	}

	testdir.Copy(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	kf.Close()
	kf = startKfake(t, filepath.Join(dir, "b"), addrs)
	if _, err := recoverLog(ctx, kf); err != nil {
		t.Fatal(err)
	}
	raw, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	resp, err := raw.Request(ctx, sent) // the retry of the written batch
	if err != nil {
		t.Fatal(err)
	}
	pr := resp.(*kmsg.ProduceResponse)
	if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 {
		t.Fatalf("response to the retried batch: %+v", pr)
	}
	if p := pr.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.BaseOffset != res[0].Record.Offset {
		t.Fatalf("retried batch answered with error %d at offset %d, want its offset %d", p.ErrorCode, p.BaseOffset, res[0].Record.Offset)
	}
	if got := readCommitted(ctx, t, addrs); !slices.Equal(got, []string{"once"}) {
		t.Fatalf("log after the retry: %q, want [once]", got)
	}
}

// TestCleanRestartKeepsOpenTransaction: a stop by SIGTERM saves the open
// transaction, and the restart must not abort it.
func TestCleanRestartKeepsOpenTransaction(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	kf := startKfake(t, dir, nil)
	addrs := kf.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx := txnClient(t, addrs)
	commit(ctx, t, tx, "one")
	begin(ctx, t, tx, "two")
	kf.Close() // clean: the open transaction is saved
	kf = startKfake(t, dir, addrs)
	n, err := recoverLog(ctx, kf)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("wrote %d abort markers after a clean stop, want 0", n)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit of the transaction kept across a clean restart: %v", err)
	}
	if got := readCommitted(ctx, t, addrs); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("read_committed after the restart: %q, want [one two]", got)
	}
}

func startKfake(t *testing.T, dir string, addrs []string) *kfake.Cluster {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SeedTopics(1, "t")}
	if addrs != nil {
		var ports []int
		for _, a := range addrs {
			_, p, _ := net.SplitHostPort(a)
			n, _ := strconv.Atoi(p)
			ports = append(ports, n)
		}
		opts = append(opts, kfake.Ports(ports...))
	}
	kf, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	return kf
}

func txnClient(t *testing.T, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.TransactionalID("x"), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func begin(ctx context.Context, t *testing.T, tx *kgo.Client, v string) {
	t.Helper()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func commit(ctx context.Context, t *testing.T, tx *kgo.Client, v string) {
	t.Helper()
	begin(ctx, t, tx, v)
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

// readCommitted reads topic t from its start, read_committed, up to its end.
func readCommitted(ctx context.Context, t *testing.T, addrs []string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}
