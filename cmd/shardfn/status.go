package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardfn/shardfn/httpapi/adminapi"
)

func statusCommand() *command {
	return &command{
		path: "status", args: "", min: 0, max: 0,
		summary: "show readiness, throughput, log and applier positions, checkpoint age, shards",
		help: `Shows the engine's health and figures from the admin listener: ready or
failed-stop, shards, messages per second (over the server's last second),
totals since start, the log's durable and applied positions and the
applier's lag, the last checkpoint's age, the last recovery, each shard's
mailbox, queue, delayed messages and cache, and stuck remote endpoints when
the server reports them (/health's "stuck_endpoints"). With --json:
{"health":<GET /health>,"status":<GET /admin/status>}.

Exits 1 when the server is in failed-stop or unreachable.

Examples:
  shardfn status
  SHARDFN_ADMIN=10.0.0.5:9090 shardfn status --json`,
		run: func(c *cli, args []string) error {
			healthRaw, _, herr := c.do("GET", c.admin, "/health", "", nil)
			var ae *apiError
			if herr != nil && !(errors.As(herr, &ae) && ae.status == 503) {
				return herr
			}
			var st adminapi.Status
			raw, err := c.getJSON(c.admin, "/admin/status", &st)
			if err != nil {
				return err
			}
			var health map[string]json.RawMessage
			if herr == nil {
				_ = json.Unmarshal(healthRaw, &health)
			} else {
				health = map[string]json.RawMessage{"status": json.RawMessage(`"failed"`)}
				b, _ := json.Marshal(ae.msg)
				health["error"] = b
			}
			if c.json {
				hb, _ := json.Marshal(health)
				if err := c.printValue(map[string]json.RawMessage{"health": hb, "status": raw}); err != nil {
					return err
				}
			} else {
				c.printStatus(&st, health)
			}
			if st.Failed != "" {
				return fmt.Errorf("the engine is in failed-stop: %s", st.Failed)
			}
			return nil
		},
	}
}

func (c *cli) printStatus(st *adminapi.Status, health map[string]json.RawMessage) {
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	state := "ready"
	switch {
	case st.Failed != "":
		state = "FAILED-STOP: " + st.Failed
	case !st.Ready:
		state = "not ready (recovering or closing)"
	}
	fmt.Fprintf(tw, "engine\t%s\n", state)
	fmt.Fprintf(tw, "shards\t%d\n", st.Shards)
	if st.Rates != nil {
		fmt.Fprintf(tw, "throughput\t%s ingress msg/s, %s processed/s, %s invocations/s, %s failures/s\n",
			num(st.Rates.Ingress), num(st.Rates.Processed), num(st.Rates.Invocations), num(st.Rates.Failures))
	} else {
		fmt.Fprintf(tw, "throughput\t(not sampled yet: the server samples once a second)\n")
	}
	fmt.Fprintf(tw, "totals\t%d ingress messages, %d processed, %d invocations, %d failed\n", st.IngressMessages, st.Processed, st.Invocations, st.Failures)
	fmt.Fprintf(tw, "log\tdurable at %s, applied at %s (applier lag %s)\n", bytesText(st.Log.Durable), bytesText(st.Log.Applied), bytesText(st.Log.ApplierLag))
	if st.Checkpoint.AgeSeconds != nil {
		fmt.Fprintf(tw, "checkpoint\t%s ago (every %s)\n", secs(*st.Checkpoint.AgeSeconds), secs(st.Checkpoint.IntervalSeconds))
	} else {
		fmt.Fprintf(tw, "checkpoint\tnone yet in this process (every %s; in-memory engines take none)\n", secs(st.Checkpoint.IntervalSeconds))
	}
	r := st.Recovery
	fmt.Fprintf(tw, "recovery\t%s, replayed %d records (%s), restored %d in-flight and %d delayed messages\n",
		secs(r.DurationSeconds), r.ReplayedRecords, bytesText(r.ReplayedBytes), r.RestoredInFlight, r.RestoredTimers)
	if raw, ok := health["stuck_endpoints"]; ok {
		fmt.Fprintf(tw, "stuck endpoints\t%s\n", stuckText(raw))
	}
	tw.Flush()
	fmt.Fprintln(c.stdout)
	var rows [][]string
	for _, s := range st.PerShard {
		hit := "-"
		if n := s.CacheHits + s.CacheMisses; n > 0 {
			hit = strconv.FormatFloat(100*float64(s.CacheHits)/float64(n), 'f', 1, 64) + "%"
		}
		rows = append(rows, []string{strconv.Itoa(s.Index), strconv.Itoa(s.Mailbox), strconv.FormatInt(s.QueueDepth, 10),
			strconv.FormatInt(s.DelayedMessages, 10), strconv.FormatUint(s.Invocations, 10), strconv.FormatUint(s.Failures, 10),
			hit, bytesText(uint64(max(s.CacheBytes, 0))) + " / " + bytesText(uint64(max(s.CacheCapacity, 0)))})
	}
	c.table([]string{"SHARD", "MAILBOX", "QUEUED", "DELAYED", "INVOCATIONS", "FAILURES", "CACHE HITS", "CACHE"}, rows)
}

// stuckText renders /health's stuck_endpoints, whatever its shape: a list
// of names or of objects with an endpoint/url/name field.
func stuckText(raw json.RawMessage) string {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return string(raw)
	}
	if len(list) == 0 {
		return "none"
	}
	var out []string
	for _, it := range list {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, s)
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(it, &m) == nil {
			for _, k := range []string{"endpoint", "url", "name", "function"} {
				if v := str(m, k); v != "" {
					s = v
					break
				}
			}
		}
		if s == "" {
			s = string(it)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func num(f float64) string {
	switch {
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 1:
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func bytesText(b uint64) string {
	const unit = 1024
	if b < unit {
		return strconv.FormatUint(b, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(b)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
