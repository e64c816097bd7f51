package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// temporary one).
func TestClusterCrash(t *testing.T) {
	v := os.Getenv("CLUSTER_CRASH_EVENTS")
	if v == "" {
		t.Skip("multi-process cluster crash test: set CLUSTER_CRASH_EVENTS (make cluster-crash)")
	}
	nEvents, err := strconv.Atoi(v)
	if err != nil || nEvents < 3 {
		t.Fatalf("CLUSTER_CRASH_EVENTS=%q: want a count of at least 3", v)
	}
	const (
		parts   = 32
		session = 2 * time.Second
		ids     = 50
		workers = 4
		// takeoverLimit bounds one takeover: far above the longest
		// legitimate wait (a dead node's open transaction, 2 x the 6s
		// transaction timeout + 5s, before its partitions restore).
		takeoverLimit = 90 * time.Second
	)
	logDir := os.Getenv("CLUSTER_CRASH_LOGS")
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	kfBin := filepath.Join(binDir, "kfake")
	if out, err := exec.Command(mustLookGo(t), "build", "-o", kfBin, "../kfake").CombinedOutput(); err != nil {
		t.Fatalf("go build ../kfake: %v\n%s", err, out)
	}

	kf := &ccKfake{t: t, bin: kfBin, dir: filepath.Join(t.TempDir(), "kfake"), logPath: filepath.Join(logDir, "kfake.log")}
	kf.start("0,0,0")
	t.Cleanup(kf.kill)
	adm, err := kgo.NewClient(kgo.SeedBrokers(kf.addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	kadmin := kadm.NewClient(adm)

	var nodes []*ccNode
	for i := 1; i <= 3; i++ {
		n := &ccNode{t: t, bin: bin, name: "n" + strconv.Itoa(i), dir: t.TempDir(),
			logPath: filepath.Join(logDir, "n"+strconv.Itoa(i)+".log"),
			args: []string{"--cluster", "--brokers", strings.Join(kf.addrs, ","), "--cluster-name", "crash",
				"--partitions", strconv.Itoa(parts), "--session-timeout", session.String(), "--txn-timeout", "6s",
				"--commit-interval", "20ms", "--memory-budget", "32MiB", "--shards", "2", "--no-rides",
				"--log-format", "json"}}
		n.ingress, n.admin = freeAddr(t), freeAddr(t)
		n.start()
		t.Cleanup(n.kill)
		nodes = append(nodes, n)
	}
	cl := &ccClient{t: t, nodes: nodes, http: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}}
	if d, err := cl.waitReady(90 * time.Second); err != nil {
		t.Fatalf("the cluster did not start: %v", err)
	} else {
		t.Logf("3 nodes ready %v after start", d.Round(time.Millisecond))
	}

	// The counters: load ids and one probe per partition.
	tallies := map[string]*ccTally{}
	var loadIDs []string
	for i := 0; i < ids; i++ {
		id := fmt.Sprintf("c%02d", i)
		loadIDs = append(loadIDs, id)
		tallies[id] = &ccTally{}
	}
	probes := make([]string, parts)
	for k, left := 0, parts; left > 0; k++ {
		id := "probe-" + strconv.Itoa(k)
		p := cluster.PartitionOfAddress(engine.Address{Namespace: "example", Type: "counter", ID: id}, parts)
		if probes[p] == "" {
			probes[p] = id
			tallies[id] = &ccTally{}
			left--
		}
	}
	cl.tallies = tallies
	if d, err := cl.probeAll(probes, 90*time.Second); err != nil {
		t.Fatalf("first probe of every partition: %v", err)
	} else {
		t.Logf("every partition served %v after ready", d.Round(time.Millisecond))
	}

	// The load.
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			for ctx.Err() == nil {
				cl.send(ctx, rng, loadIDs[rng.IntN(len(loadIDs))])
			}
		}(uint64(time.Now().UnixNano()) + uint64(w))
	}

	// The events.
	kinds := []string{"stop", "kill-in-txn", "kill-kfake"}
	for len(kinds) < nEvents {
		kinds = append(kinds, "kill")
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	if order := os.Getenv("CLUSTER_CRASH_ORDER"); order != "" {
		kinds = strings.Split(order, ",")
		for _, k := range kinds {
			if !slices.Contains([]string{"kill", "kill-in-txn", "stop", "kill-kfake"}, k) {
				t.Fatalf("CLUSTER_CRASH_ORDER: unknown event %q; use kill, kill-in-txn, stop, kill-kfake", k)
			}
		}
	}
	type result struct {
		kind, node, note string
		takeover         time.Duration
	}
	var results []result
	time.Sleep(2 * time.Second)
	for i, kind := range kinds {
		n := nodes[rng.IntN(len(nodes))]
		r := result{kind: kind, node: n.name}
		var at time.Time
		switch kind {
		case "kill":
			open := txnOngoing(kadmin, n.name)
			at = time.Now()
			n.kill()
			r.note = "txn open just before the kill: " + open
			n.start()
		case "kill-in-txn":
			epoch, ok := waitTxnOngoing(kadmin, n.name, 10*time.Second)
			at = time.Now()
			n.kill()
			after := txnOngoing(kadmin, n.name)
			switch {
			case !ok:
				r.note = "no Ongoing transaction seen within 10s; killed anyway"
			case strings.HasPrefix(after, "Ongoing epoch "+strconv.Itoa(int(epoch))):
				r.note = "killed inside an open transaction (the broker still shows it Ongoing after the kill)"
			default:
				r.note = "the transaction seen Ongoing ended before the kill landed (now " + after + ")"
			}
			n.start()
		case "stop":
			r.node = n.name
			mark := n.lineCount()
			at = time.Now()
			n.signal(syscall.SIGSTOP)
			time.Sleep(2 * session)
			n.signal(syscall.SIGCONT)
			r.note = "stopped for " + (2 * session).String()
			n.stopMark = mark
		case "kill-kfake":
			r.node = "kfake"
			// Killed while a node's transaction is open, as most kills
			// under load are.
			_, ok := waitTxnOngoing(kadmin, n.name, 10*time.Second)
			at = time.Now()
			kf.kill()
			if ok {
				r.note = fmt.Sprintf("killed while node %s's transaction was Ongoing; ", n.name)
			}
			kf.start(kf.portList())
			r.note += fmt.Sprintf("kfake back %v after the kill", time.Since(at).Round(time.Millisecond))
		}
		if _, err := cl.waitReady(takeoverLimit); err != nil {
			t.Errorf("event %d (%s %s): nodes not ready: %v", i+1, kind, r.node, err)
			t.Log(changelogTails(kf.addrs))
			break
		}
		if _, err := cl.probeAll(probes, takeoverLimit); err != nil {
			t.Errorf("event %d (%s %s): partitions not served again: %v", i+1, kind, r.node, err)
			t.Log(changelogTails(kf.addrs))
			break
		}
		r.takeover = time.Since(at)
		if kind == "stop" {
			r.note += "; zombie: " + n.zombieEvidence(10*time.Second)
		}
		results = append(results, r)
		t.Logf("event %d/%d %-11s %-5s takeover %6.2fs  %s", i+1, len(kinds), kind, r.node, r.takeover.Seconds(), r.note)
		time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
	}

	stopLoad()
	wg.Wait()
	if _, err := cl.waitReady(takeoverLimit); err != nil {
		t.Fatalf("after the load: %v", err)
	}
	var all []string
	for id := range tallies {
		all = append(all, id)
	}
	slices.Sort(all)
	counts, err := cl.settledCounts(all, 2*time.Minute)
	if err != nil {
		t.Fatalf("final counts: %v", err)
	}
	var acked, doubt, retried, sum int64
	bad := 0
	for _, id := range all {
		tl := tallies[id]
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
	t.Logf("totals: %d counters, %d acked, %d in doubt, %d answers 'not accepted' (retried), sum of counts %d; unexpected answers: %s",
		len(all), acked, doubt, retried, sum, cl.unexpectedSummary())
	for _, n := range nodes {
		n.checkNoFatal()
	}
	if path := os.Getenv("CLUSTER_CRASH_REPORT"); path != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "# cluster crash test (TestClusterCrash), %s\n\n", time.Now().UTC().Format(time.RFC3339))
		fmt.Fprintf(&b, "3 cmd/engine --cluster nodes, cmd/kfake (3 brokers) in its own process, P=%d, session timeout %v, txn timeout 6s, commit interval 20ms, %d load workers.\n", parts, session, workers)
		fmt.Fprintf(&b, "Takeover: from the event until every node is /ready and a probe counter in each of the %d partitions took a POST and showed it on its owner's GET /state.\n\n", parts)
		b.WriteString("| # | event | target | takeover (s) | note |\n|---|---|---|---|---|\n")
		for i, r := range results {
			fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %s |\n", i+1, r.kind, r.node, r.takeover.Seconds(), r.note)
		}
		fmt.Fprintf(&b, "\nTotals: %d counters, %d acked, %d in doubt, %d not-accepted answers retried, sum of counts %d, %d counters outside [acked, acked+in doubt].\n",
			len(all), acked, doubt, retried, sum, bad)
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Logf("process logs are in %s", logDir)
		for _, n := range nodes {
			t.Logf("%s log (last lines):\n%s", n.name, strings.Join(n.tail(40), "\n"))
		}
	}
}

func mustLookGo(t *testing.T) string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	return goBin
}

// freeAddr is a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// txnOngoing describes node's transaction at the broker: "Ongoing epoch
// E", another state, or why it could not tell.
func txnOngoing(adm *kadm.Client, node string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	id := "shardfn-crash-" + node
	ds, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	d, ok := ds[id]
	if !ok || d.Err != nil {
		return fmt.Sprintf("unknown (%v)", d.Err)
	}
	return d.State + " epoch " + strconv.Itoa(int(d.ProducerEpoch))
}

// waitTxnOngoing polls until node's transaction is Ongoing.
func waitTxnOngoing(adm *kadm.Client, node string, limit time.Duration) (int16, bool) {
	id := "shardfn-crash-" + node
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ds, err := adm.DescribeTransactions(ctx, id)
		cancel()
		if d, ok := ds[id]; err == nil && ok && d.Err == nil && d.State == "Ongoing" && len(d.Topics) > 0 {
			return d.ProducerEpoch, true
		}
	}
	return 0, false
}

// ccKfake is the broker process.
type ccKfake struct {
	t       *testing.T
	bin     string
	dir     string
	logPath string
	addrs   []string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func (k *ccKfake) portList() string {
	var ps []string
	for _, a := range k.addrs {
		_, p, _ := net.SplitHostPort(a)
		ps = append(ps, p)
	}
	return strings.Join(ps, ",")
}

// start runs kfake on ports (retrying while the ports are still held by
// the killed process's sockets) and reads its addresses.
func (k *ccKfake) start(ports string) {
	k.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := k.try(ports)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("kfake: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (k *ccKfake) try(ports string) error {
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(k.bin, "--ports", ports, "--topics", "", "--data-dir", k.dir, "--min-session-timeout", "500ms")
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	select {
	case l := <-line:
		var hello struct{ Addrs []string }
		if err := json.Unmarshal([]byte(l), &hello); err != nil || len(hello.Addrs) != 3 {
			_ = cmd.Process.Kill()
			return fmt.Errorf("bad first line %q", l)
		}
		k.addrs, k.cmd, k.exited = hello.Addrs, cmd, exited
		return nil
	case <-exited:
		return fmt.Errorf("exited at start on ports %s (see %s)", ports, k.logPath)
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("did not start in 60s")
	}
}

func (k *ccKfake) kill() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Kill()
	<-k.exited
	k.cmd = nil
}

// ccNode is one cluster node process, restarted with the same name, data
// directory and ports.
type ccNode struct {
	t              *testing.T
	bin, name, dir string
	args           []string
	ingress, admin string // host:port
	logPath        string
	cmd            *exec.Cmd
	exited         chan struct{}
	stopMark       int // log line count when it was SIGSTOPped

	mu    sync.Mutex
	lines []string // every life's stderr
	lives int
}

func (n *ccNode) start() {
	n.t.Helper()
	n.mu.Lock()
	n.lives++
	n.lines = append(n.lines, fmt.Sprintf("=== %s life %d, %s", n.name, n.lives, time.Now().Format(time.RFC3339Nano)))
	n.mu.Unlock()
	args := append([]string{"--node", n.name, "--data-dir", n.dir, "--ingress-addr", n.ingress, "--admin-addr", n.admin}, n.args...)
	cmd := exec.Command(n.bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		s := bufio.NewScanner(stderr)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			n.mu.Lock()
			n.lines = append(n.lines, s.Text())
			n.mu.Unlock()
			fmt.Fprintln(logf, s.Text())
		}
		err := cmd.Wait()
		n.mu.Lock()
		n.lines = append(n.lines, fmt.Sprintf("=== %s exited: %v", n.name, err))
		n.mu.Unlock()
		logf.Close()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
}

func (n *ccNode) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

func (n *ccNode) signal(s syscall.Signal) {
	if err := n.cmd.Process.Signal(s); err != nil {
		n.t.Errorf("%s: %v: %v", n.name, s, err)
	}
}

func (n *ccNode) lineCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.lines)
}

func (n *ccNode) tail(k int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.lines[max(0, len(n.lines)-k):])
}

// zombieEvidence waits for the log lines that show a SIGCONTed node knew
// it had lost its partitions or that its transaction did not commit, and
// fails the test without them.
func (n *ccNode) zombieEvidence(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		n.mu.Lock()
		lines := slices.Clone(n.lines[n.stopMark:])
		n.mu.Unlock()
		var found []string
		for _, l := range lines {
			var m struct {
				Msg, Err string
				Added    *bool
			}
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			switch {
			case m.Msg == "assignment changed" && m.Added != nil && !*m.Added:
				found = append(found, "lost/revoked partitions")
			case strings.Contains(m.Msg, "aborted") || strings.Contains(m.Err, "not committed") ||
				strings.Contains(strings.ToLower(m.Err), "fenced"):
				found = append(found, m.Msg+": "+m.Err)
			}
		}
		if len(found) > 0 {
			slices.Sort(found)
			return strings.Join(slices.Compact(found), "; ")
		}
		if time.Now().After(deadline) {
			n.t.Errorf("%s after SIGCONT: no log line shows it lost its partitions or aborted its transaction", n.name)
			return "NO EVIDENCE of fencing in its log"
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkNoFatal fails on a Go panic or fatal error in any life's log, or
// a node that stopped for good ("cluster node stopped").
func (n *ccNode) checkNoFatal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, l := range n.lines {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.Contains(l, `"msg":"cluster node stopped"`) {
			n.t.Errorf("%s: %s", n.name, strings.Join(n.lines[i:min(len(n.lines), i+20)], "\n"))
			return
		}
	}
}

// ccTally counts one counter's messages by outcome.
type ccTally struct {
	acked, inDoubt, notAccepted atomic.Int64
}

type ccClient struct {
	t       *testing.T
	nodes   []*ccNode
	http    *http.Client
	tallies map[string]*ccTally

	mu         sync.Mutex
	unexpected map[string]int
}

type outcome int

const (
	acked outcome = iota
	inDoubt
	notAccepted
)

// post sends one increment to id through node and classifies the answer:
// 2xx acked; a refused connection or a 503 with Retry-After (not ready,
// overloaded, shutting down: not processed) not accepted; anything else
// (a timeout, a broken connection, a 503 "may be applied") in doubt.
func (c *ccClient) post(ctx context.Context, n *ccNode, id string) outcome {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+n.ingress+"/example/counter/"+id, strings.NewReader("x"))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	r, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return notAccepted
		}
		c.note("transport error")
		return inDoubt
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	switch {
	case r.StatusCode/100 == 2:
		return acked
	case r.StatusCode == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
		return notAccepted
	case r.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "may be applied"):
		c.note("503 in doubt")
		return inDoubt
	case r.StatusCode/100 == 4:
		c.t.Errorf("POST %s to %s: %d %s", id, n.name, r.StatusCode, body)
		return notAccepted
	}
	msg := string(body)
	if len(msg) > 120 {
		msg = msg[:120]
	}
	c.note(fmt.Sprintf("%d %s", r.StatusCode, msg))
	return inDoubt
}

func (c *ccClient) note(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unexpected == nil {
		c.unexpected = map[string]int{}
	}
	c.unexpected[kind]++
}

func (c *ccClient) unexpectedSummary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unexpected) == 0 {
		return "none"
	}
	var s []string
	for k, v := range c.unexpected {
		s = append(s, fmt.Sprintf("%dx %q", v, k))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// send posts one increment of id, retrying answers that say it was not
// accepted on another node; it reports whether it was acked.
func (c *ccClient) send(ctx context.Context, rng *rand.Rand, id string) bool {
	tl := c.tallies[id]
	i := rng.IntN(len(c.nodes))
	for ctx.Err() == nil {
		switch c.post(ctx, c.nodes[i], id) {
		case acked:
			tl.acked.Add(1)
			return true
		case inDoubt:
			tl.inDoubt.Add(1)
			return false
		}
		tl.notAccepted.Add(1)
		i = (i + 1 + rng.IntN(len(c.nodes)-1)) % len(c.nodes)
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitReady waits until every node answers /ready 200.
func (c *ccClient) waitReady(limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		var notReady []string
		for _, n := range c.nodes {
			r, err := c.http.Get("http://" + n.admin + "/ready")
			if err == nil {
				r.Body.Close()
			}
			if err != nil || r.StatusCode != 200 {
				notReady = append(notReady, n.name)
			}
		}
		if len(notReady) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%v not ready after %v", notReady, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// count reads id's count from its owner: the one admin listener that
// answers 200 (the others answer 421, or 503 while not ready).
func (c *ccClient) count(id string) (int64, string, error) {
	var got []string
	var val int64
	var owner string
	for _, n := range c.nodes {
		r, err := c.http.Get("http://" + n.admin + "/state/example/counter/" + id)
		if err != nil {
			got = append(got, n.name+": "+err.Error())
			continue
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		got = append(got, n.name+": "+strconv.Itoa(r.StatusCode))
		if r.StatusCode != 200 {
			continue
		}
		var st struct {
			State map[string]struct {
				Value   *int64
				Present *bool
			}
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return 0, "", fmt.Errorf("state of %s on %s: %v: %s", id, n.name, err, b)
		}
		if owner != "" {
			return 0, "", fmt.Errorf("%s: two nodes answer as its owner: %s", id, strings.Join(got, ", "))
		}
		owner = n.name
		if v := st.State["count"].Value; v != nil {
			val = *v
		}
	}
	if owner == "" {
		return 0, "", fmt.Errorf("%s: no owner answers (%s)", id, strings.Join(got, ", "))
	}
	return val, owner, nil
}

// probeAll: every partition's probe takes a POST through a random node and
// shows it on its owner, all partitions at once.
func (c *ccClient) probeAll(probes []string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for p, id := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), uint64(time.Now().UnixNano())))
			for !c.send(ctx, rng, id) {
				if ctx.Err() != nil {
					errs[p] = fmt.Errorf("partition %d: no POST of %s acked within %v", p, id, limit)
					return
				}
			}
			want := c.tallies[id].acked.Load()
			var last error
			for ctx.Err() == nil {
				v, _, err := c.count(id)
				if err == nil && v >= want {
					return
				}
				last = err
				if err == nil {
					last = fmt.Errorf("count %d < acked %d", v, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			errs[p] = fmt.Errorf("partition %d: %s not read back within %v: %v", p, id, limit, last)
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// settledCounts reads every counter until two reads 3 s apart agree.
func (c *ccClient) settledCounts(ids []string, limit time.Duration) (map[string]int64, error) {
	deadline := time.Now().Add(limit)
	var prev map[string]int64
	for {
		cur := map[string]int64{}
		var err error
		for _, id := range ids {
			v, _, e := c.count(id)
			if e != nil {
				err = e
				break
			}
			cur[id] = v
		}
		if err == nil && prev != nil && mapsEqual(prev, cur) {
			return cur, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("counts still change")
			}
			return nil, fmt.Errorf("not settled within %v: %w", limit, err)
		}
		if err == nil {
			prev = cur
		}
		time.Sleep(3 * time.Second)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// changelogTails describes, for every changelog partition whose committed
// records (control records kept) do not reach its last stable offset, the
// last offset a read_committed reader sees and the end: a restore that
// waits to see the record before the end never finishes there.
func changelogTails(addrs []string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const topic = "shardfn.crash.changelog"
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return "changelog tails: " + err.Error()
	}
	hwm, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return "changelog tails: " + err.Error()
	}
	ends := map[int32]int64{}
	lso.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			ends[o.Partition] = o.Offset
		}
	})
	rd, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return err.Error()
	}
	defer rd.Close()
	last := map[int32]int64{}
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		fs := rd.PollFetches(pctx)
		pcancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) { last[r.Partition] = r.Offset; n++ })
		if n == 0 {
			break
		}
	}
	var b strings.Builder
	b.WriteString("changelog partitions whose last committed-visible record is short of the last stable offset:")
	for p := int32(0); p < 4096; p++ {
		end, ok := ends[p]
		if !ok {
			continue
		}
		if l, seen := last[p]; !seen || l+1 < end {
			h, _ := hwm.Lookup(topic, p)
			fmt.Fprintf(&b, " p%d(last seen %d, last stable %d, high watermark %d)", p, l, end, h.Offset)
		}
	}
	return b.String()
}
