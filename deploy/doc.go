// Package deploy holds monitoring for shardfn: a Grafana dashboard
// (grafana/shardfn.json) and Prometheus alerting rules
// (prometheus/alerts.yml) over the metrics of the admin listener's /metrics.
// Its test checks that every metric they name is exported by a running
// server. See README.md in this directory.
package deploy
