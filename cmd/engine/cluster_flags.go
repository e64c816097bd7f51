package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/cluster"
)

// brokersEnv, when set, is the default of --brokers.
const brokersEnv = "SHARDFN_BROKERS"

// clusterFlags is the parsed cluster-mode part of the command line (see
// "Cluster mode (on Kafka)" in README.md). Without --cluster every field but
// enabled keeps its default and nothing of it is used.
type clusterFlags struct {
	enabled           bool
	brokers           []string // seed brokers, host[:port]
	name              string   // cluster name: topics shardfn.<name>.*
	node              string   // this node's name: group instance id, transactional id shardfn-<name>-<node>
	partitions        int32    // P; 0 = as created, or cluster.DefaultPartitions for a new cluster
	replicationFactor int16    // of created topics; 0 = the broker's default
	minISR            int      // min.insync.replicas of created topics; 0 = the broker's default
	commitInterval    time.Duration
	sessionTimeout    time.Duration
	txnTimeout        time.Duration
	standbyInterval   time.Duration
	warmupLag         int64         // warm-up balancer's lag bound (changelog offsets); negative: off
	probingInterval   time.Duration // how often the leader probes while partitions wait for warm-up
	advertiseAdmin    string        // base URL of the admin listener for the other nodes; "" = from the listener's address

	// Raw values, checked and converted by validate.
	brokersRaw string
	partsRaw   int
	rfRaw      int
}

// clusterFlagNames are the flags that mean something only with --cluster.
var clusterFlagNames = []string{"brokers", "cluster-name", "node", "partitions", "replication-factor",
	"min-insync-replicas", "commit-interval", "session-timeout", "txn-timeout", "advertise-admin", "standby-interval",
	"warmup-lag-records", "probing-rebalance-interval"}

func (cf *clusterFlags) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.BoolVar(&cf.enabled, "cluster", false, "run as one node of a cluster on Kafka (needs --brokers): the key space is shared with the other nodes of --cluster-name; see \"Cluster mode\" in cmd/engine/README.md")
	fs.StringVar(&cf.brokersRaw, "brokers", os.Getenv(brokersEnv), "Kafka seed brokers of cluster mode, host:port separated by commas (default from $"+brokersEnv+")")
	fs.StringVar(&cf.name, "cluster-name", "shardfn", "name of the cluster: its Kafka topics are shardfn.<name>.in, .changelog, .replies and .meta (letters, digits, '.', '_', '-')")
	fs.StringVar(&cf.node, "node", host, "name of this node in the cluster, stable across restarts (its Kafka group instance id and transactional id)")
	fs.IntVar(&cf.partsRaw, "partitions", 0, fmt.Sprintf("partitions P of the in and changelog topics, a power of two from 1 to %d, fixed when the cluster is created; 0 uses the count the cluster was created with, or %d for a new cluster", cluster.MaxPartitions, cluster.DefaultPartitions))
	fs.IntVar(&cf.rfRaw, "replication-factor", 0, "replication factor of the topics a node creates; 0 uses the broker's default (3 on a real cluster is usual)")
	fs.IntVar(&cf.minISR, "min-insync-replicas", 0, "min.insync.replicas of the topics a node creates; 0 uses the broker's default (2 with replication factor 3 is usual)")
	fs.DurationVar(&cf.commitInterval, "commit-interval", 50*time.Millisecond, "cluster mode: length of one Kafka transaction (input offsets, state, sends, replies commit together), 1ms to 10s; shorter answers sooner, longer costs less")
	fs.DurationVar(&cf.sessionTimeout, "session-timeout", 6*time.Second, "cluster mode: how long the group waits for a silent node before moving its partitions")
	fs.StringVar(&cf.advertiseAdmin, "advertise-admin", "", "cluster mode: base URL of this node's admin listener as the other nodes reach it (e.g. http://10.0.0.5:9090), where they forward GET /state/... for its partitions; default http://<--admin-addr>, with the host name for an unspecified address")
	fs.DurationVar(&cf.standbyInterval, "standby-interval", time.Second, "cluster mode: how often a node brings its standby copy of the next node's partitions up to date (a takeover then restores only what the copy lacks); negative: no standby copies")
	fs.Int64Var(&cf.warmupLag, "warmup-lag-records", cluster.DefaultWarmupLag, "cluster mode: a partition moves to a node only once that node's copy of its changelog is at most this many offsets behind the best copy in the group (until then the partition stays where it is while the node warms its copy up); negative: no warm-up (plain cooperative-sticky balancing). The group's leader's value applies")
	fs.DurationVar(&cf.probingInterval, "probing-rebalance-interval", 10*time.Second, "cluster mode: while partitions wait for a node to warm up its copy, how often the group's leader asks for a rebalance to check again (a warming node also asks as soon as its copies are caught up)")
	fs.DurationVar(&cf.txnTimeout, "txn-timeout", 10*time.Second, "cluster mode: Kafka transaction timeout, after which a dead node's open transaction is aborted (readers wait for it until then); must exceed --commit-interval")
}

// validate checks and converts the cluster flags once fs is parsed.
func (cf *clusterFlags) validate(fs *flag.FlagSet) error {
	if !cf.enabled {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			for _, n := range clusterFlagNames {
				if f.Name == n {
					set = append(set, "--"+n)
				}
			}
		})
		if len(set) > 0 {
			return fmt.Errorf("%s only apply to cluster mode: add --cluster, or drop them", strings.Join(set, ", "))
		}
		return nil
	}
	for _, b := range strings.Split(cf.brokersRaw, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if strings.Contains(b, ":") {
			_, port, err := net.SplitHostPort(b)
			if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
				return fmt.Errorf("--brokers: %q is not host:port; pass e.g. --brokers kafka1:9092,kafka2:9092", b)
			}
		}
		cf.brokers = append(cf.brokers, b)
	}
	if len(cf.brokers) == 0 {
		return fmt.Errorf("--cluster needs Kafka brokers: pass --brokers host:port[,host:port...] or set $%s", brokersEnv)
	}
	if err := cluster.ValidateName(cf.name); err != nil {
		return fmt.Errorf("--cluster-name: %w", err)
	}
	if err := validNodeName(cf.node); err != nil {
		return err
	}
	if cf.partsRaw != 0 && (cf.partsRaw < 0 || cf.partsRaw > cluster.MaxPartitions || !cluster.ValidPartitions(int32(cf.partsRaw))) {
		return fmt.Errorf("--partitions %d: pass a power of two from 1 to %d (e.g. %d), or 0 to use the count the cluster was created with",
			cf.partsRaw, cluster.MaxPartitions, cluster.DefaultPartitions)
	}
	cf.partitions = int32(cf.partsRaw)
	if cf.rfRaw < 0 || cf.rfRaw > 32767 {
		return fmt.Errorf("--replication-factor %d: pass a positive count (3 on a real cluster), or 0 for the broker's default", cf.rfRaw)
	}
	cf.replicationFactor = int16(cf.rfRaw)
	if cf.minISR < 0 {
		return fmt.Errorf("--min-insync-replicas %d: pass a positive count, or 0 for the broker's default", cf.minISR)
	}
	if cf.rfRaw > 0 && cf.minISR > cf.rfRaw {
		return fmt.Errorf("--min-insync-replicas %d exceeds --replication-factor %d: no write could succeed; pass at most %d", cf.minISR, cf.rfRaw, cf.rfRaw)
	}
	if cf.commitInterval < time.Millisecond || cf.commitInterval > 10*time.Second {
		return fmt.Errorf("--commit-interval %v: pass a duration from 1ms to 10s (default 50ms)", cf.commitInterval)
	}
	if cf.sessionTimeout <= 0 || cf.sessionTimeout > 30*time.Minute {
		return fmt.Errorf("--session-timeout %v: pass a positive duration of at most 30m (default 6s; the broker's group.min.session.timeout.ms and group.max.session.timeout.ms bound it too)", cf.sessionTimeout)
	}
	if err := cluster.ValidateAdminURL(cf.advertiseAdmin); err != nil {
		return fmt.Errorf("--advertise-admin: %w", err)
	}
	if cf.warmupLag == 0 {
		return fmt.Errorf("--warmup-lag-records 0: pass a positive bound in changelog offsets (default %d), or a negative value to turn warm-up off", cluster.DefaultWarmupLag)
	}
	if cf.probingInterval <= 0 {
		return fmt.Errorf("--probing-rebalance-interval %v: pass a positive duration (default 10s)", cf.probingInterval)
	}
	if cf.txnTimeout <= cf.commitInterval || cf.txnTimeout > 15*time.Minute {
		return fmt.Errorf("--txn-timeout %v: pass a duration longer than --commit-interval %v and at most 15m (default 10s; the broker's transaction.max.timeout.ms bounds it too)", cf.txnTimeout, cf.commitInterval)
	}
	return nil
}

// validNodeName checks --node: it becomes the Kafka group instance id,
// which allows the characters of a topic name.
func validNodeName(node string) error {
	if node == "" {
		return fmt.Errorf("--node is empty (the host name is unknown here): pass --node with a name stable across restarts")
	}
	if len(node) > 200 {
		return fmt.Errorf("--node %q is %d characters: pass at most 200", node[:40]+"...", len(node))
	}
	for i := 0; i < len(node); i++ {
		c := node[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("--node %q has %q at byte %d: pass a name of letters, digits, '.', '_' and '-' (a Kafka group instance id)", node, c, i)
		}
	}
	return nil
}
