package shard

import "fmt"

// nextID returns a fresh message id from the shard's current block,
// reserving a new block from the engine when it is used up.
func (s *Shard) nextID() (uint64, error) {
	if s.idNext >= s.idHi {
		lo, hi, err := s.cfg.IDs.NextBlock()
		if err != nil {
			return 0, fmt.Errorf("shard %d: no message ids left: %w", s.cfg.Index, err)
		}
		s.idNext, s.idHi = lo, hi
	}
	id := s.idNext
	s.idNext++
	return id, nil
}
