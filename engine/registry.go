package engine

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/store"
)

// funcEntry is one registered function type (or one concrete type of a
// wildcard remote spec).
type funcEntry struct {
	ft     *shard.FuncType
	name   string // namespace/type
	fn     Function
	remote RemoteFunction
	counts []paddedCounter // invocations per shard
	fails  []paddedCounter
	// ingress lists the message types accepted from ingress (nil: all,
	// unless noIngress); see FunctionSpec.IngressTypes.
	ingress   []string
	noIngress bool
}

type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

type fnKey struct{ ns, typ string }

// registry resolves function types. Exact registrations are fixed at Open;
// concrete types of wildcard remote specs ("ns/*") are made on first use.
type registry struct {
	exact  map[fnKey]*funcEntry
	wild   map[string]*FunctionSpec
	made   sync.Map // fnKey -> *funcEntry (wildcard instances)
	mu     sync.Mutex
	saved  map[string][]shard.StateSpec // remembered remote specs by type
	st     store.Store
	shards int
	all    []*funcEntry // by FuncType.ID
	allMu  sync.Mutex
	ids    atomic.Pointer[[]*funcEntry] // all, for byID (copy on write)
}

func newRegistry(specs []FunctionSpec) (*registry, error) {
	r := &registry{exact: map[fnKey]*funcEntry{}, wild: map[string]*FunctionSpec{}, saved: map[string][]shard.StateSpec{}}
	for i := range specs {
		sp := specs[i]
		if err := validateSpec(&sp); err != nil {
			return nil, err
		}
		if sp.Type == "*" {
			if _, dup := r.wild[sp.Namespace]; dup {
				return nil, fmt.Errorf("engine: function type %s/* registered twice", sp.Namespace)
			}
			r.wild[sp.Namespace] = &sp
			continue
		}
		k := fnKey{sp.Namespace, sp.Type}
		if _, dup := r.exact[k]; dup {
			return nil, fmt.Errorf("engine: function type %s/%s registered twice", sp.Namespace, sp.Type)
		}
		r.exact[k] = r.newEntry(&sp, sp.Namespace, sp.Type)
	}
	return r, nil
}

// ValidStateName is the rule for state and map names: [A-Za-z_][A-Za-z0-9_]*,
// at most 64 bytes (remote functions' names are checked by it too).
func ValidStateName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func validateSpec(sp *FunctionSpec) error {
	if sp.Namespace == "" || sp.Type == "" {
		return fmt.Errorf("engine: function spec %q/%q: namespace and type are required", sp.Namespace, sp.Type)
	}
	if (sp.Function == nil) == (sp.Remote == nil) {
		return fmt.Errorf("engine: function spec %s/%s: set exactly one of Function and Remote", sp.Namespace, sp.Type)
	}
	if sp.Type == "*" && sp.Remote == nil {
		return fmt.Errorf("engine: function spec %s/*: wildcard types are for remote functions only", sp.Namespace)
	}
	seen := map[string]bool{}
	for _, v := range sp.States {
		if err := declare(sp, "state", v.Name, seen); err != nil {
			return err
		}
		if v.Mode > ExpireAfterInvoke {
			return fmt.Errorf("engine: function %s/%s: state %q has unknown expiry mode %d", sp.Namespace, sp.Type, v.Name, v.Mode)
		}
		if v.Mode != ExpireNever && v.Expiry <= 0 {
			return fmt.Errorf("engine: function %s/%s: state %q has an expiry mode but no positive Expiry", sp.Namespace, sp.Type, v.Name)
		}
	}
	if len(sp.Maps) > 0 && sp.Remote != nil {
		return fmt.Errorf("engine: function %s/%s: map state is for embedded functions (StateFun's protocol has none)", sp.Namespace, sp.Type)
	}
	for _, m := range sp.Maps {
		if err := declare(sp, "map", m.Name, seen); err != nil {
			return err
		}
	}
	return validateIngressTypes(sp)
}

// declare checks a state or map name of sp and that no other state or map
// of sp has it.
func declare(sp *FunctionSpec, kind, name string, seen map[string]bool) error {
	if !ValidStateName(name) {
		return fmt.Errorf("engine: function %s/%s: %s name %q must match [A-Za-z_][A-Za-z0-9_]* and be at most 64 bytes", sp.Namespace, sp.Type, kind, name)
	}
	if seen[name] {
		return fmt.Errorf("engine: function %s/%s: state %q declared twice", sp.Namespace, sp.Type, name)
	}
	seen[name] = true
	return nil
}

func validateIngressTypes(sp *FunctionSpec) error {
	if sp.NoIngress && len(sp.IngressTypes) > 0 {
		return fmt.Errorf("engine: function %s/%s: NoIngress refuses every ingress message; leave IngressTypes empty or drop NoIngress", sp.Namespace, sp.Type)
	}
	seen := make(map[string]bool, len(sp.IngressTypes))
	for _, t := range sp.IngressTypes {
		if t == "" || len(t) > 1024 {
			return fmt.Errorf("engine: function %s/%s: ingress type %q must be a non-empty message type name of at most 1024 bytes", sp.Namespace, sp.Type, t)
		}
		if seen[t] {
			return fmt.Errorf("engine: function %s/%s: ingress type %q listed twice", sp.Namespace, sp.Type, t)
		}
		seen[t] = true
	}
	return nil
}

// checkIngress resolves the function type of to and checks that it accepts
// messages of type typ from ingress: ErrUnknownType for an unregistered
// type, ErrIngressType (naming the accepted types) for a refused message
// type. Safe for concurrent use; no allocation unless it fails.
func (r *registry) checkIngress(to Address, typ string) error {
	e := r.lookup(to.Namespace, to.Type)
	if e == nil {
		return fmt.Errorf("%w: %s/%s is not registered", ErrUnknownType, to.Namespace, to.Type)
	}
	if e.noIngress {
		return fmt.Errorf("%w: %s takes no messages from ingress (only from other functions); %q refused", ErrIngressType, e.name, typ)
	}
	if e.ingress == nil {
		return nil
	}
	for _, t := range e.ingress {
		if t == typ {
			return nil
		}
	}
	return fmt.Errorf("%w: %s accepts %s from ingress, not %q", ErrIngressType, e.name, strings.Join(e.ingress, ", "), typ)
}

func toShardSpec(v ValueSpec) shard.StateSpec {
	return shard.StateSpec{Name: v.Name, Type: v.Type, Mode: uint8(v.Mode), Expiry: int64(v.Expiry)}
}

func fromShardSpec(s shard.StateSpec) ValueSpec {
	return ValueSpec{Name: s.Name, Type: s.Type, Mode: ExpireMode(s.Mode), Expiry: time.Duration(s.Expiry)}
}

func (r *registry) newEntry(sp *FunctionSpec, ns, typ string) *funcEntry {
	e := &funcEntry{
		ft:     &shard.FuncType{Namespace: ns, Type: typ, Async: sp.Remote != nil},
		name:   ns + "/" + typ,
		fn:     sp.Function,
		remote: sp.Remote,

		noIngress: sp.NoIngress,
	}
	if len(sp.IngressTypes) > 0 {
		e.ingress = append([]string(nil), sp.IngressTypes...)
	}
	for _, m := range sp.Maps {
		e.ft.MapNames = append(e.ft.MapNames, m.Name)
	}
	specs := make([]shard.StateSpec, 0, len(sp.States))
	for _, v := range sp.States {
		specs = append(specs, toShardSpec(v))
	}
	e.ft.SetSpecs(specs)
	if r.shards > 0 { // a wildcard's type made while serving: its counters exist before it is published
		e.counts = make([]paddedCounter, r.shards)
		e.fails = make([]paddedCounter, r.shards)
	}
	r.allMu.Lock()
	e.ft.ID = uint32(len(r.all))
	r.all = append(r.all, e)
	ids := append([]*funcEntry(nil), r.all...)
	r.ids.Store(&ids)
	r.allMu.Unlock()
	return e
}

// byID returns the entry of a FuncType.ID; safe for concurrent use.
func (r *registry) byID(id uint32) *funcEntry { return (*r.ids.Load())[id] }

func (r *registry) setShards(n int) {
	r.shards = n
	r.allMu.Lock()
	defer r.allMu.Unlock()
	for _, e := range r.all {
		e.counts = make([]paddedCounter, n)
		e.fails = make([]paddedCounter, n)
	}
}

func (r *registry) entries() []*funcEntry {
	r.allMu.Lock()
	defer r.allMu.Unlock()
	return append([]*funcEntry(nil), r.all...)
}

// lookup resolves a function type; safe for concurrent use.
func (r *registry) lookup(ns, typ string) *funcEntry {
	if e := r.exact[fnKey{ns, typ}]; e != nil {
		return e
	}
	sp := r.wild[ns]
	if sp == nil {
		return nil
	}
	k := fnKey{ns, typ}
	if v, ok := r.made.Load(k); ok {
		return v.(*funcEntry)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.made.Load(k); ok {
		return v.(*funcEntry)
	}
	e := r.newEntry(sp, ns, typ)
	r.mergeSavedLocked(e)
	r.made.Store(k, e)
	return e
}

// loadSpecs reads remembered remote specs, so that a restart does not
// cause a storm of incomplete-invocation-context round trips.
func (r *registry) loadSpecs(st store.Store) error {
	r.st = st
	err := st.ScanSpecs(func(fnType string, v []byte) error {
		specs, err := decodeSpecs(v)
		if err != nil {
			return fmt.Errorf("remembered specs of %s: %w", fnType, err)
		}
		r.saved[fnType] = specs
		return nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.exact {
		if e.remote != nil {
			r.mergeSavedLocked(e)
		}
	}
	return nil
}

func (r *registry) mergeSavedLocked(e *funcEntry) {
	saved := r.saved[e.name]
	if len(saved) == 0 {
		return
	}
	e.ft.SetSpecs(mergeSpecs(e.ft.Specs(), saved))
}

func mergeSpecs(have, add []shard.StateSpec) []shard.StateSpec {
	out := append([]shard.StateSpec(nil), have...)
	for _, a := range add {
		found := false
		for i := range out {
			if out[i].Name == a.Name {
				out[i] = a
				found = true
			}
		}
		if !found {
			out = append(out, a)
		}
	}
	return out
}

// addSpecs registers specs a remote function asked for and remembers them.
func (r *registry) addSpecs(e *funcEntry, add []ValueSpec) error {
	conv := make([]shard.StateSpec, 0, len(add))
	for _, v := range add {
		if !ValidStateName(v.Name) {
			return fmt.Errorf("remote function %s declared state name %q; names must match [A-Za-z_][A-Za-z0-9_]*", e.name, v.Name)
		}
		conv = append(conv, toShardSpec(v))
	}
	r.mu.Lock()
	merged := mergeSpecs(e.ft.Specs(), conv)
	e.ft.SetSpecs(merged)
	r.saved[e.name] = merged
	r.mu.Unlock()
	if r.st != nil {
		b := r.st.NewBatch()
		b.PutSpecs(e.name, encodeSpecs(merged))
		if err := b.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Spec list encoding (on-disk format; never change): uvarint n, n ×
// (string name, string type, u8 mode, i64 LE expiry ns).
func encodeSpecs(s []shard.StateSpec) []byte {
	b := binary.AppendUvarint(nil, uint64(len(s)))
	for _, v := range s {
		b = binary.AppendUvarint(b, uint64(len(v.Name)))
		b = append(b, v.Name...)
		b = binary.AppendUvarint(b, uint64(len(v.Type)))
		b = append(b, v.Type...)
		b = append(b, v.Mode)
		b = binary.LittleEndian.AppendUint64(b, uint64(v.Expiry))
	}
	return b
}

func decodeSpecs(b []byte) ([]shard.StateSpec, error) {
	bad := fmt.Errorf("%w: spec list", store.ErrCorrupt)
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, bad
	}
	b = b[k:]
	str := func() (string, bool) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return "", false
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s, true
	}
	out := make([]shard.StateSpec, 0, n)
	for i := uint64(0); i < n; i++ {
		name, ok1 := str()
		typ, ok2 := str()
		if !ok1 || !ok2 || len(b) < 9 {
			return nil, bad
		}
		out = append(out, shard.StateSpec{Name: name, Type: typ, Mode: b[0], Expiry: int64(binary.LittleEndian.Uint64(b[1:9]))})
		b = b[9:]
	}
	return out, nil
}

// stateSpecs returns the state specs declared (so far) by the function type
// of addr, or ErrUnknownType when that type is not registered.
func (r *registry) stateSpecs(addr Address) ([]shard.StateSpec, error) {
	e := r.lookup(addr.Namespace, addr.Type)
	if e == nil {
		return nil, fmt.Errorf("%w: %s/%s is not registered", ErrUnknownType, addr.Namespace, addr.Type)
	}
	return e.ft.Specs(), nil
}

// appendUnset appends, for every spec that out has no value for, a value
// with Present false, so that a state read lists every declared value.
func appendUnset(out []StateValue, specs []shard.StateSpec) []StateValue {
	for _, sp := range specs {
		found := false
		for _, v := range out {
			if v.Spec.Name == sp.Name {
				found = true
				break
			}
		}
		if !found {
			out = append(out, StateValue{Spec: fromShardSpec(sp)})
		}
	}
	return out
}
