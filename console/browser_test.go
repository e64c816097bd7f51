package console_test

// This file is in package console_test so that it may start the whole
// server (httpapi imports console).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/testserver"
)

var visits = engine.ValueSpec{Name: "visits", Type: engine.TypeLong}

// greeter counts visits per instance, writes an egress record per visit
// and fails "fail" messages (dead letters).
func greeter() engine.FunctionSpec {
	return engine.FunctionSpec{Namespace: "example", Type: "greeter", States: []engine.ValueSpec{visits},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			name, err := msg.AsString()
			if err != nil {
				return err
			}
			if name == "fail" {
				return errors.New("refused to greet")
			}
			n, _, err := ctx.GetInt64(visits)
			if err != nil {
				return err
			}
			if err := ctx.SetInt64(visits, n+1); err != nil {
				return err
			}
			ctx.Reply(engine.String(fmt.Sprintf("hello %s, visit %d", name, n+1)))
			if n%50 == 0 {
				ctx.Egress("greetings", engine.String(name))
			}
			return nil
		})}
}

// findChromium returns the browser to drive: $SHARDFN_CHROMIUM, else
// chromium or chromium-browser on PATH.
func findChromium() string {
	if p := os.Getenv("SHARDFN_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// screenshotDir is where screenshots go: $SHARDFN_SCREENSHOT_DIR (make
// test-ui sets it to results/), else a temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SHARDFN_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestConsoleInBrowser drives the console in headless Chromium against a
// server under load: the overview's charts update, and a state edit made
// in the instance inspector is visible through the admin API.
func TestConsoleInBrowser(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		if os.Getenv("SHARDFN_REQUIRE_BROWSER") != "" {
			t.Fatal("SHARDFN_REQUIRE_BROWSER is set but no Chromium was found (scripts/install-chromium.sh installs it)")
		}
		t.Skip("no Chromium on this machine: the console's browser test is skipped (scripts/install-chromium.sh, run by make test-ui, installs it)")
	}
	s := testserver.Start(t, engine.Options{Shards: 2}, greeter())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := s.Engine
	bob := engine.Address{Namespace: "example", Type: "greeter", ID: "bob"}
	if _, err := e.Send(ctx, bob, engine.String("Bob")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := e.Send(ctx, engine.Address{Namespace: "example", Type: "greeter", ID: fmt.Sprint("f-", i)}, engine.String("fail")); err != nil {
			t.Fatal(err)
		}
	}

	b := startBrowser(t, bin)
	p, err := b.newPage(ctx, 1400, 1100)
	if err != nil {
		t.Fatal(err)
	}
	tour := &consoleTour{t: t, ctx: ctx, p: p, dir: screenshotDir(t)}
	if err := p.navigate(ctx, s.Admin+"/ui/"); err != nil {
		t.Fatal(err)
	}
	tour.firstPaint()

	// Load: a few senders through the HTTP ingress until the test ends
	// (bounded by loadCtx), so the charts have something to show.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var sent atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendGreetings(loadCtx, s.Ingress, w, &sent)
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()

	tour.overview()
	tour.functions()
	tour.instance(s.Admin)
	tour.deadLetters()
	tour.egress()
	t.Logf("load: %d messages sent during the test; screenshots in %s", sent.Load(), tour.dir)
}

// sendGreetings posts batches of 20 greetings as sender w until ctx ends,
// counting them in sent.
func sendGreetings(ctx context.Context, ingress string, w int, sent *atomic.Int64) {
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ctx.Err() == nil; i++ {
		body := fmt.Sprintf(`{"to":"example/greeter/u-%d-%d","type":"io.statefun.types/string","body":"u%d"}`+"\n", w, i%500, i)
		req, _ := http.NewRequestWithContext(ctx, "POST", ingress+"/batch", strings.NewReader(strings.Repeat(body, 20)))
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sent.Add(20)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// consoleTour walks the console's pages in one browser page; each step
// fails the test at its first error.
type consoleTour struct {
	t   *testing.T
	ctx context.Context
	p   *page
	dir string // where screenshots go
}

func (c *consoleTour) eval(expr string, v any) {
	c.t.Helper()
	if err := c.p.eval(c.ctx, expr, v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *consoleTour) wait(what, expr string) {
	c.t.Helper()
	if err := c.p.waitFor(c.ctx, what, expr); err != nil {
		c.t.Fatal(err)
	}
}

func (c *consoleTour) screenshot(name string) {
	c.t.Helper()
	if err := c.p.screenshot(c.ctx, filepath.Join(c.dir, name)); err != nil {
		c.t.Fatal(err)
	}
}

// firstPaint: first paint on a quiet server, warm browser: load once, then
// reload.
func (c *consoleTour) firstPaint() {
	c.wait("the first overview", `document.getElementById("c-events") && document.getElementById("c-events").dataset.points >= 1`)
	c.eval(`location.reload()`, nil)
	c.wait("the reloaded overview", `document.getElementById("c-events") && document.getElementById("c-events").dataset.points >= 1`)
	var quietFCP float64
	_ = c.p.eval(c.ctx, `(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`, &quietFCP)
	c.t.Logf("first contentful paint: %.0f ms (loopback, quiet server, warm browser)", quietFCP)
}

// overview: under load the charts move (more points, and the event rate
// shows the load) and the health pill says ready.
func (c *consoleTour) overview() {
	c.eval(`location.reload()`, nil)
	c.wait("the overview's first samples", `document.getElementById("c-events").dataset.points >= 3`)
	var before int
	c.eval(`Number(document.getElementById("c-events").dataset.points)`, &before)
	for _, w := range []struct{ what, expr string }{
		{"events chart gains points", fmt.Sprintf(`Number(document.getElementById("c-events").dataset.points) >= %d`, before+3)},
		{"events per second above zero", `Number(document.getElementById("c-events").dataset.last) > 0`},
		{"invocations per second above zero", `Number(document.getElementById("c-invocations").dataset.last) > 0`},
		{"queue chart has points", `Number(document.getElementById("c-queue").dataset.points) > 3`},
		{"fsync latency measured", `document.getElementById("c-fsync").dataset.last !== ""`},
		{"health pill says ready", `document.getElementById("health").textContent === "ready"`},
	} {
		c.wait(w.what, w.expr)
	}
	c.screenshot("console-overview.png")
}

// functions: the functions table lists example/greeter.
func (c *consoleTour) functions() {
	c.eval(`location.hash = "#functions"`, nil)
	c.wait("the functions table", `document.querySelector("#functions tbody").textContent.includes("example/greeter")`)
	c.screenshot("console-functions.png")
}

// instance: the inspector edits bob's visits in the page; the admin API
// (at admin) then reads the new value.
func (c *consoleTour) instance(admin string) {
	c.eval(`location.hash = "#instance/example/greeter/bob"`, nil)
	c.wait("bob's state row", `document.querySelector('input[data-name="visits"]') && document.querySelector('input[data-name="visits"]').value === "1"`)
	c.eval(`(() => { const i = document.querySelector('input[data-name="visits"]'); i.value = "777"; document.querySelector('button[data-save="visits"]').click(); return true; })()`, nil)
	if err := c.p.waitFor(c.ctx, "the save to be confirmed", `document.getElementById("inst-msg").textContent.includes("saved visits")`); err != nil {
		var msg string
		_ = c.p.eval(c.ctx, `document.getElementById("inst-msg").textContent`, &msg)
		c.t.Fatalf("%v (message: %q)", err, msg)
	}
	resp, err := http.Get(admin + "/state/example/greeter/bob")
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"visits":{"type":"io.statefun.types/long","value":777}`) {
		c.t.Fatalf("admin API after the console's edit: %s", body)
	}
	c.screenshot("console-instance.png")
}

// deadLetters: the dead letters are listed, and one is replayed from the
// page (failing again, it comes back as a new dead letter).
func (c *consoleTour) deadLetters() {
	c.eval(`location.hash = "#dead-letters"`, nil)
	c.wait("the dead letters", `document.querySelectorAll("#dl-records tbody tr").length >= 3`)
	c.eval(`document.querySelector("#dl-records tbody tr button").click()`, nil)
	c.wait("the replay's answer", `document.getElementById("dl-msg").textContent.includes("replayed offsets 0")`)
	c.wait("the replayed message's new dead letter", `document.querySelectorAll("#dl-records tbody tr").length >= 4`)
	c.screenshot("console-dead-letters.png")
}

// egress: the egress tail shows the greetings log.
func (c *consoleTour) egress() {
	c.eval(`location.hash = "#egress/greetings"`, nil)
	c.wait("egress records", `document.querySelectorAll("#eg-records tbody tr").length > 0`)
	c.screenshot("console-egress.png")
}
