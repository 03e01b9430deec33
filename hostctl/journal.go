package hostctl

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/kvloom/kvloom/matcher"
)

// The index journal keeps the daemon's index across restarts: the chunk
// blobs survive in the disk tier, and the journal remembers which prompts
// and chunks they belong to (a blob header holds only a 64-bit salt id,
// not the salt the matcher needs). It is append-only; a torn record at the
// end (a crash mid-write) is dropped on replay, anything else malformed
// stops the replay with an error naming the offset.
//
// Record: u32 payload length, u32 CRC32C of the payload, payload:
//
//	u8 op (1 add, 2 remove) | u8 flags (bit 0: prefix chain) | salt [16]
//	add:    u64 bytes charged | u16 tenant length | tenant | u32 n | n × u32 tokens
//	remove: key [16]
const (
	jAdd    = 1
	jRemove = 2

	// maxJournalRecord bounds one record: a prompt of 1<<24 tokens.
	maxJournalRecord = 64 << 20
)

var errJournal = errors.New("malformed index journal")

// journalRecord is one decoded record.
type journalRecord struct {
	Op     uint8
	Prefix bool
	Salt   matcher.Salt
	Bytes  int64
	Tenant string
	Tokens []matcher.Token
	Key    matcher.ChunkKey
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord encodes r onto dst.
func appendRecord(dst []byte, r *journalRecord) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	flags := uint8(0)
	if r.Prefix {
		flags = 1
	}
	dst = append(dst, r.Op, flags)
	sb := r.Salt.Bytes()
	dst = append(dst, sb[:]...)
	switch r.Op {
	case jAdd:
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Bytes))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.Tenant)))
		dst = append(dst, r.Tenant...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Tokens)))
		for _, t := range r.Tokens {
			dst = binary.LittleEndian.AppendUint32(dst, t)
		}
	case jRemove:
		dst = append(dst, r.Key[:]...)
	}
	payload := dst[start+8:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// parseRecord decodes one payload.
func parseRecord(p []byte, off int64) (*journalRecord, error) {
	bad := func(what string) error {
		return fmt.Errorf("record at offset %d: %s: %w", off, what, errJournal)
	}
	if len(p) < 2+matcher.SaltSize {
		return nil, bad(fmt.Sprintf("payload of %d bytes, need at least %d", len(p), 2+matcher.SaltSize))
	}
	r := &journalRecord{Op: p[0], Prefix: p[1]&1 != 0}
	if p[1]&^1 != 0 {
		return nil, bad(fmt.Sprintf("flags %#x", p[1]))
	}
	s, err := matcher.ParseSalt(p[2 : 2+matcher.SaltSize])
	if err != nil {
		return nil, bad(err.Error())
	}
	r.Salt = s
	p = p[2+matcher.SaltSize:]
	switch r.Op {
	case jAdd:
		if len(p) < 10 {
			return nil, bad("add record truncated before the tenant")
		}
		r.Bytes = int64(binary.LittleEndian.Uint64(p))
		if r.Bytes < 0 {
			return nil, bad(fmt.Sprintf("bytes %d", r.Bytes))
		}
		tl := int(binary.LittleEndian.Uint16(p[8:]))
		p = p[10:]
		if len(p) < tl+4 {
			return nil, bad(fmt.Sprintf("tenant of %d bytes past the record", tl))
		}
		r.Tenant = string(p[:tl])
		p = p[tl:]
		n := int(binary.LittleEndian.Uint32(p))
		p = p[4:]
		if n == 0 || len(p) != 4*n {
			return nil, bad(fmt.Sprintf("%d tokens in %d bytes", n, len(p)))
		}
		r.Tokens = make([]matcher.Token, n)
		for i := range r.Tokens {
			r.Tokens[i] = binary.LittleEndian.Uint32(p[4*i:])
		}
	case jRemove:
		if len(p) != 16 {
			return nil, bad(fmt.Sprintf("remove record with %d key bytes", len(p)))
		}
		copy(r.Key[:], p)
	default:
		return nil, bad(fmt.Sprintf("op %d", r.Op))
	}
	return r, nil
}

// readJournal decodes every record of r. A torn record at the very end is
// not an error (torn reports it); a bad checksum or a malformed record
// before the end is.
func readJournal(r io.Reader) (recs []*journalRecord, torn bool, err error) {
	br := bufio.NewReader(r)
	var off int64
	var hdr [8]byte
	for {
		n, err := io.ReadFull(br, hdr[:])
		if err == io.EOF {
			return recs, false, nil
		}
		if err == io.ErrUnexpectedEOF {
			return recs, n > 0, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read journal: %w", err)
		}
		size := binary.LittleEndian.Uint32(hdr[:])
		if size > maxJournalRecord {
			return nil, false, fmt.Errorf("record at offset %d: length %d, limit %d: %w", off, size, maxJournalRecord, errJournal)
		}
		p := make([]byte, size)
		if _, err := io.ReadFull(br, p); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return recs, true, nil
			}
			return nil, false, fmt.Errorf("read journal: %w", err)
		}
		if got, want := crc32.Checksum(p, castagnoli), binary.LittleEndian.Uint32(hdr[4:]); got != want {
			// The last record may be torn mid-payload by a crash; its
			// length was written, its bytes not all.
			if _, err := br.Peek(1); err == io.EOF {
				return recs, true, nil
			}
			return nil, false, fmt.Errorf("record at offset %d: crc32c %08x, stored %08x: %w", off, got, want, errJournal)
		}
		rec, err := parseRecord(p, off)
		if err != nil {
			return nil, false, err
		}
		recs = append(recs, rec)
		off += 8 + int64(size)
	}
}

// journal appends records to the file, buffered; sync writes and fsyncs.
type journal struct {
	path  string
	log   *slog.Logger
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	buf   []byte
	dirty bool
	recs  []*journalRecord // read at open, for replay
}

func openJournal(path string, blockSize int, log *slog.Logger) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open index journal: %w", err)
	}
	recs, torn, err := readJournal(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("index journal %s: %w", path, err)
	}
	if torn {
		log.Warn("journal_torn_record", "path", path, "records", len(recs))
	}
	// Rewrite the journal compacted: live adds only. It also drops a torn
	// tail, so appends start on a record boundary.
	live := compact(recs, blockSize)
	tmp := path + ".tmp"
	tf, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("compact index journal: %w", err)
	}
	var b []byte
	for _, r := range live {
		b = appendRecord(b[:0], r)
		if _, err := tf.Write(b); err != nil {
			tf.Close()
			f.Close()
			return nil, fmt.Errorf("compact index journal: %w", err)
		}
	}
	if err := tf.Sync(); err != nil {
		tf.Close()
		f.Close()
		return nil, fmt.Errorf("compact index journal: %w", err)
	}
	tf.Close()
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("compact index journal: %w", err)
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open index journal: %w", err)
	}
	return &journal{path: path, log: log, f: f, w: bufio.NewWriterSize(f, 256<<10), recs: live}, nil
}

// compact keeps the adds that no later remove cancels, in order.
func compact(recs []*journalRecord, blockSize int) []*journalRecord {
	removed := map[matcher.ChunkKey]int{}
	for i, r := range recs {
		if r.Op == jRemove {
			removed[r.Key] = i
		}
	}
	var out []*journalRecord
	for i, r := range recs {
		if r.Op != jAdd {
			continue
		}
		k := recordKey(r, blockSize)
		if j, ok := removed[k]; ok && j > i {
			continue
		}
		out = append(out, r)
	}
	return out
}

// recordKey is the index key an add record's entry has (matcher's
// Index.KeyOf): the chunk key, or a prefix chain's last full block's key.
func recordKey(r *journalRecord, blockSize int) matcher.ChunkKey {
	if !r.Prefix {
		return matcher.ChunkKeyOf(r.Salt, r.Tokens)
	}
	keys, err := matcher.PrefixKeys(r.Salt, r.Tokens, blockSize, nil)
	if err != nil || len(keys) == 0 {
		return matcher.ChunkKey{}
	}
	return keys[len(keys)-1]
}

func (j *journal) add(r *journalRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("index journal closed: %w", ErrShutdown)
	}
	j.buf = appendRecord(j.buf[:0], r)
	j.dirty = true
	if _, err := j.w.Write(j.buf); err != nil {
		return fmt.Errorf("append index journal: %w", err)
	}
	return nil
}

// sync writes buffered records and fsyncs the file.
func (j *journal) sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil || !j.dirty {
		return nil
	}
	j.dirty = false
	if err := j.w.Flush(); err != nil {
		return fmt.Errorf("flush index journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync index journal: %w", err)
	}
	return nil
}

func (j *journal) close() error {
	err := j.sync()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f != nil {
		err = errors.Join(err, j.f.Close())
		j.f = nil
	}
	return err
}
