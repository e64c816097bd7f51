package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The processes of TestClusterCrash: kfake and the nodes.
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
	keep    bool // log at warn level
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
	args := []string{"--ports", ports, "--topics", "", "--data-dir", k.dir, "--min-session-timeout", "500ms"}
	if k.keep {
		args = append(args, "--log-level", "warn")
	}
	cmd := exec.Command(k.bin, args...)
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
