package soak

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// slow: SlowConns connections trickling a request one byte every 500ms,
// half of them in the headers, half in a body (the headers at once). The
// server's read timeout (30s) cuts them: 408, or a close.
func (l *load) slow(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range l.cfg.SlowConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shape := ShapeSlowHeader
			if i%2 == 1 {
				shape = ShapeSlowBody
			}
			sleepCtx(ctx, time.Duration(i)*100*time.Millisecond) // spread the starts
			for ctx.Err() == nil {
				l.slowOne(ctx, shape, i)
			}
		}()
	}
	wg.Wait()
}

func (l *load) slowOne(ctx context.Context, shape string, i int) {
	t := l.tally.Shape(shape)
	// Padding makes the trickle last longer than the read timeout.
	body := []byte(`{"cell":"3-3","pad":"`)
	for len(body) < 200 {
		body = append(body, 'y')
	}
	body = append(body, `"}`...)
	head := Head(nil, "POST", "/rides/driver/slow-"+strconv.Itoa(i), ctypeLocation, len(body))
	var atOnce, trickle []byte
	if shape == ShapeSlowHeader {
		trickle = append(head, body...)
	} else {
		atOnce, trickle = head, body
	}
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: source(srcSlow)}}
	nc, err := d.DialContext(ctx, "tcp", l.ingress)
	if err != nil {
		if ctx.Err() == nil {
			t.Failure(FailDial)
			sleepCtx(ctx, time.Second)
		}
		return
	}
	defer nc.Close()
	answered := make(chan struct{})
	var a Answer
	var rerr error
	go func() {
		defer close(answered)
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
		a, rerr = readAnswer(bufio.NewReader(nc), false)
	}()
	if len(atOnce) > 0 {
		_, _ = nc.Write(atOnce)
	}
	tk := time.NewTicker(500 * time.Millisecond)
	defer tk.Stop()
	for k := 0; k < len(trickle); k++ {
		select {
		case <-ctx.Done():
			return // the run is over: not counted
		case <-answered:
			k = len(trickle)
			continue
		case <-tk.C:
		}
		if _, err := nc.Write(trickle[k : k+1]); err != nil {
			break
		}
	}
	select {
	case <-answered:
	case <-ctx.Done():
		return
	}
	l.finishHeld(t, a, rerr)
}

// finishHeld records the end of a connection held by a slow or half-open
// shape: an answer (408 expected), or the server's close.
func (l *load) finishHeld(t *ShapeTally, a Answer, err error) {
	switch {
	case err == nil:
		t.Answer(a)
	case isTimeout(err):
		t.Failure(FailTimeout) // the server kept it open past 2 minutes
	case isClosed(err):
		t.Failure(FailClosed)
	default:
		t.Failure(FailOther)
	}
}

// halfOpen: HalfOpenConns connections that send a partial request (or
// nothing) and never finish it; the server must cut them.
func (l *load) halfOpen(ctx context.Context) {
	var wg sync.WaitGroup
	partial := []string{
		"",
		"POST /rides/driver/h-1 HTTP/1.1\r\nHost: soak\r\nContent-Le",
		"POST /rides/driver/h-2 HTTP/1.1\r\nHost: soak\r\nContent-Type: " + ctypeLocation + "\r\nContent-Length: 20\r\n\r\n{\"ce",
		"GET /egress/ride-events?from=0&max=1",
	}
	for i := range l.cfg.HalfOpenConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sleepCtx(ctx, time.Duration(i)*50*time.Millisecond)
			t := l.tally.Shape(ShapeHalfOpen)
			for ctx.Err() == nil {
				d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: source(srcHalfOpen)}}
				nc, err := d.DialContext(ctx, "tcp", l.ingress)
				if err != nil {
					if ctx.Err() == nil {
						t.Failure(FailDial)
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				if p := partial[i%len(partial)]; p != "" {
					_, _ = nc.Write([]byte(p))
				}
				done := make(chan struct{})
				var a Answer
				var rerr error
				go func() {
					defer close(done)
					_ = nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
					a, rerr = readAnswer(bufio.NewReader(nc), false)
				}()
				select {
				case <-done:
					l.finishHeld(t, a, rerr)
				case <-ctx.Done():
				}
				nc.Close()
			}
		}()
	}
	wg.Wait()
}

// flood opens MaxConns x FloodFactor connections from eight addresses (so
// that the total limit, not the one per client, is met), holds them
// FloodHold, then sends a location write on each one accepted. Connections
// over the limit are answered 503 at accept and closed. Every FloodEvery.
func (l *load) flood(ctx context.Context) {
	sleepCtx(ctx, l.cfg.FloodEvery/2)
	for round := 0; ctx.Err() == nil; round++ {
		start := time.Now()
		n := int(float64(l.cfg.MaxConns) * l.cfg.FloodFactor)
		l.floodRound(ctx, ShapeFlood, n, func(k int) byte { return byte(srcFlood + k%8) })
		// A flood from one address past its limit.
		l.floodRound(ctx, ShapeFloodClient, l.cfg.perClient()+64, func(int) byte { return srcFloodOne })
		l.floods.Add(1)
		sleepCtx(ctx, l.cfg.FloodEvery-time.Since(start))
	}
}

func (l *load) floodRound(ctx context.Context, shape string, n int, src func(k int) byte) {
	t := l.tally.Shape(shape)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256) // dials at once
	holdUntil := time.Now().Add(l.cfg.FloodHold)
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewConn(l.ingress, source(src(k)))
			defer c.Close()
			err := c.Dial(10 * time.Second)
			<-sem
			if err != nil {
				t.Failure(FailDial)
				return
			}
			l.floodConn.Add(1)
			// A refused connection is answered at once; an accepted one is
			// silent until it sends a request.
			_ = c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.br.Peek(1); err == nil {
				_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				a, err := readAnswer(c.br, false)
				if err != nil {
					t.Failure(FailRefusedAtConnect)
				} else {
					t.Answer(a)
				}
				l.floodRef.Add(1)
				return
			} else if !isTimeout(err) {
				t.Failure(FailRefusedAtConnect)
				l.floodRef.Add(1)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(holdUntil)):
			}
			body := rides.AppendCellBody(nil, "7-7")
			h := Head(nil, "POST", "/rides/driver/flood-"+strconv.Itoa(k%512), ctypeLocation, len(body))
			c.served = 1 // accepted and idle: a close now is not a refusal at accept
			a, kind, err := c.Do(h, body, time.Now().Add(requestTimeout), false)
			if err != nil {
				t.Failure(kind)
			} else {
				t.Answer(a)
			}
		}()
	}
	wg.Wait()
}
