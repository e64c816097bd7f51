package engine

import (
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/shard"
)

// ErrAbandoned is wrapped by the Err of a RemoteResult whose call was given
// up without an answer because the engine (RemoteBatch.Closing) or the
// remote client is closing, typically while its endpoint is down. Such a
// batch is neither applied nor dead-lettered: its messages, and every later
// message of the same address, are left unconsumed in this process. Messages
// sent by functions or timers stay durable as in flight and are delivered
// again, in order, after the next Open; ingress messages among them were
// never logged, so their senders get an error wrapping ErrClosed (the
// message was not applied; send it again).
var ErrAbandoned = errors.New("engine: remote call abandoned without an answer")

// abandonedResume is what Resume hands the shard for an abandoned call.
func abandonedResume(fe *funcEntry, r *RemoteResult) error {
	return fmt.Errorf("%w: remote function %s: %v", shard.ErrAbandoned, fe.name, r.Err)
}

// ackError turns the error an acknowledgement was released with into the
// error of Send and SendBatch: a message the engine gave up at shutdown was
// not processed (ErrClosed: send it again); anything else is a failed stop.
func ackError(err error) error {
	if errors.Is(err, shard.ErrAbandoned) {
		return fmt.Errorf("%w: the message was not processed before the engine closed and nothing of it was applied; send it again (%v)", ErrClosed, err)
	}
	return fmt.Errorf("%w: %v", ErrFailed, err)
}
