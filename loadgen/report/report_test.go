package report

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/shardfn/shardfn/loadgen"
)

func fakeRun(shards int, evps float64) *loadgen.Result {
	curve := [][2]float64{{0, 0.1}, {50, 0.5}, {99, 2}, {99.9, 5}, {100, 9}}
	return &loadgen.Result{
		Target: "inproc", Shards: shards, Start: time.Unix(1700000000, 0),
		Config:     loadgen.Config{Duration: time.Second, Concurrency: 8, Drivers: 10, Passengers: 20, Grid: 3, RequestShare: 0.1, FinishDelay: time.Second, Seed: 1},
		Location:   loadgen.Latency{Count: 900, PerS: evps * 0.9, P50Ms: 0.5, P99Ms: 2, P999Ms: 5, MaxMs: 9, Curve: curve},
		Request:    loadgen.Latency{Count: 100, PerS: evps * 0.1, P50Ms: 1, P99Ms: 4, P999Ms: 8, MaxMs: 12, Curve: curve},
		EventsPerS: evps, InvocationsPerS: evps * 2.5, InvariantsText: "ok",
		Invariants: []loadgen.InvariantResult{{Name: loadgen.InvEventsOnce, OK: true, Checked: 3}},
	}
}

func wellFormed(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
	}
}

func TestWriteAndIndex(t *testing.T) {
	dir := t.TempDir()
	older := Report{Kind: KindRun, Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Command: "go run ./cmd/loadgen",
		Machine: Machine(dir), Runs: []*loadgen.Result{fakeRun(2, 1000)},
		Profile: &ProfileSummary{Total: 1, Flat: []FuncShare{{"main.spin", 0.9}}, Cum: []FuncShare{{"main.main", 1}}}}
	p1, err := Write(dir, older)
	if err != nil {
		t.Fatal(err)
	}
	newer := Report{Kind: KindSweep, Time: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), Command: "go run ./cmd/loadgen --shards 1,2",
		Runs: []*loadgen.Result{fakeRun(1, 600), fakeRun(2, 1000)}}
	p2, err := Write(dir, newer)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(p2)
	for _, want := range []string{"| 1 | 600 | 1.00 | 1.00 |", "| 2 | 1000 | 1.67 | 0.83 |", "scaling.svg", "latency.svg", "--shards 1,2", "**ok**"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("sweep report lacks %q", want)
		}
	}
	md1, _ := os.ReadFile(p1)
	for _, want := range []string{"main.spin", "## Machine", "| location | 900 |"} {
		if !strings.Contains(string(md1), want) {
			t.Errorf("run report lacks %q:\n%s", want, md1)
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(dir, "*.svg"))
	if len(svgs) != 3 {
		t.Fatalf("svg files %v", svgs)
	}
	for _, s := range svgs {
		wellFormed(t, s)
	}
	if err := Index(dir); err != nil {
		t.Fatal(err)
	}
	idx, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	i1, i2 := strings.Index(string(idx), filepath.Base(p1)), strings.Index(string(idx), filepath.Base(p2))
	if i1 < 0 || i2 < 0 || i2 > i1 {
		t.Fatalf("index does not list both, newest first:\n%s", idx)
	}
}

func TestSummariseProfile(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	leaf, mid, root := fn(1, "leaf"), fn(2, "mid"), fn(3, "root")
	loc := func(id uint64, f ...*profile.Function) *profile.Location {
		l := &profile.Location{ID: id}
		for _, x := range f {
			l.Line = append(l.Line, profile.Line{Function: x})
		}
		return l
	}
	lLeaf, lMid, lRoot := loc(1, leaf), loc(2, mid), loc(3, root)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lLeaf, lMid, lRoot}, Value: []int64{3, 3e9}},
			{Location: []*profile.Location{lMid, lRoot}, Value: []int64{1, 1e9}},
		},
		Location:   []*profile.Location{lLeaf, lMid, lRoot},
		Function:   []*profile.Function{leaf, mid, root},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 1,
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	s, err := SummariseProfile(buf.Bytes(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if s.Total != 4 || len(s.Flat) != 2 || s.Flat[0] != (FuncShare{"leaf", 0.75}) || s.Flat[1] != (FuncShare{"mid", 0.25}) {
		t.Fatalf("flat %+v total %v", s.Flat, s.Total)
	}
	if s.Cum[0] != (FuncShare{"mid", 1}) || s.Cum[1] != (FuncShare{"root", 1}) || s.Cum[2] != (FuncShare{"leaf", 0.75}) {
		t.Fatalf("cum %+v", s.Cum)
	}
	if _, err := SummariseProfile([]byte("not a profile"), 5); err == nil {
		t.Fatal("garbage parsed")
	}
}
