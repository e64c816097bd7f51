package engine

import "sync"

// requestTable maps request ids (the id of the message that started the
// request, unique across restarts) to the Request calls waiting for its
// reply: one, or several for an idempotent request sent again. Sharded to
// keep contention low.
type requestTable struct {
	parts [16]struct {
		mu sync.Mutex
		m  map[uint64][]chan Message
		_  [40]byte
	}
}

func (t *requestTable) init() {
	for i := range t.parts {
		t.parts[i].m = map[uint64][]chan Message{}
	}
}

// add registers a waiter for request id.
func (t *requestTable) add(id uint64) chan Message {
	ch := make(chan Message, 1)
	p := &t.parts[id%16]
	p.mu.Lock()
	p.m[id] = append(p.m[id], ch)
	p.mu.Unlock()
	return ch
}

// remove unregisters a waiter.
func (t *requestTable) remove(id uint64, ch chan Message) {
	p := &t.parts[id%16]
	p.mu.Lock()
	ws := p.m[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(p.m, id)
	} else {
		p.m[id] = ws
	}
	p.mu.Unlock()
}

// deliver hands a reply to every waiter of its request and reports whether
// one was waiting (a reply whose requester is gone, timed out or from
// before a restart, is dropped).
func (t *requestTable) deliver(id uint64, m Message) bool {
	p := &t.parts[id%16]
	p.mu.Lock()
	ws := p.m[id]
	delete(p.m, id)
	p.mu.Unlock()
	for _, ch := range ws {
		ch <- m
	}
	return len(ws) > 0
}

// closeAll wakes every waiting Request (Close calls it once the shards have
// stopped, so no reply can come any more). deliver removes an entry before
// sending on it, so a channel is never both sent on and closed.
func (t *requestTable) closeAll() {
	for i := range t.parts {
		p := &t.parts[i]
		p.mu.Lock()
		for id, ws := range p.m {
			for _, ch := range ws {
				close(ch)
			}
			delete(p.m, id)
		}
		p.mu.Unlock()
	}
}
