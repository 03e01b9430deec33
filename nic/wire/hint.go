package wire

import (
	"fmt"
	"math"
)

// Header overheads below KVLP, for EntriesPerPacket.
const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
)

// EntriesPerPacket is how many entries one message may carry so that its IP
// packet fits mtu (the link MTU, IP header included) without fragmentation.
func EntriesPerPacket(mtu int, ipv6 bool) (int, error) {
	ip := ipv4HeaderLen
	if ipv6 {
		ip = ipv6HeaderLen
	}
	n := (mtu - ip - udpHeaderLen - HeaderLen) / EntryLen
	if n < 1 {
		return 0, fmt.Errorf("entries per packet: mtu %d leaves no room for one entry (need at least %d)", mtu, ip+udpHeaderLen+HeaderLen+EntryLen)
	}
	return min(n, MaxEntries), nil
}

// Hint is one request's anchors before they are split into packets.
type Hint struct {
	RequestID uint64
	SaltID    uint64
	Flags     Flags
	Anchors   []HintEntry
}

// Packets splits h into HINT messages of at most perPacket entries each,
// numbered 0..n-1 of n. A hint without anchors has nothing to announce and
// yields no packets.
func (h Hint) Packets(perPacket int) ([]*KVLP, error) {
	if perPacket < 1 || perPacket > MaxEntries {
		return nil, fmt.Errorf("split hint %d: %d entries per packet, want 1..%d", h.RequestID, perPacket, MaxEntries)
	}
	if h.Flags&^knownFlags != 0 {
		return nil, fmt.Errorf("split hint %d: %w: %#02x", h.RequestID, ErrFlags, uint8(h.Flags))
	}
	n := (len(h.Anchors) + perPacket - 1) / perPacket
	if n > math.MaxUint16 {
		return nil, fmt.Errorf("split hint %d: %d anchors need %d packets, frag_count holds at most %d", h.RequestID, len(h.Anchors), n, math.MaxUint16)
	}
	out := make([]*KVLP, 0, n)
	for i := range n {
		part := h.Anchors[i*perPacket : min((i+1)*perPacket, len(h.Anchors))]
		out = append(out, &KVLP{
			Version:   Version,
			Type:      TypeHint,
			Length:    uint16(HeaderLen + len(part)*EntryLen),
			Flags:     h.Flags,
			RequestID: h.RequestID,
			SaltID:    h.SaltID,
			FragIndex: uint16(i),
			FragCount: uint16(n),
			Hints:     part,
		})
	}
	return out, nil
}

// Lookup resolves one anchor for a responder; ok is false on a miss.
type Lookup func(saltID, fingerprint uint64) (e ReplyEntry, ok bool)

// Answer builds the HINT_REPLY a responder sends back for hint: the same
// request, salt, fragment numbering, flags and entry count, a bit per entry
// that lookup found, and the found entries' chunk ids and offsets. It is the
// reference the XDP program's replies are tested against.
func Answer(hint *KVLP, lookup Lookup) (*KVLP, error) {
	if hint.Type != TypeHint {
		return nil, fmt.Errorf("answer: message is %v, want HINT", hint.Type)
	}
	r := &KVLP{
		Version:   hint.Version,
		Type:      TypeHintReply,
		Length:    hint.Length,
		Flags:     hint.Flags,
		RequestID: hint.RequestID,
		SaltID:    hint.SaltID,
		FragIndex: hint.FragIndex,
		FragCount: hint.FragCount,
		Replies:   make([]ReplyEntry, len(hint.Hints)),
	}
	for i, h := range hint.Hints {
		if e, ok := lookup(hint.SaltID, h.Fingerprint); ok {
			r.Replies[i] = e
			r.SetHit(i)
			r.Hits++
		}
	}
	if err := r.checkHeader(len(r.Replies)); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	return r, nil
}

// Hit is one anchor a responder found: the hint's entry and the reply's.
type Hit struct {
	Index int // entry index within the packet
	Hint  HintEntry
	Reply ReplyEntry
}

// HitsOf pairs reply with the hint it answers and returns the found entries
// in entry order. It fails with ErrMismatch when reply answers another
// request, salt or fragment, or has another entry count.
func HitsOf(hint, reply *KVLP) ([]Hit, error) {
	switch {
	case hint.Type != TypeHint || reply.Type != TypeHintReply:
		return nil, fmt.Errorf("pair reply: types %v and %v, want HINT and HINT_REPLY: %w", hint.Type, reply.Type, ErrMismatch)
	case hint.RequestID != reply.RequestID || hint.SaltID != reply.SaltID:
		return nil, fmt.Errorf("pair reply: request %d salt %#x answers request %d salt %#x: %w", reply.RequestID, reply.SaltID, hint.RequestID, hint.SaltID, ErrMismatch)
	case hint.FragIndex != reply.FragIndex || hint.FragCount != reply.FragCount:
		return nil, fmt.Errorf("pair reply: fragment %d/%d answers %d/%d: %w", reply.FragIndex, reply.FragCount, hint.FragIndex, hint.FragCount, ErrMismatch)
	case len(hint.Hints) != len(reply.Replies):
		return nil, fmt.Errorf("pair reply: %d entries answer %d: %w", len(reply.Replies), len(hint.Hints), ErrMismatch)
	}
	var out []Hit
	for i := range hint.Hints {
		if reply.Hit(i) {
			out = append(out, Hit{Index: i, Hint: hint.Hints[i], Reply: reply.Replies[i]})
		}
	}
	return out, nil
}
