package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shardfn/shardfn/engine"
)

// Flag values of the commands. Each run registers its command's flags
// afresh, which resets them to their defaults.
var (
	sendBatchFile string
	sendBatchSize int
	requestWait   time.Duration
	stateAs       string
	stateType     string
	egressFrom    uint64
	egressFollow  bool
	egressMax     int
	dlFrom        uint64
	dlMax         int
)

// readBody reads a BODY argument: "@path" reads a file, "@-" stdin, else
// the argument itself.
func (c *cli) readBody(arg string) ([]byte, error) {
	if arg == "@-" {
		return io.ReadAll(c.stdin)
	}
	if p, ok := strings.CutPrefix(arg, "@"); ok {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("body file: %v", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}

func contentType(typ string) (string, error) {
	if typ == "" || strings.ContainsAny(typ, " \t;,") || !strings.Contains(typ, "/") {
		return "", usagef("message type %q: want namespace/name, e.g. rides/location or io.statefun.types/string", typ)
	}
	return "application/vnd." + typ, nil
}

func sendCommand() *command {
	return &command{
		path: "send", args: "ADDRESS TYPE BODY | --batch FILE", min: 0, max: 3,
		summary: "send messages (fire-and-forget; acknowledged once durable)",
		help: `Sends one message to ADDRESS (namespace/type/id) with message type TYPE and
body BODY, and waits until the engine has made its invocation durable. BODY
"@path" reads a file, "@-" standard input. For io.statefun.types/string the
body is the text itself.

With --batch FILE (or --batch - for standard input), sends many messages, one
per line, in POST /batch requests of --batch-size messages. A line is either
the batch JSON form {"to":"ns/type/id","type":"ns/name","body":<JSON>} (or
"body_b64") or three fields separated by blanks: ADDRESS TYPE BODY (the rest
of the line is the body: JSON as is, other text as its bytes). Blank lines
and lines starting with # are skipped.

Examples:
  shardfn send rides/driver/d-1 rides/location '{"cell":"1-1"}'
  shardfn send example/greeter/bob io.statefun.types/string Bob
  shardfn send rides/driver/d-1 rides/location @location.json
  printf 'rides/driver/d-1 rides/location {"cell":"1-1"}\n' | shardfn send --batch -`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&sendBatchFile, "batch", "", "send every line of `FILE` (- for standard input) instead of one message")
			fs.IntVar(&sendBatchSize, "batch-size", 1000, "messages per POST /batch `request`")
		},
		run: func(c *cli, args []string) error {
			if sendBatchFile != "" {
				if len(args) != 0 {
					return usagef("give either ADDRESS TYPE BODY or --batch FILE, not both")
				}
				return c.sendBatch()
			}
			if len(args) != 3 {
				return usagef("want ADDRESS TYPE BODY (or --batch FILE), have %d argument(s)", len(args))
			}
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			ct, err := contentType(args[1])
			if err != nil {
				return err
			}
			body, err := c.readBody(args[2])
			if err != nil {
				return err
			}
			b, _, err := c.do("POST", c.ingress, "/"+p, ct, body)
			if err != nil {
				return err
			}
			if c.json {
				c.printJSON(b)
				return nil
			}
			var r struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(b, &r)
			fmt.Fprintf(c.stdout, "accepted %s (id %s)\n", args[0], r.ID)
			return nil
		},
	}
}

// batchLine turns one input line into the batch JSON form.
func batchLine(line string) ([]byte, error) {
	if strings.HasPrefix(line, "{") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("not valid JSON: %v", err)
		}
		if _, ok := m["to"]; !ok {
			return nil, errors.New(`a JSON line needs "to", "type" and "body" (or "body_b64")`)
		}
		var buf bytes.Buffer
		_ = json.Compact(&buf, []byte(line))
		return buf.Bytes(), nil
	}
	f := strings.Fields(line)
	if len(f) < 3 {
		return nil, errors.New("want ADDRESS TYPE BODY or a JSON object")
	}
	addr, typ := f[0], f[1]
	if _, err := addressPath(addr); err != nil {
		return nil, err
	}
	if _, err := contentType(typ); err != nil {
		return nil, err
	}
	// The body is the rest of the line after the second field.
	rest := strings.TrimSpace(line)
	rest = strings.TrimSpace(rest[strings.Index(rest, addr)+len(addr):])
	rest = strings.TrimSpace(rest[len(typ):])
	out := map[string]any{"to": addr, "type": typ}
	switch {
	case typ == engine.TypeString:
		out["body"] = rest
	case json.Valid([]byte(rest)):
		out["body"] = json.RawMessage(rest)
	default:
		out["body_b64"] = base64.StdEncoding.EncodeToString([]byte(rest))
	}
	return json.Marshal(out)
}

func (c *cli) sendBatch() error {
	if sendBatchSize < 1 || sendBatchSize > 10000 {
		return usagef("--batch-size %d: want 1 to 10000", sendBatchSize)
	}
	var in io.Reader = c.stdin
	if sendBatchFile != "-" {
		f, err := os.Open(sendBatchFile)
		if err != nil {
			return fmt.Errorf("batch file: %v", err)
		}
		defer f.Close()
		in = f
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var buf bytes.Buffer
	n, inBuf, batches, lineNo := 0, 0, 0, 0
	flush := func() error {
		if inBuf == 0 {
			return nil
		}
		if _, _, err := c.do("POST", c.ingress, "/batch", "application/x-ndjson", buf.Bytes()); err != nil {
			return fmt.Errorf("batch %d (lines up to %d): %w; earlier batches were accepted", batches+1, lineNo, err)
		}
		batches++
		n += inBuf
		inBuf = 0
		buf.Reset()
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := batchLine(line)
		if err != nil {
			return fmt.Errorf("line %d: %v", lineNo, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
		inBuf++
		if inBuf == sendBatchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the batch input: %v", err)
	}
	if err := flush(); err != nil {
		return err
	}
	if c.json {
		return c.printValue(map[string]int{"count": n, "batches": batches})
	}
	fmt.Fprintf(c.stdout, "accepted %d messages in %d batches\n", n, batches)
	return nil
}

func requestCommand() *command {
	return &command{
		path: "request", args: "ADDRESS TYPE BODY", min: 3, max: 3,
		summary: "send a message and print the reply",
		help: `Sends one message like 'send' and waits up to --wait for the reply of the
chain of messages it starts (a function's ctx.Reply), then prints the reply:
text for strings and JSON, the number for long/int values, base64 for other
bytes. With --json: {"type":"...","body":...}. No reply in time exits 1; the
message is still processed exactly once.

Examples:
  shardfn request rides/passenger/p-9 rides/request '{"cell":"12-40"}'
  shardfn request example/greeter/bob io.statefun.types/string Bob --wait 2s`,
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&requestWait, "wait", 5*time.Second, "longest wait for the reply (the server caps it with its --max-wait)")
		},
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			ct, err := contentType(args[1])
			if err != nil {
				return err
			}
			if requestWait <= 0 {
				return usagef("--wait must be positive")
			}
			body, err := c.readBody(args[2])
			if err != nil {
				return err
			}
			b, h, err := c.do("POST", c.ingress, "/"+p+"?wait="+url.QueryEscape(requestWait.String()), ct, body)
			if err != nil {
				return err
			}
			typ := strings.TrimPrefix(h.Get("Content-Type"), "application/vnd.")
			text, field := replyText(typ, b)
			if c.json {
				out := map[string]any{"type": typ}
				if field == "body" {
					out["body"] = json.RawMessage(text)
				} else {
					out[field] = text
				}
				return c.printValue(out)
			}
			if field == "body" {
				var s string
				if json.Unmarshal([]byte(text), &s) == nil {
					text = s
				}
			}
			fmt.Fprintln(c.stdout, text)
			return nil
		},
	}
}

// replyText renders a reply: ("<JSON>", "body") for built-in types and
// JSON bytes, (text, "text") for other UTF-8, (base64, "body_b64") else.
func replyText(typ string, b []byte) (string, string) {
	switch typ {
	case engine.TypeString:
		if s, err := engine.DecodeStringWrapper(b); err == nil {
			j, _ := json.Marshal(s)
			return string(j), "body"
		}
	case engine.TypeLong, engine.TypeInt:
		if v, err := (engine.Message{Type: typ, Value: b}).AsInt64(); err == nil {
			return strconv.FormatInt(v, 10), "body"
		}
	case engine.TypeBool:
		if v, err := engine.DecodeBoolWrapper(b); err == nil {
			return strconv.FormatBool(v), "body"
		}
	}
	if len(b) > 0 && json.Valid(b) {
		var buf bytes.Buffer
		_ = json.Compact(&buf, b)
		return buf.String(), "body"
	}
	if utf8.Valid(b) && !bytes.ContainsAny(b, "\x00") {
		return string(b), "text"
	}
	return base64.StdEncoding.EncodeToString(b), "body_b64"
}

// stateAnswer is the admin API's state object.
type stateAnswer struct {
	Address string                                `json:"address"`
	State   map[string]map[string]json.RawMessage `json:"state"`
}

func (c *cli) printState(raw []byte, name string) error {
	var st stateAnswer
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("the state answer is not the expected JSON: %v", err)
	}
	if name != "" {
		v, ok := st.State[name]
		if ok && string(v["present"]) == "false" {
			ok = false
		}
		if !ok {
			var set []string
			for _, k := range sortedKeys(st.State) {
				if string(st.State[k]["present"]) != "false" {
					set = append(set, k)
				}
			}
			return fmt.Errorf("%s has no value %q (set: %s)", st.Address, name, strings.Join(set, ", "))
		}
		if c.json {
			b, _ := json.Marshal(v)
			c.printJSON(b)
			return nil
		}
		fmt.Fprintln(c.stdout, valueText(v))
		return nil
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	if len(st.State) == 0 {
		fmt.Fprintf(c.stdout, "%s has no state\n", st.Address)
		return nil
	}
	var rows [][]string
	for _, k := range sortedKeys(st.State) {
		var typ string
		_ = json.Unmarshal(st.State[k]["type"], &typ)
		rows = append(rows, []string{k, typ, valueText(st.State[k])})
	}
	c.table([]string{"NAME", "TYPE", "VALUE"}, rows)
	return nil
}

func stateGetCommand() *command {
	return &command{
		path: "state get", args: "ADDRESS [NAME]", min: 1, max: 2,
		summary: "print an instance's durable state, or one value",
		help: `Prints the state of the instance at ADDRESS (namespace/type/id) as the store
holds it once everything durable is applied: a table of NAME, TYPE and VALUE,
or with NAME the value alone. Built-in types are shown decoded, JSON as JSON,
other text as text, other bytes as base64:...

Examples:
  shardfn state get rides/driver/d-17
  shardfn state get rides/driver/d-17 status
  shardfn state get example/greeter/bob --json`,
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			b, err := c.getJSON(c.admin, "/state/"+p, nil)
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return c.printState(b, name)
		},
	}
}

func stateSetCommand() *command {
	return &command{
		path: "state set", args: "ADDRESS NAME VALUE", min: 3, max: 3,
		summary: "repair one state value (written through the log)",
		help: `Sets the state value NAME of the instance at ADDRESS. The write goes through
the log like an invocation's: it is queued at the instance behind its
messages, applied on its shard without invoking the function (remote
functions too), durable when this command returns, and ordered with the
instance's other messages. NAME must be a declared state of the function
type (for remote types: one the endpoint registered).

VALUE is read --as text by default: as a person types it, parsed by the
state's declared type (a string as is; long, int, float, double: a number;
bool: true or false; any other type: the text's bytes). --as json takes JSON
(built-in types in their JSON form, other types store the JSON bytes); --as
b64 takes the stored bytes in base64. VALUE "@path" reads a file, "@-"
standard input. Prints the instance's state afterwards.

Examples:
  shardfn state set example/greeter/bob visits 5
  shardfn state set rides/driver/d-17 status idle
  shardfn state set rides/passenger/p-9 rides 3
  shardfn state set rides/driver/d-17 cell MTItNDA= --as b64
  shardfn state set example/greeter/bob visits @visits.txt`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&stateAs, "as", "text", "how to read VALUE: text, json or b64")
			fs.StringVar(&stateType, "type", "", "the value's type, for remote states registered without one")
		},
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			val, err := c.readBody(args[2])
			if err != nil {
				return err
			}
			in := map[string]any{}
			switch stateAs {
			case "text":
				in["text"] = string(val)
			case "json":
				if !json.Valid(val) {
					return usagef("VALUE is not valid JSON (use --as text for plain text)")
				}
				in["value"] = json.RawMessage(val)
			case "b64":
				in["value_b64"] = strings.TrimSpace(string(val))
			default:
				return usagef("--as %q: use text, json or b64", stateAs)
			}
			if stateType != "" {
				in["type"] = stateType
			}
			body, _ := json.Marshal(in)
			b, _, err := c.do("PUT", c.admin, "/state/"+p+"/"+url.PathEscape(args[1]), "application/json", body)
			if err != nil {
				return err
			}
			return c.printState(b, "")
		},
	}
}

func stateDeleteCommand() *command {
	return &command{
		path: "state delete", args: "ADDRESS NAME", min: 2, max: 2,
		summary: "clear one state value (written through the log)",
		help: `Clears the state value NAME of the instance at ADDRESS, through the log like
'state set' (durable and ordered with the instance's messages when this
command returns). Prints the instance's state afterwards.

Examples:
  shardfn state delete rides/driver/d-17 ride
  shardfn state delete example/greeter/bob visits --json`,
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			b, _, err := c.do("DELETE", c.admin, "/state/"+p+"/"+url.PathEscape(args[1]), "", nil)
			if err != nil {
				return err
			}
			return c.printState(b, "")
		},
	}
}

// egressAnswer is an egress read's answer.
type egressAnswer struct {
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
				var ans egressAnswer
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
						var src, typ string
						_ = json.Unmarshal(r["offset"], &off)
						_ = json.Unmarshal(r["source"], &src)
						_ = json.Unmarshal(r["type"], &typ)
						fmt.Fprintf(c.stdout, "%d\t%s\t%s\t%s\n", off, src, typ, oneLine(valueText(r)))
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

// deadLetterAnswer is GET /admin/dead-letters's answer.
type deadLetterAnswer struct {
	Records []map[string]json.RawMessage `json:"records"`
	Next    uint64                       `json:"next"`
}

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
			var ans deadLetterAnswer
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
			raw, _, err := c.do("POST", c.admin, fmt.Sprintf("/admin/dead-letters/replay?from=%d&to=%d", from, to), "", nil)
			if err != nil {
				return err
			}
			if c.json {
				c.printJSON(raw)
				return nil
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
