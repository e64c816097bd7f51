// Command shardfn is the command-line client of a running shardfn server:
// it sends messages and requests through the ingress listener, and reads
// and repairs state, tails egress logs, lists and replays dead letters and
// shows the engine's status through the admin listener.
//
//	shardfn send rides/driver/d-1 rides/location '{"cell":"1-1"}'
//	shardfn request rides/passenger/p-1 rides/request '{"cell":"1-1"}'
//	shardfn state get rides/driver/d-1
//	shardfn state set example/greeter/bob visits 5
//	shardfn egress tail ride-events --follow
//	shardfn dead-letters list
//	shardfn dead-letters replay 3..7
//	shardfn status
//
// Addresses of the listeners come from --ingress and --admin, or the
// environment variables SHARDFN_INGRESS and SHARDFN_ADMIN (defaults
// 127.0.0.1:8080 and 127.0.0.1:9090). Every command prints a table for
// people, or JSON with --json; any error exits non-zero with a one-line
// reason on stderr. `shardfn help` lists the commands, `shardfn CMD --help`
// explains one with examples.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
