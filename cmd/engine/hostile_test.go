package main

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHostileFind sends issue 10's 17-byte rides/find (a hop count that
// overflows int) to a geocell of the real server. It is answered 400 naming
// what the geocell accepts (it used to be accepted and spun the shard for
// good), and rides on that shard keep working.
func TestHostileFind(t *testing.T) {
	s := startServer(t, buildBinary(t), t.TempDir())
	find := []byte{2, 'r', '1', 3, '5', '-', '5', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}
	a := call(t, "POST", s.ingress+"/rides/geocell/5-5", "application/vnd.rides/find", find)
	var e struct{ Error string }
	if a.status != 400 || json.Unmarshal(a.body, &e) != nil || !strings.Contains(e.Error, "rides/geocell takes no messages from ingress") {
		t.Fatalf("find from ingress: %d %s", a.status, a.body)
	}
	if a := call(t, "POST", s.ingress+"/rides/driver/d-5", "application/vnd.rides/location", []byte(`{"cell":"5-5"}`)); a.status != 202 {
		t.Fatalf("location: %d %s", a.status, a.body)
	}
	a = call(t, "POST", s.ingress+"/rides/passenger/p-5?wait=10s", "application/vnd.rides/request", []byte(`{"cell":"5-5"}`))
	var o struct{ Ride, Driver string }
	if a.status != 200 || json.Unmarshal(a.body, &o) != nil || o.Driver != "d-5" {
		t.Fatalf("request on the cell's shard: %d %s", a.status, a.body)
	}
	if a := call(t, "GET", s.admin+"/health", "", nil); a.status != 200 {
		t.Fatalf("health: %d %s", a.status, a.body)
	}
}

// TestSecondEngineSameDataDir: a second server on the data directory of a
// running one exits 1 saying that another process holds the directory (it
// used to say "resource temporarily unavailable").
func TestSecondEngineSameDataDir(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	startServer(t, bin, dir)
	cmd := exec.Command(bin, "--data-dir", dir, "--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the second server did not exit:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second server: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "data directory in use") || !strings.Contains(string(out), "locked by another process") {
		t.Fatalf("the second server does not say the directory is in use:\n%s", out)
	}
}
