// Package report turns load generator results into the Markdown reports and
// hand-written SVG plots kept in results/, and regenerates the index
// results/README.md.
//
// What it promises: Write produces one Markdown file per run (plus its SVG
// files) whose first line is an HTML comment holding a JSON summary, which
// Index reads back to list every report, newest first; file names start
// with the run's UTC date and time, so they sort by age. Machine describes
// the host from /proc and the Go runtime. SummariseProfile reads a pprof CPU
// profile.
//
// What it relies on: loadgen.Result values as Run returns them.
//
// Concurrency: functions are safe for concurrent use; two Writes into one
// folder in the same second with the same name overwrite each other.
package report
