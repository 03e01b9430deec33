package bitstream

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Container layout constants (docs/bitstream.md gives the byte-by-byte
// specification).
const (
	// Magic opens every image. The CR LF pair catches text-mode mangling.
	Magic = "KVLIMG\r\n"
	// FormatVersion is the container version this package writes and reads.
	FormatVersion = 1

	headerSize   = 32
	entrySize    = 72
	sigBlockSize = ed25519.PublicKeySize + ed25519.SignatureSize // 96
	sectionAlign = 8

	sigAlgNone    = 0
	sigAlgEd25519 = 1

	// MaxSections is the most payload sections an image may carry.
	MaxSections = 64
	// DefaultMaxImageSize bounds Parse: large enough for the biggest
	// UltraScale+ bitstreams, small enough to refuse nonsense early.
	DefaultMaxImageSize = 1 << 30
)

// signatureDomain prefixes the signed message so that an image signature can
// never be replayed as a signature over anything else.
const signatureDomain = "KVLIMG signature v1\x00"

// PayloadType says what a payload section holds.
type PayloadType uint16

// Payload types. The numbers are part of the container format.
const (
	PayloadRaw       PayloadType = 1 // bytes a loader passes on as is (raw .bin, DFL PR bitstream)
	PayloadXilinxBit PayloadType = 2 // a Xilinx .bit file with its header
	PayloadXclbin    PayloadType = 3 // a Vitis xclbin2 (axlf) container
	PayloadEBPF      PayloadType = 4 // an eBPF ELF object
)

var payloadNames = map[PayloadType]string{
	PayloadRaw:       "raw",
	PayloadXilinxBit: "xilinx-bit",
	PayloadXclbin:    "xclbin2",
	PayloadEBPF:      "ebpf-elf",
}

func (t PayloadType) String() string {
	if s, ok := payloadNames[t]; ok {
		return s
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// ParsePayloadType parses "raw", "xilinx-bit", "xclbin2" or "ebpf-elf".
func ParsePayloadType(s string) (PayloadType, error) {
	for t, n := range payloadNames {
		if n == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("parse payload type %q: want raw, xilinx-bit, xclbin2 or ebpf-elf", s)
}

// allowedPayload reports whether an image of kind k may carry payloads of
// type t.
func allowedPayload(k Kind, t PayloadType) bool {
	switch k {
	case KindFPGA:
		return t == PayloadRaw || t == PayloadXilinxBit || t == PayloadXclbin
	case KindXDP:
		return t == PayloadEBPF
	case KindSim:
		return t == PayloadRaw
	}
	return false
}

// Payload is one section to put into an image with Build.
type Payload struct {
	Name string // 1–16 of [a-z0-9._-], starting with a letter or digit
	Type PayloadType
	Data []byte // kept by reference; must not change afterwards
}

// Section is one payload section of an image.
type Section struct {
	Name   string
	Type   PayloadType
	Data   []byte // shared with the Image: do not modify
	SHA256 [32]byte
}

// Image is a parsed or built accelerator image. It is immutable: accessors
// return copies, except section data, which callers must not modify.
type Image struct {
	manifest Manifest
	sections []Section
	signer   ed25519.PublicKey // nil when unsigned
	sig      []byte
	prefix   []byte // header ‖ manifest ‖ section table: what the signature covers
	id       [32]byte
	size     int64
}

// Manifest returns a copy of the image's manifest.
func (img *Image) Manifest() Manifest { return img.manifest.Clone() }

// Sections returns the payload sections in container order.
func (img *Image) Sections() []Section { return append([]Section(nil), img.sections...) }

// Payloads returns the sections as payloads for Build, to rebuild or
// re-sign an image with another manifest or key.
func (img *Image) Payloads() []Payload {
	ps := make([]Payload, len(img.sections))
	for i, s := range img.sections {
		ps[i] = Payload{Name: s.Name, Type: s.Type, Data: s.Data}
	}
	return ps
}

// Section returns the first section of type t.
func (img *Image) Section(t PayloadType) (Section, bool) {
	for _, s := range img.sections {
		if s.Type == t {
			return s, true
		}
	}
	return Section{}, false
}

// ID is the image's identity: the SHA-256 of header, manifest and section
// table, which cover every payload through its hash. Re-signing an image
// does not change it.
func (img *Image) ID() string { return hex.EncodeToString(img.id[:]) }

// Size is the image's encoded size in bytes.
func (img *Image) Size() int64 { return img.size }

// Signer returns the key id of the key that signed the image, and false
// when it is unsigned. The signature is not checked: use Verify.
func (img *Image) Signer() (string, bool) {
	if img.signer == nil {
		return "", false
	}
	return KeyID(img.signer), true
}

func (img *Image) String() string {
	return img.manifest.Name + " " + img.manifest.Version + " (" + string(img.manifest.Kind) + ")"
}

// Ref returns the short description of the image that status reports carry.
func (img *Image) Ref() ImageRef {
	signer, _ := img.Signer()
	return ImageRef{Name: img.manifest.Name, Version: img.manifest.Version, Kind: img.manifest.Kind, ID: img.ID(), Signer: signer}
}

// ImageRef names an image in status reports and logs.
type ImageRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Kind    Kind   `json:"kind"`
	ID      string `json:"id"`               // Image.ID
	Signer  string `json:"signer,omitempty"` // key id; empty when unsigned
}

func (r ImageRef) String() string {
	return r.Name + " " + r.Version + " (" + string(r.Kind) + ", id " + truncate(r.ID, 12) + ")"
}

// Bytes returns the image's encoding, byte for byte what Parse read or
// Build produced.
func (img *Image) Bytes() []byte {
	var buf bytes.Buffer
	buf.Grow(int(img.size))
	_, _ = img.WriteTo(&buf) // writes to a bytes.Buffer do not fail
	return buf.Bytes()
}

// WriteFile writes the image's encoding to path through a temporary file
// and a rename, so that a reader never sees half an image.
func (img *Image) WriteFile(path string) error {
	return writeFileAtomic(path, func(w io.Writer) error {
		_, err := img.WriteTo(w)
		return err
	})
}

// WriteTo writes the image's encoding to w.
func (img *Image) WriteTo(w io.Writer) (int64, error) {
	var n int64
	write := func(b []byte) error {
		k, err := w.Write(b)
		n += int64(k)
		return err
	}
	if err := write(img.prefix); err != nil {
		return n, fmt.Errorf("write image: %w", err)
	}
	if img.signer != nil {
		if err := write(img.signer); err != nil {
			return n, fmt.Errorf("write image: %w", err)
		}
		if err := write(img.sig); err != nil {
			return n, fmt.Errorf("write image: %w", err)
		}
	}
	var zero [sectionAlign]byte
	for _, s := range img.sections {
		if pad := align(n) - n; pad > 0 {
			if err := write(zero[:pad]); err != nil {
				return n, fmt.Errorf("write image: %w", err)
			}
		}
		if err := write(s.Data); err != nil {
			return n, fmt.Errorf("write image section %s: %w", s.Name, err)
		}
	}
	return n, nil
}

func align(n int64) int64 { return (n + sectionAlign - 1) &^ (sectionAlign - 1) }

// layout returns each section's offset and the total size for an image
// whose fixed part (header, manifest, table, signature block) ends at end.
func layout(end int64, sizes []int64) (offsets []int64, total int64) {
	offsets = make([]int64, len(sizes))
	total = end
	for i, sz := range sizes {
		off := align(total)
		offsets[i] = off
		total = off + sz
	}
	return offsets, total
}

// Build assembles an image from a manifest and payloads, and signs it with
// key (nil builds an unsigned image). It validates the manifest, the
// payloads' names and types against the image kind, and each vendor payload
// with its parser. Tests across the project use it to make signed images.
func Build(m Manifest, payloads []Payload, key ed25519.PrivateKey) (*Image, error) {
	m = m.Clone()
	m.SortParams()
	mb, err := m.MarshalCanonical()
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	if err := checkPayloads(m.Kind, payloads); err != nil {
		return nil, fmt.Errorf("build image %s: %w", m.Name, err)
	}
	if key != nil && len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("build image %s: signing key has %d bytes, want %d", m.Name, len(key), ed25519.PrivateKeySize)
	}
	sizes := make([]int64, len(payloads))
	for i, p := range payloads {
		sizes[i] = int64(len(p.Data))
	}
	end := int64(headerSize + len(mb) + entrySize*len(payloads))
	alg := byte(sigAlgNone)
	if key != nil {
		end += sigBlockSize
		alg = sigAlgEd25519
	}
	offsets, total := layout(end, sizes)
	if total > DefaultMaxImageSize {
		return nil, fmt.Errorf("build image %s: %d bytes exceeds the %d-byte limit", m.Name, total, DefaultMaxImageSize)
	}
	img := &Image{manifest: m, size: total}
	prefix := make([]byte, 0, headerSize+len(mb)+entrySize*len(payloads))
	prefix = append(prefix, Magic...)
	prefix = binary.LittleEndian.AppendUint16(prefix, FormatVersion)
	prefix = append(prefix, alg, 0)
	prefix = binary.LittleEndian.AppendUint32(prefix, uint32(len(mb)))
	prefix = binary.LittleEndian.AppendUint32(prefix, uint32(len(payloads)))
	prefix = binary.LittleEndian.AppendUint32(prefix, 0)
	prefix = binary.LittleEndian.AppendUint64(prefix, uint64(total))
	prefix = append(prefix, mb...)
	for i, p := range payloads {
		s := Section{Name: p.Name, Type: p.Type, Data: p.Data, SHA256: sha256.Sum256(p.Data)}
		img.sections = append(img.sections, s)
		var name [16]byte
		copy(name[:], p.Name)
		prefix = append(prefix, name[:]...)
		prefix = binary.LittleEndian.AppendUint16(prefix, uint16(p.Type))
		prefix = append(prefix, 0, 0, 0, 0, 0, 0)
		prefix = binary.LittleEndian.AppendUint64(prefix, uint64(offsets[i]))
		prefix = binary.LittleEndian.AppendUint64(prefix, uint64(sizes[i]))
		prefix = append(prefix, s.SHA256[:]...)
	}
	img.prefix = prefix
	img.id = sha256.Sum256(prefix)
	if key != nil {
		img.signer = key.Public().(ed25519.PublicKey)
		img.sig = ed25519.Sign(key, signedMessage(prefix))
	}
	return img, nil
}

func signedMessage(prefix []byte) []byte {
	msg := make([]byte, 0, len(signatureDomain)+len(prefix))
	return append(append(msg, signatureDomain...), prefix...)
}

// checkPayloads validates payload names and types against kind k and runs
// each vendor payload through its parser.
func checkPayloads(k Kind, payloads []Payload) error {
	if len(payloads) > MaxSections {
		return fmt.Errorf("%d payloads: at most %d allowed", len(payloads), MaxSections)
	}
	seen := make(map[string]bool, len(payloads))
	for i, p := range payloads {
		if !validSectionName(p.Name) {
			return fmt.Errorf("payload %d: invalid name %q: want 1–16 of [a-z0-9._-] starting with a letter or digit", i, p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("payload %d: name %q used twice", i, p.Name)
		}
		seen[p.Name] = true
		if _, ok := payloadNames[p.Type]; !ok {
			return fmt.Errorf("payload %s: unknown type %d", p.Name, p.Type)
		}
		if !allowedPayload(k, p.Type) {
			return fmt.Errorf("payload %s: a %s image cannot carry a %s payload", p.Name, k, p.Type)
		}
		if len(p.Data) == 0 {
			return fmt.Errorf("payload %s: empty", p.Name)
		}
		if err := validatePayload(p.Type, p.Data); err != nil {
			return fmt.Errorf("payload %s: %w", p.Name, err)
		}
	}
	return checkSectionCount(k, payloads)
}

func checkSectionCount(k Kind, payloads []Payload) error {
	switch k {
	case KindFPGA:
		if len(payloads) == 0 {
			return errors.New("an fpga image needs at least one payload")
		}
	case KindXDP:
		if len(payloads) != 1 {
			return fmt.Errorf("an xdp image carries exactly one ebpf-elf payload, not %d", len(payloads))
		}
	}
	return nil
}

// validatePayload runs a vendor payload through its parser.
func validatePayload(t PayloadType, data []byte) error {
	var err error
	switch t {
	case PayloadXilinxBit:
		_, err = ParseBit(data)
	case PayloadXclbin:
		_, err = ParseXclbin(data)
	case PayloadEBPF:
		_, err = InspectEBPF(data)
	}
	return err
}

func validSectionName(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// Limits bound what Parse accepts.
type Limits struct {
	// MaxImageSize is the largest image accepted, in bytes; zero means
	// DefaultMaxImageSize.
	MaxImageSize int64
}

// Parse reads one image from r. It checks the container's structure, the
// canonical manifest, and every payload's SHA-256, reading payloads only as
// far as the input goes (a header that claims more than arrives allocates
// no more than arrived). It does not check the signature against a trust
// set (Verify does) nor parse vendor payloads (loaders and Inspect do).
// Errors are *FormatError values that name field, offset, value and limit.
func Parse(r io.Reader) (*Image, error) { return ParseWithLimits(r, Limits{}) }

// ParseWithLimits is Parse with explicit limits.
func ParseWithLimits(r io.Reader, lim Limits) (*Image, error) {
	maxSize := lim.MaxImageSize
	if maxSize <= 0 {
		maxSize = DefaultMaxImageSize
	}
	p := &parser{r: r, avail: available(r)}
	img, err := p.parse(maxSize)
	if err != nil {
		return nil, err
	}
	return img, nil
}

type parser struct {
	r     io.Reader
	off   int64
	avail int64 // bytes r held when parsing began; -1 when unknown
}

func imgErr(field string, off int64, reason, value, limit string) *FormatError {
	return &FormatError{Format: "image", Field: field, Offset: off, Reason: reason, Value: value, Limit: limit}
}

// read reads exactly n bytes; n is bounded by the caller.
func (p *parser) read(field string, n int) ([]byte, error) {
	b := make([]byte, n)
	k, err := io.ReadFull(p.r, b)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, imgErr(field, p.off+int64(k), "truncated", fmt.Sprintf("%d bytes", k), fmt.Sprintf("%d bytes", n))
		}
		return nil, fmt.Errorf("read image %s at offset %d: %w", field, p.off+int64(k), err)
	}
	p.off += int64(n)
	return b, nil
}

// readPayload reads n bytes and their SHA-256, hashing each chunk while it
// is in cache. The buffer is allocated whole when the reader says that much
// is there, and otherwise grows only as data arrives, so a header that
// claims more than the input holds costs no more memory than the input.
func (p *parser) readPayload(field string, n int64) ([]byte, [32]byte, error) {
	const chunk = 256 << 10
	h := sha256.New()
	size := min(n, 1<<20)
	if p.avail >= 0 && p.avail-p.off >= n {
		size = n
	}
	buf := make([]byte, 0, size)
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*int64(cap(buf))))
			copy(nb, buf)
			buf = nb
		}
		c := buf[len(buf):min(cap(buf), len(buf)+chunk)]
		k, err := io.ReadFull(p.r, c)
		h.Write(c[:k])
		buf = buf[:len(buf)+k]
		if err != nil {
			got := p.off + int64(len(buf))
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, [32]byte{}, imgErr(field, got, "truncated", fmt.Sprintf("%d bytes", len(buf)), fmt.Sprintf("%d bytes", n))
			}
			return nil, [32]byte{}, fmt.Errorf("read image %s at offset %d: %w", field, got, err)
		}
	}
	p.off += n
	var sum [32]byte
	h.Sum(sum[:0])
	return buf, sum, nil
}

// available returns how many bytes r says it holds from its current
// position, or -1 when it cannot say.
func available(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }: // bytes.Reader, bytes.Buffer, strings.Reader
		return int64(v.Len())
	case *os.File:
		fi, err := v.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return -1
		}
		pos, err := v.Seek(0, io.SeekCurrent)
		if err != nil {
			return -1
		}
		return fi.Size() - pos
	}
	return -1
}

func (p *parser) parse(maxSize int64) (*Image, error) {
	hdr, err := p.read("header", headerSize)
	if err != nil {
		return nil, err
	}
	if string(hdr[:8]) != Magic {
		return nil, imgErr("magic", 0, "not a kvloom image", strconv.Quote(string(hdr[:8])), strconv.Quote(Magic))
	}
	if v := binary.LittleEndian.Uint16(hdr[8:]); v != FormatVersion {
		return nil, imgErr("version", 8, "unsupported container version", strconv.Itoa(int(v)), strconv.Itoa(FormatVersion))
	}
	alg := hdr[10]
	if alg != sigAlgNone && alg != sigAlgEd25519 {
		return nil, imgErr("signature_alg", 10, "unknown signature algorithm", strconv.Itoa(int(alg)), "0 (unsigned) or 1 (ed25519)")
	}
	if hdr[11] != 0 {
		return nil, imgErr("reserved", 11, "reserved byte not zero", strconv.Itoa(int(hdr[11])), "0")
	}
	mlen := binary.LittleEndian.Uint32(hdr[12:])
	if mlen < 2 || mlen > MaxManifestSize {
		return nil, imgErr("manifest_length", 12, "out of range", strconv.FormatUint(uint64(mlen), 10), fmt.Sprintf("2–%d", MaxManifestSize))
	}
	n := binary.LittleEndian.Uint32(hdr[16:])
	if n > MaxSections {
		return nil, imgErr("section_count", 16, "too many sections", strconv.FormatUint(uint64(n), 10), fmt.Sprintf("≤ %d", MaxSections))
	}
	if r := binary.LittleEndian.Uint32(hdr[20:]); r != 0 {
		return nil, imgErr("reserved", 20, "reserved field not zero", strconv.FormatUint(uint64(r), 10), "0")
	}
	total := binary.LittleEndian.Uint64(hdr[24:])
	if total > uint64(maxSize) {
		return nil, imgErr("total_length", 24, "image too large", strconv.FormatUint(total, 10), fmt.Sprintf("≤ %d", maxSize))
	}
	mb, err := p.read("manifest", int(mlen))
	if err != nil {
		return nil, err
	}
	m, err := decodeCanonical(mb, headerSize)
	if err != nil {
		return nil, err
	}
	tableOff := p.off
	table, err := p.read("section_table", entrySize*int(n))
	if err != nil {
		return nil, err
	}
	end := p.off
	if alg == sigAlgEd25519 {
		end += sigBlockSize
	}
	img := &Image{manifest: m}
	sizes := make([]int64, n)
	offsets := make([]int64, n)
	seen := map[string]bool{}
	var payloads []Payload
	for i := range int(n) {
		e := table[i*entrySize : (i+1)*entrySize]
		base := tableOff + int64(i*entrySize)
		field := fmt.Sprintf("section[%d]", i)
		name, ok := sectionName(e[:16])
		if !ok {
			return nil, imgErr(field+".name", base, "invalid section name", strconv.Quote(string(bytes.TrimRight(e[:16], "\x00"))), "1–16 of [a-z0-9._-], NUL-padded")
		}
		if seen[name] {
			return nil, imgErr(field+".name", base, "section name used twice", strconv.Quote(name), "unique names")
		}
		seen[name] = true
		typ := PayloadType(binary.LittleEndian.Uint16(e[16:]))
		if _, ok := payloadNames[typ]; !ok {
			return nil, imgErr(field+".type", base+16, "unknown payload type", strconv.Itoa(int(typ)), "1–4")
		}
		if !allowedPayload(m.Kind, typ) {
			return nil, imgErr(field+".type", base+16, "payload type not allowed in a "+string(m.Kind)+" image", typ.String(), "")
		}
		if !bytes.Equal(e[18:24], make([]byte, 6)) {
			return nil, imgErr(field+".reserved", base+18, "reserved bytes not zero", hex.EncodeToString(e[18:24]), "000000000000")
		}
		off := binary.LittleEndian.Uint64(e[24:])
		size := binary.LittleEndian.Uint64(e[32:])
		if size == 0 || size > total {
			return nil, imgErr(field+".size", base+32, "out of range", strconv.FormatUint(size, 10), fmt.Sprintf("1–%d (the image's total length)", total))
		}
		offsets[i], sizes[i] = int64(off), int64(size)
		payloads = append(payloads, Payload{Name: name, Type: typ})
		var sum [32]byte
		copy(sum[:], e[40:72])
		img.sections = append(img.sections, Section{Name: name, Type: typ, SHA256: sum})
	}
	if err := checkSectionCount(m.Kind, payloads); err != nil {
		return nil, imgErr("section_count", 16, err.Error(), strconv.Itoa(int(n)), "")
	}
	want, wantTotal := layout(end, sizes)
	for i := range offsets {
		if offsets[i] != want[i] {
			return nil, imgErr(fmt.Sprintf("section[%d].offset", i), tableOff+int64(i*entrySize)+24, "section not where the layout puts it", strconv.FormatInt(offsets[i], 10), strconv.FormatInt(want[i], 10))
		}
	}
	if uint64(wantTotal) != total {
		return nil, imgErr("total_length", 24, "does not match the sections", strconv.FormatUint(total, 10), strconv.FormatInt(wantTotal, 10))
	}
	img.size = wantTotal
	img.prefix = make([]byte, 0, int(tableOff)+len(table))
	img.prefix = append(append(append(img.prefix, hdr...), mb...), table...)
	img.id = sha256.Sum256(img.prefix)
	if alg == sigAlgEd25519 {
		sb, err := p.read("signature_block", sigBlockSize)
		if err != nil {
			return nil, err
		}
		img.signer = ed25519.PublicKey(sb[:ed25519.PublicKeySize])
		img.sig = sb[ed25519.PublicKeySize:]
	}
	for i := range img.sections {
		s := &img.sections[i]
		if pad := offsets[i] - p.off; pad > 0 {
			padOff := p.off
			b, err := p.read(fmt.Sprintf("section[%d].padding", i), int(pad))
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(b, make([]byte, pad)) {
				return nil, imgErr(fmt.Sprintf("section[%d].padding", i), padOff, "padding not zero", hex.EncodeToString(b), "zero bytes")
			}
		}
		start := p.off
		data, got, err := p.readPayload(fmt.Sprintf("section[%d] %s", i, s.Name), sizes[i])
		if err != nil {
			return nil, err
		}
		if got != s.SHA256 {
			return nil, &FormatError{Format: "image", Field: fmt.Sprintf("section[%d] %s", i, s.Name), Offset: start,
				Reason: "SHA-256 does not match the section table", Value: hexShort(got[:], 8) + "…", Limit: hexShort(s.SHA256[:], 8) + "…", Err: ErrHashMismatch}
		}
		s.Data = data
	}
	var one [1]byte
	if k, err := io.ReadFull(p.r, one[:]); k > 0 {
		return nil, imgErr("end", p.off, "data after the last section", "", "end of input")
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read image end at offset %d: %w", p.off, err)
	}
	return img, nil
}

// sectionName decodes a NUL-padded section name.
func sectionName(b []byte) (string, bool) {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		n = len(b)
	}
	if !bytes.Equal(b[n:], make([]byte, len(b)-n)) {
		return "", false
	}
	s := string(b[:n])
	return s, validSectionName(s)
}
