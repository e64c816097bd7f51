package httpapi

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultConnLimits derives the ingress connection limits from the file
// limit nofile (RLIMIT_NOFILE; Go raises the soft limit to the hard one at
// start-up): a quarter of it, between 64 and 2048 descriptors, stays free
// for the store, the log, the admin listener and remote calls; the rest,
// at most 65536, is the total; a quarter of the total is the limit per
// client address. nofile <= 0 (unknown) counts as 4096.
func DefaultConnLimits(nofile int) (total, perClient int) {
	if nofile <= 0 {
		nofile = 4096
	}
	reserve := min(max(nofile/4, 64), 2048)
	total = min(max(nofile-reserve, 1), 65536)
	return total, max(total/4, 1)
}

// connLimiter wraps the ingress listener. It keeps at most max
// connections open, at most perClient from one client address (refused
// connections get a 503 with Retry-After and are closed at once), and it
// survives accept errors: running out of file descriptors (EMFILE, ENFILE)
// or any other error but the listener's closing is counted, logged at most
// once a second, and retried after a back-off of 5ms doubling to 1s, so
// that clients never make the server exit.
type connLimiter struct {
	net.Listener
	max, perClient int
	s              *Server

	mu      sync.Mutex
	open    int
	clients map[netip.Addr]int

	closed   chan struct{}
	closeErr sync.Once
	lastLog  atomic.Int64 // unix nanos of the last accept-error log
}

func newConnLimiter(ln net.Listener, s *Server) *connLimiter {
	return &connLimiter{Listener: ln, max: s.opts.MaxConns, perClient: s.opts.MaxConnsPerClient, s: s,
		clients: make(map[netip.Addr]int), closed: make(chan struct{})}
}

// Close closes the listener and ends a back-off in progress.
func (l *connLimiter) Close() error {
	l.closeErr.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Accept returns the next connection within the limits.
func (l *connLimiter) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			select {
			case <-l.closed:
				return nil, err
			default:
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.acceptError(err, delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
			}
			continue
		}
		delay = 0
		ip := clientAddr(c)
		l.mu.Lock()
		reason := ""
		switch {
		case l.open >= l.max:
			reason = refusedTotal
		case ip.IsValid() && l.clients[ip] >= l.perClient:
			reason = refusedPerClient
		default:
			l.open++
			if ip.IsValid() {
				l.clients[ip]++
			}
		}
		l.mu.Unlock()
		if reason != "" {
			l.refuse(c, reason)
			continue
		}
		l.s.metrics.conns.Inc()
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

const (
	refusedTotal     = "total"
	refusedPerClient = "per_client"
)

// refuse answers 503 with Retry-After and closes c. The answer fits the
// socket's send buffer, so writing does not block the accept loop; the
// deadline is a guard.
func (l *connLimiter) refuse(c net.Conn, reason string) {
	l.s.metrics.connsRefused.WithLabelValues(reason).Inc()
	msg := "the server has " + strconv.Itoa(l.max) + " connections open, its limit; retry after a second"
	if reason == refusedPerClient {
		msg = "your address has " + strconv.Itoa(l.perClient) + " connections open, the server's limit per client; reuse them (keep-alive) or retry after a second"
	}
	body := appendErrorBody(nil, msg)
	b := make([]byte, 0, 160+len(body))
	b = append(b, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write(b)
	_ = c.Close()
}

func (l *connLimiter) acceptError(err error, delay time.Duration) {
	reason := "other"
	switch {
	case errors.Is(err, syscall.EMFILE):
		reason = "emfile"
	case errors.Is(err, syscall.ENFILE):
		reason = "enfile"
	}
	l.s.metrics.acceptErrors.WithLabelValues(reason).Inc()
	now := time.Now().UnixNano()
	if last := l.lastLog.Load(); now-last > int64(time.Second) && l.lastLog.CompareAndSwap(last, now) {
		l.s.opts.Logger.Warn("ingress cannot accept connections; retrying", "err", err, "reason", reason,
			"retry_in", delay.String(), "action", "lower --max-conns or raise the file limit (ulimit -n) if this is EMFILE/ENFILE")
	}
}

func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	l.open--
	if ip.IsValid() {
		if n := l.clients[ip] - 1; n > 0 {
			l.clients[ip] = n
		} else {
			delete(l.clients, ip)
		}
	}
	l.mu.Unlock()
	l.s.metrics.conns.Dec()
}

// clientAddr is the IP address of c's peer (IPv4-mapped IPv6 unmapped), or
// the zero Addr when it has none (e.g. a Unix socket).
func clientAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// limitedConn gives its slot back once, on the first Close.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	ip   netip.Addr
	done atomic.Bool
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.done.CompareAndSwap(false, true) {
		c.l.release(c.ip)
	}
	return err
}
