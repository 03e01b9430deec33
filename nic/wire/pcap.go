package wire

import (
	"fmt"
	"io"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// DefaultSnapLen is the capture length of a Recorder: a whole jumbo frame.
const DefaultSnapLen = 9216

// Recorder writes Ethernet frames to a pcap file (nanosecond timestamps)
// that Wireshark and tshark read with docs/kvlp.lua. It is not safe for
// concurrent use.
type Recorder struct {
	w       *pcapgo.Writer
	snapLen int
	n       int
}

// NewRecorder writes the pcap file header to w and returns a recorder that
// keeps at most snapLen bytes of each frame (DefaultSnapLen when zero).
func NewRecorder(w io.Writer, snapLen int) (*Recorder, error) {
	if snapLen <= 0 {
		snapLen = DefaultSnapLen
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(uint32(snapLen), layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &Recorder{w: pw, snapLen: snapLen}, nil
}

// Write records one frame seen at ts.
func (r *Recorder) Write(ts time.Time, frame []byte) error {
	ci := gopacket.CaptureInfo{Timestamp: ts, Length: len(frame), CaptureLength: min(len(frame), r.snapLen)}
	if err := r.w.WritePacket(ci, frame[:ci.CaptureLength]); err != nil {
		return fmt.Errorf("write pcap frame %d: %w", r.n, err)
	}
	r.n++
	return nil
}

// Frames is the number of frames written so far.
func (r *Recorder) Frames() int { return r.n }
