package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shardfn/shardfn/engine"
)

const (
	contentTypeJSON  = "application/json"
	contentTypeBatch = "application/x-shardfn-batch"
	defaultEgressMax = 100
)

// serveIngress routes one ingress request and records its metrics.
func (s *Server) serveIngress(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	s.metrics.inFlight.Inc()
	var route string
	var code int
	if p := ctx.Request.Header.Protocol(); string(p) != "HTTP/1.1" && string(p) != "HTTP/1.0" {
		// fasthttp takes any HTTP/x.y; only 1.0 and 1.1 are spoken here.
		ctx.SetConnectionClose()
		route, code = routeOther, s.writeError(ctx, http.StatusHTTPVersionNotSupported,
			"HTTP version "+strconv.Quote(clip(p))+" is not supported; use HTTP/1.1 or HTTP/1.0", false)
	} else {
		route, code = s.route(ctx)
	}
	s.metrics.inFlight.Dec()
	s.metrics.observe(route, code, time.Since(start))
}

// routeOf names the route of a request for the metrics, from its path and
// query alone.
func (s *Server) routeOf(ctx *fasthttp.RequestCtx) string {
	path := ctx.URI().PathOriginal()
	switch {
	case string(path) == "/batch":
		return routeBatch
	case len(path) > len("/egress/") && string(path[:len("/egress/")]) == "/egress/":
		return routeEgress
	case ctx.QueryArgs().Has("wait"):
		return routeRequest
	}
	return routeSend
}

func (s *Server) route(ctx *fasthttp.RequestCtx) (route string, code int) {
	path := ctx.URI().PathOriginal()
	e := s.engine()
	switch {
	case string(path) == "/batch":
		if !ctx.IsPost() {
			return routeBatch, s.methodNotAllowed(ctx, "POST")
		}
		if e == nil {
			return routeBatch, s.notReady(ctx)
		}
		return routeBatch, s.handleBatch(ctx, e)
	case len(path) > len("/egress/") && string(path[:len("/egress/")]) == "/egress/":
		if !ctx.IsGet() {
			return routeEgress, s.methodNotAllowed(ctx, "GET")
		}
		if e == nil {
			return routeEgress, s.notReady(ctx)
		}
		return routeEgress, s.handleEgress(ctx, e, path[len("/egress/"):])
	}
	if !ctx.IsPost() && !ctx.IsPut() {
		if ctx.IsGet() && (string(path) == "/" || string(path) == "/health" || string(path) == "/ready" || string(path) == "/metrics") {
			return routeOther, s.writeError(ctx, http.StatusNotFound,
				"this is the ingress listener; health, readiness, metrics and state are on the admin listener (--admin-addr)", false)
		}
		return routeOther, s.methodNotAllowed(ctx, "POST, PUT")
	}
	return s.handleMessage(ctx, e)
}

// handleMessage serves POST|PUT /{ns}/{type}/{id}[?wait=].
func (s *Server) handleMessage(ctx *fasthttp.RequestCtx, e Engine) (string, int) {
	r := s.reqPool.Get().(*IngressRequest)
	defer s.putRequest(r)
	if e == nil {
		return s.routeOf(ctx), s.notReady(ctx) // before reading the body
	}
	// Under overload a big body is refused before it is read (and copied):
	// reading megabytes only to refuse them would take the CPU the shards
	// need to catch up.
	if oc, ok := e.(overloadChecker); ok && ctx.Request.Header.ContentLength() > pooledBodyBytes {
		if err := oc.Overloaded(); err != nil {
			ctx.SetConnectionClose() // the body stays unread
			return s.routeOf(ctx), s.writeErr(ctx, err)
		}
	}
	body, held, err := s.readBody(ctx, &r.bodyBuf)
	if err != nil {
		return s.routeOf(ctx), s.writeErr(ctx, err)
	}
	defer s.body.release(held)
	err = ParseIngress(r, ctx.URI().PathOriginal(), ctx.Request.Header.ContentType(),
		ctx.URI().QueryString(), body, s.opts.MaxBodyBytes)
	route := routeSend
	if r.HasWait {
		route = routeRequest
	}
	if err != nil {
		return route, s.writeErr(ctx, err)
	}
	if r.HasWait && r.Wait > s.opts.MaxWait {
		return route, s.writeError(ctx, http.StatusBadRequest,
			"wait="+r.Wait.String()+" is longer than the server's limit of "+s.opts.MaxWait.String(), false)
	}
	to, msg := s.message(r)
	var opts []engine.SendOption
	key := ctx.Request.Header.Peek("Idempotency-Key")
	if len(key) > 0 {
		opts = append(opts, engine.IdempotencyKey(string(key)))
	}
	if !r.HasWait {
		id, err := e.Send(callCtx(s.baseCtx, ctx), to, msg, opts...) // callCtx: tracing.go
		if err != nil {
			return route, s.writeSendErr(ctx, err, len(key) > 0)
		}
		var a [48]byte
		b := append(a[:0], `{"id":"`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, '"', '}', '\n')
		ctx.SetStatusCode(http.StatusAccepted)
		ctx.SetContentType(contentTypeJSON)
		ctx.SetBody(b)
		return route, http.StatusAccepted
	}
	rctx, cancel := context.WithTimeout(callCtx(s.baseCtx, ctx), r.Wait)
	reply, err := e.Request(rctx, to, msg, opts...)
	cancel()
	if err != nil {
		return route, s.writeSendErr(ctx, err, len(key) > 0)
	}
	ctx.SetStatusCode(http.StatusOK)
	ctx.Response.Header.SetContentType("application/vnd." + reply.Type)
	ctx.SetBody(reply.Value)
	return route, http.StatusOK
}

// overloadChecker is implemented by engines that can tell, without
// reserving anything, that ingress is being refused (engine.Engine).
type overloadChecker interface{ Overloaded() error }

// putRequest returns r to the pool without the request's body: a pooled
// request must not keep a big body (up to --max-body) alive after its
// answer, outside the body budget; only the small-body buffer is reused.
func (s *Server) putRequest(r *IngressRequest) {
	*r = IngressRequest{scratch: r.scratch[:0], bodyBuf: r.bodyBuf[:0]}
	s.reqPool.Put(r)
}

// handleBatch serves POST /batch.
func (s *Server) handleBatch(ctx *fasthttp.RequestCtx, e Engine) int {
	// Under overload a batch is refused before its body is read: parsing
	// thousands of lines only to refuse them would take the CPU the shards
	// need to catch up.
	if oc, ok := e.(overloadChecker); ok {
		if err := oc.Overloaded(); err != nil {
			ctx.SetConnectionClose() // the body stays unread
			return s.writeErr(ctx, err)
		}
	}
	r := s.reqPool.Get().(*IngressRequest)
	defer s.putRequest(r)
	body, held, err := s.readBody(ctx, &r.bodyBuf)
	if err != nil {
		return s.writeErr(ctx, err)
	}
	defer s.body.release(held)
	msgs, err := ParseBatch(ctx.Request.Header.ContentType(), body, s.opts.MaxBatchMessages)
	if err != nil {
		return s.writeErr(ctx, err)
	}
	for i := range msgs {
		// Share the strings of known types across requests.
		msgs[i].To.Namespace = s.names.string(msgs[i].To.Namespace)
		msgs[i].To.Type = s.names.string(msgs[i].To.Type)
		msgs[i].Message.Type = s.names.string(msgs[i].Message.Type)
	}
	if len(msgs) > 0 {
		if err := e.SendBatch(callCtx(s.baseCtx, ctx), msgs); err != nil {
			keyed := true
			for i := range msgs {
				keyed = keyed && msgs[i].Key != ""
			}
			return s.writeSendErr(ctx, err, keyed)
		}
	}
	b := append([]byte(nil), `{"count":`...)
	b = strconv.AppendInt(b, int64(len(msgs)), 10)
	b = append(b, '}', '\n')
	ctx.SetStatusCode(http.StatusAccepted)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(b)
	return http.StatusAccepted
}

// handleEgress serves GET /egress/{name}?from=&max=&wait=.
func (s *Server) handleEgress(ctx *fasthttp.RequestCtx, e Engine, rawName []byte) int {
	nameB, err := appendUnescaped(nil, rawName)
	if err != nil {
		return s.writeErr(ctx, err)
	}
	if len(nameB) > MaxSegmentBytes || !printableUTF8(nameB) || indexByte(nameB, '/') >= 0 {
		return s.writeError(ctx, http.StatusBadRequest, "egress name must be UTF-8 text without '/' or control characters, at most 1024 bytes", false)
	}
	var (
		from uint64
		max  = defaultEgressMax
		wait time.Duration
		perr error
	)
	for k, v := range ctx.QueryArgs().All() {
		if perr != nil {
			break
		}
		switch string(k) {
		case "from":
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				perr = badRequest("from=%q is not an offset; use a non-negative integer (the previous answer's next)", clip(v))
			}
			from = n
		case "max":
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 || n > s.opts.MaxEgressRecords {
				perr = badRequest("max=%q must be an integer from 1 to %d", clip(v), s.opts.MaxEgressRecords)
			}
			max = n
		case "wait":
			d, err := parseDuration(v)
			if err != nil {
				perr = err
			} else if d > s.opts.MaxWait {
				perr = badRequest("wait=%s is longer than the server's limit of %s", d, s.opts.MaxWait)
			}
			wait = d
		default:
			perr = badRequest("unknown query parameter %q; use from, max and wait", clip(k))
		}
	}
	if perr != nil {
		return s.writeErr(ctx, perr)
	}
	recs, err := s.readEgress(e, string(nameB), from, max, wait)
	if errors.Is(err, errEgressBusy) {
		return s.writeErr(ctx, s.egressBusy())
	}
	defer s.egressDone()
	if err != nil && !(errors.Is(err, context.Canceled) && s.pollCtx.Err() != nil) {
		return s.writeErr(ctx, err)
	}
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	// Sized for the answer, and not copied into a pooled buffer, which
	// would keep its size after the answer.
	ctx.Response.SetBodyRaw(appendEgressAnswer(make([]byte, 0, egressAnswerSize(recs)), recs, from))
	return http.StatusOK
}

// errEgressBusy: every one of the MaxEgressReads slots is taken.
var errEgressBusy = errors.New("egress reads busy")

// readEgress reads an egress answer's records under one of the
// MaxEgressReads slots (memory and CPU: a record may be megabytes of JSON
// to check); unless it returns errEgressBusy, the caller holds the slot
// and gives it back with egressDone. A long-poll waits for records
// without a slot and takes one to read them.
func (s *Server) readEgress(e Engine, name string, from uint64, max int, wait time.Duration) ([]engine.EgressRecord, error) {
	if !s.egressSlot() {
		return nil, errEgressBusy
	}
	recs, err := e.ReadEgress(s.pollCtx, name, from, max, s.opts.MaxEgressBytes, 0)
	if err != nil || len(recs) > 0 || wait <= 0 {
		return recs, err
	}
	s.egressDone()
	recs, err = e.ReadEgress(s.pollCtx, name, from, 1, 1, wait)
	if !s.egressSlot() {
		return nil, errEgressBusy
	}
	if err == nil && len(recs) > 0 { // something arrived: read it under the slot
		recs, err = e.ReadEgress(s.pollCtx, name, from, max, s.opts.MaxEgressBytes, 0)
	}
	return recs, err
}

// egressAnswerSize bounds the size of appendEgressAnswer's output for
// recs (base64 bodies; JSON bodies are no larger).
func egressAnswerSize(recs []engine.EgressRecord) int {
	size := 256
	for _, r := range recs {
		size += 64 + 2*len(r.Message.Type) + 2*len(r.Source.Namespace) + len(r.Source.Type) + len(r.Source.ID) + (len(r.Message.Value)+2)/3*4
	}
	return size
}

// appendEgressAnswer appends the answer of an egress read from offset
// from: {"records":[{"offset":…,"type":…,<body>,"source":…},…],"next":…}
// and a newline; next is the offset after the last record (from when there
// is none).
func appendEgressAnswer(b []byte, recs []engine.EgressRecord, from uint64) []byte {
	next := from
	b = append(b, `{"records":[`...)
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"offset":`...)
		b = strconv.AppendUint(b, r.Offset, 10)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, r.Message.Type)
		b = append(b, ',')
		b = appendEgressBody(b, r.Message.Type, r.Message.Value)
		b = append(b, `,"source":`...)
		b = appendJSONString(b, r.Source.String())
		b = append(b, '}')
		next = r.Offset + 1
	}
	b = append(b, `],"next":`...)
	b = strconv.AppendUint(b, next, 10)
	return append(b, '}', '\n')
}

// egressSlot takes one of the MaxEgressReads slots, if one is free.
func (s *Server) egressSlot() bool {
	select {
	case s.egressSlots <- struct{}{}:
		return true
	default:
		s.metrics.egressBusy.Inc()
		return false
	}
}

func (s *Server) egressDone() { <-s.egressSlots }

func (s *Server) egressBusy() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Retry: true,
		Msg: "the server is building " + strconv.Itoa(s.opts.MaxEgressReads) + " egress answers, its limit (--max-egress-reads); retry after a second"}
}

// appendEgressBody appends "body":<JSON> (a built-in type decoded, e.g. a
// string as a JSON string, or bytes that are JSON) or "body_b64":"...".
func appendEgressBody(b []byte, typ string, v []byte) []byte {
	if builtinDecodable(typ, v) || (len(v) > 0 && jsonValid(v)) {
		return appendValue(b, "body", typ, v)
	}
	b = append(b, `"body_b64":"`...)
	b = appendBase64(b, v)
	return append(b, '"')
}

// writeSendErr answers the error of a send: like writeErr, except that a
// send whose outcome is in doubt may be retried (Retry-After) when it carried
// an idempotency key, since the retry cannot apply it twice.
func (s *Server) writeSendErr(ctx *fasthttp.RequestCtx, err error, keyed bool) int {
	status, msg, retry := engineError(err)
	if keyed && errors.Is(err, engine.ErrInDoubt) {
		retry = true
	}
	return s.writeError(ctx, status, msg, retry)
}

// writeErr answers err (a request *Error or an engine error).
func (s *Server) writeErr(ctx *fasthttp.RequestCtx, err error) int {
	status, msg, retry := engineError(err)
	if status == http.StatusInternalServerError {
		s.opts.Logger.Error("ingress request failed", "path", string(ctx.Path()), "err", err)
	}
	return s.writeError(ctx, status, msg, retry)
}

// writeError answers status with {"error":msg}.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, status int, msg string, retry bool) int {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	if retry {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	ctx.SetBody(appendErrorBody(make([]byte, 0, 64+len(msg)), msg))
	return status
}

func (s *Server) notReady(ctx *fasthttp.RequestCtx) int {
	return s.writeError(ctx, http.StatusServiceUnavailable, "engine is recovering; retry after a second", true)
}

func (s *Server) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) int {
	st := s.writeError(ctx, http.StatusMethodNotAllowed, "method "+string(ctx.Method())+" is not allowed here; use "+allow, false)
	ctx.Response.Header.Set("Allow", allow)
	return st
}

// ingressError answers requests fasthttp could not read (fasthttp's
// ErrorHandler). The answer names the kind of problem only: it never
// quotes the request, whose bytes are the client's (and may be garbage).
func (s *Server) ingressError(ctx *fasthttp.RequestCtx, err error) {
	status, msg := http.StatusBadRequest, "cannot read the request: malformed request line, headers or body; send HTTP/1.1 (see the ingress reference)"
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status = http.StatusRequestEntityTooLarge
		msg = "body is over the limit of " + strconv.Itoa(s.opts.MaxBodyBytes) + " bytes; send a smaller message or batch (the server's --max-body)"
	case errors.As(err, &small):
		status = http.StatusRequestHeaderFieldsTooLarge
		msg = "request line and headers are over the limit of " + strconv.Itoa(s.opts.MaxHeaderBytes) + " bytes"
	default:
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			status, msg = http.StatusRequestTimeout, "the request was not read within the server's read timeout"
		}
	}
	s.writeError(ctx, status, msg, false)
	s.metrics.observe(routeOther, status, 0)
}
