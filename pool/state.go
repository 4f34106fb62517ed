package pool

import "fmt"

// State is where a pooled sandbox is in its life. Every sandbox goes
// restoring -> frozen -> acquired -> destroyed, or leaves early to destroyed (restore
// failed, shrunk, drained, stale generation, died while frozen). A sandbox never goes
// back to frozen once acquired: a used sandbox is never served again.
type State int

// The states of a pooled sandbox.
const (
	Restoring State = iota
	Frozen
	Acquired
	Destroyed
)

var stateNames = [...]string{"restoring", "frozen", "acquired", "destroyed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// allowed is the transition table: allowed[from][to].
var allowed = map[State]map[State]bool{
	Restoring: {Frozen: true, Destroyed: true},
	Frozen:    {Acquired: true, Destroyed: true},
	Acquired:  {Destroyed: true},
	Destroyed: {},
}

// ErrTransition is returned for a move the table does not allow.
type ErrTransition struct{ From, To State }

func (e ErrTransition) Error() string {
	return fmt.Sprintf("pooled sandbox cannot go from %s to %s", e.From, e.To)
}

// transition checks a move and returns the new state.
func transition(from, to State) (State, error) {
	if !allowed[from][to] {
		return from, ErrTransition{from, to}
	}
	return to, nil
}
