package soak

import "strconv"

// driverTrack is what a sender knows of one driver it writes: each driver
// is owned by one sender goroutine, which writes it sequentially, so no
// lock is needed; the verification reads it after the senders stopped.
type driverTrack struct {
	seq   int32    // attempts so far
	acked string   // the cell of the last acknowledged write ("" none)
	doubt []string // cells of writes whose outcome is unknown
}

// Outcome classes of a write, as far as its sender can tell.
const (
	outcomeAcked   = iota // 2xx: durable
	outcomeRefused        // 4xx, or 503 with Retry-After: not applied
	outcomeDoubt          // no answer, or an answer that does not say (503 without Retry-After, 5xx)
)

// classify maps an answer (or a failure) to an outcome class.
func classify(a Answer, failed bool) int {
	switch {
	case failed:
		return outcomeDoubt
	case a.Status/100 == 2:
		return outcomeAcked
	case a.Status/100 == 4, a.Status == 503 && a.RetryAfter:
		return outcomeRefused
	}
	return outcomeDoubt
}

// record notes the outcome of a write of cell.
func (d *driverTrack) record(cell string, outcome int) {
	switch outcome {
	case outcomeAcked:
		d.acked = cell
		// Writes in doubt stay possible: one still in the server (a timed-out
		// request not yet handled) may be applied after this one.
	case outcomeDoubt:
		d.doubt = append(d.doubt, cell)
	}
}

// allowed reports whether got (the driver's cell after the restart, ""
// for none) is a value the driver may have: the last acknowledged write
// or one in doubt; with no acknowledged write, also none.
func (d *driverTrack) allowed(got string) bool {
	if got == d.acked {
		return true
	}
	for _, c := range d.doubt {
		if got == c {
			return true
		}
	}
	return false
}

// cellFor is the cell of a tracked driver's n-th write: consecutive writes
// of a driver go to different cells of the 100 x 100 grid (the period is
// 10000 writes), and drivers are spread over the grid.
func cellFor(worker, driver int, n int32) string {
	idx := (worker*131 + driver*7919 + int(n)*17) % 10000
	b := make([]byte, 0, 5)
	b = strconv.AppendInt(b, int64(idx/100), 10)
	b = append(b, '-')
	return string(strconv.AppendInt(b, int64(idx%100), 10))
}
