package soak

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Failure kinds of a request that got no HTTP answer. The verdict decides
// which are allowed for which shape.
const (
	// FailRefusedAtConnect: a fresh connection was closed or reset before
	// any answer. The server closes connections over --max-conns at accept
	// after writing a 503; a client that has written its request by then
	// may see the reset instead of the 503 (httpapi/listener.go).
	FailRefusedAtConnect = "closed_at_connect"
	// FailClosed: a connection that had answered before was closed before
	// answering this request (an idle keep-alive connection closed by the
	// server, or a connection cut while a body was sent).
	FailClosed = "closed"
	// FailTimeout: no answer within the request's deadline.
	FailTimeout = "timeout"
	// FailDial: the connection could not be opened (refused, or not
	// accepted before the deadline).
	FailDial = "dial"
	// FailOther: anything else (a malformed answer).
	FailOther = "other"
)

// Answer is one HTTP answer.
type Answer struct {
	Status     int
	RetryAfter bool // the answer carries Retry-After
	Close      bool // Connection: close
	Body       []byte
}

// Conn is one client connection speaking HTTP/1.1 with keep-alive, from a
// chosen loopback source address (so that the server's limit per client
// address can be met or avoided). It is used by one goroutine.
type Conn struct {
	addr   string
	source net.IP
	c      net.Conn
	br     *bufio.Reader
	served int // answers read on this connection
}

// NewConn returns an unconnected Conn to addr ("127.0.0.1:8080") from
// source (nil: the kernel's choice).
func NewConn(addr string, source net.IP) *Conn { return &Conn{addr: addr, source: source} }

// Close closes the connection (a later Do dials again).
func (c *Conn) Close() {
	if c.c != nil {
		_ = c.c.Close()
		c.c = nil
	}
}

// Dial opens the connection if it is not open.
func (c *Conn) Dial(timeout time.Duration) error {
	if c.c != nil {
		return nil
	}
	d := net.Dialer{Timeout: timeout}
	if c.source != nil {
		d.LocalAddr = &net.TCPAddr{IP: c.source}
	}
	nc, err := d.Dial("tcp", c.addr)
	if err != nil {
		return err
	}
	c.c = nc
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 16<<10)
	} else {
		c.br.Reset(nc)
	}
	c.served = 0
	return nil
}

// Raw returns the open connection (for shapes that write by hand).
func (c *Conn) Raw() net.Conn { return c.c }

// Do sends head (request line and headers, ending in a blank line) and
// body and reads the answer, all before deadline. keepBody keeps the
// answer's body (else it is read and dropped). On a failure the connection
// is closed and the failure kind is returned (one of the Fail constants).
func (c *Conn) Do(head, body []byte, deadline time.Time, keepBody bool) (Answer, string, error) {
	if err := c.Dial(time.Until(deadline)); err != nil {
		return Answer{}, FailDial, err
	}
	fresh := c.served == 0
	_ = c.c.SetDeadline(deadline)
	a, kind, err := c.exchange(head, body, fresh, keepBody)
	return c.finish(a, kind, err)
}

// exchange writes head and body and reads the answer. A big body is
// written while the answer is read: the server may answer (413, 503) from
// the headers and close without reading it.
func (c *Conn) exchange(head, body []byte, fresh, keepBody bool) (Answer, string, error) {
	if len(body) > 64<<10 {
		done := make(chan error, 1)
		go func(nc net.Conn) {
			bufs := net.Buffers{head, body}
			_, err := bufs.WriteTo(nc)
			done <- err
		}(c.c)
		a, kind, err := c.read(fresh, keepBody)
		if err != nil {
			_ = c.c.SetDeadline(time.Now()) // unblock the writer
		}
		if werr := <-done; err == nil && werr != nil {
			a.Close = true // the body was not all sent: the connection is unusable
		}
		return a, kind, err
	}
	bufs := net.Buffers{head, body}
	if _, err := bufs.WriteTo(c.c); err != nil {
		// The server may have answered (a refusal at accept) before closing:
		// try to read it.
		return c.read(fresh, keepBody)
	}
	return c.read(fresh, keepBody)
}

func (c *Conn) finish(a Answer, kind string, err error) (Answer, string, error) {
	if err != nil || a.Close {
		c.Close()
	}
	if err == nil {
		c.served++
	}
	return a, kind, err
}

// read reads one answer.
func (c *Conn) read(fresh, keepBody bool) (Answer, string, error) {
	a, err := readAnswer(c.br, keepBody)
	if err == nil {
		return a, "", nil
	}
	switch {
	case isTimeout(err):
		return a, FailTimeout, err
	case isClosed(err) && fresh:
		return a, FailRefusedAtConnect, err
	case isClosed(err):
		return a, FailClosed, err
	}
	return a, FailOther, err
}

// ReadAnswer reads one answer from br (exported for the slow shapes, which
// write by hand).
func ReadAnswer(br *bufio.Reader, keepBody bool) (Answer, error) { return readAnswer(br, keepBody) }

func readAnswer(br *bufio.Reader, keepBody bool) (Answer, error) {
	var a Answer
	line, err := readLine(br)
	if err != nil {
		return a, err
	}
	// HTTP/1.1 503 Service Unavailable
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < sp+4 {
		return a, fmt.Errorf("malformed status line %.80q", line)
	}
	a.Status, err = strconv.Atoi(string(line[sp+1 : sp+4]))
	if err != nil {
		return a, fmt.Errorf("malformed status line %.80q", line)
	}
	length, chunked := -1, false
	for {
		h, err := readLine(br)
		if err != nil {
			return a, err
		}
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return a, fmt.Errorf("malformed header %.80q", h)
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return a, fmt.Errorf("malformed Content-Length %.40q", v)
			}
		case bytes.EqualFold(k, []byte("Retry-After")):
			a.RetryAfter = true
		case bytes.EqualFold(k, []byte("Connection")):
			a.Close = bytes.EqualFold(v, []byte("close"))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		}
	}
	var dst io.Writer = io.Discard
	var buf bytes.Buffer
	if keepBody {
		dst = &buf
	}
	switch {
	case a.Status/100 == 1 || a.Status == 204 || a.Status == 304:
		// No body.
	case chunked:
		if err := readChunked(br, dst); err != nil {
			return a, err
		}
	case length >= 0:
		if _, err := io.CopyN(dst, br, int64(length)); err != nil {
			return a, err
		}
	default:
		a.Close = true
		if _, err := io.Copy(dst, br); err != nil {
			return a, err
		}
	}
	if keepBody {
		a.Body = buf.Bytes()
	}
	return a, nil
}

func readChunked(br *bufio.Reader, dst io.Writer) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("malformed chunk size %.40q", line)
		}
		if n == 0 {
			for { // trailers
				l, err := readLine(br)
				if err != nil {
					return err
				}
				if len(l) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(dst, br, n); err != nil {
			return err
		}
		if _, err := readLine(br); err != nil {
			return err
		}
	}
}

// readLine reads a line without its CRLF (lines over 64 KiB are an error).
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("answer line over the buffer size")
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// Head builds a request head: method, path, content type (may be empty),
// extra headers (name, value pairs) and the body length.
func Head(dst []byte, method, path, ctype string, bodyLen int, extra ...string) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: soak\r\n"...)
	if ctype != "" {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, ctype...)
		dst = append(dst, "\r\n"...)
	}
	if method == "POST" || method == "PUT" || bodyLen > 0 {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(bodyLen), 10)
		dst = append(dst, "\r\n"...)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		dst = append(dst, extra[i]...)
		dst = append(dst, ": "...)
		dst = append(dst, extra[i+1]...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}
