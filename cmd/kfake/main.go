// Command kfake runs a development Kafka broker for shardfn's Kafka
// ingress and egress: franz-go's kfake, an in-memory Kafka-protocol
// cluster (a test cluster, not Kafka: figures measured on it say "on
// kfake"), on loopback. It also produces and consumes records, for trying
// the example:
//
//	kfake                                  # brokers on 127.0.0.1:9092,9093,9094
//	kfake produce events alice hello       # one record: topic, key, value
//	kfake consume counts                   # read_committed; prints key, value
//
// The broker prints one JSON line on stdout once it listens:
// {"addrs":["127.0.0.1:9092",...]}. It stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "produce" || args[0] == "consume") {
		var err error
		if args[0] == "produce" {
			err = produce(args[1:], stderr)
		} else {
			err = consume(args[1:], stdout, stderr)
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(stderr, "kfake:", err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ports := fs.String("ports", "9092,9093,9094", "listen ports on 127.0.0.1, one broker each; 0 picks a free port")
	topics := fs.String("topics", "events,counts", "topics to create, comma separated; name:partitions sets the partition count (default 3)")
	partitions := fs.Int("partitions", 3, "partitions of topics created without a count, and of topics created on first use")
	dataDir := fs.String("data-dir", "", "keep the cluster's data in this directory across restarts (default: in memory); it survives a kill of the process (SIGKILL): transactions open then are aborted at the restart, and their abort markers written")
	syncWrites := fs.Bool("sync-writes", false, "with --data-dir, fsync every write (survives a power loss, not only a killed process; slower)")
	logLevel := fs.String("log-level", "none", "broker log on stderr: none, error, warn, info or debug")
	minSession := fs.Duration("min-session-timeout", 0, "lowest group session timeout a member may ask for (the broker's group.min.session.timeout.ms; 0 keeps kfake's 6s)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kfake [flags]              run the development brokers\n       kfake produce TOPIC KEY VALUE  write one record\n       kfake consume TOPIC            print records (read_committed)\n\nkfake is a test cluster (franz-go's kfake), not Kafka.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	opts := []kfake.Opt{kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(*partitions)}
	var ps []int
	for _, p := range strings.Split(*ports, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 65535 {
			fmt.Fprintf(stderr, "kfake: --ports %q: want port numbers\n", *ports)
			return 2
		}
		ps = append(ps, n)
	}
	opts = append(opts, kfake.NumBrokers(len(ps)), kfake.Ports(ps...))
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		name, n := t, int32(*partitions)
		if i := strings.LastIndexByte(t, ':'); i > 0 {
			v, err := strconv.Atoi(t[i+1:])
			if err != nil || v <= 0 {
				fmt.Fprintf(stderr, "kfake: --topics %q: want name or name:partitions\n", t)
				return 2
			}
			name, n = t[:i], int32(v)
		}
		opts = append(opts, kfake.SeedTopics(n, name))
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
		if *syncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	} else if *syncWrites {
		fmt.Fprintln(stderr, "kfake: --sync-writes needs --data-dir")
		return 2
	}
	if *minSession < 0 || *minSession > 0 && *minSession < time.Millisecond {
		fmt.Fprintf(stderr, "kfake: --min-session-timeout %v: want a positive duration of at least 1ms (e.g. 500ms), or 0\n", *minSession)
		return 2
	}
	if *minSession > 0 {
		opts = append(opts, kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": strconv.FormatInt(minSession.Milliseconds(), 10)}))
	}
	logOpts, err := logger(*logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "kfake:", err)
		return 2
	}
	opts = append(opts, logOpts...)
	c, err := startCluster(opts, *dataDir != "", stderr)
	if err != nil {
		fmt.Fprintln(stderr, "kfake:", err)
		return 1
	}
	defer c.Close()
	hello, _ := json.Marshal(map[string]any{"addrs": c.ListenAddrs()})
	fmt.Fprintln(stdout, string(hello))
	fmt.Fprintf(stderr, "kfake: a development Kafka-protocol cluster (not Kafka) on %s; Ctrl-C stops it\n", strings.Join(c.ListenAddrs(), ","))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	return 0
}

// logger is the option of --log-level (none: kfake's silent default).
func logger(name string, stderr io.Writer) ([]kfake.Opt, error) {
	levels := map[string]kfake.LogLevel{"none": kfake.LogLevelNone, "error": kfake.LogLevelError,
		"warn": kfake.LogLevelWarn, "info": kfake.LogLevelInfo, "debug": kfake.LogLevelDebug}
	level, ok := levels[name]
	if !ok {
		return nil, fmt.Errorf("--log-level %q: use none, error, warn, info or debug", name)
	}
	if level == kfake.LogLevelNone {
		return nil, nil
	}
	return []kfake.Opt{kfake.WithLogger(kfake.BasicLogger(stderr, level))}, nil
}

// startCluster starts the brokers and, over a data directory, repairs what
// the last stop left (recover.go).
func startCluster(opts []kfake.Opt, fromDir bool, stderr io.Writer) (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(opts...)
	if err != nil || !fromDir {
		return c, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := recoverLog(ctx, c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("recovering the data directory (abort markers, producer sequences): %w", err)
	}
	if n > 0 {
		fmt.Fprintf(stderr, "kfake: wrote %d abort markers for transactions open when the broker last stopped\n", n)
	}
	return c, nil
}

func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("kfake "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("brokers", "127.0.0.1:9092", "bootstrap servers, comma separated")
}

func produce(args []string, stderr io.Writer) error {
	fs, brokers := clientFlags("produce", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return fmt.Errorf("produce: want TOPIC KEY VALUE, have %q", fs.Args())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := fs.Args()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: a[0], Key: []byte(a[1]), Value: []byte(a[2])}).FirstErr()
}

func consume(args []string, stdout, stderr io.Writer) error {
	fs, brokers := clientFlags("consume", stderr)
	n := fs.Int("n", 0, "stop after this many records (0: run until interrupted)")
	wait := fs.Duration("timeout", 0, "stop after this long (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("consume: want TOPIC, have %q", fs.Args())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.ConsumeTopics(fs.Arg(0)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *wait)
		defer cancel()
	}
	seen := 0
	for ctx.Err() == nil && (*n == 0 || seen < *n) {
		fetches := cl.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			seen++
			fmt.Fprintf(stdout, "%s\t%s\n", r.Key, r.Value)
		})
	}
	return nil
}
