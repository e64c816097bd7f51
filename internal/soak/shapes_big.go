package soak

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// bigBody is a location body of size bytes: valid JSON with a cell and a
// padding member (the driver ignores other members), or, when bad, without
// a cell (the driver fails on it: a dead letter).
func bigBody(size int, bad bool) []byte {
	b := make([]byte, 0, size)
	if bad {
		b = append(b, `{"pad":"`...)
	} else {
		b = append(b, `{"cell":"5-5","pad":"`...)
	}
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// seedDeadLetters sends n big bodies the driver function fails on; each
// becomes a dead letter of about 4/3 of its size (base64 in JSON).
func (l *load) seedDeadLetters(ctx context.Context, n int) int {
	body := bigBody(int(l.cfg.MaxBody)-512, true)
	c := NewConn(l.ingress, source(srcBigBody))
	defer c.Close()
	ok := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		h := Head(nil, "POST", "/rides/driver/dl-"+strconv.Itoa(i), ctypeLocation, len(body))
		a, kind, err := c.Do(h, body, time.Now().Add(requestTimeout), false)
		t := l.tally.Shape(ShapeDeadLetter)
		if err != nil {
			t.Failure(kind)
			continue
		}
		t.Answer(a)
		if a.Status/100 == 2 {
			ok++
			t.Messages(1, 1)
		} else {
			t.Messages(1, 0)
			i-- // refused: send it again
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ok
}

// bigBodies: BigBodyConns connections each POSTing near-MaxBody valid
// location bodies in a loop (some with Expect: 100-continue).
func (l *load) bigBodies(ctx context.Context) {
	body := bigBody(int(l.cfg.MaxBody)-512, false)
	var wg sync.WaitGroup
	for i := range l.cfg.BigBodyConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewConn(l.ingress, source(srcBigBody))
			defer c.Close()
			for ctx.Err() == nil {
				var extra []string
				if i%4 == 0 {
					extra = []string{"Expect", "100-continue"}
				}
				h := Head(nil, "POST", "/rides/driver/big-"+strconv.Itoa(i), ctypeLocation, len(body), extra...)
				var a Answer
				var kind string
				var err error
				if len(extra) > 0 {
					a, kind, err = l.expectContinue(c, h, body)
				} else {
					a, kind, err = c.Do(h, body, time.Now().Add(requestTimeout), false)
				}
				acked := 0
				t := l.tally.Shape(ShapeBigBody)
				if t.Exchange(a, kind, err, time.Time{}) {
					acked = 1
				}
				t.Messages(1, acked)
				t.Bytes(len(body), 0)
				if err != nil || a.Status == 503 {
					sleepCtx(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// expectContinue sends the head, waits for 100 Continue (or a final answer
// decided from the headers), then the body.
func (l *load) expectContinue(c *Conn, head, body []byte) (Answer, string, error) {
	deadline := time.Now().Add(requestTimeout)
	if err := c.Dial(time.Until(deadline)); err != nil {
		return Answer{}, FailDial, err
	}
	fresh := c.served == 0
	_ = c.c.SetDeadline(deadline)
	if _, err := c.c.Write(head); err != nil {
		a, kind, err := c.read(fresh, false)
		return c.finish(a, kind, err)
	}
	a, kind, err := c.read(fresh, false)
	if err != nil || a.Status != 100 {
		return c.finish(a, kind, err)
	}
	a, kind, err = c.exchange(nil, body, false, false)
	return c.finish(a, kind, err)
}

// egressReaders: EgressReaders connections reading the dead letters (big
// records) in a loop from random offsets, max=10000.
func (l *load) egressReaders(ctx context.Context, seeded int) {
	var wg sync.WaitGroup
	for i := range l.cfg.EgressReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(l.cfg.Seed), uint64(1000+i)))
			c := NewConn(l.ingress, source(srcEgress))
			defer c.Close()
			for ctx.Err() == nil {
				from := 0
				if seeded > 0 {
					from = rng.IntN(seeded)
				}
				h := Head(nil, "GET", "/egress/"+deadLetterEgress+"?from="+strconv.Itoa(from)+"&max=10000", "", 0)
				a, kind, err := c.Do(h, nil, time.Now().Add(requestTimeout), false)
				t := l.tally.Shape(ShapeEgress)
				if err != nil {
					t.Failure(kind)
				} else {
					t.Answer(a)
				}
				if err != nil || a.Status != 200 {
					sleepCtx(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

const deadLetterEgress = "dead-letters"
