package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClusterFlags(t *testing.T) {
	t.Setenv(brokersEnv, "")
	host, _ := os.Hostname()

	// Off by default, with the documented defaults.
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cf := c.cluster
	if cf.enabled || cf.brokers != nil || cf.name != "shardfn" || cf.node != host || cf.partitions != 0 || cf.replicationFactor != 0 ||
		cf.minISR != 0 || cf.commitInterval != 50*time.Millisecond || cf.sessionTimeout != 6*time.Second || cf.txnTimeout != 10*time.Second ||
		cf.warmupLag != 10000 || cf.probingInterval != 10*time.Second {
		t.Errorf("defaults: %+v", cf)
	}

	// Every flag given.
	c, err = parseFlags([]string{"--cluster", "--brokers", "k1:9092, k2:9093,,[::1]:9094,k3", "--cluster-name", "prod_eu-1.x",
		"--node", "node-1.a", "--partitions", "64", "--replication-factor", "3", "--min-insync-replicas", "2",
		"--commit-interval", "20ms", "--session-timeout", "10s", "--txn-timeout", "5s",
		"--warmup-lag-records", "-1", "--probing-rebalance-interval", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cf = c.cluster
	if !cf.enabled || !slices.Equal(cf.brokers, []string{"k1:9092", "k2:9093", "[::1]:9094", "k3"}) || cf.name != "prod_eu-1.x" ||
		cf.node != "node-1.a" || cf.partitions != 64 || cf.replicationFactor != 3 || cf.minISR != 2 ||
		cf.commitInterval != 20*time.Millisecond || cf.sessionTimeout != 10*time.Second || cf.txnTimeout != 5*time.Second ||
		cf.warmupLag != -1 || cf.probingInterval != 3*time.Second {
		t.Errorf("all flags: %+v", cf)
	}

	// $SHARDFN_BROKERS is the default of --brokers; the flag wins; the
	// variable alone does not need --cluster.
	t.Setenv(brokersEnv, "env1:9092,env2:9092")
	if c, err = parseFlags([]string{"--cluster"}, io.Discard); err != nil || !slices.Equal(c.cluster.brokers, []string{"env1:9092", "env2:9092"}) {
		t.Errorf("brokers from $%s: %+v, %v", brokersEnv, c, err)
	}
	if c, err = parseFlags([]string{"--cluster", "--brokers", "flag:9092"}, io.Discard); err != nil || !slices.Equal(c.cluster.brokers, []string{"flag:9092"}) {
		t.Errorf("--brokers over $%s: %+v, %v", brokersEnv, c, err)
	}
	if c, err = parseFlags(nil, io.Discard); err != nil || c.cluster.enabled {
		t.Errorf("$%s without --cluster: %+v, %v", brokersEnv, c, err)
	}
	t.Setenv(brokersEnv, "")

	// -h explains each flag.
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	for _, name := range append([]string{"cluster"}, clusterFlagNames...) {
		if !strings.Contains(out.String(), "  -"+name+" ") && !strings.Contains(out.String(), "  -"+name+"\n") {
			t.Errorf("-h does not explain --%s", name)
		}
	}

	on := []string{"--cluster", "--brokers", "k:9092"}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--brokers", "k:9092"}, "--brokers only apply to cluster mode: add --cluster"},
		{[]string{"--partitions", "64", "--node", "n"}, "--node, --partitions only apply to cluster mode"},
		{[]string{"--cluster"}, "--cluster needs Kafka brokers: pass --brokers"},
		{[]string{"--cluster", "--brokers", " , "}, "--cluster needs Kafka brokers"},
		{[]string{"--cluster", "--brokers", "k:notaport"}, `--brokers: "k:notaport" is not host:port`},
		{[]string{"--cluster", "--brokers", "k:0"}, `--brokers: "k:0" is not host:port`},
		{append(on, "--cluster-name", ""), "--cluster-name"},
		{append(on, "--cluster-name", "a/b"), "--cluster-name"},
		{append(on, "--cluster-name", strings.Repeat("n", 232)), "--cluster-name"},
		{append(on, "--node", ""), "--node is empty"},
		{append(on, "--node", "a b"), `--node "a b"`},
		{append(on, "--partitions", "100"), "--partitions 100: pass a power of two from 1 to 4096"},
		{append(on, "--partitions", "8192"), "--partitions 8192"},
		{append(on, "--partitions", "-2"), "--partitions -2"},
		{append(on, "--partitions", "4294967360"), "--partitions 4294967360"}, // 2^32 + 64: must not wrap to 64
		{append(on, "--replication-factor", "-1"), "--replication-factor -1"},
		{append(on, "--replication-factor", "40000"), "--replication-factor 40000"},
		{append(on, "--min-insync-replicas", "-1"), "--min-insync-replicas -1"},
		{append(on, "--replication-factor", "2", "--min-insync-replicas", "3"), "--min-insync-replicas 3 exceeds --replication-factor 2"},
		{append(on, "--commit-interval", "0s"), "--commit-interval 0s: pass a duration from 1ms to 10s"},
		{append(on, "--commit-interval", "500us"), "--commit-interval 500µs"},
		{append(on, "--commit-interval", "11s"), "--commit-interval 11s"},
		{append(on, "--session-timeout", "0s"), "--session-timeout 0s"},
		{append(on, "--session-timeout", "31m"), "--session-timeout 31m0s"},
		{append(on, "--txn-timeout", "50ms"), "--txn-timeout 50ms: pass a duration longer than --commit-interval 50ms"},
		{append(on, "--commit-interval", "2s", "--txn-timeout", "1s"), "--txn-timeout 1s"},
		{append(on, "--txn-timeout", "16m"), "--txn-timeout 16m0s"},
		{append(on, "--warmup-lag-records", "0"), "--warmup-lag-records 0: pass a positive bound"},
		{append(on, "--probing-rebalance-interval", "0s"), "--probing-rebalance-interval 0s: pass a positive duration"},
	} {
		_, err := parseFlags(bad.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v; want an error with %q", bad.args, err, bad.want)
		}
	}
}
