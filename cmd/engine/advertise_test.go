package main

import (
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

func TestAdvertiseAdmin(t *testing.T) {
	t.Setenv(brokersEnv, "")
	on := []string{"--cluster", "--brokers", "k:9092"}
	c, err := parseFlags(append(on, "--advertise-admin", "http://10.0.0.5:9090"), io.Discard)
	if err != nil || c.cluster.advertiseAdmin != "http://10.0.0.5:9090" {
		t.Fatalf("--advertise-admin: %+v, %v", c, err)
	}
	for _, bad := range []string{"10.0.0.5:9090", "http://10.0.0.5", "http://h:1/state"} {
		if _, err := parseFlags(append(on, "--advertise-admin", bad), io.Discard); err == nil || !strings.Contains(err.Error(), "--advertise-admin") {
			t.Errorf("--advertise-admin %q: %v; want an error naming the flag", bad, err)
		}
	}
	if _, err := parseFlags([]string{"--advertise-admin", "http://h:1"}, io.Discard); err == nil || !strings.Contains(err.Error(), "only apply to cluster mode") {
		t.Errorf("--advertise-admin without --cluster: %v", err)
	}

	host, _ := os.Hostname()
	for _, tc := range []struct{ flag, ln, want string }{
		{"http://n1:9090", "127.0.0.1:9090", "http://n1:9090"},
		{"", "127.0.0.1:9091", "http://127.0.0.1:9091"},
		{"", "[::1]:9091", "http://[::1]:9091"},
		{"", "0.0.0.0:9092", "http://" + net.JoinHostPort(host, "9092")},
		{"", "[::]:9093", "http://" + net.JoinHostPort(host, "9093")},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.ln)
		if err != nil {
			t.Fatal(err)
		}
		if got := adminURL(tc.flag, addr); got != tc.want {
			t.Errorf("adminURL(%q, %s) = %q, want %q", tc.flag, tc.ln, got, tc.want)
		}
	}
}
