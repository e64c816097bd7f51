// Package httpapi is shardfn's HTTP interface: the ingress listener (served
// with fasthttp) that turns requests into engine messages, and the admin
// listener (served with net/http) for health, readiness, Prometheus metrics,
// pprof and state inspection.
//
// # Ingress routes
//
//	POST|PUT /{namespace}/{type}/{id}            one message, 202 {"id":"<n>"} once durable
//	POST|PUT /{namespace}/{type}/{id}?wait=5s    request-reply: 200 with the reply, or 504
//	POST     /batch                              many messages, 202 {"count":N} once all are durable
//	GET      /egress/{name}?from=0&max=100&wait=5s  long-poll read of an egress log
//
// A message's type is taken from its Content-Type, "application/vnd.<type
// name>" (StateFun's playground form), e.g. "application/vnd.rides/location".
// Parameters after ';' are ignored. A request without Content-Type, or with
// text/plain or application/x-www-form-urlencoded (what curl -d sends), is
// an io.statefun.types/string message, as in the playground. A function type
// may restrict the message types it takes from ingress
// (engine.FunctionSpec.IngressTypes, NoIngress): others are answered 400
// naming the accepted ones.
//
// String bodies: for the type io.statefun.types/string (named or defaulted)
// the body is taken as the text itself (raw UTF-8, e.g. from curl -d) and
// wrapped into StateFun's StringWrapper encoding, so functions read it with
// the typed string accessors. Every other type's body is passed through as
// is. A client that already holds an encoded StringWrapper sends it with
// another type name or decodes it first.
//
// Batch bodies come in two forms. Newline-delimited JSON (any Content-Type
// other than the binary one): one object per line,
//
//	{"to":"ns/type/id","type":"rides/location","body":{"cell":"1-2"}}
//	{"to":"ns/type/id","type":"shardfn/bytes","body_b64":"AAEC"}
//
// with exactly these member names, each at most once ("TO" or an unknown
// member is an error). "body" is any JSON value whose bytes become the
// message verbatim (for io.statefun.types/string it must be a JSON string,
// whose text is wrapped as above) and "body_b64" is standard base64 for
// binary bodies; blank lines are skipped. The binary form, Content-Type
// application/x-shardfn-batch, is a sequence of records, each
//
//	uvarint(len(address)) address  uvarint(len(type)) type  uvarint(len(body)) body
//
// with address "ns/type/id" (id may contain '/') and uvarint as in
// encoding/binary. A batch is answered only once every message is durable;
// on an error some of its messages may have been accepted (each at most
// once). Batch errors name the message at fault as "message N", N counting
// the batch's messages from 0 in the order sent (blank lines are not
// messages), followed for JSON by "(line L)", L counting lines from 1.
//
// Egress answers {"records":[{"offset":N,"type":"...","body":<JSON>,
// "source":"ns/type/id"}],"next":N}: "body" holds the record's bytes when
// they are JSON, or the decoded value for the built-in types
// io.statefun.types/string, long, int and bool; otherwise "body_b64" holds
// them in base64. Only durable records are returned. An answer holds at
// most Options.MaxEgressBytes of records (each counted as its source, type
// and body; the JSON may be a third larger for base64 bodies) and at most
// max= records; a single larger record is answered alone, so following
// "next" always progresses.
//
// Errors are JSON {"error":"..."}. The answer to a request that cannot be
// read (a malformed request line, headers or body) never quotes it; other
// errors may quote the part at fault (a segment, a header value, a query
// parameter), clipped to 64 bytes: 400
// malformed request, address, content type, query or body, or a message
// type the function does not take from ingress; 404 unknown function type
// or route; 405 wrong method; 408 request not read in time; 413 body over
// Options.MaxBodyBytes (from Content-Length, before reading it, and instead
// of 100 Continue); 431 headers too large; 503 with Retry-After: 1
// overloaded, request bodies over Options.MaxBodyBytesInFlight (from the
// headers, before reading the body), not yet ready, or shutting down; 503
// without it failed-stop; 504 no reply before ?wait; 505 an HTTP version
// other than 1.1 and 1.0.
//
// Connections: at most Options.MaxConns open and Options.MaxConnsPerClient
// from one IP address (defaults below the file limit, DefaultConnLimits);
// one more is answered 503 with Retry-After: 1 and closed. Running out of
// file descriptors while accepting is counted, logged and retried after a
// back-off; the server does not stop.
//
// # Admin routes
//
//	GET /health   200 while the process is alive (also while recovering); 503 with the cause after a failed stop, 503 {"status":"draining"} from the start of a shutdown
//	GET /ready    200 once the engine has recovered and until shutdown starts or the engine closes, else 503
//	GET /metrics  Prometheus text format: engine, Go, process and ingress metrics
//	GET /debug/pprof/...  net/http/pprof
//	GET /state/{namespace}/{type}/{id}  the instance's state as JSON, every declared value ("present":false when unset); 404 for an unregistered type (Options.DisableStateAPI turns it off)
//	PUT|DELETE /state/{namespace}/{type}/{id}/{name}, POST /state/{namespace}/{type}/{id}  state repair through the log
//	GET /admin/status, /admin/functions, /admin/instances/{namespace}/{type}/{id}, /admin/dead-letters, /admin/egress/{name}
//	POST /admin/dead-letters/replay?from=&to=
//	GET /ui/      the web console (package console); GET / redirects to it
//
// The operator routes (/admin/..., state writes) need an engine that also
// implements OpsEngine; cmd/engine/README.md documents their JSON.
//
// What it relies on: an Engine (normally *engine.Engine) handed over with
// SetEngine once it has opened; until then ingress answers 503 and /health
// reports "recovering". The engine is responsible for durability; this
// package acknowledges only what the engine's calls acknowledged.
//
// Concurrency: a Server is safe for concurrent use; ParseIngress is a pure
// function of its arguments and the IngressRequest it fills, which must not
// be shared between goroutines.
package httpapi
