package simnic_test

import (
	"testing"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
	"github.com/kvloom/kvloom/sim"
)

// rig drives a Model at the register level, playing the host by hand: no
// driver, so the tests can write anything a buggy or hostile host could.
type rig struct {
	t       *testing.T
	bar     *nic.Region
	m       *simnic.Model
	tail    uint32 // REQ_TAIL
	cplHead uint32
	tblSeq  uint32
}

// smallPipeline is the default pipeline with a small table and rings.
func smallPipeline() sim.Pipeline {
	p := sim.DefaultPipeline()
	p.TableEntries = 4
	p.RequestQueueDepth = 4
	p.CompletionQueueDepth = 8
	return p
}

func newRig(t *testing.T, opts simnic.Options) *rig {
	t.Helper()
	bar, err := nic.NewRegion(make([]byte, nic.MinBARSize))
	if err != nil {
		t.Fatal(err)
	}
	m, err := simnic.NewModel(bar, opts)
	if err != nil {
		t.Fatalf("new model: %v", err)
	}
	r := &rig{t: t, bar: bar, m: m}
	bar.Store32(nic.RegCtrl, nic.CtrlEnable)
	return r
}

func (r *rig) salt() matcher.Salt {
	s, err := matcher.NewSalt([]byte("model-01-rig"), "tenant")
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// tokens returns n distinct tokens derived from seed.
func tokens(seed, n int) []matcher.Token {
	toks := make([]matcher.Token, n)
	for i := range toks {
		toks[i] = matcher.Token(seed*1_000_003 + i*7919 + 1)
	}
	return toks
}

// desc is a valid descriptor for n tokens at the start of DATA.
func (r *rig) desc(n int) nic.ReqDesc {
	return nic.ReqDesc{Opcode: nic.OpMatch, Tokens: uint32(n), Tag: uint64(r.tail) + 100, Salt: r.salt().Bytes(),
		Buf: nic.DMADesc{Addr: nic.WinDataOffset, Len: uint32(4 * n)}}
}

// post writes toks to the start of DATA and d into the next ring slot, and
// rings the doorbell.
func (r *rig) post(d nic.ReqDesc, toks []matcher.Token) {
	entries := r.bar.Load32(nic.RegReqRingEntries)
	r.bar.WriteTokens(nic.WinDataOffset, toks)
	var b [nic.ReqDescSize]byte
	d.Encode(b[:])
	r.bar.Write(nic.WinReqRingOffset+int(r.tail&(entries-1))*nic.ReqDescSize, b[:])
	r.tail++
	r.bar.Store32(nic.RegReqTail, r.tail)
}

// drain returns the completions posted since the last drain and returns
// their slots to the device.
func (r *rig) drain() []nic.CplEntry {
	entries := r.bar.Load32(nic.RegCplRingEntries)
	tail := r.bar.Load32(nic.RegCplTail)
	var out []nic.CplEntry
	b := make([]byte, nic.CplEntrySize)
	for ; r.cplHead != tail; r.cplHead++ {
		r.bar.Read(nic.WinCplRingOffset+int(r.cplHead&(entries-1))*nic.CplEntrySize, b)
		out = append(out, nic.DecodeCplEntry(b))
	}
	r.bar.Store32(nic.RegCplHead, r.cplHead)
	return out
}

// ask posts one request, polls, and returns its completions.
func (r *rig) ask(d nic.ReqDesc, toks []matcher.Token) []nic.CplEntry {
	r.t.Helper()
	r.post(d, toks)
	for r.m.Poll() {
	}
	return r.drain()
}

// record is one table operation for batch.
type record struct {
	hdr  nic.TableRecord
	toks []matcher.Token
}

// insert is a valid INSERT record.
func (r *rig) insert(toks []matcher.Token, rank float64) record {
	return record{hdr: nic.TableRecord{Op: nic.TblOpInsert, Tokens: uint32(len(toks)), Key: matcher.ChunkKeyOf(r.salt(), toks),
		Salt: r.salt().Bytes(), Rank: nic.EncodeRank(rank)}, toks: toks}
}

// batch writes records into the TABLE window, rings the doorbell, polls,
// and returns the records as the device wrote them back.
func (r *rig) batch(recs ...record) []nic.TableRecord {
	r.t.Helper()
	off := 0
	var offs []int
	for _, rec := range recs {
		offs = append(offs, off)
		var b [nic.TblRecordSize]byte
		rec.hdr.Encode(b[:])
		r.bar.Write(nic.WinTableOffset+off, b[:])
		r.bar.WriteTokens(nic.WinTableOffset+off+nic.TblRecordSize, rec.toks)
		off += nic.TableRecordLen(len(rec.toks))
	}
	return r.ring(len(recs), off, offs)
}

// ring rings the table doorbell for count records in size bytes and reads
// back the records at offs.
func (r *rig) ring(count, size int, offs []int) []nic.TableRecord {
	r.t.Helper()
	r.bar.Store32(nic.RegTblCount, uint32(count))
	r.bar.Store32(nic.RegTblBytes, uint32(size))
	r.tblSeq++
	r.bar.Store32(nic.RegTblDoorbell, r.tblSeq)
	for r.m.Poll() {
	}
	if got := r.bar.Load32(nic.RegTblDone); got != r.tblSeq {
		r.t.Fatalf("TBL_DONE = %d after polling, want %d", got, r.tblSeq)
	}
	out := make([]nic.TableRecord, len(offs))
	b := make([]byte, nic.TblRecordSize)
	for i, off := range offs {
		r.bar.Read(nic.WinTableOffset+off, b)
		out[i] = nic.DecodeTableRecord(b)
	}
	return out
}
