package wire

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/kvloom/kvloom/matcher"
)

// Protocol constants (docs/protocol.md).
const (
	// DefaultPort is the UDP port KVLP uses when none is configured.
	DefaultPort uint16 = 7470
	// Magic is the first two bytes of every message, "KV".
	Magic uint16 = 0x4B56
	// Version is the protocol version this package speaks.
	Version uint8 = 1
	// HeaderLen is the fixed header size in bytes.
	HeaderLen = 48
	// EntryLen is the size of one hint or reply entry in bytes.
	EntryLen = 12
	// BitmapLen is the size of the hit bitmap in bytes.
	BitmapLen = 16
	// MaxEntries is the most entries one message carries: one bit each in the bitmap.
	MaxEntries = 8 * BitmapLen
	// MaxLen is the longest valid message.
	MaxLen = HeaderLen + MaxEntries*EntryLen
)

// Header field offsets, shared with the XDP program and the dissector.
const (
	offMagic     = 0
	offVersion   = 2
	offType      = 3
	offLength    = 4
	offCount     = 6
	offFlags     = 7
	offRequestID = 8
	offSaltID    = 16
	offFragIndex = 24
	offFragCount = 26
	offHits      = 28
	offReserved  = 30
	offBitmap    = 32
)

// LayerTypeKVLP identifies KVLP in gopacket. Its metadata (name and decoder
// for gopacket.NewPacket) is registered only by Register; DecodingLayerParser
// and direct DecodeFromBytes need no registration.
const LayerTypeKVLP = gopacket.LayerType(1470)

// Type is a message type.
type Type uint8

// Message types.
const (
	TypeHint      Type = 1
	TypeHintReply Type = 2
)

func (t Type) String() string {
	switch t {
	case TypeHint:
		return "HINT"
	case TypeHintReply:
		return "HINT_REPLY"
	default:
		return fmt.Sprintf("Type(%d)", uint8(t))
	}
}

// Flags are per-message option bits.
type Flags uint8

// Flag bits. Bits not listed here must be zero.
const (
	// FlagNoReply asks the responder to start prefetches without replying:
	// the XDP program consumes (drops) the hint instead of sending it back.
	FlagNoReply Flags = 1 << 0

	knownFlags = FlagNoReply
)

// HintEntry is one anchor of a prompt: its fingerprint (matcher's anchor
// hash) and the token offset in the prompt where its window starts.
type HintEntry struct {
	Fingerprint uint64
	TokenOffset uint32
}

// ReplyEntry answers one HintEntry. On a hit ChunkID is the first 8 bytes of
// the indexed chunk's key (big-endian) and ChunkOffset the anchor's token
// offset inside that chunk; on a miss both are zero.
type ReplyEntry struct {
	ChunkID     uint64
	ChunkOffset uint32
}

// ChunkID is the 64-bit id of a chunk key that replies carry: the key's first
// eight bytes read big-endian, so that on the wire the id's bytes are the
// key's first bytes.
func ChunkID(k matcher.ChunkKey) uint64 { return binary.BigEndian.Uint64(k[:8]) }

// KVLP is one KVLP message. It is a gopacket DecodingLayer and
// SerializableLayer; decoding reuses the entry slices.
type KVLP struct {
	layers.BaseLayer
	Version   uint8
	Type      Type
	Length    uint16 // total message bytes; SerializeTo fills it with FixLengths
	Flags     Flags
	RequestID uint64
	SaltID    uint64
	FragIndex uint16
	FragCount uint16
	Hits      uint16 // set bits in Bitmap; SerializeTo fills it with FixLengths
	Reserved  uint16
	Bitmap    [BitmapLen]byte
	// Hints holds the entries of a TypeHint message, Replies those of a
	// TypeHintReply message; the other is empty.
	Hints   []HintEntry
	Replies []ReplyEntry
}

// Count is the number of entries the message carries.
func (m *KVLP) Count() int {
	if m.Type == TypeHintReply {
		return len(m.Replies)
	}
	return len(m.Hints)
}

// Hit reports whether entry i of a reply was found.
func (m *KVLP) Hit(i int) bool {
	if i < 0 || i >= 8*BitmapLen {
		return false
	}
	return m.Bitmap[i/8]&(1<<(i%8)) != 0
}

// SetHit marks entry i of a reply as found.
func (m *KVLP) SetHit(i int) {
	if i >= 0 && i < 8*BitmapLen {
		m.Bitmap[i/8] |= 1 << (i % 8)
	}
}

func popcount(b *[BitmapLen]byte) int {
	n := 0
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return n
}

// LayerType implements gopacket.Layer.
func (m *KVLP) LayerType() gopacket.LayerType { return LayerTypeKVLP }

// CanDecode implements gopacket.DecodingLayer.
func (m *KVLP) CanDecode() gopacket.LayerClass { return LayerTypeKVLP }

// NextLayerType implements gopacket.DecodingLayer: KVLP is the innermost layer.
func (m *KVLP) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// Payload implements gopacket.ApplicationLayer; KVLP carries no payload.
func (m *KVLP) Payload() []byte { return nil }

func derr(field string, off int, v uint64, limit string, err error) error {
	return &DecodeError{Field: field, Offset: off, Value: v, Limit: limit, Err: err}
}

// DecodeFromBytes implements gopacket.DecodingLayer. data is the UDP payload;
// every field is checked, and on error m is left with no entries.
func (m *KVLP) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	m.Hints, m.Replies = m.Hints[:0], m.Replies[:0]
	m.Contents, m.BaseLayer.Payload = nil, nil
	if len(data) < HeaderLen {
		df.SetTruncated()
		return derr("header", 0, uint64(len(data)), fmt.Sprintf("at least %d bytes", HeaderLen), ErrTruncated)
	}
	if v := binary.BigEndian.Uint16(data[offMagic:]); v != Magic {
		return derr("magic", offMagic, uint64(v), fmt.Sprintf("%#04x", Magic), ErrMagic)
	}
	m.Version = data[offVersion]
	m.Type = Type(data[offType])
	m.Length = binary.BigEndian.Uint16(data[offLength:])
	count := int(data[offCount])
	m.Flags = Flags(data[offFlags])
	m.RequestID = binary.BigEndian.Uint64(data[offRequestID:])
	m.SaltID = binary.BigEndian.Uint64(data[offSaltID:])
	m.FragIndex = binary.BigEndian.Uint16(data[offFragIndex:])
	m.FragCount = binary.BigEndian.Uint16(data[offFragCount:])
	m.Hits = binary.BigEndian.Uint16(data[offHits:])
	m.Reserved = binary.BigEndian.Uint16(data[offReserved:])
	copy(m.Bitmap[:], data[offBitmap:offBitmap+BitmapLen])
	if err := m.checkHeader(count); err != nil {
		return err
	}
	if int(m.Length) > len(data) {
		df.SetTruncated()
		return derr("length", offLength, uint64(m.Length), fmt.Sprintf("at most the %d bytes present", len(data)), ErrTruncated)
	}
	if int(m.Length) != len(data) {
		return derr("length", offLength, uint64(m.Length), fmt.Sprintf("exactly the %d bytes of the datagram", len(data)), ErrLength)
	}
	body := data[HeaderLen:m.Length]
	for i := range count {
		e := body[i*EntryLen:]
		id, off := binary.BigEndian.Uint64(e), binary.BigEndian.Uint32(e[8:])
		if m.Type == TypeHint {
			m.Hints = append(m.Hints, HintEntry{Fingerprint: id, TokenOffset: off})
			continue
		}
		if !m.Hit(i) && (id != 0 || off != 0) {
			m.Replies = m.Replies[:0]
			return derr(fmt.Sprintf("entry[%d]", i), HeaderLen+i*EntryLen, id, "zero for a miss", ErrReserved)
		}
		m.Replies = append(m.Replies, ReplyEntry{ChunkID: id, ChunkOffset: off})
	}
	m.Contents = data[:m.Length]
	return nil
}

// checkHeader validates the fixed header of a message with count entries.
// Decoding and serializing share it so that nothing this package writes
// fails to decode.
func (m *KVLP) checkHeader(count int) error {
	if m.Version != Version {
		return derr("version", offVersion, uint64(m.Version), fmt.Sprintf("%d", Version), ErrVersion)
	}
	if m.Type != TypeHint && m.Type != TypeHintReply {
		return derr("type", offType, uint64(m.Type), "1 (HINT) or 2 (HINT_REPLY)", ErrType)
	}
	if count < 1 || count > MaxEntries {
		return derr("count", offCount, uint64(count), fmt.Sprintf("1..%d", MaxEntries), ErrCount)
	}
	if want := HeaderLen + count*EntryLen; int(m.Length) != want {
		return derr("length", offLength, uint64(m.Length), fmt.Sprintf("%d (header + %d entries)", want, count), ErrLength)
	}
	if m.Flags&^knownFlags != 0 {
		return derr("flags", offFlags, uint64(m.Flags), fmt.Sprintf("only bits %#02x", uint8(knownFlags)), ErrFlags)
	}
	if m.FragCount == 0 || m.FragIndex >= m.FragCount {
		return derr("frag_index", offFragIndex, uint64(m.FragIndex), fmt.Sprintf("below frag_count %d (≥ 1)", m.FragCount), ErrFragment)
	}
	if m.Reserved != 0 {
		return derr("reserved", offReserved, uint64(m.Reserved), "0", ErrReserved)
	}
	set := popcount(&m.Bitmap)
	if m.Type == TypeHint {
		if m.Hits != 0 {
			return derr("hits", offHits, uint64(m.Hits), "0 in a HINT", ErrReserved)
		}
		if set != 0 {
			return derr("bitmap", offBitmap, uint64(set), "no bits set in a HINT", ErrReserved)
		}
		return nil
	}
	if int(m.Hits) != set {
		return derr("hits", offHits, uint64(m.Hits), fmt.Sprintf("%d (bits set in the bitmap)", set), ErrReserved)
	}
	for i := count; i < MaxEntries; i++ {
		if m.Hit(i) {
			return derr("bitmap", offBitmap+i/8, uint64(i), fmt.Sprintf("bits only below count %d", count), ErrReserved)
		}
	}
	return nil
}

// SerializeTo implements gopacket.SerializableLayer. With opts.FixLengths it
// fills Length and Hits and refuses a message that would not decode; without
// it the fields are written as they are, which is how tests craft malformed
// packets.
func (m *KVLP) SerializeTo(b gopacket.SerializeBuffer, opts gopacket.SerializeOptions) error {
	count := m.Count()
	if count > 255 {
		return fmt.Errorf("serialize kvlp: %d entries, the count field holds at most 255", count)
	}
	n := HeaderLen + count*EntryLen
	if opts.FixLengths {
		m.Length = uint16(n)
		if m.Type == TypeHintReply {
			m.Hits = uint16(popcount(&m.Bitmap))
		}
		if err := m.checkHeader(count); err != nil {
			return fmt.Errorf("serialize kvlp: %w", err)
		}
	}
	data, err := b.PrependBytes(n)
	if err != nil {
		return fmt.Errorf("serialize kvlp: %w", err)
	}
	binary.BigEndian.PutUint16(data[offMagic:], Magic)
	data[offVersion] = m.Version
	data[offType] = byte(m.Type)
	binary.BigEndian.PutUint16(data[offLength:], m.Length)
	data[offCount] = byte(count)
	data[offFlags] = byte(m.Flags)
	binary.BigEndian.PutUint64(data[offRequestID:], m.RequestID)
	binary.BigEndian.PutUint64(data[offSaltID:], m.SaltID)
	binary.BigEndian.PutUint16(data[offFragIndex:], m.FragIndex)
	binary.BigEndian.PutUint16(data[offFragCount:], m.FragCount)
	binary.BigEndian.PutUint16(data[offHits:], m.Hits)
	binary.BigEndian.PutUint16(data[offReserved:], m.Reserved)
	copy(data[offBitmap:], m.Bitmap[:])
	e := data[HeaderLen:]
	if m.Type == TypeHintReply {
		for i, r := range m.Replies {
			binary.BigEndian.PutUint64(e[i*EntryLen:], r.ChunkID)
			binary.BigEndian.PutUint32(e[i*EntryLen+8:], r.ChunkOffset)
		}
	} else {
		for i, h := range m.Hints {
			binary.BigEndian.PutUint64(e[i*EntryLen:], h.Fingerprint)
			binary.BigEndian.PutUint32(e[i*EntryLen+8:], h.TokenOffset)
		}
	}
	return nil
}

// Marshal returns the message's bytes (the UDP payload), with lengths fixed.
func (m *KVLP) Marshal() ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := m.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode parses one message from a UDP payload into a new KVLP.
func Decode(data []byte) (*KVLP, error) {
	m := &KVLP{}
	if err := m.DecodeFromBytes(data, gopacket.NilDecodeFeedback); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeKVLP(data []byte, p gopacket.PacketBuilder) error {
	m := &KVLP{}
	if err := m.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(m)
	p.SetApplicationLayer(m)
	return nil
}

// Register makes gopacket.NewPacket decode UDP traffic on port as KVLP: it
// registers LayerTypeKVLP's metadata and maps port in the layers package's
// UDP port table. Both are process-wide gopacket state, so only a main (a
// capture tool, the CLI) should call it; libraries and the daemon use Parser,
// which takes the port as a parameter and changes nothing global.
func Register(port uint16) {
	gopacket.OverrideLayerType(int(LayerTypeKVLP), gopacket.LayerTypeMetadata{
		Name:    "KVLP",
		Decoder: gopacket.DecodeFunc(decodeKVLP),
	})
	layers.RegisterUDPPortLayerType(layers.UDPPort(port), LayerTypeKVLP)
}
