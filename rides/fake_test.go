package rides

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// sim is a single-threaded reference runner of the RS-1 functions: a FIFO
// of messages, a list of delayed messages fired on demand, captured replies
// and egress. It implements engine.Context for the invocation in progress.
type sim struct {
	fns     map[string]engine.Function // by function type
	specs   map[string][]engine.ValueSpec
	mspecs  map[string][]engine.MapSpec
	state   map[engine.Address]map[string][]byte
	maps    map[engine.Address]map[string]map[string][]byte // address -> map -> key -> value
	queue   []envelope
	timers  []timer
	replies []reply
	egress  []engine.Message
	invoked map[string]int // by message type
	now     time.Time

	cur envelope
}

type envelope struct {
	to, from engine.Address
	msg      engine.Message
	req      int // request id, 0 for none
}

type timer struct {
	delay time.Duration
	env   envelope
}

type reply struct {
	req int
	msg engine.Message
}

func newSim(cfg Config) *sim {
	specs, err := NewSpecs(cfg)
	if err != nil {
		panic(err)
	}
	s := &sim{fns: map[string]engine.Function{}, specs: map[string][]engine.ValueSpec{},
		mspecs: map[string][]engine.MapSpec{}, state: map[engine.Address]map[string][]byte{},
		maps: map[engine.Address]map[string]map[string][]byte{}, invoked: map[string]int{}, now: time.Unix(0, 0)}
	for _, sp := range specs {
		s.fns[sp.Namespace+"/"+sp.Type] = sp.Function
		s.specs[sp.Namespace+"/"+sp.Type] = sp.States
		s.mspecs[sp.Namespace+"/"+sp.Type] = sp.Maps
	}
	return s
}

func (s *sim) send(to engine.Address, msg engine.Message, req int) {
	s.queue = append(s.queue, envelope{to: to, msg: msg, req: req})
}

// run processes queued messages until none is left; it returns the first
// function error.
func (s *sim) run() error {
	for len(s.queue) > 0 {
		e := s.queue[0]
		s.queue = s.queue[1:]
		fn := s.fns[e.to.FunctionType()]
		if fn == nil {
			return fmt.Errorf("no function %s", e.to.FunctionType())
		}
		s.cur = e
		s.invoked[e.msg.Type]++
		// Effects are applied directly; a failing function would leave
		// partial state, so tests treat any error as fatal.
		if err := fn.Invoke(s, e.msg); err != nil {
			return fmt.Errorf("%s <- %s: %w", e.to, e.msg.Type, err)
		}
	}
	return nil
}

// fire moves all delayed messages into the queue (in delay order) and runs.
func (s *sim) fire() error {
	slices.SortStableFunc(s.timers, func(a, b timer) int { return cmp.Compare(a.delay, b.delay) })
	for _, t := range s.timers {
		s.queue = append(s.queue, t.env)
	}
	s.timers = nil
	return s.run()
}

func (s *sim) Self() engine.Address { return s.cur.to }
func (s *sim) Caller() (engine.Address, bool) {
	return s.cur.from, !s.cur.from.IsZero()
}
func (s *sim) Now() time.Time { return s.now }
func (s *sim) Send(to engine.Address, msg engine.Message) {
	s.queue = append(s.queue, envelope{to: to, from: s.cur.to, msg: msg, req: s.cur.req})
}
func (s *sim) SendAfter(d time.Duration, to engine.Address, msg engine.Message, token string) {
	s.timers = append(s.timers, timer{delay: d, env: envelope{to: to, from: s.cur.to, msg: msg, req: s.cur.req}})
}
func (s *sim) Cancel(string) {}
func (s *sim) Egress(name string, msg engine.Message) {
	if name != EgressName {
		panic("unexpected egress " + name)
	}
	s.egress = append(s.egress, msg)
}
func (s *sim) Reply(msg engine.Message) {
	if s.cur.req == 0 {
		return
	}
	for _, r := range s.replies {
		if r.req == s.cur.req {
			return // first reply wins
		}
	}
	s.replies = append(s.replies, reply{req: s.cur.req, msg: msg})
}

func (s *sim) spec(spec engine.ValueSpec) {
	for _, sp := range s.specs[s.cur.to.FunctionType()] {
		if sp == spec {
			return
		}
	}
	panic(fmt.Sprintf("undeclared state %q of %s", spec.Name, s.cur.to.FunctionType()))
}

func (s *sim) Get(spec engine.ValueSpec) ([]byte, bool) {
	s.spec(spec)
	v, ok := s.state[s.cur.to][spec.Name]
	return v, ok
}
func (s *sim) Set(spec engine.ValueSpec, v []byte) error {
	s.spec(spec)
	m := s.state[s.cur.to]
	if m == nil {
		m = map[string][]byte{}
		s.state[s.cur.to] = m
	}
	m[spec.Name] = append([]byte(nil), v...)
	return nil
}
func (s *sim) Remove(spec engine.ValueSpec) error {
	s.spec(spec)
	delete(s.state[s.cur.to], spec.Name)
	return nil
}
func (s *sim) GetString(spec engine.ValueSpec) (string, bool, error) {
	v, ok := s.Get(spec)
	str, err := engine.DecodeStringWrapper(v)
	return str, ok, err
}
func (s *sim) SetString(spec engine.ValueSpec, v string) error {
	return s.Set(spec, engine.AppendStringWrapper(nil, v))
}
func (s *sim) GetInt64(spec engine.ValueSpec) (int64, bool, error) {
	if spec.Type != engine.TypeLong {
		return 0, false, engine.ErrStateType
	}
	v, ok := s.Get(spec)
	n, err := engine.DecodeLongWrapper(v)
	return n, ok, err
}
func (s *sim) SetInt64(spec engine.ValueSpec, v int64) error {
	if spec.Type != engine.TypeLong {
		return engine.ErrStateType
	}
	return s.Set(spec, engine.AppendLongWrapper(nil, v))
}
func (s *sim) GetJSON(spec engine.ValueSpec, v any) (bool, error) {
	b, ok := s.Get(spec)
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(b, v)
}
func (s *sim) SetJSON(spec engine.ValueSpec, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.Set(spec, b)
}

// mapOf returns the current instance's map, declared or panicking;
// create makes it when missing.
func (s *sim) mapOf(spec engine.MapSpec, create bool) map[string][]byte {
	declared := false
	for _, sp := range s.mspecs[s.cur.to.FunctionType()] {
		declared = declared || sp == spec
	}
	if !declared {
		panic(fmt.Sprintf("undeclared map %q of %s", spec.Name, s.cur.to.FunctionType()))
	}
	ms := s.maps[s.cur.to]
	if ms == nil {
		if !create {
			return nil
		}
		ms = map[string]map[string][]byte{}
		s.maps[s.cur.to] = ms
	}
	m := ms[spec.Name]
	if m == nil && create {
		m = map[string][]byte{}
		ms[spec.Name] = m
	}
	return m
}

func (s *sim) MapGet(spec engine.MapSpec, key string) ([]byte, bool, error) {
	v, ok := s.mapOf(spec, false)[key]
	return v, ok, nil
}
func (s *sim) MapSet(spec engine.MapSpec, key string, v []byte) error {
	s.mapOf(spec, true)[key] = append([]byte(nil), v...)
	return nil
}
func (s *sim) MapDelete(spec engine.MapSpec, key string) error {
	delete(s.mapOf(spec, false), key)
	return nil
}
func (s *sim) MapClear(spec engine.MapSpec) error {
	s.mapOf(spec, false)
	delete(s.maps[s.cur.to], spec.Name)
	return nil
}
func (s *sim) MapLen(spec engine.MapSpec) (int, error) { return len(s.mapOf(spec, false)), nil }

// MapRange visits entries in key order (the engine promises no order; the
// fake is deterministic).
func (s *sim) MapRange(spec engine.MapSpec, fn func(string, []byte) bool) error {
	m := s.mapOf(spec, false)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !fn(k, m[k]) {
			break
		}
	}
	return nil
}

// values returns an instance's state in engine.State's shape.
func (s *sim) values(a engine.Address) []engine.StateValue {
	var out []engine.StateValue
	for _, sp := range s.specs[a.FunctionType()] {
		v, ok := s.state[a][sp.Name]
		out = append(out, engine.StateValue{Spec: sp, Value: v, Present: ok})
	}
	for _, sp := range s.mspecs[a.FunctionType()] {
		m := s.maps[a][sp.Name]
		sv := engine.StateValue{Spec: engine.ValueSpec{Name: sp.Name, Type: engine.TypeMap}, MapLen: len(m), Present: len(m) > 0}
		for k, v := range m {
			sv.Map = append(sv.Map, engine.MapEntry{Key: k, Value: v})
		}
		sort.Slice(sv.Map, func(i, j int) bool { return sv.Map[i].Key < sv.Map[j].Key })
		out = append(out, sv)
	}
	return out
}

func (s *sim) driver(id string) DriverState {
	d, err := DecodeDriver(s.values(DriverAddr(id)))
	if err != nil {
		panic(err)
	}
	return d
}

func (s *sim) cell(id string) []string {
	c, err := DecodeCell(s.values(CellAddr(id)))
	if err != nil {
		panic(err)
	}
	return c.Free
}

func (s *sim) ride(id string) RideState {
	r, err := DecodeRide(s.values(RideAddr(id)))
	if err != nil {
		panic(err)
	}
	return r
}

func (s *sim) passenger(id string) PassengerState {
	p, err := DecodePassenger(s.values(PassengerAddr(id)))
	if err != nil {
		panic(err)
	}
	return p
}
