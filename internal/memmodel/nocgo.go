//go:build !cgo

package memmodel

// pebbleOnGoHeap: without cgo, Pebble's block cache and memtables are Go
// allocations, inside the Go heap and the Go memory limit.
const pebbleOnGoHeap = true
