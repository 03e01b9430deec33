package nic

import (
	"encoding/binary"
	"math"
)

// DMADesc is a decoded DMA_DESC: a buffer the device reads.
type DMADesc struct {
	Addr  uint64
	Len   uint32
	Flags uint32
}

// ReqDesc is a decoded REQ_DESC, one request ring slot.
type ReqDesc struct {
	Opcode uint16
	Flags  uint16
	Tokens uint32
	Tag    uint64
	Salt   [16]byte
	Buf    DMADesc
	Rsvd   [16]byte
}

// Encode writes d into b[:ReqDescSize].
func (d *ReqDesc) Encode(b []byte) {
	b = b[:ReqDescSize]
	le := binary.LittleEndian
	le.PutUint16(b[ReqDescOpcode:], d.Opcode)
	le.PutUint16(b[ReqDescFlags:], d.Flags)
	le.PutUint32(b[ReqDescTokens:], d.Tokens)
	le.PutUint64(b[ReqDescTag:], d.Tag)
	copy(b[ReqDescSalt:ReqDescSalt+16], d.Salt[:])
	le.PutUint64(b[ReqDescBuf+DMADescAddr:], d.Buf.Addr)
	le.PutUint32(b[ReqDescBuf+DMADescLen:], d.Buf.Len)
	le.PutUint32(b[ReqDescBuf+DMADescFlags:], d.Buf.Flags)
	copy(b[ReqDescRsvd:ReqDescRsvd+16], d.Rsvd[:])
}

// DecodeReqDesc reads a REQ_DESC from b[:ReqDescSize].
func DecodeReqDesc(b []byte) ReqDesc {
	b = b[:ReqDescSize]
	le := binary.LittleEndian
	var d ReqDesc
	d.Opcode = le.Uint16(b[ReqDescOpcode:])
	d.Flags = le.Uint16(b[ReqDescFlags:])
	d.Tokens = le.Uint32(b[ReqDescTokens:])
	d.Tag = le.Uint64(b[ReqDescTag:])
	copy(d.Salt[:], b[ReqDescSalt:])
	d.Buf.Addr = le.Uint64(b[ReqDescBuf+DMADescAddr:])
	d.Buf.Len = le.Uint32(b[ReqDescBuf+DMADescLen:])
	d.Buf.Flags = le.Uint32(b[ReqDescBuf+DMADescFlags:])
	copy(d.Rsvd[:], b[ReqDescRsvd:])
	return d
}

// CplEntry is a decoded CPL_ENTRY, one completion ring slot.
type CplEntry struct {
	Type     uint16
	Flags    uint16
	Slot     uint32
	Tag      uint64
	ReqOff   uint32
	Len      uint32
	ChunkOff uint32
	ErrCode  uint32
	Key      [16]byte
	DeviceNS uint64
	Count    uint32
	ErrInfo  uint32
}

// Encode writes e into b[:CplEntrySize].
func (e *CplEntry) Encode(b []byte) {
	b = b[:CplEntrySize]
	le := binary.LittleEndian
	le.PutUint16(b[CplEntryType:], e.Type)
	le.PutUint16(b[CplEntryFlags:], e.Flags)
	le.PutUint32(b[CplEntrySlot:], e.Slot)
	le.PutUint64(b[CplEntryTag:], e.Tag)
	le.PutUint32(b[CplEntryReqOff:], e.ReqOff)
	le.PutUint32(b[CplEntryLen:], e.Len)
	le.PutUint32(b[CplEntryChunkOff:], e.ChunkOff)
	le.PutUint32(b[CplEntryErrCode:], e.ErrCode)
	copy(b[CplEntryKey:CplEntryKey+16], e.Key[:])
	le.PutUint64(b[CplEntryDeviceNS:], e.DeviceNS)
	le.PutUint32(b[CplEntryCount:], e.Count)
	le.PutUint32(b[CplEntryErrInfo:], e.ErrInfo)
}

// DecodeCplEntry reads a CPL_ENTRY from b[:CplEntrySize].
func DecodeCplEntry(b []byte) CplEntry {
	b = b[:CplEntrySize]
	le := binary.LittleEndian
	var e CplEntry
	e.Type = le.Uint16(b[CplEntryType:])
	e.Flags = le.Uint16(b[CplEntryFlags:])
	e.Slot = le.Uint32(b[CplEntrySlot:])
	e.Tag = le.Uint64(b[CplEntryTag:])
	e.ReqOff = le.Uint32(b[CplEntryReqOff:])
	e.Len = le.Uint32(b[CplEntryLen:])
	e.ChunkOff = le.Uint32(b[CplEntryChunkOff:])
	e.ErrCode = le.Uint32(b[CplEntryErrCode:])
	copy(e.Key[:], b[CplEntryKey:])
	e.DeviceNS = le.Uint64(b[CplEntryDeviceNS:])
	e.Count = le.Uint32(b[CplEntryCount:])
	e.ErrInfo = le.Uint32(b[CplEntryErrInfo:])
	return e
}

// TableRecord is a decoded TBL_RECORD header; its tokens follow it in the
// window.
type TableRecord struct {
	Op      uint16
	Flags   uint16
	Tokens  uint32
	Key     [16]byte
	Salt    [16]byte
	Rank    uint64
	Status  uint16
	ErrCode uint16
	Rsvd    uint32
	Victim  [16]byte
	Rsvd2   uint64
}

// Encode writes the header into b[:TblRecordSize].
func (r *TableRecord) Encode(b []byte) {
	b = b[:TblRecordSize]
	le := binary.LittleEndian
	le.PutUint16(b[TblRecordOp:], r.Op)
	le.PutUint16(b[TblRecordFlags:], r.Flags)
	le.PutUint32(b[TblRecordTokens:], r.Tokens)
	copy(b[TblRecordKey:TblRecordKey+16], r.Key[:])
	copy(b[TblRecordSalt:TblRecordSalt+16], r.Salt[:])
	le.PutUint64(b[TblRecordRank:], r.Rank)
	le.PutUint16(b[TblRecordStatus:], r.Status)
	le.PutUint16(b[TblRecordErrCode:], r.ErrCode)
	le.PutUint32(b[TblRecordRsvd:], r.Rsvd)
	copy(b[TblRecordVictim:TblRecordVictim+16], r.Victim[:])
	le.PutUint64(b[TblRecordRsvd2:], r.Rsvd2)
}

// DecodeTableRecord reads a TBL_RECORD header from b[:TblRecordSize].
func DecodeTableRecord(b []byte) TableRecord {
	b = b[:TblRecordSize]
	le := binary.LittleEndian
	var r TableRecord
	r.Op = le.Uint16(b[TblRecordOp:])
	r.Flags = le.Uint16(b[TblRecordFlags:])
	r.Tokens = le.Uint32(b[TblRecordTokens:])
	copy(r.Key[:], b[TblRecordKey:])
	copy(r.Salt[:], b[TblRecordSalt:])
	r.Rank = le.Uint64(b[TblRecordRank:])
	r.Status = le.Uint16(b[TblRecordStatus:])
	r.ErrCode = le.Uint16(b[TblRecordErrCode:])
	r.Rsvd = le.Uint32(b[TblRecordRsvd:])
	copy(r.Victim[:], b[TblRecordVictim:])
	r.Rsvd2 = le.Uint64(b[TblRecordRsvd2:])
	return r
}

// TableRecordLen is the bytes a record with n tokens takes in the window:
// the header, the tokens, and padding to a multiple of 16.
func TableRecordLen(n int) int {
	return TblRecordSize + (4*n+15)&^15
}

// EncodeRank maps a rank to an unsigned integer with the same order, so
// that the device compares ranks as integers: positive values get the sign
// bit set, negative ones are inverted. NaN has no place in an order; callers
// reject it first.
func EncodeRank(f float64) uint64 {
	u := math.Float64bits(f)
	if u>>63 == 0 {
		return u | 1<<63
	}
	return ^u
}

// DecodeRank inverts EncodeRank.
func DecodeRank(u uint64) float64 {
	if u>>63 == 1 {
		return math.Float64frombits(u &^ (1 << 63))
	}
	return math.Float64frombits(^u)
}

// RankIsNaN reports whether an encoded rank is a NaN.
func RankIsNaN(u uint64) bool { return math.IsNaN(DecodeRank(u)) }
