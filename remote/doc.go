// Package remote runs shardfn function types that live behind an HTTP
// endpoint and speak Apache Flink StateFun's remote request-reply protocol,
// so functions written with the official StateFun SDKs (Java, Python, Go,
// JavaScript) run against shardfn unchanged. It implements
// engine.RemoteFunction; it imports engine, never the other way round.
//
// # Use
//
//	m, err := remote.LoadModule("module.yaml")   // StateFun module.yaml
//	c, err := remote.NewClient(remote.Options{})  // pool, connections, metrics
//	specs, err := m.Specs(c)                      // one engine.FunctionSpec per endpoint pattern
//	e, err := engine.Open(opts, append(embedded, specs...)...)
//	registry.MustRegister(c.Collectors()...)
//	...
//	e.Close(); c.Close()                          // engine first: it drains its remote calls
//
// m.Warnings lists skipped documents (Kinesis kinds) for the server to
// log; m.Components holds the Kafka documents for package kafka.
//
// # Protocol mapping (io.statefun.sdk.reqreply, see remote/proto)
//
// One engine.RemoteBatch becomes one POST of a ToFunction (Content-Type and
// Accept application/octet-stream) to urlPathTemplate with {function.name}
// replaced by the target's type name:
//
//	ToFunction.invocation (100) = InvocationBatchRequest{
//	  target      = RemoteBatch.Target
//	  state       = every StateValue: state_name = Spec.Name; state_value =
//	                TypedValue{typename = Spec.Type ("" -> io.statefun.types/unset),
//	                has_value = true, value} when Present, unset otherwise
//	  invocations = RemoteBatch.Invocations in order: caller when HasCaller,
//	                argument = TypedValue{Message.Type, has_value = true, Message.Value}}
//
// The FromFunction answer becomes one engine.RemoteResult:
//
//	invocation_result (100):
//	  state_mutations      -> Mutations (DELETE -> Delete; MODIFY -> Value)
//	  outgoing_messages    -> Sends (target, argument)
//	  delayed_invocations  -> Delayed (delay_in_ms, target, argument, optional
//	                          cancellation_token -> Token); with
//	                          is_cancellation_request (10): token (11) -> Cancels
//	  outgoing_egresses    -> Egress{Name: "egress_namespace/egress_type"};
//	                          namespace "shardfn" names a bare engine egress:
//	                          shardfn/ride-events -> "ride-events"
//	incomplete_invocation_context (101):
//	  missing_values       -> MissingSpecs (type_typename, "" -> TypeUnset;
//	                          NONE/AFTER_WRITE/AFTER_INVOKE -> ExpireNever/
//	                          ExpireAfterWrite/ExpireAfterInvoke, expire_after_millis)
//	neither set (or an empty body) -> an empty RemoteResult: no effects
//
// Reply convention (StateFun has no reply): a message the function sends to
// the address shardfn/reply/<any id> (ReplyNamespace, ReplyType) is the reply
// to the request that started the chain the batch belongs to. The engine
// never mixes messages of two request chains in one batch, so the id part is
// free (rides.js uses "chain"). The engine implements this side; this
// package passes such sends through as ordinary Sends.
//
// # Validation
//
// An answer is rejected, counted in shardfn_remote_bad_responses_total
// {endpoint, reason}, and its batch dead-lettered at once (asking again
// gets the same answer) when it does not parse as FromFunction;
// mutates a state name that is not among the batch's specs; MODIFYs without a
// value or with a typename other than the registered type (unless that is
// unset); sends, or delays a message, without a complete target address or an
// argument; cancels with an empty token; has a negative delay; names an egress
// without namespace or type; lists an invalid state spec (name not
// [A-Za-z_][A-Za-z0-9_]*, negative or zero-with-mode expiry, unknown mode); is
// larger than MaxResponseBytes (the read is capped); or carries a Content-Type
// other than application/octet-stream (or a protobuf type). Decoding never
// panics (FuzzDecodeResponse).
//
// # Retries, stuck endpoints and dead letters
//
// StateFun never skips a message because its function is unavailable: the
// job fails and restarts from a checkpoint until the function answers.
// shardfn keeps the same promise without a restart: a failure that may heal
// is retried for as long as it takes. Those are network failures (connection
// refused, a dial or attempt timeout, a connection reset before or while the
// answer is read) and HTTP 408, 429 and 5xx. Backoff starts at RetryBackoff,
// doubles per retry up to MaxRetryBackoff, and each wait is jittered
// uniformly in [d/2, d]. While a batch is retried the engine starts no other
// batch for its address, so that address's later messages wait, in order;
// other addresses, of this endpoint and of others, keep running. A waiting
// batch holds no pool worker (a timer queues it again), and an endpoint
// with 3 failed attempts in a row and no success gets one attempt at a time
// (a probe) until one succeeds; then the batches waiting for it are queued
// at once. So a dead endpoint holds at most one worker of the pool and is
// not hammered, and the attempts that fail fast cost next to nothing.
//
// A failure that cannot heal dead-letters the batch at once: a 4xx other
// than 408 and 429 (and any other status outside 2xx), an answer that is not
// a valid FromFunction, breaks the protocol (see Validation), is larger than
// MaxResponseBytes or has another Content-Type. The result then carries only
// Err, and the engine sends the batch's messages to the "dead-letters"
// egress. So does a batch still failing GiveUpAfter after its first failed
// attempt began (module.yaml spec.shardfn.giveUpAfter; default never), or
// after MaxRetries retries (spec.shardfn.maxRetries; default no bound);
// their Err wraps ErrGaveUp.
//
// CallTimeout bounds one attempt, as StateFun's call timeout bounds one call
// of its HTTP client; it does not bound a batch (StateFun fails the job when
// it passes; shardfn retries). An attempt also ends after WriteTimeout +
// ReadTimeout when that is shorter; ReadTimeout also bounds the wait for
// response headers, and ConnectTimeout dialing.
//
// An endpoint is stuck while a batch that has been failing for
// Options.StuckAfter (default 1s) or longer is still retried. Client.Health
// and Client.Stuck report it (since when, consecutive failed attempts, the
// last error, retrying batches), cmd/engine's /health answers "degraded"
// naming it, one line is logged when it becomes stuck and one when it stops
// being stuck (never one per attempt), and the metrics are
// shardfn_remote_stuck{endpoint} (1 while stuck),
// shardfn_remote_retrying_batches{endpoint} and
// shardfn_remote_failures_total{endpoint, reason} (connect, timeout,
// network, http_408, http_429, http_5xx: retried; http_4xx, bad_response:
// dead-lettered).
//
// Closing. When the engine closes (RemoteBatch.Closing) the batches of that
// engine that are failing are given up at once, not retried: those waiting
// for a retry, those whose attempt follows a failure (the attempt is
// cancelled), and those queued for an endpoint that is failing. Their
// result's Err wraps engine.ErrAbandoned, and the engine neither applies nor
// dead-letters them: messages sent by functions and timers stay in flight in
// the log and are delivered again, in order, after the next Open; ingress
// messages get an error wrapping engine.ErrClosed ("not processed; send it
// again"). Calls to healthy endpoints finish normally. Client.Close ends
// every unfinished call with ErrClosed, which wraps engine.ErrAbandoned too,
// so closing the client first loses nothing either. So Engine.Close is
// bounded by one attempt even while an endpoint is down.
//
// # Limits
//
// MaxConcurrency bounds the requests in flight per endpoint pattern (one
// while the endpoint is down), and Options.Workers bounds them over all
// endpoints (the ants pool size). Calls beyond either wait in a
// per-function FIFO, served round-robin over functions; they are never
// dropped. Keep MaxConcurrency below Workers when several endpoints share a
// client: an endpoint whose attempts hang until they time out holds up to
// MaxConcurrency workers until it is seen down (three failed attempts). MaxRequestBytes is a per-request byte
// budget: a batch whose encoding is larger is split into sequential
// sub-requests of consecutive invocations that each fit (a single invocation
// larger than the budget goes alone). Each sub-request carries the state as
// the previous sub-requests' mutations left it, so the function sees what one
// big request would have shown it. The sub-results are merged (last mutation
// per state wins; sends, delays, cancellations and egress concatenated in
// order) and returned as ONE RemoteResult, which the engine applies as one
// atomic effect record: nothing of a split batch is applied unless every
// sub-request succeeded, a failed sub-request dead-letters the whole batch,
// and an incomplete-context answer to any sub-request discards the earlier
// sub-results and asks for the whole batch again. MaxResponseBytes caps one
// response body. MaxNumBatchRequests is parsed for the engine; this package
// does not enforce it.
//
// # module.yaml
//
// Multi-document, each {kind, spec}. Kinds io.statefun.endpoints.v2/http and
// v1/http are read: functions (ns/name or ns/*, a string or a list),
// urlPathTemplate (http, https, http+unix, https+unix; the socket path ends
// in .sock), maxNumBatchRequests, transport{type okhttp|async, timeouts{call,
// connect, read, write}; async also call, connect, pool_ttl (ignored),
// pool_size (-> MaxConcurrency), payload_max_bytes (-> MaxResponseBytes)};
// v1 puts timeouts under spec. Durations are Go durations, Flink-style
// ("2min", "10 s") or bare milliseconds. shardfn's own settings go under
// spec.shardfn: giveUpAfter (a positive duration; absent: never give up),
// maxRetries (1..1000; absent: no bound; 0 is refused, it used to mean no
// retries), retryBackoff (10ms), maxRetryBackoff (1s), maxConcurrency
// (256), maxRequestBytes (>= 1024, default 8 MiB), maxResponseBytes
// (32 MiB). For example:
//
//	kind: io.statefun.endpoints.v2/http
//	spec:
//	  functions: shop/*
//	  urlPathTemplate: http://shop:8000/{function.name}
//	  shardfn:
//	    giveUpAfter: 30min   # dead-letter a batch still failing after 30 minutes
//
// Documents of Kafka kinds are handed over in Module.Components (package
// kafka parses them); Kinesis kinds are skipped with a warning in
// Module.Warnings so a StateFun module file loads unchanged; any other kind,
// the legacy 3.0 format, an unknown field, TLS client settings or a bad value
// is an error naming the document and the field (ErrModule).
//
// # Concurrency
//
// Client and Function are safe for concurrent use. InvokeBatch never blocks
// on I/O: it queues the call and, while the pool has room, hands it to a
// pool goroutine; done is called exactly once, from a pool goroutine, a
// retry timer or the goroutine that ends a closing engine's calls (or at
// once with ErrClosed after Close). A RemoteBatch is only read, never
// modified.
package remote
