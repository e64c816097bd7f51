package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/cluster"
	"github.com/shardfn/shardfn/engine"
)

// TestClusterCrash is the multi-process crash test of cluster mode (make
// cluster-crash): cmd/kfake (three brokers, a data directory) and three
// cmd/engine --cluster nodes, each its own process, under HTTP load on
// example/counter through random nodes, while events strike one every few
// seconds in a random order:
//
//   - kill: SIGKILL a random node and restart it at once (same name, data
//     directory and ports);
//   - kill-in-txn: the same, timed by polling the broker until the node's
//     transaction is Ongoing (the kill lands inside an open transaction
//     most of the time; the log says whether the broker still showed it
//     open after the kill);
//   - stop: SIGSTOP a node for twice the session timeout, then SIGCONT: the
//     zombie must not commit (its log must show it lost its partitions or
//     aborted);
//   - kill-kfake: SIGKILL the broker process and restart it from its data
//     directory on the same ports; the nodes reconnect.
//
// After each event it measures the takeover time: from the event until
// every node is ready and, for every one of the P partitions, a probe
// counter placed in it took a POST (2xx) through a random node and an
// owner's GET /state shows the increment. At the end the load stops and
// every counter, read from its one owner, must satisfy
// acked <= count <= acked + in_doubt.
//
// CLUSTER_CRASH_EVENTS sets the number of events (at least 3: one stop, one
// kill-in-txn, one kill-kfake, the rest kills); unset, the test is skipped.
// CLUSTER_CRASH_REPORT names a file the takeover times are written to;
// CLUSTER_CRASH_LOGS a directory for the processes' logs (default a
// temporary one); when it is set, the broker's and the nodes' data
// directories are kept there too, for reading after a failure, and the
// nodes log at debug level (each epoch's input offsets and changelog
// positions) and kfake at warn level.
func TestClusterCrash(t *testing.T) {
	v := os.Getenv("CLUSTER_CRASH_EVENTS")
	if v == "" {
		t.Skip("multi-process cluster crash test: set CLUSTER_CRASH_EVENTS (make cluster-crash)")
	}
	nEvents, err := strconv.Atoi(v)
	if err != nil || nEvents < 3 {
		t.Fatalf("CLUSTER_CRASH_EVENTS=%q: want a count of at least 3", v)
	}
	r := startCrashCluster(t)
	defer func() {
		if t.Failed() {
			r.dumpLogs()
		}
	}()
	r.placeCounters()
	if d, err := r.cl.probeAll(r.probes, ccTakeoverLimit); err != nil {
		t.Fatalf("first probe of every partition: %v", err)
	} else {
		t.Logf("every partition served %v after ready", d.Round(time.Millisecond))
	}
	stopLoad := r.startLoad()
	time.Sleep(2 * time.Second)
	r.runEvents(eventKinds(t, nEvents, r.rng))
	stopLoad()
	r.checkCounts()
	for _, n := range r.nodes {
		n.checkNoFatal()
	}
	if path := os.Getenv("CLUSTER_CRASH_REPORT"); path != "" {
		r.writeReport(path)
	}
}

const (
	ccParts   = 32
	ccSession = 2 * time.Second
	ccIDs     = 50
	ccWorkers = 4
	// ccTakeoverLimit bounds one takeover: far above the longest
	// legitimate wait (a dead node's open transaction, 2 x the 6s
	// transaction timeout + 5s, before its partitions restore).
	ccTakeoverLimit = 90 * time.Second
)

// crashRun is one run of TestClusterCrash.
type crashRun struct {
	t       *testing.T
	logDir  string
	kf      *ccKfake
	kadmin  *kadm.Client
	nodes   []*ccNode
	cl      *ccClient
	rng     *rand.Rand
	loadIDs []string
	probes  []string // by partition
	results []eventResult
	totals  string
}

type eventResult struct {
	kind, node, note string
	takeover         time.Duration
}

// startCrashCluster builds the binaries, starts kfake and three nodes and
// waits until they are ready.
func startCrashCluster(t *testing.T) *crashRun {
	r := &crashRun{t: t, logDir: os.Getenv("CLUSTER_CRASH_LOGS"), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))}
	keep := r.logDir != ""
	dataDir := func(name string) string {
		if !keep {
			return filepath.Join(t.TempDir(), name)
		}
		d := filepath.Join(r.logDir, name)
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if !keep {
		r.logDir = t.TempDir()
	} else if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	kfBin := filepath.Join(binDir, "kfake")
	if out, err := exec.Command(mustLookGo(t), "build", "-o", kfBin, "../kfake").CombinedOutput(); err != nil {
		t.Fatalf("go build ../kfake: %v\n%s", err, out)
	}
	r.kf = &ccKfake{t: t, bin: kfBin, dir: dataDir("kfake-data"), keep: keep, logPath: filepath.Join(r.logDir, "kfake.log")}
	r.kf.start("0,0,0")
	t.Cleanup(r.kf.kill)
	adm, err := kgo.NewClient(kgo.SeedBrokers(r.kf.addrs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	r.kadmin = kadm.NewClient(adm)
	for i := 1; i <= 3; i++ {
		name := "n" + strconv.Itoa(i)
		n := &ccNode{t: t, bin: bin, name: name, dir: dataDir(name + "-data"), logPath: filepath.Join(r.logDir, name+".log"),
			args: []string{"--cluster", "--brokers", strings.Join(r.kf.addrs, ","), "--cluster-name", "crash",
				"--partitions", strconv.Itoa(ccParts), "--session-timeout", ccSession.String(), "--txn-timeout", "6s",
				"--commit-interval", "20ms", "--memory-budget", "32MiB", "--shards", "2", "--no-rides",
				"--log-format", "json"}}
		if keep {
			n.args = append(n.args, "--log-level", "debug")
		}
		n.ingress, n.admin = freeAddr(t), freeAddr(t)
		n.start()
		t.Cleanup(n.kill)
		r.nodes = append(r.nodes, n)
	}
	r.cl = &ccClient{t: t, nodes: r.nodes, tallies: map[string]*ccTally{}, http: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}}
	d, err := r.cl.waitReady(ccTakeoverLimit)
	if err != nil {
		t.Fatalf("the cluster did not start: %v", err)
	}
	t.Logf("3 nodes ready %v after start", d.Round(time.Millisecond))
	return r
}

// placeCounters names the load's counters and one probe counter in each
// partition.
func (r *crashRun) placeCounters() {
	for i := 0; i < ccIDs; i++ {
		id := fmt.Sprintf("c%02d", i)
		r.loadIDs = append(r.loadIDs, id)
		r.cl.tallies[id] = &ccTally{}
	}
	r.probes = make([]string, ccParts)
	for k, left := 0, ccParts; left > 0; k++ {
		id := "probe-" + strconv.Itoa(k)
		p := cluster.PartitionOfAddress(engine.Address{Namespace: "example", Type: "counter", ID: id}, ccParts)
		if r.probes[p] == "" {
			r.probes[p] = id
			r.cl.tallies[id] = &ccTally{}
			left--
		}
	}
}

// startLoad runs the load workers; the returned func stops them.
func (r *crashRun) startLoad() func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < ccWorkers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			for ctx.Err() == nil {
				r.cl.send(ctx, rng, r.loadIDs[rng.IntN(len(r.loadIDs))])
			}
		}(uint64(time.Now().UnixNano()) + uint64(w))
	}
	return func() { cancel(); wg.Wait() }
}

// eventKinds: one stop, one kill-in-txn, one kill-kfake, the rest kills,
// shuffled; CLUSTER_CRASH_ORDER overrides.
func eventKinds(t *testing.T, n int, rng *rand.Rand) []string {
	kinds := []string{"stop", "kill-in-txn", "kill-kfake"}
	for len(kinds) < n {
		kinds = append(kinds, "kill")
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	if order := os.Getenv("CLUSTER_CRASH_ORDER"); order != "" {
		kinds = strings.Split(order, ",")
		for _, k := range kinds {
			if !slices.Contains([]string{"kill", "kill-in-txn", "stop", "kill-kfake"}, k) {
				t.Fatalf("CLUSTER_CRASH_ORDER: unknown event %q; use kill, kill-in-txn, stop, kill-kfake", k)
			}
		}
	}
	return kinds
}

// runEvents strikes each event, then waits for the takeover.
func (r *crashRun) runEvents(kinds []string) {
	t := r.t
	for i, kind := range kinds {
		n := r.nodes[r.rng.IntN(len(r.nodes))]
		res, at := r.strike(kind, n)
		if _, err := r.cl.waitReady(ccTakeoverLimit); err != nil {
			t.Errorf("event %d (%s %s): nodes not ready: %v", i+1, kind, res.node, err)
			t.Log(changelogTails(r.kf.addrs))
			return
		}
		if _, err := r.cl.probeAll(r.probes, ccTakeoverLimit); err != nil {
			t.Errorf("event %d (%s %s): partitions not served again: %v", i+1, kind, res.node, err)
			t.Log(changelogTails(r.kf.addrs))
			return
		}
		res.takeover = time.Since(at)
		if kind == "stop" {
			res.note += "; zombie: " + n.zombieEvidence(10*time.Second)
		}
		r.results = append(r.results, res)
		t.Logf("event %d/%d %-11s %-5s takeover %6.2fs  %s", i+1, len(kinds), kind, res.node, res.takeover.Seconds(), res.note)
		time.Sleep(time.Duration(2000+r.rng.IntN(2000)) * time.Millisecond)
	}
}

// strike does one event to n (or to kfake) and returns when it struck.
func (r *crashRun) strike(kind string, n *ccNode) (eventResult, time.Time) {
	res := eventResult{kind: kind, node: n.name}
	var at time.Time
	switch kind {
	case "kill":
		open := txnOngoing(r.kadmin, n.name)
		at = time.Now()
		n.kill()
		res.note = "txn state just before the kill: " + open
		n.start()
	case "kill-in-txn":
		epoch, ok := waitTxnOngoing(r.kadmin, n.name, 10*time.Second)
		at = time.Now()
		n.kill()
		after := txnOngoing(r.kadmin, n.name)
		switch {
		case !ok:
			res.note = "no Ongoing transaction seen within 10s; killed anyway"
		case strings.HasPrefix(after, "Ongoing epoch "+strconv.Itoa(int(epoch))):
			res.note = "killed inside an open transaction (the broker still shows it Ongoing after the kill)"
		default:
			res.note = "the transaction seen Ongoing ended before the kill landed (now " + after + ")"
		}
		n.start()
	case "stop":
		n.stopMark = n.lineCount()
		at = time.Now()
		n.signal(syscall.SIGSTOP)
		time.Sleep(2 * ccSession)
		n.signal(syscall.SIGCONT)
		res.note = "stopped for " + (2 * ccSession).String() + " (the takeover counts from SIGSTOP)"
	case "kill-kfake":
		res.node = "kfake"
		// Killed while a node's transaction is open, as most kills
		// under load are.
		if _, ok := waitTxnOngoing(r.kadmin, n.name, 10*time.Second); ok {
			res.note = fmt.Sprintf("killed while node %s's transaction was Ongoing; ", n.name)
		}
		at = time.Now()
		r.kf.kill()
		r.kf.start(r.kf.portList())
		res.note += fmt.Sprintf("kfake back %v after the kill", time.Since(at).Round(time.Millisecond))
	}
	return res, at
}

// checkCounts waits until the counts settle and checks every counter:
// acked <= count <= acked + in doubt.
func (r *crashRun) checkCounts() {
	t := r.t
	if _, err := r.cl.waitReady(ccTakeoverLimit); err != nil {
		t.Fatalf("after the load: %v", err)
	}
	var all []string
	for id := range r.cl.tallies {
		all = append(all, id)
	}
	slices.Sort(all)
	counts, err := r.cl.settledCounts(all, 2*time.Minute)
	if err != nil {
		t.Fatalf("final counts: %v", err)
	}
	var acked, doubt, retried, sum int64
	bad := 0
	for _, id := range all {
		tl := r.cl.tallies[id]
		a, d := tl.acked.Load(), tl.inDoubt.Load()
		acked, doubt, retried, sum = acked+a, doubt+d, retried+tl.notAccepted.Load(), sum+counts[id]
		if c := counts[id]; c < a || c > a+d {
			bad++
			if bad <= 20 {
				t.Errorf("counter %s: count %d, acked %d, in doubt %d: want acked <= count <= acked + in doubt (%s)",
					id, c, a, d, map[bool]string{true: "an acknowledged message lost", false: "a message applied twice"}[c < a])
			}
		}
	}
	r.totals = fmt.Sprintf("%d counters, %d acked, %d in doubt, %d answers 'not accepted' (retried), sum of counts %d, %d counters outside [acked, acked + in doubt]; unexpected answers: %s",
		len(all), acked, doubt, retried, sum, bad, r.cl.unexpectedSummary())
	t.Log("totals: " + r.totals)
}

func (r *crashRun) writeReport(path string) {
	var b strings.Builder
	fmt.Fprintf(&b, "# cluster crash test (TestClusterCrash), %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "3 cmd/engine --cluster nodes, cmd/kfake (3 brokers) in its own process, P=%d, session timeout %v, txn timeout 6s, commit interval 20ms, %d load workers.\n", ccParts, ccSession, ccWorkers)
	fmt.Fprintf(&b, "Takeover: from the event until every node is /ready and a probe counter in each of the %d partitions took a POST and showed it on its owner's GET /state.\n\n", ccParts)
	b.WriteString("| # | event | target | takeover (s) | note |\n|---|---|---|---|---|\n")
	for i, res := range r.results {
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %s |\n", i+1, res.kind, res.node, res.takeover.Seconds(), res.note)
	}
	fmt.Fprintf(&b, "\nTotals: %s.\n", r.totals)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		r.t.Error(err)
	}
}

func (r *crashRun) dumpLogs() {
	r.t.Logf("process logs are in %s", r.logDir)
	for _, n := range r.nodes {
		r.t.Logf("%s log (last lines):\n%s", n.name, strings.Join(n.tail(40), "\n"))
	}
}
