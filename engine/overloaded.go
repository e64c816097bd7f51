package engine

// Overloaded reports whether ingress is being refused now for some shard
// (an ErrOverloaded naming the reason) or nil. It reserves nothing and a
// nil answer promises nothing: Send and SendBatch still decide. A front end
// asks it before reading and parsing a request whose messages may go to
// any shard (an HTTP batch), so that under overload a refusal costs no
// parsing and does not take the CPU the shards need.
func (e *Engine) Overloaded() error {
	for _, s := range e.shards {
		if err := e.pressure(s); err != nil {
			return err
		}
	}
	return nil
}
