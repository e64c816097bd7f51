package engine

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue 10, item 1: an invocation that runs longer than a limit is reported
// (log, metric, SlowInvocations for /health) while it runs, and Close is
// bounded even while it never returns.
func TestSlowInvocationReportedAndCloseBounded(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	spin := FunctionSpec{Namespace: "t", Type: "spin", Function: FunctionFunc(func(ctx Context, msg Message) error {
		if msg.Type == "block" {
			<-release // a function that never returns (until the test ends)
		}
		return nil
	})}
	var logs syncBuffer
	o := Options{Shards: 2, SlowInvocation: 300 * time.Millisecond, DrainTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	e, err := Open(o, spin, counterSpec())
	if err != nil {
		t.Fatal(err)
	}
	to := Address{Namespace: "t", Type: "spin", ID: "x"}
	if err := e.SendAsync(to, Message{Type: "block"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.SlowInvocations()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a blocked invocation was not reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	slow := e.SlowInvocations()
	if slow[0].Address != to {
		t.Fatalf("slow invocations %+v", slow)
	}
	for !strings.Contains(logs.String(), "invocation running long") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "t/spin/x") {
		t.Fatalf("the log line does not name the address: %s", logs.String())
	}
	// The other shard keeps working.
	if _, err := e.Send(context.Background(), addr("free"), Message{Type: "inc"}); err != nil && !strings.Contains(err.Error(), "overloaded") {
		t.Logf("send beside the blocked shard: %v", err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- e.Close() }()
	select {
	case <-done:
		t.Logf("Close returned after %v with an invocation still blocked", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return while an invocation was blocked")
	}
}
