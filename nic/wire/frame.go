package wire

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// DefaultTTL is the IPv4 TTL and IPv6 hop limit of frames this package
// builds, and of the replies the XDP program sends.
const DefaultTTL = 64

// Endpoints are the addresses of one direction of a KVLP exchange.
type Endpoints struct {
	SrcMAC, DstMAC   net.HardwareAddr
	SrcIP, DstIP     netip.Addr // both IPv4 or both IPv6
	SrcPort, DstPort uint16
}

// Reverse returns the endpoints of the answer: sources and destinations swapped.
func (e Endpoints) Reverse() Endpoints {
	return Endpoints{
		SrcMAC: e.DstMAC, DstMAC: e.SrcMAC,
		SrcIP: e.DstIP, DstIP: e.SrcIP,
		SrcPort: e.DstPort, DstPort: e.SrcPort,
	}
}

// Frame serializes m into an Ethernet frame from e: IPv4 (DF set, id 0) or
// IPv6, TTL/hop limit DefaultTTL, UDP with its checksum computed (a
// computed zero is sent as 0xffff, RFC 768).
func (e Endpoints) Frame(m *KVLP) ([]byte, error) {
	return e.frame(m, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true})
}

// RawFrame is Frame without fixing KVLP's length and hits fields, for
// crafting malformed messages; the lower layers are still consistent.
func (e Endpoints) RawFrame(m *KVLP) ([]byte, error) {
	return e.frame(m, gopacket.SerializeOptions{})
}

// PayloadFrame builds a frame from e around an arbitrary UDP payload.
func (e Endpoints) PayloadFrame(payload []byte) ([]byte, error) {
	return e.framePayload(gopacket.Payload(payload))
}

func (e Endpoints) frame(m *KVLP, opts gopacket.SerializeOptions) ([]byte, error) {
	body := gopacket.NewSerializeBuffer()
	if err := m.SerializeTo(body, opts); err != nil {
		return nil, err
	}
	return e.framePayload(gopacket.Payload(body.Bytes()))
}

func (e Endpoints) framePayload(payload gopacket.Payload) ([]byte, error) {
	if len(e.SrcMAC) != 6 || len(e.DstMAC) != 6 {
		return nil, fmt.Errorf("build frame: MAC addresses %v and %v, want 6 bytes each", e.SrcMAC, e.DstMAC)
	}
	eth := &layers.Ethernet{SrcMAC: e.SrcMAC, DstMAC: e.DstMAC}
	udp := &layers.UDP{SrcPort: layers.UDPPort(e.SrcPort), DstPort: layers.UDPPort(e.DstPort)}
	var ip gopacket.SerializableLayer
	switch {
	case e.SrcIP.Is4() && e.DstIP.Is4():
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: DefaultTTL, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP,
			SrcIP: e.SrcIP.AsSlice(), DstIP: e.DstIP.AsSlice()}
		if err := udp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, fmt.Errorf("build frame: %w", err)
		}
		ip = ip4
	case e.SrcIP.Is6() && e.DstIP.Is6() && !e.SrcIP.Is4In6() && !e.DstIP.Is4In6():
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: DefaultTTL, NextHeader: layers.IPProtocolUDP,
			SrcIP: e.SrcIP.AsSlice(), DstIP: e.DstIP.AsSlice()}
		if err := udp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, fmt.Errorf("build frame: %w", err)
		}
		ip = ip6
	default:
		return nil, fmt.Errorf("build frame: addresses %v and %v, want both IPv4 or both IPv6", e.SrcIP, e.DstIP)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, payload)
	if err != nil {
		return nil, fmt.Errorf("build frame: %w", err)
	}
	frame := buf.Bytes()
	// gopacket writes a computed UDP checksum of zero as zero, which means
	// "no checksum" over IPv4 and is invalid over IPv6; RFC 768 sends it as
	// all ones, which verifies the same.
	csum := len(frame) - len(payload) - 2
	if frame[csum] == 0 && frame[csum+1] == 0 {
		frame[csum], frame[csum+1] = 0xff, 0xff
	}
	return frame, nil
}

// Packet is one decoded KVLP frame: its addresses and its message.
type Packet struct {
	Endpoints
	Message *KVLP
}

// Parser decodes Ethernet frames carrying KVLP on one UDP port, reusing its
// layers between calls. It is not safe for concurrent use.
type Parser struct {
	port    uint16
	eth     layers.Ethernet
	ip4     layers.IPv4
	ip6     layers.IPv6
	udp     layers.UDP
	msg     KVLP
	dlp     *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
	pkt     Packet
}

// NewParser returns a parser for KVLP on UDP port (DefaultPort when zero).
func NewParser(port uint16) *Parser {
	if port == 0 {
		port = DefaultPort
	}
	p := &Parser{port: port}
	p.dlp = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &p.eth, &p.ip4, &p.ip6, &p.udp)
	p.dlp.IgnoreUnsupported = true // the UDP payload is decoded below, by port
	return p
}

// Port is the UDP port the parser decodes as KVLP.
func (p *Parser) Port() uint16 { return p.port }

// Parse decodes one frame. Frames that are not UDP to or from the port
// return an error wrapping ErrNotKVLP; KVLP frames that fail to decode return
// the message's *DecodeError. The returned packet is owned by the parser and
// valid until the next call.
func (p *Parser) Parse(frame []byte) (*Packet, error) {
	if err := p.dlp.DecodeLayers(frame, &p.decoded); err != nil {
		return nil, fmt.Errorf("parse frame: %w: %w", ErrNotKVLP, err)
	}
	var haveUDP bool
	pkt := &p.pkt
	*pkt = Packet{}
	for _, t := range p.decoded {
		switch t {
		case layers.LayerTypeEthernet:
			pkt.SrcMAC, pkt.DstMAC = p.eth.SrcMAC, p.eth.DstMAC
		case layers.LayerTypeIPv4:
			pkt.SrcIP, _ = netip.AddrFromSlice(p.ip4.SrcIP)
			pkt.DstIP, _ = netip.AddrFromSlice(p.ip4.DstIP)
		case layers.LayerTypeIPv6:
			pkt.SrcIP, _ = netip.AddrFromSlice(p.ip6.SrcIP)
			pkt.DstIP, _ = netip.AddrFromSlice(p.ip6.DstIP)
		case layers.LayerTypeUDP:
			haveUDP = true
		}
	}
	if !haveUDP {
		return nil, fmt.Errorf("parse frame: no UDP header: %w", ErrNotKVLP)
	}
	pkt.SrcPort, pkt.DstPort = uint16(p.udp.SrcPort), uint16(p.udp.DstPort)
	if pkt.SrcPort != p.port && pkt.DstPort != p.port {
		return nil, fmt.Errorf("parse frame: UDP ports %d→%d, KVLP is on %d: %w", pkt.SrcPort, pkt.DstPort, p.port, ErrNotKVLP)
	}
	if err := p.msg.DecodeFromBytes(p.udp.Payload, gopacket.NilDecodeFeedback); err != nil {
		return nil, fmt.Errorf("parse frame: %w", err)
	}
	pkt.Message = &p.msg
	return pkt, nil
}
