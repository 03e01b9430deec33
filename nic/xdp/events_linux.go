//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// Ring-buffer record kinds (KVLP_EVENT_* in bpf/kvlp.c) and sizes.
const (
	recordHit  = 1
	recordDone = 2
	hitSize    = int(unsafe.Sizeof(kvlpKvlpEvent{}))
	doneSize   = int(unsafe.Sizeof(kvlpKvlpDone{}))
)

// pollBackstop bounds how long records can wait unread: the program wakes
// the reader once per hint with hits, and that wakeup is lost when the ring
// is full, so the reader also looks on its own this often.
const pollBackstop = 100 * time.Millisecond

// startReader opens the ring buffer and starts the goroutine that hands its
// records to the callbacks. stopReader stops it and waits for it.
func (p *program) startReader(log *slog.Logger, onHit func(PrefetchEvent), onDone func(HintDone)) error {
	rd, err := ringbuf.NewReader(p.events)
	if err != nil {
		return fmt.Errorf("open ring buffer %s: %w", mapEvents, err)
	}
	p.reader = rd
	p.done = make(chan struct{})
	go p.readEvents(log, onHit, onDone)
	return nil
}

func (p *program) stopReader() {
	if p.reader == nil {
		return
	}
	p.reader.Close() // wakes the blocked read with ringbuf.ErrClosed
	<-p.done
	p.reader = nil
}

func (p *program) readEvents(log *slog.Logger, onHit func(PrefetchEvent), onDone func(HintDone)) {
	defer close(p.done)
	var rec ringbuf.Record
	for {
		p.reader.SetDeadline(time.Now().Add(pollBackstop))
		if err := p.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if !errors.Is(err, ringbuf.ErrClosed) {
				log.Error("ring_buffer_read_failed", "err", err)
			}
			return
		}
		hit, done, err := decodeRecord(rec.RawSample)
		switch {
		case err != nil:
			log.Warn("ring_buffer_bad_record", "err", err)
		case hit != nil && onHit != nil:
			onHit(*hit)
		case done != nil && onDone != nil:
			onDone(*done)
		}
	}
}

// decodeRecord reads one ring-buffer record (native byte order, the
// kernel's): a hit or the end of a hint. Fields are read by offset, not by
// reflection: the reader sees every hit of every hint.
func decodeRecord(b []byte) (*PrefetchEvent, *HintDone, error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("record of %d bytes", len(b))
	}
	ne := binary.NativeEndian
	switch kind := ne.Uint32(b); kind {
	case recordHit:
		if len(b) < hitSize {
			return nil, nil, fmt.Errorf("hit record of %d bytes, want %d", len(b), hitSize)
		}
		ev := &PrefetchEvent{
			Ifindex: ne.Uint32(b[4:]), RequestID: ne.Uint64(b[8:]), SaltID: ne.Uint64(b[16:]), Fingerprint: ne.Uint64(b[24:]),
			TokenOffset: ne.Uint32(b[48:]), ChunkOffset: ne.Uint32(b[52:]), FragIndex: ne.Uint16(b[56:]), Entry: ne.Uint16(b[58:]),
			Time: time.Duration(ne.Uint64(b[64:])),
		}
		copy(ev.Chunk[:], b[32:48])
		return ev, nil, nil
	case recordDone:
		if len(b) < doneSize {
			return nil, nil, fmt.Errorf("done record of %d bytes, want %d", len(b), doneSize)
		}
		return nil, &HintDone{
			Ifindex: ne.Uint32(b[4:]), RequestID: ne.Uint64(b[8:]), SaltID: ne.Uint64(b[16:]),
			FragIndex: ne.Uint16(b[24:]), FragCount: ne.Uint16(b[26:]), Entries: int(ne.Uint16(b[28:])), Hits: int(ne.Uint16(b[30:])),
			Events: int(ne.Uint32(b[32:])), Time: time.Duration(ne.Uint64(b[40:])),
		}, nil
	default:
		return nil, nil, fmt.Errorf("record kind %d, want %d (hit) or %d (done)", kind, recordHit, recordDone)
	}
}
