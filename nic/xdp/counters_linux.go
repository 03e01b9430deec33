//go:build linux

package xdp

import "fmt"

// Counter names one of the program's per-CPU counters (enum kvlp_counter in
// bpf/kvlp.c, through bpf2go).
type Counter int

// The program's counters: one per outcome (pass_*, hint_*, drop_*), and the
// lookup, hit and event tallies.
const (
	PassNotIP        = Counter(kvlpKvlpCounterKVLP_PASS_NOT_IP)
	PassNotUDP       = Counter(kvlpKvlpCounterKVLP_PASS_NOT_UDP)
	PassShort        = Counter(kvlpKvlpCounterKVLP_PASS_SHORT)
	PassIPFragment   = Counter(kvlpKvlpCounterKVLP_PASS_IP_FRAGMENT)
	PassIPChecksum   = Counter(kvlpKvlpCounterKVLP_PASS_IP_CHECKSUM)
	PassOtherPort    = Counter(kvlpKvlpCounterKVLP_PASS_OTHER_PORT)
	PassReply        = Counter(kvlpKvlpCounterKVLP_PASS_REPLY)
	HintReplied      = Counter(kvlpKvlpCounterKVLP_HINT_REPLIED)
	HintConsumed     = Counter(kvlpKvlpCounterKVLP_HINT_CONSUMED)
	Lookups          = Counter(kvlpKvlpCounterKVLP_LOOKUPS)
	Hits             = Counter(kvlpKvlpCounterKVLP_HITS)
	Events           = Counter(kvlpKvlpCounterKVLP_EVENTS)
	EventsLost       = Counter(kvlpKvlpCounterKVLP_EVENTS_LOST)
	DoneLost         = Counter(kvlpKvlpCounterKVLP_DONE_LOST)
	DropUDPLength    = Counter(kvlpKvlpCounterKVLP_DROP_UDP_LENGTH)
	DropUDPChecksum  = Counter(kvlpKvlpCounterKVLP_DROP_UDP_CHECKSUM)
	DropTruncated    = Counter(kvlpKvlpCounterKVLP_DROP_TRUNCATED)
	DropMagic        = Counter(kvlpKvlpCounterKVLP_DROP_MAGIC)
	DropVersion      = Counter(kvlpKvlpCounterKVLP_DROP_VERSION)
	DropType         = Counter(kvlpKvlpCounterKVLP_DROP_TYPE)
	DropCount        = Counter(kvlpKvlpCounterKVLP_DROP_COUNT)
	DropLength       = Counter(kvlpKvlpCounterKVLP_DROP_LENGTH)
	DropFlags        = Counter(kvlpKvlpCounterKVLP_DROP_FLAGS)
	DropFragment     = Counter(kvlpKvlpCounterKVLP_DROP_FRAGMENT)
	DropReserved     = Counter(kvlpKvlpCounterKVLP_DROP_RESERVED)
	NumCounters      = int(kvlpKvlpCounterKVLP_COUNTER_MAX)
	firstDropCounter = DropUDPLength
)

var counterNames = [NumCounters]string{
	PassNotIP: "pass_not_ip", PassNotUDP: "pass_not_udp", PassShort: "pass_short",
	PassIPFragment: "pass_ip_fragment", PassIPChecksum: "pass_ip_checksum", PassOtherPort: "pass_other_port",
	PassReply: "pass_reply", HintReplied: "hint_replied", HintConsumed: "hint_consumed",
	Lookups: "lookups", Hits: "hits", Events: "events", EventsLost: "events_lost", DoneLost: "done_lost",
	DropUDPLength: "drop_udp_length", DropUDPChecksum: "drop_udp_checksum", DropTruncated: "drop_truncated",
	DropMagic: "drop_magic", DropVersion: "drop_version", DropType: "drop_type", DropCount: "drop_count",
	DropLength: "drop_length", DropFlags: "drop_flags", DropFragment: "drop_fragment", DropReserved: "drop_reserved",
}

// String is the counter's name as in docs/protocol.md: "pass_not_ip",
// "drop_magic", ….
func (c Counter) String() string {
	if c < 0 || int(c) >= NumCounters || counterNames[c] == "" {
		return fmt.Sprintf("Counter(%d)", int(c))
	}
	return counterNames[c]
}

// Counters are the program's counters summed over CPUs, indexed by Counter.
type Counters [NumCounters]uint64

// Malformed is the number of KVLP packets dropped as malformed.
func (c Counters) Malformed() uint64 {
	var n uint64
	for i := firstDropCounter; i < Counter(NumCounters); i++ {
		n += c[i]
	}
	return n
}

// Counters reads the live program's per-CPU counters and sums them.
func (d *Device) Counters() (Counters, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.prog == nil {
		return Counters{}, fmt.Errorf("read counters: no program")
	}
	return d.prog.readCounters()
}

// readCounters sums p's per-CPU counters.
func (p *program) readCounters() (Counters, error) {
	var out Counters
	var per []uint64
	for i := range NumCounters {
		if err := p.counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %v: %w", Counter(i), err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}
