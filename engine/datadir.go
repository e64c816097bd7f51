package engine

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// dataDirError turns the store's failure to lock the data directory (the
// lock file of the Pebble store: another engine, in this or another
// process, has the directory open) into an ErrDataDirInUse that says so;
// other errors pass through unchanged.
func dataDirError(dir string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES) && strings.Contains(err.Error(), "lock"):
		return fmt.Errorf("%w: %s is locked by another process (another engine running on it?); stop that process or use another data directory (%v)", ErrDataDirInUse, dir, err)
	case strings.Contains(err.Error(), "lock held by current process"):
		return fmt.Errorf("%w: %s is already open by another engine in this process; close it first or use another data directory (%v)", ErrDataDirInUse, dir, err)
	}
	return err
}
