package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shardfn/shardfn/engine"
)

// recordsAnswer is the answer of an egress read and of GET
// /admin/dead-letters: records from an offset on, and the offset after
// them.
type recordsAnswer struct {
	Records []map[string]json.RawMessage `json:"records"`
	Next    uint64                       `json:"next"`
}

func egressTailCommand() *command {
	return &command{
		path: "egress tail", args: "NAME", min: 1, max: 1,
		summary: "print the records of an egress log (and follow it)",
		help: `Prints the durable records of the egress log NAME from offset --from on, one
per line: OFFSET SOURCE TYPE BODY (with --json, each record's JSON object on
its own line). Without --follow it stops at the end of the log; with
--follow it waits for new records until interrupted (Ctrl-C) or --timeout.

Examples:
  shardfn egress tail ride-events
  shardfn egress tail ride-events --from 1200 --follow
  shardfn egress tail dead-letters --json --timeout 0 --follow`,
		flags: func(fs *flag.FlagSet) {
			fs.Uint64Var(&egressFrom, "from", 0, "first `offset` to print")
			fs.BoolVar(&egressFollow, "follow", false, "keep waiting for new records")
			fs.IntVar(&egressMax, "max", 0, "stop after this many records (0: no limit)")
		},
		run: func(c *cli, args []string) error {
			name := args[0]
			if name == "" || strings.Contains(name, "/") {
				return usagef("egress name %q must be non-empty, without '/'", name)
			}
			from, printed := egressFrom, 0
			for {
				page := 1000
				if egressMax > 0 && egressMax-printed < page {
					page = egressMax - printed
				}
				q := fmt.Sprintf("/egress/%s?from=%d&max=%d", url.PathEscape(name), from, page)
				if egressFollow {
					q += "&wait=25s"
				}
				var ans recordsAnswer
				if _, err := c.getJSON(c.ingress, q, &ans); err != nil {
					if egressFollow && c.ctx.Err() != nil {
						return nil // interrupted or --timeout: the end of following
					}
					return err
				}
				for _, r := range ans.Records {
					if c.json {
						b, _ := json.Marshal(r)
						c.printJSON(b)
					} else {
						var off uint64
						_ = json.Unmarshal(r["offset"], &off)
						fmt.Fprintf(c.stdout, "%d\t%s\t%s\t%s\n", off, str(r, "source"), str(r, "type"), oneLine(valueText(r)))
					}
					printed++
				}
				from = ans.Next
				if egressMax > 0 && printed >= egressMax {
					return nil
				}
				if len(ans.Records) == 0 && !egressFollow {
					return nil
				}
			}
		},
	}
}

// str is the string member k of m ("" when absent or not a string).
func str(m map[string]json.RawMessage, k string) string {
	var s string
	_ = json.Unmarshal(m[k], &s)
	return s
}

func deadLettersListCommand() *command {
	return &command{
		path: "dead-letters list", args: "", min: 0, max: 0,
		summary: "list messages whose invocation failed for good",
		help: `Lists records of the dead-letters egress from --from on: OFFSET, TARGET,
TYPE, ERROR and the message body. Replay a range with
'shardfn dead-letters replay'.

Examples:
  shardfn dead-letters list
  shardfn dead-letters list --from 100 --max 20 --json`,
		flags: func(fs *flag.FlagSet) {
			fs.Uint64Var(&dlFrom, "from", 0, "first `offset`")
			fs.IntVar(&dlMax, "max", 100, "most records to list (1 to 10000)")
		},
		run: func(c *cli, args []string) error {
			if dlMax < 1 || dlMax > 10000 {
				return usagef("--max %d: want 1 to 10000", dlMax)
			}
			var ans recordsAnswer
			raw, err := c.getJSON(c.admin, fmt.Sprintf("/admin/dead-letters?from=%d&max=%d", dlFrom, dlMax), &ans)
			if err != nil {
				return err
			}
			if c.json {
				c.printJSON(raw)
				return nil
			}
			if len(ans.Records) == 0 {
				fmt.Fprintf(c.stdout, "no dead letters from offset %d\n", dlFrom)
				return nil
			}
			var rows [][]string
			for _, r := range ans.Records {
				var off uint64
				_ = json.Unmarshal(r["offset"], &off)
				e := str(r, "error")
				if b := str(r, "bad"); b != "" {
					e = "undecodable: " + b
				}
				rows = append(rows, []string{strconv.FormatUint(off, 10), str(r, "target"), str(r, "type"), clipText(e, 60), clipText(valueText(r), 60)})
			}
			c.table([]string{"OFFSET", "TARGET", "TYPE", "ERROR", "BODY"}, rows)
			return nil
		},
	}
}

// clipText shortens s to n runes, the last one "…".
func clipText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// parseRange parses N, N..M (inclusive) or N.. into [from, to).
func parseRange(s string) (uint64, uint64, error) {
	bad := usagef("range %q: want N, N..M (both included) or N.. (to the end)", s)
	a, b, isRange := strings.Cut(s, "..")
	from, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, bad
	}
	if !isRange {
		return from, from + 1, nil
	}
	if b == "" {
		return from, from + engine.MaxReplay, nil
	}
	last, err := strconv.ParseUint(b, 10, 64)
	if err != nil || last < from {
		return 0, 0, bad
	}
	if last-from >= engine.MaxReplay {
		return 0, 0, usagef("range %q holds more than %d records; replay it in parts", s, engine.MaxReplay)
	}
	return from, last + 1, nil
}

func deadLettersReplayCommand() *command {
	return &command{
		path: "dead-letters replay", args: "RANGE", min: 1, max: 1,
		summary: "re-send dead letters to their targets",
		help: `Re-sends the dead letters at RANGE (offsets as 'dead-letters list' shows
them: N, N..M with both ends included, or N.. for everything from N, at most
10000) as new ingress messages to their original targets, with their
original type and body, and waits until they are durable. Records that
cannot be re-sent (a type no longer registered, an undecodable record) are
skipped and listed. Replaying a range twice sends its messages twice; a
message that fails again becomes a new dead letter.

Examples:
  shardfn dead-letters replay 4
  shardfn dead-letters replay 3..7
  shardfn dead-letters replay 100.. --json`,
		run: func(c *cli, args []string) error {
			from, to, err := parseRange(args[0])
			if err != nil {
				return err
			}
			raw, shown, err := c.call("POST", c.admin, fmt.Sprintf("/admin/dead-letters/replay?from=%d&to=%d", from, to), "", nil)
			if err != nil || shown {
				return err
			}
			var ans struct {
				Replayed []uint64 `json:"replayed"`
				Skipped  []struct {
					Offset uint64 `json:"offset"`
					Target string `json:"target"`
					Reason string `json:"reason"`
				} `json:"skipped"`
			}
			if err := json.Unmarshal(raw, &ans); err != nil {
				return fmt.Errorf("the replay answer is not the expected JSON: %v", err)
			}
			offs := make([]string, len(ans.Replayed))
			for i, o := range ans.Replayed {
				offs[i] = strconv.FormatUint(o, 10)
			}
			if len(ans.Replayed) == 0 {
				fmt.Fprintln(c.stdout, "replayed nothing")
			} else {
				fmt.Fprintf(c.stdout, "replayed %d: offsets %s\n", len(ans.Replayed), strings.Join(offs, ", "))
			}
			for _, s := range ans.Skipped {
				fmt.Fprintf(c.stdout, "skipped offset %d (%s): %s\n", s.Offset, s.Target, s.Reason)
			}
			return nil
		},
	}
}
