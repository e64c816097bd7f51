package httpapi

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// bodyBudget counts the bytes of request bodies the ingress holds at once,
// across all connections (Options.MaxBodyBytesInFlight). The ingress reads
// a body only after reserving its size (its Content-Length, or a chunked
// body's buffer as it grows) and gives the reservation back once the
// request is answered.
type bodyBudget struct {
	held atomic.Int64
	max  int64
}

func (b *bodyBudget) reserve(n int64) bool {
	for {
		h := b.held.Load()
		if h+n > b.max {
			return false
		}
		if b.held.CompareAndSwap(h, h+n) {
			return true
		}
	}
}

func (b *bodyBudget) release(n int64) {
	if n != 0 {
		b.held.Add(-n)
	}
}

// fits reports whether n more bytes would fit now (no reservation).
func (b *bodyBudget) fits(n int64) bool { return b.held.Load()+n <= b.max }

// pooledBodyBytes is the largest body read into the pooled request buffer;
// larger ones get a buffer of their own, dropped after the request, so that
// a burst of big bodies leaves no memory behind.
const pooledBodyBytes = 16 << 10

func (s *Server) bodyTooLarge(n int) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg: "body of " + strconv.Itoa(n) + " bytes is over the limit of " + strconv.Itoa(s.opts.MaxBodyBytes) + " bytes; send a smaller message or batch (the server's --max-body)"}
}

func (s *Server) bodyBusy() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Retry: true,
		Msg: "the server holds " + strconv.FormatInt(s.body.max, 10) + " bytes of request bodies, its limit (--max-body-in-flight); retry after a second"}
}

// readBody reads the request body under the body budget and returns it
// with the bytes reserved, which the caller releases once the request is
// answered. The server streams request bodies (fasthttp's
// StreamRequestBody), so nothing beyond a small prefetch is read before
// this: a body over MaxBodyBytes is answered 413 and one that does not fit
// the budget 503 with Retry-After, both without reading it (the connection
// is then closed). scratch is a reusable buffer for small bodies.
func (s *Server) readBody(ctx *fasthttp.RequestCtx, scratch *[]byte) ([]byte, int64, error) {
	limit := s.opts.MaxBodyBytes
	cl := ctx.Request.Header.ContentLength()
	if cl > limit {
		ctx.SetConnectionClose()
		return nil, 0, s.bodyTooLarge(cl)
	}
	stream := ctx.RequestBodyStream()
	if stream == nil { // read already (handler called directly, as in tests)
		body := ctx.PostBody()
		if len(body) > limit {
			return nil, 0, s.bodyTooLarge(len(body))
		}
		if !s.body.reserve(int64(len(body))) {
			return nil, 0, s.bodyBusy()
		}
		return body, int64(len(body)), nil
	}
	if cl >= 0 {
		if !s.body.reserve(int64(cl)) {
			ctx.SetConnectionClose()
			return nil, 0, s.bodyBusy()
		}
		var b []byte
		if cl <= pooledBodyBytes {
			if cap(*scratch) < cl {
				*scratch = make([]byte, 0, pooledBodyBytes)
			}
			b = (*scratch)[:cl]
		} else {
			b = make([]byte, cl)
		}
		if _, err := io.ReadFull(stream, b); err != nil {
			s.body.release(int64(cl))
			ctx.SetConnectionClose()
			return nil, 0, bodyReadError(err)
		}
		return b, int64(cl), nil
	}
	// Chunked: the size is known only at the end; reserve the buffer as it
	// grows, up to one byte over the limit.
	b := (*scratch)[:0]
	if cap(b) == 0 {
		b = make([]byte, 0, 4096)
	}
	held := int64(cap(b))
	if !s.body.reserve(held) {
		ctx.SetConnectionClose()
		return nil, 0, s.bodyBusy()
	}
	for {
		if len(b) == cap(b) {
			n := min(2*cap(b), limit+1)
			if !s.body.reserve(int64(n - cap(b))) {
				s.body.release(held)
				ctx.SetConnectionClose()
				return nil, 0, s.bodyBusy()
			}
			held += int64(n - cap(b))
			nb := make([]byte, len(b), n)
			copy(nb, b)
			b = nb
		}
		n, err := stream.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > limit {
			s.body.release(held)
			ctx.SetConnectionClose()
			return nil, 0, s.bodyTooLarge(len(b))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.body.release(held)
			ctx.SetConnectionClose()
			return nil, 0, bodyReadError(err)
		}
	}
	if cap(b) <= pooledBodyBytes {
		*scratch = b[:0]
	}
	return b, held, nil
}

func bodyReadError(err error) *Error {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return &Error{Status: http.StatusRequestTimeout, Msg: "the body was not read within the server's read timeout"}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return badRequest("the body is shorter than its Content-Length")
	}
	return badRequest("cannot read the body: malformed chunked encoding or connection error")
}

// expect answers "Expect: 100-continue" (fasthttp's ExpectHandler) from the
// headers alone: 413 when Content-Length is over the limit and 503 with
// Retry-After when the body would not fit the budget now, without sending
// 100 Continue (so the client does not send the body); 100 otherwise.
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	cl := ctx.Request.Header.ContentLength()
	var e *Error
	switch {
	case cl > s.opts.MaxBodyBytes:
		e = s.bodyTooLarge(cl)
	case cl > 0 && !s.body.fits(int64(cl)):
		e = s.bodyBusy()
	default:
		return fasthttp.StatusContinue
	}
	s.writeError(ctx, e.Status, e.Msg, e.Retry)
	s.metrics.observe(s.routeOf(ctx), e.Status, 0)
	return e.Status
}
