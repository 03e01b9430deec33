package nic

import (
	"context"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
)

// Kind names a backend family.
type Kind string

// Backend kinds.
const (
	KindSim  Kind = "sim"
	KindFPGA Kind = "fpga"
	KindXDP  Kind = "xdp"
)

// Info describes a device. It does not change while the device is open,
// except Image, which Load replaces.
type Info struct {
	Kind    Kind
	Name    string // human-readable model, e.g. "Alveo U55C" or "simnic"
	Address string // PCI BDF, interface name, or "sim"
	// Capabilities the backend has, e.g. "exact-match", "anchor-only", "prefetch".
	Capabilities []string
	// TableCapacity is how many hot index entries fit on the device.
	TableCapacity int
	// LineRateGbps is the network line rate the device sits on.
	LineRateGbps float64
	// RequestQueueDepth and CompletionQueueDepth bound in-flight work.
	RequestQueueDepth    int
	CompletionQueueDepth int
	// Image is the loaded image's name and version, empty when none is loaded.
	Image string
}

// Entry is one hot chunk the control plane wants on the device.
type Entry struct {
	Salt   matcher.Salt
	Key    matcher.ChunkKey
	Tokens []matcher.Token
	// Rank is the control plane's benefit estimate; a full table keeps the
	// highest ranks.
	Rank float64
}

// IndexUpdate adds and removes hot entries in one step. Removals apply first.
type IndexUpdate struct {
	Add    []Entry
	Remove []matcher.ChunkKey
}

// Request asks the device to match a prompt.
type Request struct {
	ID     uint64
	Salt   matcher.Salt
	Tokens []matcher.Token
	// Deadline bounds the device's work; zero means the context's deadline.
	Deadline time.Time
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds, in the order a request produces them: zero or more matches
// and prefetches, then exactly one Done or Error, after which the channel is
// closed.
const (
	EventMatch EventKind = iota + 1
	EventPrefetch
	EventDone
	EventError
)

// Event is one thing the device reports about a request.
type Event struct {
	Kind      EventKind
	RequestID uint64
	// Match is set for EventMatch.
	Match matcher.Match
	// Key is the chunk to fetch, for EventPrefetch.
	Key matcher.ChunkKey
	// DeviceTime is the device's own time for the request (virtual time on
	// the simulator), set on EventDone.
	DeviceTime time.Duration
	// Err is set for EventError.
	Err error
}

// Stats are cumulative counters since the device was opened.
type Stats struct {
	Requests       uint64
	TokensMatched  uint64
	Matches        uint64
	Prefetches     uint64
	TableEntries   int
	TableCapacity  int
	TableRejects   uint64 // entries refused because the table was full
	Backpressure   uint64 // submissions refused or delayed because a ring was full
	Errors         uint64
	DeviceBusyTime time.Duration
}

// Device is an in-network accelerator backend. Implementations are safe for
// concurrent use.
type Device interface {
	Info() Info
	// Load replaces the device's logic with img. The previous image stays
	// live until the new one reports ready.
	Load(ctx context.Context, img *bitstream.Image) error
	// PushIndex applies an index update. When the table cannot hold every
	// added entry it returns an error wrapping ErrTableFull, after applying
	// what fits by rank.
	PushIndex(ctx context.Context, upd IndexUpdate) error
	// Submit starts matching a request. The returned channel delivers the
	// request's events and is closed after EventDone or EventError.
	Submit(ctx context.Context, req Request) (<-chan Event, error)
	Stats() Stats
	Close() error
}
