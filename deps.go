//go:build deps

package main

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/google/pprof/profile"
	_ "github.com/panjf2000/ants/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/valyala/fasthttp"
	_ "google.golang.org/protobuf/proto"
	_ "gopkg.in/yaml.v3"
)
