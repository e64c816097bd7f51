package report

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/google/pprof/profile"
)

// FuncShare is one function's share of a CPU profile.
type FuncShare struct {
	Name  string  `json:"name"`
	Share float64 `json:"share"` // 0..1 of all samples
}

// ProfileSummary holds the top functions of a CPU profile by flat (own)
// and cumulative (own and callees) time.
type ProfileSummary struct {
	Total float64 // seconds of CPU sampled
	Flat  []FuncShare
	Cum   []FuncShare
}

// SummariseProfile parses a pprof CPU profile and returns the top n
// functions by flat and by cumulative share.
func SummariseProfile(data []byte, n int) (ProfileSummary, error) {
	var s ProfileSummary
	p, err := profile.Parse(bytes.NewReader(data))
	if err != nil {
		return s, fmt.Errorf("report: parsing the CPU profile: %w", err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		idx = len(p.SampleType) - 1
	}
	if idx < 0 {
		return s, fmt.Errorf("report: profile has no sample types")
	}
	flat := map[string]int64{}
	cum := map[string]int64{}
	var total int64
	for _, smp := range p.Sample {
		v := smp.Value[idx]
		total += v
		seen := map[string]bool{}
		for li, loc := range smp.Location {
			// Line[0] is the innermost inlined function of a location.
			for k, ln := range loc.Line {
				if ln.Function == nil {
					continue
				}
				name := ln.Function.Name
				if li == 0 && k == 0 {
					flat[name] += v
				}
				if !seen[name] {
					seen[name] = true
					cum[name] += v
				}
			}
		}
	}
	if total == 0 {
		return s, nil
	}
	if st := p.SampleType[idx]; st.Unit == "nanoseconds" {
		s.Total = float64(total) / 1e9
	}
	top := func(m map[string]int64) []FuncShare {
		out := make([]FuncShare, 0, len(m))
		for k, v := range m {
			out = append(out, FuncShare{Name: k, Share: float64(v) / float64(total)})
		}
		slices.SortFunc(out, func(a, b FuncShare) int {
			return cmp.Or(cmp.Compare(b.Share, a.Share), cmp.Compare(a.Name, b.Name))
		})
		if len(out) > n {
			out = out[:n]
		}
		return out
	}
	s.Flat, s.Cum = top(flat), top(cum)
	return s, nil
}
