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

// Capabilities a device may list in Info.Capabilities.
const (
	// CapExactMatch: every EventMatch was verified token by token (on the
	// device or by the backend's host side) and the device reports every
	// match matcher.FindAll reports over its table.
	CapExactMatch = "exact-match"
	// CapAnchorOnly: the data path matches anchor fingerprints only; the
	// backend's host side verifies tokens before it reports EventMatch.
	CapAnchorOnly = "anchor-only"
	// CapPrefetch: the device starts a prefetch of each matched chunk and
	// reports it with one EventPrefetch per distinct chunk.
	CapPrefetch = "prefetch"
	// CapEvictByRank: a full table evicts its lowest-ranked entry for a
	// higher-ranked one instead of refusing it.
	CapEvictByRank = "evict-by-rank"
)

// Info describes a device. It does not change while the device is open,
// except Image and the fields an image sets, which Load replaces.
type Info struct {
	Kind    Kind
	Name    string // human-readable model, e.g. "Alveo U55C" or "simnic"
	Address string // PCI BDF, interface name, or "sim"
	// Capabilities the backend has: the Cap constants.
	Capabilities []string
	// TableCapacity is how many hot index entries fit on the device.
	TableCapacity int
	// MaxEntryTokens is the longest index entry; 0 means no limit.
	MaxEntryTokens int
	// MaxRequestTokens is the longest prompt one request may carry; 0
	// means no limit.
	MaxRequestTokens int
	// LineRateGbps is the network line rate the device sits on.
	LineRateGbps float64
	// RequestQueueDepth and CompletionQueueDepth bound in-flight work.
	RequestQueueDepth    int
	CompletionQueueDepth int
	// Image is the loaded image's name and version, empty when none is loaded.
	Image string
	// Matcher holds the matching parameters the device implements (MinLen,
	// AnchorK, BlockSize, MaxPromptLen, MaxMatches, MaxCandidates): the
	// control plane must index with the same ones, and an oracle index
	// built with them reports what the device must report.
	Matcher matcher.Options
	// Simulated is true when the device is kvloom's simulator (directly or
	// behind a simulated BAR), not hardware.
	Simulated bool
}

// Has reports whether the device lists capability c.
func (i Info) Has(c string) bool {
	for _, have := range i.Capabilities {
		if have == c {
			return true
		}
	}
	return false
}

// Entry is one hot chunk the control plane wants on the device.
type Entry struct {
	Salt matcher.Salt
	// Key is the entry's key: matcher.ChunkKeyOf(Salt, Tokens) for a chunk,
	// the key of the last full block for a prefix chain (Index.KeyOf).
	Key    matcher.ChunkKey
	Tokens []matcher.Token
	// Prefix marks a prefix chain, matched only from prompt offset 0 in
	// whole blocks (matcher.Entry.Prefix).
	Prefix bool
	// Rank is the control plane's benefit estimate; a full table keeps the
	// highest ranks.
	Rank float64
}

// IndexUpdate adds and removes hot entries in one step. Removals apply
// first, then additions in order. Adding a key the table holds replaces
// that entry. Removing a key it does not hold is not an error.
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
	// Truncated is set on EventDone when more chunk matches existed than
	// the device reports per request (Info.Matcher.MaxMatches), exactly as
	// matcher.Result.Truncated.
	Truncated bool
	// Err is set for EventError.
	Err error
}

// Stats are cumulative counters since the device was opened (they survive
// resets the driver performs), except TableEntries and TableCapacity, which
// are the table's current state.
type Stats struct {
	Requests       uint64 // requests completed, successfully or not
	Tokens         uint64 // prompt tokens scanned
	TokensMatched  uint64 // sum of the lengths of the matches reported
	Matches        uint64
	Prefetches     uint64
	TableEntries   int
	TableCapacity  int
	TableInserts   uint64 // entries stored (new or replaced)
	TableRemoves   uint64 // entries removed on request
	TableRejects   uint64 // entries refused because the table was full
	TableEvictions uint64 // entries evicted for higher-ranked ones
	Backpressure   uint64 // submissions refused because a ring or buffer was full
	// CompletionStalls counts the times the device waited for the host to
	// consume completions.
	CompletionStalls uint64
	Errors           uint64 // malformed requests, records and device faults
	Resets           uint64 // device resets the driver performed (faults, image loads)
	DeviceBusyTime   time.Duration
}

// Device is an in-network accelerator backend. Implementations are safe for
// concurrent use.
type Device interface {
	Info() Info
	// Load replaces the device's logic with img. The previous image stays
	// live until the new one reports ready.
	Load(ctx context.Context, img *bitstream.Image) error
	// PushIndex applies an index update. When the table cannot hold every
	// added entry it applies what fits by rank and returns a
	// *TableFullError (Is ErrTableFull) naming the entries it rejected and
	// evicted. An invalid entry fails the whole update with ErrBadRequest
	// before anything is applied.
	PushIndex(ctx context.Context, upd IndexUpdate) error
	// Submit starts matching a request. The returned channel delivers the
	// request's events and is closed after EventDone or EventError. The
	// caller must receive until the channel is closed or end ctx: when ctx
	// ends first, the channel gets an EventError with ctx's error if it has
	// room, and is closed. A full ring is refused at once with ErrQueueFull.
	Submit(ctx context.Context, req Request) (<-chan Event, error)
	Stats() Stats
	Close() error
}
