package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Engine is a cmd/engine child process on loopback.
type Engine struct {
	Ingress string // host:port
	Admin   string // host:port
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	exitAt  time.Time

	mu   sync.Mutex
	logs []string // last lines of its log
	log  io.Writer
}

// StartEngine starts bin with args (which must not name the listen
// addresses: they are set to free loopback ports) and waits until it is
// ready. Its log (JSON) goes to logw as well.
func StartEngine(ctx context.Context, bin string, args []string, logw io.Writer) (*Engine, error) {
	args = append([]string{"--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	e := &Engine{cmd: exec.Command(bin, args...), exited: make(chan struct{}), log: logw}
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	e.cmd.Stdout = logw
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("soak: start %s: %w", bin, err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			e.mu.Lock()
			if len(e.logs) >= 200 {
				e.logs = append(e.logs[:0], e.logs[100:]...)
			}
			e.logs = append(e.logs, line)
			if e.log != nil {
				_, _ = io.WriteString(e.log, line+"\n")
			}
			e.mu.Unlock()
			var m struct{ Msg, Ingress, Admin string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				select {
				case addrs <- [2]string{m.Ingress, m.Admin}:
				default:
				}
			}
		}
		e.exitErr = e.cmd.Wait()
		e.exitAt = time.Now()
		close(e.exited)
	}()
	select {
	case a := <-addrs:
		e.Ingress, e.Admin = a[0], a[1]
	case <-e.exited:
		return nil, fmt.Errorf("soak: the engine exited at start: %v\n%s", e.exitErr, e.Tail(20))
	case <-time.After(60 * time.Second):
		e.Kill()
		return nil, fmt.Errorf("soak: the engine did not log its addresses within 60s\n%s", e.Tail(20))
	case <-ctx.Done():
		e.Kill()
		return nil, ctx.Err()
	}
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if r, err := c.Get("http://" + e.Admin + "/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return e, nil
			}
		}
		select {
		case <-e.exited:
			return nil, fmt.Errorf("soak: the engine exited while recovering: %v\n%s", e.exitErr, e.Tail(20))
		case <-ctx.Done():
			e.Kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Kill()
			return nil, fmt.Errorf("soak: the engine was not ready within 5 minutes\n%s", e.Tail(20))
		}
	}
}

// Pid is the child's process id.
func (e *Engine) Pid() int { return e.cmd.Process.Pid }

// Exited is closed when the child has exited.
func (e *Engine) Exited() <-chan struct{} { return e.exited }

// ExitErr is the child's exit error once it has exited.
func (e *Engine) ExitErr() error {
	<-e.exited
	return e.exitErr
}

// Tail returns the last n lines of the child's log.
func (e *Engine) Tail(n int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.logs
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Stop sends SIGTERM and waits up to limit for the child to exit; it
// returns how long the exit took and its error. Past the limit the child
// is killed and an error says so.
func (e *Engine) Stop(limit time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, err
	}
	select {
	case <-e.exited:
		return e.exitAt.Sub(start), e.exitErr
	case <-time.After(limit):
		e.Kill()
		return time.Since(start), fmt.Errorf("soak: the engine did not exit within %v of SIGTERM (killed)", limit)
	}
}

// Kill kills the child and waits for it.
func (e *Engine) Kill() {
	_ = e.cmd.Process.Kill()
	<-e.exited
}
