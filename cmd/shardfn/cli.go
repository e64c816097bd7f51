package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the command failed (server answered an error, unreachable, bad data)
	exitUsage = 2 // the command line is wrong
)

// cli is one invocation of the client.
type cli struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer

	ingress, admin string
	json           bool
	timeout        time.Duration
	http           *http.Client
}

// command is one leaf command.
type command struct {
	path     string // "state get"
	args     string // "ADDRESS [NAME]"
	summary  string
	help     string // description and examples
	min, max int    // positional arguments (max -1: any)
	flags    func(fs *flag.FlagSet)
	run      func(c *cli, args []string) error
}

// usageError is a wrong command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

var commands []*command

func init() {
	commands = []*command{
		sendCommand(), requestCommand(),
		stateGetCommand(), stateSetCommand(), stateDeleteCommand(),
		egressTailCommand(),
		deadLettersListCommand(), deadLettersReplayCommand(),
		statusCommand(),
	}
}

const globalHelp = `Flags of every command (anywhere on the line):
  --ingress ADDR   the ingress listener (default $SHARDFN_INGRESS, else 127.0.0.1:8080)
  --admin ADDR     the admin listener (default $SHARDFN_ADMIN, else 127.0.0.1:9090)
  --json           print JSON for scripts instead of tables
  --timeout D      give up after D (default 30s; 0: no limit)
  -h, --help       this help`

func topUsage(w io.Writer) {
	fmt.Fprintf(w, "shardfn is the command-line client of a running shardfn server.\n\nUsage: shardfn COMMAND [ARGS] [FLAGS]\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.path, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n\nRun 'shardfn COMMAND --help' for a command's details and examples.\n", globalHelp)
}

func (cmd *command) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: shardfn %s %s\n\n%s\n", cmd.path, cmd.args, strings.TrimSpace(cmd.help))
	own := false
	fs.VisitAll(func(f *flag.Flag) {
		if !isGlobalFlag(f.Name) {
			own = true
		}
	})
	if own {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			if isGlobalFlag(f.Name) {
				return
			}
			name, u := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s %s\n      %s", f.Name, name, u)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	fmt.Fprintf(w, "\n%s\n", globalHelp)
}

func isGlobalFlag(n string) bool {
	switch n {
	case "ingress", "admin", "json", "timeout", "h", "help":
		return true
	}
	return false
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		topUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		if len(args) > 1 {
			return run(ctx, append(args[1:], "--help"), stdin, stdout, stderr)
		}
		topUsage(stdout)
		return exitOK
	}
	// Find the longest command path that prefixes args.
	var cmd *command
	var rest []string
	for _, c := range commands {
		words := strings.Fields(c.path)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.path {
			if cmd == nil || len(words) > len(strings.Fields(cmd.path)) {
				cmd, rest = c, args[len(words):]
			}
		}
	}
	if cmd == nil {
		// A group without its subcommand ("shardfn state"), or a typo.
		var subs []string
		for _, c := range commands {
			if strings.HasPrefix(c.path, args[0]+" ") {
				subs = append(subs, c.path)
			}
		}
		if len(subs) > 0 {
			if len(args) > 1 && (args[1] == "-h" || args[1] == "--help") {
				fmt.Fprintf(stdout, "Commands of shardfn %s:\n", args[0])
				for _, c := range commands {
					if strings.HasPrefix(c.path, args[0]+" ") {
						fmt.Fprintf(stdout, "  shardfn %s %s\n      %s\n", c.path, c.args, c.summary)
					}
				}
				return exitOK
			}
			fmt.Fprintf(stderr, "shardfn: %q needs a subcommand: %s (see shardfn %s --help)\n", args[0], strings.Join(subs, ", "), args[0])
			return exitUsage
		}
		fmt.Fprintf(stderr, "shardfn: unknown command %q (see shardfn help)\n", args[0])
		return exitUsage
	}
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("shardfn "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.ingress, "ingress", envOr("SHARDFN_INGRESS", "127.0.0.1:8080"), "")
	fs.StringVar(&c.admin, "admin", envOr("SHARDFN_ADMIN", "127.0.0.1:9090"), "")
	fs.BoolVar(&c.json, "json", false, "")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	pos, err := parseInterleaved(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		cmd.usage(stdout, fs)
		return exitOK
	}
	if err == nil && (len(pos) < cmd.min || (cmd.max >= 0 && len(pos) > cmd.max)) {
		err = fmt.Errorf("want %s, have %d argument(s)", cmd.args, len(pos))
	}
	if err != nil {
		fmt.Fprintf(stderr, "shardfn %s: %v (see shardfn %s --help)\n", cmd.path, err, cmd.path)
		return exitUsage
	}
	if c.ingress, err = baseURL(c.ingress); err == nil {
		c.admin, err = baseURL(c.admin)
	}
	if err != nil {
		fmt.Fprintf(stderr, "shardfn %s: %v\n", cmd.path, err)
		return exitUsage
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if cmd.path == "egress tail" && egressFollow && !timeoutSet {
		c.timeout = 0 // following is open-ended unless --timeout says otherwise
	}
	c.http = &http.Client{}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		c.ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	if err := cmd.run(c, pos); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "shardfn %s: %v (see shardfn %s --help)\n", cmd.path, err, cmd.path)
			return exitUsage
		}
		fmt.Fprintf(stderr, "shardfn %s: %s\n", cmd.path, oneLine(err.Error()))
		return exitError
	}
	return exitOK
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parseInterleaved parses flags anywhere among the positional arguments;
// everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// baseURL turns "host:port" or a URL into "http://host:port" without a
// trailing slash.
func baseURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("listener address %q: use host:port or http://host:port", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", " ")
}

// apiError is an error answer of the server.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status) }

// do sends one request and returns the answer's body for a 2xx status; an
// error answer becomes an *apiError with the server's reason.
func (c *cli) do(method, base, path string, contentType string, body []byte) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(c.ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		which, flagName, env := "admin", "--admin", "SHARDFN_ADMIN"
		if base == c.ingress {
			which, flagName, env = "ingress", "--ingress", "SHARDFN_INGRESS"
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("no answer from the %s listener at %s within --timeout %s", which, base, c.timeout)
		}
		if c.ctx.Err() != nil {
			return nil, nil, c.ctx.Err()
		}
		return nil, nil, fmt.Errorf("cannot reach the %s listener at %s (is the server running? set %s or %s): %v", which, base, flagName, env, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer of %s %s: %v", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return nil, resp.Header, &apiError{status: resp.StatusCode, msg: msg}
	}
	return b, resp.Header, nil
}

// call makes a request like do; with --json it also prints the answer,
// and shown says so (the command has nothing more to print).
func (c *cli) call(method, base, path, contentType string, body []byte) (raw []byte, shown bool, err error) {
	raw, _, err = c.do(method, base, path, contentType, body)
	if err != nil || !c.json {
		return raw, false, err
	}
	c.printJSON(raw)
	return raw, true, nil
}

// getJSON GETs an admin path and decodes its JSON answer into v (if not
// nil); it returns the raw answer too.
func (c *cli) getJSON(base, path string, v any) ([]byte, error) {
	b, _, err := c.do("GET", base, path, "", nil)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return b, fmt.Errorf("the answer of GET %s is not the expected JSON: %v", path, err)
		}
	}
	return b, nil
}

// addressPath checks "ns/type/id" and returns it as an escaped path.
func addressPath(s string) (string, error) {
	ns, rest, ok1 := strings.Cut(s, "/")
	typ, id, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || typ == "" || id == "" {
		return "", usagef("address %q: want namespace/type/id, e.g. rides/driver/d-1", s)
	}
	return url.PathEscape(ns) + "/" + url.PathEscape(typ) + "/" + url.PathEscape(id), nil
}

// table prints rows under a header, aligned.
func (c *cli) table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			r[i] = oneLine(r[i])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// printJSON prints raw JSON as one line.
func (c *cli) printJSON(b []byte) {
	var buf bytes.Buffer
	if json.Compact(&buf, b) == nil {
		b = buf.Bytes()
	}
	c.stdout.Write(append(bytes.TrimSpace(b), '\n'))
}

func (c *cli) printValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.printJSON(b)
	return nil
}

// valueText renders a value object of the admin API ({"value":..} or
// {"text":..} or {"value_b64":..} or {"body":..}...) for a table cell.
func valueText(m map[string]json.RawMessage) string {
	for _, k := range []string{"value", "body"} {
		if raw, ok := m[k]; ok {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				return s
			}
			return string(raw)
		}
	}
	if raw, ok := m["text"]; ok {
		var s string
		_ = json.Unmarshal(raw, &s)
		return s
	}
	for _, k := range []string{"value_b64", "body_b64"} {
		if raw, ok := m[k]; ok {
			var s string
			_ = json.Unmarshal(raw, &s)
			return "base64:" + s
		}
	}
	if raw, ok := m["present"]; ok && string(raw) == "false" {
		return "(unset)"
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
