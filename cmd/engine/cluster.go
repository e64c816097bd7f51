package main

import (
	"net"
	"os"
	"time"

	"github.com/shardfn/shardfn/cluster"
)

// runCluster is run's second half with --cluster: the node joins the
// cluster (topics created or validated, partitions assigned, their
// changelogs restored) and the HTTP server serves it. Kafka ingresses and
// egresses of a module are refused in cluster mode: they run only on one
// node for now.
func (d *daemon) runCluster(stop <-chan os.Signal) int {
	c, log := d.c, d.log
	cc := c.cluster
	opts := d.engineOptions()
	log.Info("starting cluster node", "cluster", cc.name, "node", cc.node, "brokers", cc.brokers, "data_dir", opts.DataDir,
		"shards", opts.Shards, "commit_interval", cc.commitInterval, "session_timeout", cc.sessionTimeout, "txn_timeout", cc.txnTimeout)
	n, err := cluster.Start(cluster.Config{
		Brokers: cc.brokers, Name: cc.name, Node: cc.node,
		Topics: cluster.TopicOptions{Partitions: cc.partitions, ReplicationFactor: cc.replicationFactor,
			MinInsyncReplicas: cc.minISR, Logger: log},
		CommitInterval: cc.commitInterval, SessionTimeout: cc.sessionTimeout, TxnTimeout: cc.txnTimeout,
		StandbyInterval: cc.standbyInterval, WarmupLag: cc.warmupLag, ProbingInterval: cc.probingInterval,
		Engine: opts, Specs: d.specs, Logger: log,
		KafkaIngress: d.kcfg.Ingresses, KafkaEgress: d.kcfg.Egresses,
		AdminURL: adminURL(cc.advertiseAdmin, d.admLn.Addr()),
	})
	if err != nil {
		log.Error("cannot start the cluster node", "err", err)
		shutdownServer(d.srv, log, time.Second)
		d.closeRemote()
		return 1
	}
	if err := d.srv.SetEngine(n); err != nil {
		log.Error("cannot serve the cluster node", "err", err)
		_ = n.Close()
		d.closeRemote()
		return 1
	}
	log.Info("cluster node started", "partitions", n.Partitions(), "topics", n.Topics().All(),
		"ingress", d.ingLn.Addr().String(), "admin", d.admLn.Addr().String(), "advertised_admin", adminURL(cc.advertiseAdmin, d.admLn.Addr()))
	status := 0
	select {
	case <-stop:
	case err := <-d.serveErr:
		log.Error("listener failed", "err", err)
		status = 1
	}
	d.log.Info("shutting down", "draining_for_at_most", c.shutdownTimeout)
	_ = n.Close() // stays in the group: back within the session timeout, it keeps its partitions
	d.closeRemote()
	shutdownServer(d.srv, log, 2*time.Second)
	log.Info("shutdown complete", "exit_status", status)
	return status
}

// adminURL is the admin URL a node advertises to the others (they forward
// GET /state/... for its partitions there): --advertise-admin, or
// http://<the admin listener's address>, with the host name in place of an
// unspecified address (0.0.0.0, ::).
func adminURL(advertise string, ln net.Addr) string {
	if advertise != "" {
		return advertise
	}
	host, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
