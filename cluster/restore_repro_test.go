package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/testdir"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRestoreChangelogEndingInUnmarkedAbort reproduces what
// TestClusterCrash (cmd/engine, make cluster-crash) found when it killed
// kfake: a changelog partition whose last records belong to a transaction
// that was aborted without an abort marker (kfake, restarted from its data
// directory after a kill, aborts the transactions open at the crash
// implicitly, writing no control record) never finishes restoring. The
// restore reads read_committed up to the last stable offset and finishes a
// partition only when it sees the record just before it; the aborted
// records are filtered out and no marker follows them, so it waits for
// its 5-minute deadline, fails, and the node retries forever: the node
// stays unready (503) for every partition it owns.
//
// The crash is simulated in-process: the broker's data directory is
// copied while the transaction is open (segment files are written as
// records arrive, so the copy is what a SIGKILL leaves) and a second
// kfake starts from the copy. Fixed by reading the changelog with raw
// fetches that follow the fetch position (readChangelog).
func TestRestoreChangelogEndingInUnmarkedAbort(t *testing.T) {
	dir := t.TempDir()
	c := newTestCluster(t, 4, kfake.DataDir(filepath.Join(dir, "a")))
	c.start("n1")
	c.settled(20 * time.Second)
	c.stop("n1", false)
	topics := TopicNames(c.name)

	// A transaction left open on changelog partition 0.
	tx, err := kgo.NewClient(kgo.SeedBrokers(c.kf.ListenAddrs()...), kgo.TransactionalID("repro"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: topics.Changelog, Partition: 0, Key: []byte("kx"), Value: []byte("sy")}
	if err := tx.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// The "crash": copy the data directory now, start a broker from it.
	testdir.Copy(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	kf2, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.DataDir(filepath.Join(dir, "b")),
		kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": "500"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf2.Close)
	c.kf = kf2

	n := c.start("n1")
	deadline := time.Now().Add(30 * time.Second)
	for !n.Ready() || n.changed.Load() || len(n.Owned()) != int(c.parts) {
		if time.Now().After(deadline) {
			t.Fatalf("node not ready 30s after a broker crash left an unmarked aborted transaction at the end of changelog partition 0 (offset %d)", r.Offset)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
