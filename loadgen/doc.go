// Package loadgen drives the RS-1 ride-sharing workload (workload-rides.md)
// against a Target: the engine in-process (inproc), the same engine with the
// rides functions served by the StateFun JavaScript SDK (remote), a running
// cmd/engine over HTTP, a bare fasthttp server (baseline, the HTTP ceiling)
// or a peer system registered with RegisterTarget (restate).
//
// A run is seeding (every driver reports a location), warm-up, a measured
// window in open loop (target rate, latency from the intended send time, so
// coordinated omission is corrected) or closed loop (fixed concurrency),
// then draining and the invariant checks of RS-1, each reported by name with
// the first failing ids. Latencies go into HDR histograms per event kind;
// package report writes the Markdown report, the SVG plots and the index of
// results/.
//
// Targets are safe for concurrent use: Run's workers call one Target from
// many goroutines. Run drives one run and returns when it is over; a Target
// serves one Run at a time.
package loadgen
