package soak

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// warmUp fills the state cache before the calibration: rides/touch
// batches to fresh passengers (the fill shape's messages) in closed loop
// on 8 connections, until the state cache holds WarmUpFill of the memory
// budget or WarmUp has passed. Under ten times the sustainable rate most
// writes are refused, so without it the cache would stay far below its
// budget and the memory criterion would not see it full. It returns the
// cache's bytes at the end and how long it took.
func (l *load) warmUp(ctx context.Context, admin string) (cache int64, took time.Duration) {
	if l.cfg.WarmUp <= 0 {
		return 0, 0
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, l.cfg.WarmUp)
	defer cancel()
	want := int64(l.cfg.WarmUpFill * float64(l.cfg.MemoryBudget))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewConn(l.ingress, source(srcFill))
			defer c.Close()
			var body, head []byte
			for ctx.Err() == nil {
				body = l.touchBatch(body[:0], l.cfg.BatchSize)
				head = Head(head[:0], "POST", "/batch", "application/x-ndjson", len(body))
				a, kind, err := c.Do(head, body, time.Now().Add(requestTimeout), false)
				t := l.tally.Shape(ShapeWarmUp)
				if err != nil {
					t.Failure(kind)
					continue
				}
				t.Answer(a)
				acked := 0
				if a.Status/100 == 2 {
					acked = l.cfg.BatchSize
				}
				t.Messages(l.cfg.BatchSize, acked)
			}
		}()
	}
	for ctx.Err() == nil {
		sleepCtx(ctx, time.Second)
		if cache, _ = cacheBytes(admin); cache >= want {
			cancel()
		}
	}
	wg.Wait()
	cache, _ = cacheBytes(admin)
	return cache, time.Since(start)
}

// touchBatch appends n rides/touch lines to fresh passengers.
func (l *load) touchBatch(b []byte, n int) []byte {
	for range n {
		k := l.fillSeq.Add(1)
		b = append(b, `{"to":"rides/passenger/f-`...)
		b = strconv.AppendInt(b, k, 10)
		b = append(b, `","type":"rides/touch","body":{"cell":"`...)
		b = strconv.AppendInt(b, k%100, 10)
		b = append(b, `-1"}}`+"\n"...)
	}
	return b
}
