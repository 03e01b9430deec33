package simnic_test

import (
	"encoding/binary"
	"testing"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
)

// fuzzRig is a rig with a few entries in its table, so that fuzzed
// prompts can match.
func fuzzRig(t *testing.T) *rig {
	r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
	r.batch(r.insert(tokens(1, 64), 1), r.insert(tokens(2, 80), 2))
	return r
}

// FuzzRequestDescriptor feeds the device arbitrary descriptor bytes and
// token buffers, as a buggy or hostile host could write them. The device
// must never panic, must finish the request with exactly one DONE or
// ERROR for its slot, and must latch an error for every ERROR but a
// matcher give-up.
func FuzzRequestDescriptor(f *testing.F) {
	valid := make([]byte, nic.ReqDescSize)
	d := nic.ReqDesc{Opcode: nic.OpMatch, Tokens: 64, Tag: 7, Buf: nic.DMADesc{Addr: nic.WinDataOffset, Len: 256}}
	salt, _ := matcher.NewSalt([]byte("model-01-rig"), "tenant")
	d.Salt = salt.Bytes()
	d.Encode(valid)
	toks := make([]byte, 256)
	for i, t := range tokens(1, 64) {
		binary.LittleEndian.PutUint32(toks[4*i:], t)
	}
	f.Add(valid, toks)
	f.Add(make([]byte, nic.ReqDescSize), []byte{})
	f.Fuzz(func(t *testing.T, desc, data []byte) {
		if len(desc) < nic.ReqDescSize {
			desc = append(desc, make([]byte, nic.ReqDescSize-len(desc))...)
		}
		r := fuzzRig(t)
		if len(data) > 1<<16 {
			data = data[:1<<16]
		}
		data = data[:len(data)&^3]
		r.bar.Write(nic.WinDataOffset, data)
		r.bar.Write(nic.WinReqRingOffset, desc[:nic.ReqDescSize])
		r.bar.Store32(nic.RegReqTail, 1)
		for r.m.Poll() {
		}
		got := r.drain()
		for r.m.Poll() { // the completion ring (8) may have stalled the device
			got = append(got, r.drain()...)
		}
		if len(got) == 0 {
			t.Fatalf("no completion for the request")
		}
		last := got[len(got)-1]
		for i, e := range got {
			if e.Slot != 0 {
				t.Fatalf("completion %d for slot %d, want 0", i, e.Slot)
			}
			terminal := e.Type == nic.CplDone || e.Type == nic.CplError
			if terminal != (i == len(got)-1) {
				t.Fatalf("completion %d of %d has type %d", i, len(got), e.Type)
			}
		}
		if r.bar.Load32(nic.RegReqHead) != 1 {
			t.Fatalf("REQ_HEAD = %d, want 1", r.bar.Load32(nic.RegReqHead))
		}
		latched := r.bar.Load32(nic.RegErrStatus)&nic.FaultDesc != 0
		switch {
		case last.Type == nic.CplError && nic.Code(last.ErrCode) != nic.CodeTooManyCandidates && !latched:
			t.Fatalf("ERROR %s without ERR_STATUS.DESC", nic.Code(last.ErrCode))
		case last.Type == nic.CplDone && latched:
			t.Fatalf("DONE but ERR_STATUS.DESC is set")
		case last.Type == nic.CplDone && last.Count != uint32(len(got)-1)-uint32(countType(got, nic.CplPrefetch)):
			t.Fatalf("DONE count %d does not match the MATCH completions", last.Count)
		}
	})
}

func countType(es []nic.CplEntry, typ uint16) int {
	n := 0
	for _, e := range es {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// FuzzTableBatch feeds the device an arbitrary TABLE window and batch
// registers. The device must never panic, must answer the doorbell, and
// must keep its table within capacity and its occupancy register true.
func FuzzTableBatch(f *testing.F) {
	salt, _ := matcher.NewSalt([]byte("model-01-rig"), "tenant")
	toks := tokens(3, 64)
	rec := nic.TableRecord{Op: nic.TblOpInsert, Tokens: 64, Key: matcher.ChunkKeyOf(salt, toks), Salt: salt.Bytes(), Rank: nic.EncodeRank(5)}
	b := make([]byte, nic.TableRecordLen(64))
	rec.Encode(b)
	for i, t := range toks {
		binary.LittleEndian.PutUint32(b[nic.TblRecordSize+4*i:], t)
	}
	f.Add(b, uint32(1), uint32(len(b)))
	f.Add(b, uint32(3), uint32(len(b)))
	f.Add([]byte{}, uint32(0), uint32(1<<20))
	f.Fuzz(func(t *testing.T, window []byte, count, size uint32) {
		r := fuzzRig(t)
		if len(window) > nic.WinTableSize {
			window = window[:nic.WinTableSize]
		}
		r.bar.Write(nic.WinTableOffset, window)
		r.ring(int(count%1024), int(size), nil)
		occ := r.bar.Load32(nic.RegTblOccupancy)
		if occ > 4 {
			t.Fatalf("TBL_OCCUPANCY %d above capacity 4", occ)
		}
		// The occupancy is true: a full CLEAR reports that many removals.
		before := r.bar.Load64(nic.RegCntTblRemoves)
		r.batch(record{hdr: nic.TableRecord{Op: nic.TblOpClear}})
		if removed := r.bar.Load64(nic.RegCntTblRemoves) - before; removed != uint64(occ) {
			t.Fatalf("CLEAR removed %d entries, TBL_OCCUPANCY said %d", removed, occ)
		}
		if r.bar.Load32(nic.RegStatus)&nic.StatusTblBusy != 0 {
			t.Fatalf("STATUS.TBL_BUSY left set")
		}
	})
}
