//go:build cgo

package memmodel

// pebbleOnGoHeap: with cgo, Pebble allocates its block cache and memtables
// with C malloc, outside the Go heap (and outside the Go memory limit).
const pebbleOnGoHeap = false
