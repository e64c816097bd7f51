package console_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// A minimal Chrome DevTools protocol client over --remote-debugging-pipe:
// the browser reads commands from fd 3 and writes answers and events to
// fd 4, each a JSON message ended by a NUL byte.

type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   *os.File // our end of the browser's fd 3
	out  *os.File // our end of the browser's fd 4
	done chan struct{}

	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpAnswer
	logs    []string
}

type cdpAnswer struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params"`
	SessionID string          `json:"sessionId"`
}

// chromiumFlags are the launch flags: headless, no sandbox (containers run
// as root), nothing that reaches the network by itself, a fresh profile.
func chromiumFlags(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--no-default-browser-check",
		"--user-data-dir=" + profile, "--remote-debugging-pipe", "about:blank"}
}

func startBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	cmdR, cmdW, err := os.Pipe() // we write commands, the browser reads fd 3
	if err != nil {
		t.Fatal(err)
	}
	evR, evW, err := os.Pipe() // the browser writes fd 4, we read
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, in: cmdW, out: evR, done: make(chan struct{}), pending: map[int]chan cdpAnswer{}}
	b.cmd = exec.Command(bin, chromiumFlags(t.TempDir())...)
	b.cmd.ExtraFiles = []*os.File{cmdR, evW}
	stderr := &lineLog{b: b}
	b.cmd.Stderr = stderr
	b.cmd.Stdout = stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	cmdR.Close()
	evW.Close()
	go b.read()
	t.Cleanup(b.close)
	return b
}

type lineLog struct{ b *browser }

func (l *lineLog) Write(p []byte) (int, error) {
	l.b.mu.Lock()
	if len(l.b.logs) < 200 {
		l.b.logs = append(l.b.logs, strings.TrimSpace(string(p)))
	}
	l.b.mu.Unlock()
	return len(p), nil
}

func (b *browser) read() {
	defer close(b.done)
	r := bufio.NewReaderSize(b.out, 1<<20)
	for {
		msg, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var a cdpAnswer
		if json.Unmarshal(bytes.TrimSuffix(msg, []byte{0}), &a) != nil || a.ID == 0 {
			continue // events are not used
		}
		b.mu.Lock()
		ch := b.pending[a.ID]
		delete(b.pending, a.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
}

func (b *browser) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, _ = b.call(ctx, "", "Browser.close", nil)
	cancel()
	select {
	case <-b.done:
	case <-time.After(3 * time.Second):
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	b.in.Close()
	b.out.Close()
	if b.t.Failed() {
		b.mu.Lock()
		b.t.Logf("browser output:\n%s", strings.Join(b.logs, "\n"))
		b.mu.Unlock()
	}
}

// call sends one command (to a page session when session is not empty) and
// waits for its answer.
func (b *browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpAnswer, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err := b.in.Write(append(data, 0)); err != nil {
		return nil, fmt.Errorf("%s: writing to the browser: %v", method, err)
	}
	select {
	case a := <-ch:
		if a.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, a.Error.Message, a.Error.Code)
		}
		return a.Result, nil
	case <-b.done:
		return nil, fmt.Errorf("%s: the browser exited", method)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab.
type page struct {
	b       *browser
	session string
}

func (b *browser) newPage(ctx context.Context, width, height int) (*page, error) {
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		return nil, err
	}
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(res, &tgt); err != nil {
		return nil, err
	}
	res, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true})
	if err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(res, &att); err != nil {
		return nil, err
	}
	p := &page{b: b, session: att.SessionID}
	for _, c := range []struct {
		m string
		p any
	}{
		{"Page.enable", nil}, {"Runtime.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}},
	} {
		if _, err := b.call(ctx, p.session, c.m, c.p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *page) navigate(ctx context.Context, url string) error {
	_, err := p.b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url})
	return err
}

// eval evaluates a JavaScript expression (awaiting a promise) and decodes
// its value into v (when not nil).
func (p *page) eval(ctx context.Context, expr string, v any) error {
	res, err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		d := r.ExceptionDetails.Text
		if r.ExceptionDetails.Exception != nil {
			d = r.ExceptionDetails.Exception.Description
		}
		return fmt.Errorf("javascript %q: %s", expr, d)
	}
	if v != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, v)
	}
	return nil
}

// waitFor evaluates expr until it is true.
func (p *page) waitFor(ctx context.Context, what, expr string) error {
	var last error
	for {
		var ok bool
		if last = p.eval(ctx, "Boolean("+expr+")", &ok); last == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%s): %w (last error: %v)", what, expr, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *page) screenshot(ctx context.Context, path string) error {
	res, err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": false})
	if err != nil {
		return err
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
