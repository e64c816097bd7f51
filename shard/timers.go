package shard

import "github.com/shardfn/shardfn/internal/format"

// Delayed messages live in the sender's shard: in the timer wheel, and, by
// token, in tokens (a token is scoped to the sending address). The store
// holds them durably from the moment their record is applied, and recovery
// arms every stored one again (RestoreTimer).

type tokenKey struct {
	sender uint64
	token  string
}

type timerRef struct {
	h  TimerHandle
	id uint64
}

type delayedMsg struct {
	env   format.Envelope
	token string
}

// fire delivers a due delayed message.
func (s *Shard) fire(_ int64, t delayedMsg) {
	s.timersN.Add(-1)
	s.qbytes -= EnvelopeBytes(&t.env)
	if t.token != "" {
		k := tokenKey{sender: t.env.Caller.Hash(), token: t.token}
		if ref, ok := s.tokens[k]; ok && ref.id == t.env.ID {
			delete(s.tokens, k)
		}
	}
	s.deliver(&t.env)
}

// addTimer arms a delayed message made by an invocation. A pending message
// with the same token has been cancelled by the invocation's record already
// (see pendingCancels).
func (s *Shard) addTimer(fireAt int64, env format.Envelope, token string) {
	h := s.wheel.Add(fireAt, delayedMsg{env: env, token: token})
	s.timersN.Add(1)
	s.qbytes += EnvelopeBytes(&env)
	if token != "" {
		s.tokens[tokenKey{sender: env.Caller.Hash(), token: token}] = timerRef{h: h, id: env.ID}
	}
}

// restoreTimer arms a recovered delayed message. It cancels nothing: every
// stored delayed message is still owed its delivery (an older one with the
// same token had fired, or been replaced by a record that is durable, in
// which case it is not stored). The token names the newest.
func (s *Shard) restoreTimer(fireAt int64, env format.Envelope, token string) {
	h := s.wheel.Add(fireAt, delayedMsg{env: env, token: token})
	s.timersN.Add(1)
	s.qbytes += EnvelopeBytes(&env)
	s.qbytesPub.Store(s.qbytes)
	if token == "" {
		return
	}
	k := tokenKey{sender: env.Caller.Hash(), token: token}
	if old, ok := s.tokens[k]; ok && old.id > env.ID {
		return
	}
	s.tokens[k] = timerRef{h: h, id: env.ID}
}

// pendingTimer returns the id of sender's pending delayed message with
// token, without changing anything.
func (s *Shard) pendingTimer(sender uint64, token string) (uint64, bool) {
	ref, ok := s.tokens[tokenKey{sender: sender, token: token}]
	if !ok {
		return 0, false
	}
	return ref.id, true
}

// cancelTimer cancels the pending delayed message of sender with token.
func (s *Shard) cancelTimer(sender uint64, token string) {
	k := tokenKey{sender: sender, token: token}
	ref, ok := s.tokens[k]
	if !ok {
		return
	}
	delete(s.tokens, k)
	if t, ok := s.wheel.Cancel(ref.h); ok {
		s.timersN.Add(-1)
		s.qbytes -= EnvelopeBytes(&t.env)
	}
}
