package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/remote"
	"github.com/shardfn/shardfn/rides"
)

// RemoteOptions configure the remote target.
type RemoteOptions struct {
	// Inproc holds the engine options and the RS-1 settings; the rides
	// settings (Grid, FinishDelay, FinishJitter, MaxRetries) are handed to
	// rides.js through its environment so both sides agree. Memory runs the
	// engine without a data directory.
	Inproc InprocOptions
	// JSDir is the folder holding rides.js and its node_modules. Default:
	// remote/js of the enclosing module, found from the working directory
	// upwards.
	JSDir string
	// Node is the node binary. Default "node" from PATH.
	Node string
	// MaxConcurrency bounds the engine's requests in flight to rides.js.
	// Default 256 (the module.yaml default).
	MaxConcurrency int
}

// Remote is the "remote" variant of RS-1: an in-process engine, as Inproc,
// whose rides/* function types are served by remote/js/rides.js (the official
// StateFun JavaScript SDK) in a node child process, over StateFun's
// request-reply protocol (package remote). Everything else (sending, state
// reads, egress, invocation counts) is Inproc's. Safe for concurrent use.
type Remote struct {
	*Inproc
	client *remote.Client
	node   *exec.Cmd
	exited chan struct{}
	url    string
}

var (
	_ Target            = (*Remote)(nil)
	_ InvocationCounter = (*Remote)(nil)
	_ MemoryReporter    = (*Remote)(nil)
)

func init() {
	RegisterTarget("remote", func(arg string) (Target, error) {
		o, err := ParseRemoteSpec(arg)
		if err != nil {
			return nil, err
		}
		return NewRemote(o)
	})
}

// ParseRemoteSpec parses the text after "remote:" in --target
// remote[:key=value,...]. Keys: grid (cells per side, default 100),
// finish-delay (Go duration, default 2s), shards (engine shards, default
// one per core), concurrency (requests in flight to rides.js, default 256),
// js (the folder of rides.js), node (the node binary). grid and
// finish-delay must match the run's --grid and --finish-delay.
func ParseRemoteSpec(arg string) (RemoteOptions, error) {
	var o RemoteOptions
	if arg == "" {
		return o, nil
	}
	for _, kv := range strings.Split(arg, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return o, fmt.Errorf("loadgen: --target remote:%s: %q is not key=value", arg, kv)
		}
		var err error
		switch k {
		case "grid":
			o.Inproc.Rides.Grid, err = strconv.Atoi(v)
		case "finish-delay":
			o.Inproc.Rides.FinishDelay, err = time.ParseDuration(v)
		case "shards":
			o.Inproc.Engine.Shards, err = strconv.Atoi(v)
		case "concurrency":
			o.MaxConcurrency, err = strconv.Atoi(v)
		case "js":
			o.JSDir = v
		case "node":
			o.Node = v
		default:
			return o, fmt.Errorf("loadgen: --target remote:%s: unknown key %q (grid, finish-delay, shards, concurrency, js, node)", arg, k)
		}
		if err != nil {
			return o, fmt.Errorf("loadgen: --target remote:%s: %s: %w", arg, k, err)
		}
	}
	return o, nil
}

// findJSDir looks for remote/js/rides.js from the working directory up.
func findJSDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		c := filepath.Join(dir, "remote", "js")
		if _, err := os.Stat(filepath.Join(c, "rides.js")); err == nil {
			return c, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("loadgen: remote/js/rides.js not found above the working directory; set the js key of --target remote")
		}
		dir = up
	}
}

// NewRemote starts rides.js (running npm ci first when its node_modules is
// missing) and opens an engine whose rides/* types call it.
func NewRemote(o RemoteOptions) (*Remote, error) {
	cfg := o.Inproc.Rides
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Node == "" {
		o.Node = "node"
	}
	if o.MaxConcurrency == 0 {
		o.MaxConcurrency = 256
	}
	if o.MaxConcurrency < 1 {
		return nil, fmt.Errorf("loadgen: remote MaxConcurrency %d: want at least 1", o.MaxConcurrency)
	}
	if o.JSDir == "" {
		d, err := findJSDir()
		if err != nil {
			return nil, err
		}
		o.JSDir = d
	}
	if _, err := os.Stat(filepath.Join(o.JSDir, "node_modules", "apache-flink-statefun", "package.json")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = o.JSDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("loadgen: npm ci in %s: %v\n%s", o.JSDir, err, out)
		}
	}
	r := &Remote{exited: make(chan struct{})}
	if err := r.startNode(o, cfg); err != nil {
		return nil, err
	}
	fail := func(err error) (*Remote, error) {
		if r.client != nil {
			_ = r.client.Close()
		}
		r.stopNode()
		return nil, err
	}
	yaml := fmt.Sprintf("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: rides/*\n  urlPathTemplate: %s/statefun\n"+
		"  shardfn:\n    maxConcurrency: %d\n", r.url, o.MaxConcurrency)
	mod, err := remote.ParseModule(strings.NewReader(yaml))
	if err != nil {
		return fail(err)
	}
	r.client, err = remote.NewClient(remote.Options{})
	if err != nil {
		return fail(err)
	}
	specs, err := mod.Specs(r.client)
	if err != nil {
		return fail(err)
	}
	ip, err := openInproc(o.Inproc, specs)
	if err != nil {
		return fail(err)
	}
	for _, c := range r.client.Collectors() {
		_ = ip.reg.Register(c)
	}
	r.Inproc = ip
	return r, nil
}

// openInproc opens an in-process engine with specs (the embedded RS-1
// functions for NewInproc, remote ones for NewRemote) on a temporary data
// directory unless o names one or asks for memory.
func openInproc(o InprocOptions, specs []engine.FunctionSpec) (*Inproc, error) {
	t := &Inproc{}
	if !o.Memory && o.Engine.DataDir == "" {
		dir, err := os.MkdirTemp("", "shardfn-loadgen-")
		if err != nil {
			return nil, fmt.Errorf("loadgen: temporary data directory: %w", err)
		}
		t.tmpDir = dir
		o.Engine.DataDir = dir
	}
	t.dataDir = o.Engine.DataDir
	e, err := engine.Open(o.Engine, specs...)
	if err != nil {
		t.removeTmp()
		return nil, fmt.Errorf("loadgen: opening the engine: %w", err)
	}
	t.e = e
	t.reg = prometheus.NewRegistry()
	for _, c := range e.Collectors() {
		if err := t.reg.Register(c); err != nil {
			// A metric the engine exposes twice is the engine's bug, not a
			// reason to refuse a benchmark run; invocations then read 0.
			break
		}
	}
	return t, nil
}

func (r *Remote) startNode(o RemoteOptions, cfg rides.Config) error {
	jitter, retries := cfg.FinishJitter, cfg.MaxRetries
	if jitter < 0 {
		jitter = 0
	}
	if retries < 0 {
		retries = 0
	}
	cmd := exec.Command(o.Node, "rides.js", "0")
	cmd.Dir = o.JSDir
	cmd.Env = append(os.Environ(),
		"RIDES_GRID="+strconv.Itoa(cfg.Grid),
		"RIDES_FINISH_DELAY_MS="+strconv.FormatInt(cfg.FinishDelay.Milliseconds(), 10),
		"RIDES_FINISH_JITTER="+strconv.FormatFloat(jitter, 'g', -1, 64),
		"RIDES_MAX_RETRIES="+strconv.Itoa(retries))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("loadgen: starting %s rides.js: %w", o.Node, err)
	}
	r.node = cmd
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
		for sc.Scan() {
		}
		_ = cmd.Wait()
		close(r.exited)
	}()
	select {
	case line, ok := <-first:
		var hello struct{ Port int }
		if !ok || json.Unmarshal([]byte(line), &hello) != nil || hello.Port == 0 {
			r.stopNode()
			return fmt.Errorf("loadgen: rides.js: bad first line %q (want {\"port\":N})", line)
		}
		r.url = "http://127.0.0.1:" + strconv.Itoa(hello.Port)
		return nil
	case <-time.After(30 * time.Second):
		r.stopNode()
		return errors.New("loadgen: rides.js did not report its port within 30 s")
	}
}

// stopNode sends SIGTERM, then SIGKILL after 5 s, and waits for the exit.
func (r *Remote) stopNode() {
	if r.node == nil || r.node.Process == nil {
		return
	}
	_ = r.node.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(5 * time.Second):
		_ = r.node.Process.Kill()
		<-r.exited
	}
}

// Name implements Target: "remote-rides.js".
func (r *Remote) Name() string { return "remote-rides.js" }

// URL returns the base URL of the rides.js server.
func (r *Remote) URL() string { return r.url }

// NodePID returns the process id of the rides.js server.
func (r *Remote) NodePID() int { return r.node.Process.Pid }

// RSS implements MemoryReporter: this process's VmRSS plus the node
// server's.
func (r *Remote) RSS(ctx context.Context) (int64, error) {
	self, err := SelfRSS()
	if err != nil {
		return 0, err
	}
	node, err := pidRSS(r.node.Process.Pid)
	if err != nil {
		return 0, err
	}
	return self + node, nil
}

// pidRSS returns VmRSS of /proc/<pid>/status in bytes.
func pidRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("loadgen: reading RSS of %d: %w", pid, err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fs := bytes.Fields(rest)
			if len(fs) > 0 {
				if kb, err := strconv.ParseInt(string(fs[0]), 10, 64); err == nil {
					return kb * 1024, nil
				}
			}
			return 0, fmt.Errorf("loadgen: bad VmRSS line %q", line)
		}
	}
	return 0, fmt.Errorf("loadgen: no VmRSS for pid %d", pid)
}

// Close implements Target: closes the engine (which drains its remote
// calls), then the client, then stops rides.js and removes a temporary data
// directory.
func (r *Remote) Close() error {
	err := r.Inproc.Close()
	if cerr := r.client.Close(); err == nil {
		err = cerr
	}
	r.stopNode()
	return err
}
