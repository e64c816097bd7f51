// Package rides implements the RS-1 ride-sharing workload
// (workload-rides.md) as embedded shardfn functions: rides/driver,
// rides/passenger, rides/geocell and rides/ride.
//
// What it promises:
//
//   - Specs (or NewSpecs with a Config) returns the four function types with
//     the state names of the workload: driver {cell, joined, status, ride},
//     passenger {ride, rides, seq, seen}, geocell {free}, ride {passenger,
//     driver, cell, status, reply, tries}.
//   - The wire types of the workload are spoken exactly: rides/location and
//     rides/request in ({"cell":"x-y"}), rides/outcome as the reply of a
//     request, rides/event records in the egress "ride-events".
//   - Internal messages (rides/join, rides/leave, rides/find, rides/offer,
//     rides/accept, rides/decline, rides/none, rides/init, rides/finish,
//     rides/completed, rides/failed) use a compact length-prefixed encoding
//     (see codec.go); rides/touch ({"cell":"x-y"}) to a passenger writes only
//     its "seen" state and exists for the memory scenario of the load
//     generator.
//   - Ingress takes only the wire types: rides/driver declares
//     rides/location, rides/passenger rides/request and rides/touch
//     (engine.FunctionSpec.IngressTypes); rides/geocell and rides/ride take
//     no ingress at all (NoIngress). Other types sent from ingress are
//     refused with engine.ErrIngressType, which names the accepted ones.
//   - Every decoder validates every field whatever the sender: field count,
//     no trailing bytes, non-empty ids of at most MaxIDBytes, cells of at
//     most MaxCellBytes, a find's hop from 0 to 8 (a geocell also checks
//     that the hop names a cell of the grid), JSON members of the right
//     kind given once. A bad body fails the invocation with ErrBadBody
//     (the message goes to dead letters) instead of being trusted; each
//     decoder has a fuzz target (make fuzz).
//   - Every function is deterministic given its state and input (the finish
//     jitter is a hash of the ride id), so a replay reproduces the same
//     effects.
//   - Decode* turn the output of engine.State into plain structs for
//     checkers.
//
// Deviations from the letter of the workload text, each strictly safer:
// a driver that accepts an offer always sends leave to its joined cell, even
// when that cell is the offering one (the offering cell may have seen the
// driver leave and join again while the offer was in flight); a request to a
// passenger that already has an active ride is answered at once with
// {"ride":"","failed":true} (refused: no ride was made).
//
// What it relies on: the engine's one-message-at-a-time-per-address rule
// and FIFO order of messages from one sender to one address (the driver is
// the only sender of join/leave for itself, so a cell sees them in order).
//
// Concurrency: the functions keep no memory outside engine state; Specs and
// the encoders/decoders are safe for concurrent use.
package rides
