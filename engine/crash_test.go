package engine

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
	"github.com/shardfn/shardfn/wal"
)

// The crash test runs the engine in a child process (this test binary, in
// TestCrashChild) under a workload with checkable invariants, kills it with
// SIGKILL at random moments, restarts it on the same data directory (with a
// varying shard count) and checks after each restart that:
//   - per-key counters: acknowledged increments <= value <= sent increments
//     (nothing acknowledged lost, nothing applied twice);
//   - bank transfers between accounts (withdraw on one shard, deposit sent
//     to another): the total is unchanged once the engine has drained.
//
// CRASH_KILLS sets the number of kills (default 20).

var ackLog, sendLog [][]int

const (
	crashAccounts = 10
	crashInitial  = 1000
	crashCounters = 16
)

var balanceSpec = ValueSpec{Name: "balance", Type: TypeLong}

func bankSpec() FunctionSpec {
	return FunctionSpec{Namespace: "bank", Type: "account", States: []ValueSpec{balanceSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			bal, _, err := ctx.GetInt64(balanceSpec)
			if err != nil {
				return err
			}
			switch msg.Type {
			case "deposit":
				n, err := strconv.ParseInt(string(msg.Value), 10, 64)
				if err != nil {
					return err
				}
				return ctx.SetInt64(balanceSpec, bal+n)
			case "transfer": // "<to> <amount>"
				f := strings.Fields(string(msg.Value))
				n, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return err
				}
				if bal < n {
					return nil
				}
				if err := ctx.SetInt64(balanceSpec, bal-n); err != nil {
					return err
				}
				ctx.Send(Address{Namespace: "bank", Type: "account", ID: f[0]}, Message{Type: "deposit", Value: []byte(f[1])})
			case "get":
				ctx.Reply(Int64(bal))
			}
			return nil
		})}
}

var lastSpec = ValueSpec{Name: "last", Type: TypeBytes}

// tracedCounterSpec is counterSpec that also records the payload of the
// last increment (the request id), so a failed round can be traced in the
// log.
func tracedCounterSpec() FunctionSpec {
	s := counterSpec()
	inner := s.Function
	s.States = append(s.States, lastSpec)
	s.Function = FunctionFunc(func(ctx Context, msg Message) error {
		if msg.Type == "inc" {
			if err := ctx.Set(lastSpec, msg.Value); err != nil {
				return err
			}
		}
		return inner.Invoke(ctx, msg)
	})
	return s
}

// TestCrashChild is the child process of TestCrashRecovery.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("SHARDFN_CRASH_CHILD")
	if dir == "" {
		t.Skip("child process of TestCrashRecovery")
	}
	shards, _ := strconv.Atoi(os.Getenv("SHARDFN_CRASH_SHARDS"))
	e, err := Open(Options{DataDir: dir, Shards: shards, SegmentSize: 1 << 20, CheckpointInterval: 100 * time.Millisecond, MemoryBudget: 1 << 20, Logger: quiet},
		tracedCounterSpec(), bankSpec(), journalSpec())
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	reply := func(s string) {
		s = strings.ReplaceAll(s, "\n", " ") // one line per answer
		mu.Lock()
		out.WriteString(s + "\n")
		out.Flush()
		mu.Unlock()
	}
	reply("ready")
	in := bufio.NewScanner(os.Stdin)
	ctx := context.Background()
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "inc", "xfer", "seed": // id key [args]
			go func(f []string) {
				var err error
				switch f[0] {
				case "inc":
					_, err = e.Send(ctx, addr(f[2]), Message{Type: "inc", Value: []byte(f[1])})
				case "xfer":
					_, err = e.Send(ctx, Address{Namespace: "bank", Type: "account", ID: f[2]}, Message{Type: "transfer", Value: []byte(f[3] + " " + f[4])})
				case "seed":
					_, err = e.Send(ctx, Address{Namespace: "bank", Type: "account", ID: f[2]}, Message{Type: "deposit", Value: []byte(f[3])})
				}
				if err == nil {
					reply("ack " + f[1])
				} else {
					reply("nack " + f[1] + " " + err.Error())
				}
			}(f)
		case "j":
			go func(f []string) { reply(journalCommand(ctx, e, f)) }(f)
		case "jcheck":
			reply(journalReport(ctx, e))
		case "check":
			dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			err := e.Drain(dctx)
			cancel()
			if err != nil {
				reply("error " + err.Error())
				continue
			}
			var sb strings.Builder
			sb.WriteString("state")
			for i := 0; i < crashCounters; i++ {
				r, err := e.Request(ctx, addr(fmt.Sprint("k", i)), Message{Type: "get"})
				if err != nil {
					reply("error " + err.Error())
					continue
				}
				n, _ := r.AsInt64()
				fmt.Fprintf(&sb, " %d", n)
			}
			for i := 0; i < crashAccounts; i++ {
				r, err := e.Request(ctx, Address{Namespace: "bank", Type: "account", ID: fmt.Sprint("a", i)}, Message{Type: "get"})
				if err != nil {
					reply("error " + err.Error())
					continue
				}
				n, _ := r.AsInt64()
				fmt.Fprintf(&sb, " %d", n)
			}
			if dl, _ := e.ReadEgress(ctx, "dead-letters", 0, 10000, 0, 0); len(dl) > 0 {
				bad := ""
				for _, r := range dl {
					if !strings.Contains(string(r.Message.Value), `"target":"crash/journal/`) {
						bad = string(r.Message.Value)
					}
				}
				if bad != "" {
					reply("error dead letters: " + bad)
					continue
				}
			}
			reply(sb.String())
		}
	}
	_ = e.Close()
}

type crashChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	mu    sync.Mutex
	dir   string
}

func startCrashChild(t *testing.T, dir string, shards int) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SHARDFN_CRASH_CHILD="+dir, fmt.Sprint("SHARDFN_CRASH_SHARDS=", shards))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &crashChild{cmd: cmd, stdin: stdin, lines: make(chan string, 4096), dir: dir}
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // never leave a child behind a failed test
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 256<<20) // journal reports are long lines
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	select {
	case l := <-c.lines:
		if l != "ready" {
			t.Fatalf("child: %q", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("child did not get ready")
	}
	return c
}

func (c *crashChild) send(line string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := io.WriteString(c.stdin, line+"\n")
	return err == nil
}

func (c *crashChild) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	kills := 20
	if s := os.Getenv("CRASH_KILLS"); s != "" {
		kills, _ = strconv.Atoi(s)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d, %d kills", seed, kills)
	r := &crashRun{t: t, dir: t.TempDir(), rng: rand.New(rand.NewSource(seed)),
		acked: make([]int64, crashCounters), sent: make([]int64, crashCounters), jm: newJournalModel()}
	ackLog = make([][]int, crashCounters)
	sendLog = make([][]int, crashCounters)
	start := time.Now()
	r.seedBank()
	for k := 0; k < kills; k++ {
		r.round(k)
	}
	c := startCrashChild(t, r.dir, 2)
	verifyCrashState(t, c, r.acked, r.sent, kills)
	verifyJournal(t, c, r.jm, kills)
	c.kill()
	var total int64
	for _, a := range r.acked {
		total += a
	}
	t.Logf("%d kills in %v; %d acknowledged increments; %s", kills, time.Since(start).Round(time.Millisecond), total, r.jm.summary())
}

// crashRun is the model of TestCrashRecovery: what was sent and
// acknowledged, counter by counter, and the journal workload's model.
type crashRun struct {
	t     *testing.T
	dir   string
	rng   *rand.Rand
	acked []int64 // acknowledged increments per counter
	sent  []int64 // increments sent per counter
	jm    *journalModel
	reqID int

	mu      sync.Mutex
	pending map[int]int // request id -> counter index (or -1 for transfers)
}

// seedBank opens the accounts (no kill during seeding).
func (r *crashRun) seedBank() {
	c := startCrashChild(r.t, r.dir, 2)
	for i := 0; i < crashAccounts; i++ {
		c.send(fmt.Sprintf("seed s%d a%d %d", i, i, crashInitial))
	}
	for n := 0; n < crashAccounts; n++ {
		if l := <-c.lines; !strings.HasPrefix(l, "ack ") {
			r.t.Fatalf("seed: %q", l)
		}
	}
	c.kill()
}

// round starts the child with a random shard count, verifies what the
// last round left, then loads it until a random moment and kills it.
func (r *crashRun) round(k int) {
	if os.Getenv("CRASH_DEBUG") != "" {
		_ = os.RemoveAll(r.dir + ".copy")
		if out, err := exec.Command("cp", "-a", r.dir, r.dir+".copy").CombinedOutput(); err != nil {
			r.t.Fatalf("copy: %v %s", err, out)
		}
	}
	c := startCrashChild(r.t, r.dir, 1+r.rng.Intn(3))
	verifyCrashState(r.t, c, r.acked, r.sent, k)
	verifyJournal(r.t, c, r.jm, k)
	r.pending = map[int]int{}
	done := make(chan struct{})
	go r.readAcks(c, done)
	killAt := time.Now().Add(time.Duration(20+r.rng.Intn(250)) * time.Millisecond)
	for time.Now().Before(killAt) {
		r.sendOne(c)
		if r.rng.Intn(8) == 0 {
			time.Sleep(time.Duration(r.rng.Intn(500)) * time.Microsecond)
		}
	}
	c.kill()
	<-done
}

// sendOne sends a journal line, an increment or a transfer. (It writes to
// the child outside the lock: the child may be blocked on its output,
// which readAcks drains under the lock.)
func (r *crashRun) sendOne(c *crashChild) {
	r.reqID++
	r.mu.Lock()
	var line string
	switch {
	case r.rng.Intn(3) == 0:
		line = r.jm.next(r.rng)
	case r.rng.Intn(2) == 0:
		ci := r.rng.Intn(crashCounters)
		r.pending[r.reqID] = ci
		r.sent[ci]++
		sendLog[ci] = append(sendLog[ci], r.reqID)
		line = fmt.Sprintf("inc %d k%d", r.reqID, ci)
	default:
		from, to := r.rng.Intn(crashAccounts), r.rng.Intn(crashAccounts)
		r.pending[r.reqID] = -1
		line = fmt.Sprintf("xfer %d a%d a%d %d", r.reqID, from, to, 1+r.rng.Intn(50))
	}
	r.mu.Unlock()
	c.send(line)
}

// readAcks counts the child's acknowledgements until its output ends.
func (r *crashRun) readAcks(c *crashChild, done chan struct{}) {
	defer close(done)
	for l := range c.lines {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "badreply" {
			r.t.Errorf("a request received another request's reply: %s", l)
			continue
		}
		if len(f) < 2 || f[0] != "ack" {
			continue // refused (e.g. overloaded, or killed): not acknowledged
		}
		r.mu.Lock()
		if strings.HasPrefix(f[1], "q") {
			r.jm.acked[f[1]] = true
		} else {
			id, _ := strconv.Atoi(f[1])
			if ci, ok := r.pending[id]; ok && ci >= 0 {
				r.acked[ci]++
				ackLog[ci] = append(ackLog[ci], id)
			}
			delete(r.pending, id)
		}
		r.mu.Unlock()
	}
}

// verifyCrashState drains the child and checks the invariants; it then
// sets acked = sent = the recovered counter values (the truth from here).
func verifyCrashState(t *testing.T, c *crashChild, acked, sent []int64, round int) {
	t.Helper()
	c.send("check")
	var l string
	select {
	case l = <-c.lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("round %d: no answer to check", round)
	}
	f := strings.Fields(l)
	if len(f) != 1+crashCounters+crashAccounts || f[0] != "state" {
		t.Fatalf("round %d: child answered %q", round, l)
	}
	for i := 0; i < crashCounters; i++ {
		v, _ := strconv.ParseInt(f[1+i], 10, 64)
		if v < acked[i] {
			c.kill()
			t.Logf("acknowledged requests for k%d in the last round: %v; sent %v", i, ackLog[i], sendLog[i])
			dumpCounterHistory(t, c.dir+".copy", fmt.Sprint("k", i), sendLog[i])
			t.Fatalf("round %d: counter k%d = %d but %d increments were acknowledged (acknowledged data lost)", round, i, v, acked[i])
		}
		if v > sent[i] {
			c.kill()
			t.Logf("acknowledged requests for k%d in the last round: %v; sent %v", i, ackLog[i], sendLog[i])
			dumpCounterHistory(t, c.dir+".copy", fmt.Sprint("k", i), sendLog[i])
			t.Fatalf("round %d: counter k%d = %d but only %d increments were sent (applied twice)", round, i, v, sent[i])
		}
		acked[i], sent[i] = v, v
		ackLog[i] = nil
		sendLog[i] = nil
	}
	var total int64
	for i := 0; i < crashAccounts; i++ {
		v, _ := strconv.ParseInt(f[1+crashCounters+i], 10, 64)
		if v < 0 {
			t.Fatalf("round %d: account a%d negative: %d", round, i, v)
		}
		total += v
	}
	if total != crashAccounts*crashInitial {
		t.Fatalf("round %d: bank total %d, want %d (a transfer was lost or applied twice)", round, total, crashAccounts*crashInitial)
	}
}

// verifyJournal asks the child for the journal report and checks it.
func verifyJournal(t *testing.T, c *crashChild, jm *journalModel, round int) {
	t.Helper()
	c.send("jcheck")
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, "ack ") || strings.HasPrefix(l, "nack ") {
				continue // a late answer of a request resent in this round
			}
			if strings.HasPrefix(l, "badreply") {
				t.Fatalf("round %d: %s", round, l)
			}
			jm.check(t, l, round)
			return
		case <-time.After(90 * time.Second):
			t.Fatalf("round %d: no journal report", round)
		}
	}
}

// dumpCounterHistory prints every log record and the checkpoint that touch
// counter id, for diagnosing a failed crash round.
func dumpCounterHistory(t *testing.T, dir, id string, ids []int) {
	watch := map[string]bool{}
	for _, i := range ids {
		watch[fmt.Sprint(i)] = true
	}
	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.PebbleOptions{})
	if err != nil {
		t.Logf("dump: %v", err)
		return
	}
	mb, _ := st.Get(store.MetaKey)
	m, _ := store.DecodeMeta(mb)
	t.Logf("checkpoint at log position %d", m.LSN)
	raw := format.AppendAddress(nil, addr(id))
	_ = st.LoadInstance(format.KeyGroup(addr(id).Hash()), raw, func(name []byte, w int64, v []byte) {
		n, _ := DecodeLongWrapper(v)
		t.Logf("store: %s = %d (%q)", name, n, v)
	})
	_ = st.Close()
	l, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), Logger: quiet})
	if err != nil {
		t.Logf("dump wal: %v", err)
		return
	}
	defer l.Close()
	t.Logf("wal first %d durable %d", l.FirstLSN(), l.DurableLSN())
	r, err := l.NewReader(l.FirstLSN())
	if err != nil {
		t.Logf("dump reader: %v", err)
		return
	}
	var rec format.Record
	for {
		lsn, b, err := r.Next()
		if err != nil {
			t.Logf("reader end: %v", err)
			return
		}
		if err := format.DecodeRecord(b, &rec); err != nil {
			t.Logf("%d: %v", lsn, err)
			continue
		}
		a, _ := format.DecodeAddress(rec.TargetRaw)
		if a.ID != id {
			for _, s := range rec.States {
				if string(s.Name) == "last" && watch[string(s.Value)] {
					t.Logf("log %d: request %s applied to %s", lsn, s.Value, a)
				}
			}
			continue
		}
		for _, s := range rec.States {
			n, _ := DecodeLongWrapper(s.Value)
			if string(s.Name) == "last" {
				t.Logf("log %d (+%d): last=%s", lsn, len(b), s.Value)
				continue
			}
			t.Logf("log %d (+%d): %s=%d consumed %x", lsn, len(b), s.Name, n, rec.Consumed)
		}
	}
}
