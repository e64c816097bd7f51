package loadgen

import (
	"testing"
)

func TestDecodeEgressForms(t *testing.T) {
	want := RideEvent{Kind: "ride-started", Ride: "p-9-1", Driver: "d-17", Passenger: "p-9"}
	ev := `{"kind":"ride-started","ride":"p-9-1","driver":"d-17","passenger":"p-9"}`
	for _, body := range []string{
		`{"records":[{"offset":0,"type":"rides/event","body":` + ev + `,"source":"rides/ride/p-9-1"}],"next":1}`,
		`{"records":[{"offset":0,"type":"rides/event","body_b64":"eyJraW5kIjoicmlkZS1zdGFydGVkIiwicmlkZSI6InAtOS0xIiwiZHJpdmVyIjoiZC0xNyIsInBhc3NlbmdlciI6InAtOSJ9"}],"next":1}`,
		`[` + ev + `]`,
	} {
		got, err := decodeEgress([]byte(body))
		if err != nil || len(got) != 1 || got[0] != want {
			t.Fatalf("decodeEgress(%s) = %+v, %v", body, got, err)
		}
	}
	if got, err := decodeEgress([]byte(`{"records":[],"next":5}`)); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	if _, err := decodeEgress([]byte(`{"records":[{"body":{"kind":""}}]}`)); err == nil {
		t.Fatal("record without kind accepted")
	}
}

func TestDecodeStateBody(t *testing.T) {
	body := `{"address":"rides/passenger/p-1","state":{"ride":{"type":"shardfn/bytes","text":"p-1-3"},"rides":{"type":"io.statefun.types/long","value":7},"seq":{"type":"io.statefun.types/long","value":3},"free":{"type":"rides/set","value_b64":"A2QtMQ=="}}}`
	m, err := decodeStateBody([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if string(m["ride"]) != "p-1-3" || string(m["free"]) != "\x03d-1" {
		t.Fatalf("decoded %q", m)
	}
	if n, err := longValue(m["rides"]); err != nil || n != 7 {
		t.Fatalf("rides %d %v", n, err)
	}
	if _, err := decodeStateBody([]byte(`{"state":{"free":{"value_b64":"%%%"}}}`)); err == nil {
		t.Fatal("bad base64 accepted")
	}
}

func TestPromSum(t *testing.T) {
	body := []byte("# HELP shardfn_invocations_total x\n# TYPE shardfn_invocations_total counter\nshardfn_invocations_total{shard=\"0\"} 10\nshardfn_invocations_total{shard=\"1\"} 5.5e1\nshardfn_invocations_total_other 99\nprocess_resident_memory_bytes 1.2e+08\n")
	if v, err := promSum(body, "shardfn_invocations_total"); err != nil || v != 65 {
		t.Fatalf("sum %v %v", v, err)
	}
	if v, err := promSum(body, "process_resident_memory_bytes"); err != nil || v != 1.2e8 {
		t.Fatalf("rss %v %v", v, err)
	}
	if _, err := promSum(body, "missing"); err == nil {
		t.Fatal("missing metric found")
	}
}
