package kvcache

import (
	"fmt"
	"io"
	"slices"
)

// header builds c's header for payloads of the given encoded lengths.
func (c *Chunk) header(codec CodecID, lengths []int64, crcs []uint32) *Header {
	h := &Header{ChunkInfo: c.ChunkInfo, Codec: codec, Table: make([]LayerEntry, len(lengths)), MetaSize: metaSize(len(c.Tokens), len(lengths))}
	off := alignUp(int64(h.MetaSize))
	for l, n := range lengths {
		h.Table[l] = LayerEntry{Offset: off, Length: n, CRC: crcs[l]}
		if c.Scales != nil {
			h.Table[l].Scales = c.Scales[l]
		}
		off = alignUp(off + n)
	}
	last := h.Table[len(lengths)-1]
	h.Size = last.Offset + last.Length
	return h
}

func (c *Chunk) checkEncodable() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Shape.DType == FP8E4M3 {
		if c.Scales == nil {
			return fmt.Errorf("chunk %v: fp8 chunk without scales: %w", c.Key, ErrShape)
		}
		for l, s := range c.Scales {
			if !finitePos(float64(s.K)) || !finitePos(float64(s.V)) {
				return fmt.Errorf("chunk %v: layer %d fp8 scales %v/%v, want finite > 0: %w", c.Key, l, s.K, s.V, ErrShape)
			}
		}
	} else if c.Scales != nil {
		return fmt.Errorf("chunk %v: scales given for dtype %v: %w", c.Key, c.Shape.DType, ErrShape)
	}
	return nil
}

// RawBlobSize is the size of c's blob with the raw codec.
func RawBlobSize(info *ChunkInfo) int64 {
	off := alignUp(int64(metaSize(len(info.Tokens), info.Shape.Layers)))
	n := int64(info.Shape.LayerBytes(len(info.Tokens)))
	return off + int64(info.Shape.Layers-1)*alignUp(n) + n
}

// AppendBlob appends c's blob, encoded with codec (nil means Raw), to dst.
// With Raw, each payload is copied and checksummed in one pass.
func AppendBlob(dst []byte, c *Chunk, codec Codec) ([]byte, error) {
	if codec == nil {
		codec = Raw{}
	}
	if err := c.checkEncodable(); err != nil {
		return dst, fmt.Errorf("append blob: %w", err)
	}
	start := len(dst)
	layers := len(c.Layers)
	ms := metaSize(len(c.Tokens), layers)
	if codec.ID() == CodecRaw {
		size := RawBlobSize(&c.ChunkInfo)
		if cap(dst)-start < int(size) {
			grown := make([]byte, start, start+int(size))
			copy(grown, dst)
			dst = grown
		}
	}
	// Reserve the metadata; it is written once the CRCs are known.
	dst = append(dst, make([]byte, alignUp(int64(ms)))...)
	lengths := make([]int64, layers)
	crcs := make([]uint32, layers)
	for l, kv := range c.Layers {
		for int64(len(dst)-start)%PayloadAlign != 0 {
			dst = append(dst, 0)
		}
		p := len(dst)
		if codec.ID() == CodecRaw {
			dst = slices.Grow(dst, len(kv))[:p+len(kv)]
			crcs[l] = crc32cCopy(0, dst[p:], kv, len(kv) >= ntCopyMin)
		} else {
			var err error
			if dst, err = codec.EncodeLayer(dst, c.LayerInfo(l), kv); err != nil {
				return dst[:start], fmt.Errorf("append blob: layer %d: %w", l, err)
			}
			crcs[l] = crc32c(0, dst[p:])
		}
		lengths[l] = int64(len(dst) - p)
	}
	h := c.header(codec.ID(), lengths, crcs)
	meta := h.appendMeta(make([]byte, 0, ms))
	copy(dst[start:], meta)
	return dst, nil
}

// EncodeChunk writes c's blob, encoded with codec (nil means Raw), to w and
// returns the bytes written. Payloads are written from c's own buffers
// (raw) after one checksum pass, since the header that carries the CRCs
// comes first.
func EncodeChunk(w io.Writer, c *Chunk, codec Codec) (int64, error) {
	if codec == nil {
		codec = Raw{}
	}
	if err := c.checkEncodable(); err != nil {
		return 0, fmt.Errorf("encode chunk: %w", err)
	}
	layers := len(c.Layers)
	payloads := c.Layers
	if codec.ID() != CodecRaw {
		payloads = make([][]byte, layers)
		for l, kv := range c.Layers {
			var err error
			if payloads[l], err = codec.EncodeLayer(nil, c.LayerInfo(l), kv); err != nil {
				return 0, fmt.Errorf("encode chunk: layer %d: %w", l, err)
			}
		}
	}
	lengths := make([]int64, layers)
	crcs := make([]uint32, layers)
	for l, p := range payloads {
		lengths[l] = int64(len(p))
		crcs[l] = crc32c(0, p)
	}
	h := c.header(codec.ID(), lengths, crcs)
	meta := h.appendMeta(make([]byte, 0, alignUp(int64(h.MetaSize))))
	var zeros [PayloadAlign]byte
	var written int64
	write := func(b []byte) error {
		n, err := w.Write(b)
		written += int64(n)
		if err != nil {
			return fmt.Errorf("encode chunk: write at offset %d: %w", written, err)
		}
		return nil
	}
	if err := write(meta); err != nil {
		return written, err
	}
	for l, p := range payloads {
		if pad := h.Table[l].Offset - written; pad > 0 {
			if err := write(zeros[:pad]); err != nil {
				return written, err
			}
		}
		if err := write(p); err != nil {
			return written, err
		}
	}
	return written, nil
}
