package engine

import "sync"

// requestTable maps request ids (the id of the message that started the
// request, unique across restarts) to waiting Request calls. Sharded to
// keep contention low.
type requestTable struct {
	parts [16]struct {
		mu sync.Mutex
		m  map[uint64]chan Message
		_  [40]byte
	}
}

func (t *requestTable) init() {
	for i := range t.parts {
		t.parts[i].m = map[uint64]chan Message{}
	}
}

func (t *requestTable) add(id uint64) chan Message {
	ch := make(chan Message, 1)
	p := &t.parts[id%16]
	p.mu.Lock()
	p.m[id] = ch
	p.mu.Unlock()
	return ch
}

func (t *requestTable) remove(id uint64) {
	p := &t.parts[id%16]
	p.mu.Lock()
	delete(p.m, id)
	p.mu.Unlock()
}

// deliver hands a reply to its waiting request and reports whether one
// was waiting (a reply whose requester is gone, timed out or from before a
// restart, is dropped).
func (t *requestTable) deliver(id uint64, m Message) bool {
	p := &t.parts[id%16]
	p.mu.Lock()
	ch := p.m[id]
	delete(p.m, id)
	p.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- m
	return true
}

// closeAll wakes every waiting Request with ErrClosed (Close calls it once
// the shards have stopped, so no reply can come any more). deliver removes
// an entry before sending on it, so a channel is never both sent on and
// closed.
func (t *requestTable) closeAll() {
	for i := range t.parts {
		p := &t.parts[i]
		p.mu.Lock()
		for id, ch := range p.m {
			close(ch)
			delete(p.m, id)
		}
		p.mu.Unlock()
	}
}
