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

// message reads the arguments ADDRESS TYPE BODY of a message: the
// address as an escaped path, the Content-Type of the type, and the body.
func (c *cli) message(args []string) (path, ct string, body []byte, err error) {
	if path, err = addressPath(args[0]); err != nil {
		return "", "", nil, err
	}
	if ct, err = contentType(args[1]); err != nil {
		return "", "", nil, err
	}
	body, err = c.readBody(args[2])
	return path, ct, body, err
}

// contentType is the Content-Type of the message type typ.
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
			p, ct, body, err := c.message(args)
			if err != nil {
				return err
			}
			b, shown, err := c.call("POST", c.ingress, "/"+p, ct, body)
			if err != nil || shown {
				return err
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
			if requestWait <= 0 {
				return usagef("--wait must be positive")
			}
			p, ct, body, err := c.message(args)
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
