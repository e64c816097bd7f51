package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// startKfake builds cmd/kfake and runs it in its own process: three
// brokers of a Kafka-protocol test cluster (kfake, not Kafka) on loopback.
func startKfake(t *testing.T, topics string) []string {
	t.Helper()
	buildBinary(t)
	bin := filepath.Join(binDir, "kfake")
	if _, err := os.Stat(bin); err != nil {
		goBin, err := exec.LookPath("go")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(goBin, "build", "-o", bin, "../kfake").CombinedOutput(); err != nil {
			t.Fatalf("go build ../kfake: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, "--ports", "0,0,0", "--topics", topics)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		var hello struct{ Addrs []string }
		if err := json.Unmarshal([]byte(l), &hello); err != nil || len(hello.Addrs) != 3 {
			t.Fatalf("kfake: bad first line %q", l)
		}
		return hello.Addrs
	case <-time.After(60 * time.Second):
		t.Fatal("kfake did not start")
		return nil
	}
}

// kafkaModule is examples/kafka/module.yaml pointed at addrs.
func kafkaModule(t *testing.T, addrs []string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/kafka/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.ReplaceAll(string(b), "127.0.0.1:9092", strings.Join(addrs, ","))
	path := filepath.Join(t.TempDir(), "module.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKafkaCrash runs cmd/engine with the Kafka example's module.yaml
// against cmd/kfake in another process, produces records while it kills
// the engine with SIGKILL several times, then checks with a read_committed
// consumer that every input record was applied once (example/counter's
// count) and every output record is present once, in order per key.
// KAFKA_CRASH_KILLS sets the kills (default 3; make kafka-crash runs 20).
func TestKafkaCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	kills := 3
	if v := os.Getenv("KAFKA_CRASH_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	const keys = 16
	perKey := 60 * (kills + 1)
	const tail = 10
	bin := buildBinary(t)
	addrs := startKfake(t, "events:3,counts:3")
	module := kafkaModule(t, addrs)
	dataDir := t.TempDir()

	// The producer writes k<k>-<i> to key k<k>, i = 0..perKey-1, in order
	// per key, spread over the run.
	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var prodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		prodErr = produceSpread(ctx, prod, keys, perKey-tail, max(1, perKey/(kills+1)/10))
	}()

	args := []string{"--module", module, "--no-rides"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := 0; k < kills; k++ {
		s := startServer(t, bin, dataDir, args...)
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		if err := s.stop(syscall.SIGKILL); err == nil {
			t.Fatal("SIGKILL: the process exited cleanly?")
		}
	}
	wg.Wait()
	if prodErr != nil {
		t.Fatal(prodErr)
	}
	s := startServer(t, bin, dataDir, args...)
	// The last records come while the last life runs (its metrics then
	// show consumption and shipping).
	if err := prod.ProduceSync(ctx, keyRecords(keys, perKey-tail, perKey)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got, n := readCounts(t, addrs, keys*perKey)
	if n != keys*perKey {
		t.Errorf("%d output records, want %d (one per input)", n, keys*perKey)
	}
	checkCounts(t, got, keys, perKey)
	checkKafkaMetrics(t, s)
	if t.Failed() {
		t.Logf("server log:\n%s", strings.Join(s.logLines(), "\n"))
	}
	if err := s.stop(syscall.SIGTERM); err != nil {
		t.Errorf("clean stop: %v", err)
	}
}

// keyRecords are the input records k<k>-<j> of keys k0.. for j in
// [from, to), in order per key.
func keyRecords(keys, from, to int) []*kgo.Record {
	var recs []*kgo.Record
	for j := from; j < to; j++ {
		for k := 0; k < keys; k++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(k)), Value: []byte(fmt.Sprintf("k%d-%d", k, j))})
		}
	}
	return recs
}

// produceSpread produces the records 0..n-1 of every key, step at a time
// every 100ms, until done or ctx ends.
func produceSpread(ctx context.Context, prod *kgo.Client, keys, n, step int) error {
	for i := 0; i < n && ctx.Err() == nil; i += step {
		if err := prod.ProduceSync(ctx, keyRecords(keys, i, min(n, i+step))...).FirstErr(); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// readCounts reads the committed records of topic counts by key until
// there are want of them (at most 90 s), then a second more for
// duplicates; n is how many were read.
func readCounts(t *testing.T, addrs []string, want int) (got map[string][]string, n int) {
	rd, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("counts"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got = map[string][]string{}
	poll := func(d time.Duration) {
		pctx, pcancel := context.WithTimeout(context.Background(), d)
		defer pcancel()
		rd.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
			n++
		})
	}
	deadline := time.Now().Add(90 * time.Second)
	for n < want && time.Now().Before(deadline) {
		poll(500 * time.Millisecond)
	}
	poll(time.Second) // let duplicates, if any, arrive
	return got, n
}

// checkCounts: each key's outputs are "<i+1> k<k>-<i>" for every input i,
// in order, once.
func checkCounts(t *testing.T, got map[string][]string, keys, perKey int) {
	for k := 0; k < keys; k++ {
		key := "k" + strconv.Itoa(k)
		vs := got[key]
		for i := 0; i < max(len(vs), perKey); i++ {
			want := fmt.Sprintf("%d k%d-%d", i+1, k, i)
			if i >= len(vs) || vs[i] != want {
				have := "(missing)"
				if i < len(vs) {
					have = vs[i]
				}
				t.Errorf("key %s: output %d is %q, want %q (an input skipped, applied twice, or an output lost or duplicated)", key, i, have, want)
				break
			}
		}
	}
}

// checkKafkaMetrics: the server's metrics show the ingress's consumption
// and lag and the egress's shipping.
func checkKafkaMetrics(t *testing.T, s *server) {
	a := call(t, "GET", s.admin+"/metrics", "", nil)
	for _, m := range []string{
		`shardfn_kafka_consumed_records_total{ingress="example/events",topic="events"}`,
		`shardfn_kafka_consumer_lag_records{ingress="example/events",partition="0",topic="events"}`,
		`shardfn_kafka_produced_records_total{egress="example/counts",topic="counts"}`,
		`shardfn_kafka_egress_lag_records{egress="example/counts"}`,
		`shardfn_kafka_transaction_commit_seconds_count{egress="example/counts"}`,
	} {
		if !strings.Contains(string(a.body), m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
}

// startKafkaCounterJS runs remote/js/kafka-counter.js (the StateFun
// JavaScript SDK, installed with npm ci if missing) and returns its port.
func startKafkaCounterJS(t *testing.T) int {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping the JavaScript SDK test: %s is not installed", tool)
		}
	}
	dir, _ := filepath.Abs("../../remote/js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "apache-flink-statefun", "package.json")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	cmd := exec.Command("node", "kafka-counter.js", "0")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	s := bufio.NewScanner(stdout)
	var hello struct{ Port int }
	if !s.Scan() || json.Unmarshal(s.Bytes(), &hello) != nil || hello.Port == 0 {
		t.Fatalf("kafka-counter.js: bad first line %q", s.Text())
	}
	go func() {
		for s.Scan() {
		}
	}()
	return hello.Port
}

// TestKafkaRemoteJS runs the remote variant of the example unchanged but
// for addresses: examples/kafka/module-remote.yaml, a function written
// with the StateFun JavaScript SDK whose KafkaEgressBuilder records reach
// Kafka through the exactly-once egress.
func TestKafkaRemoteJS(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	port := startKafkaCounterJS(t)
	bin := buildBinary(t)
	addrs := startKfake(t, "events:3,counts:3")
	b, err := os.ReadFile("../../examples/kafka/module-remote.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.ReplaceAll(string(b), "127.0.0.1:9092", strings.Join(addrs, ","))
	y = strings.ReplaceAll(y, "127.0.0.1:8000", "127.0.0.1:"+strconv.Itoa(port))
	module := filepath.Join(t.TempDir(), "module.yaml")
	if err := os.WriteFile(module, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, t.TempDir(), "--module", module, "--no-rides", "--no-examples")
	const keys, perKey = 4, 10
	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var recs []*kgo.Record
	for i := 0; i < perKey; i++ {
		for k := 0; k < keys; k++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(k)), Value: []byte(fmt.Sprintf("k%d-%d", k, i))})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("counts"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := map[string][]string{}
	for n := 0; n < keys*perKey && ctx.Err() == nil; {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
			n++
		})
	}
	for k := 0; k < keys; k++ {
		key := "k" + strconv.Itoa(k)
		var want []string
		for i := 0; i < perKey; i++ {
			want = append(want, fmt.Sprintf("%d k%d-%d", i+1, k, i))
		}
		if strings.Join(got[key], "|") != strings.Join(want, "|") {
			t.Errorf("key %s: got %q, want %q", key, got[key], want)
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", strings.Join(s.logLines(), "\n"))
	}
}
