package sim

import (
	"encoding/json"
	"fmt"
	"io"
)

// Timeline records spans of a run (queueing, matching, transfers, prefill,
// write-back) for the first requests, and writes them in the Chrome trace
// event format that chrome://tracing and ui.perfetto.dev open. Each policy
// is a process; each GPU instance, NIC and link group a thread.
type Timeline struct {
	limit  int32
	events []traceEvent
	tids   map[string]int
}

type traceEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`
	Dur  float64        `json:"dur,omitempty"`
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	Args map[string]any `json:"args,omitempty"`
}

// NewTimeline returns a timeline that records the first n requests of a
// run (at least one).
func NewTimeline(n int) *Timeline {
	return &Timeline{limit: int32(max(n, 1)), tids: map[string]int{}}
}

func (t *Timeline) want(ri int32) bool { return t != nil && ri < t.limit }

func (t *Timeline) process(pid int, name string) {
	t.events = append(t.events, traceEvent{Name: "process_name", Ph: "M", Pid: pid, Args: map[string]any{"name": name}})
}

func (t *Timeline) span(pid int, track, name string, start, end int64, ri int32) {
	key := fmt.Sprintf("%d/%s", pid, track)
	tid, ok := t.tids[key]
	if !ok {
		tid = len(t.tids) + 1
		t.tids[key] = tid
		t.events = append(t.events, traceEvent{Name: "thread_name", Ph: "M", Pid: pid, Tid: tid, Args: map[string]any{"name": track}})
	}
	t.events = append(t.events, traceEvent{
		Name: name, Cat: "request", Ph: "X", Pid: pid, Tid: tid,
		Ts: float64(start) / 1e3, Dur: float64(max(end-start, 0)) / 1e3,
		Args: map[string]any{"request": ri},
	})
}

// Spans returns how many spans the timeline holds.
func (t *Timeline) Spans() int {
	n := 0
	for _, e := range t.events {
		if e.Ph == "X" {
			n++
		}
	}
	return n
}

// WriteJSON writes the timeline as a Chrome trace JSON object.
func (t *Timeline) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(struct {
		TraceEvents     []traceEvent `json:"traceEvents"`
		DisplayTimeUnit string       `json:"displayTimeUnit"`
	}{t.events, "ms"}); err != nil {
		return fmt.Errorf("write timeline: %w", err)
	}
	return nil
}
