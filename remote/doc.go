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
// m.Warnings lists skipped documents (Kafka/Kinesis kinds) for the server
// to log.
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
// {endpoint, reason} and retried when it does not parse as FromFunction;
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
// # Retries and dead letters
//
// One batch gets CallTimeout in all. Each attempt gets WriteTimeout +
// ReadTimeout (ReadTimeout also bounds the wait for response headers) and
// ConnectTimeout to dial. A failed attempt is retried when it may heal:
// network errors and timeouts, HTTP 408, 429 and 5xx, and every rejected
// answer (a server under load may cut a body short). Other statuses (400,
// 404, ...) fail at once. Backoff starts at RetryBackoff, doubles per retry up
// to MaxRetryBackoff, and each wait is jittered uniformly in [d/2, d]. After
// MaxRetries retries, a non-retryable failure, or when the next wait would
// pass the call deadline, the batch fails for good: the result carries only
// Err, and the engine sends the batch's messages to the "dead-letters"
// egress. StateFun instead restarts the whole job, which is how one poison
// message stalls a pipeline there.
//
// # Limits
//
// MaxConcurrency bounds the requests in flight per endpoint pattern, and
// Options.Workers bounds them over all endpoints (the ants pool size). Calls
// beyond either wait in a per-function FIFO, served round-robin over
// functions; they are never dropped. MaxRequestBytes is a per-request byte
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
// spec.shardfn: maxRetries (0..1000, default 8), retryBackoff (10ms),
// maxRetryBackoff (1s), maxConcurrency (256), maxRequestBytes (>= 1024,
// default 8 MiB), maxResponseBytes (32 MiB). Documents of Kafka and Kinesis
// kinds are skipped with a warning in Module.Warnings so a StateFun module
// file loads unchanged; any other kind, the legacy 3.0 format, an unknown
// field, TLS client settings or a bad value is an error naming the document
// and the field (ErrModule).
//
// # Concurrency
//
// Client and Function are safe for concurrent use. InvokeBatch never blocks
// on I/O: it queues the call and, while the pool has room, hands it to a
// pool goroutine; done is called exactly once, from a pool goroutine (or at
// once with ErrClosed after Close). A RemoteBatch is only read, never
// modified.
package remote
