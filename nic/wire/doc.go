// Package wire owns KVLP, the UDP protocol that routers, engines and hosts
// use to announce a prompt's anchors to an in-network matcher before the
// request itself arrives (docs/protocol.md specifies it byte by byte).
//
// It provides the message layer (KVLP, a gopacket DecodingLayer and
// SerializableLayer), the helpers that split a request's anchors into
// packets that fit the MTU and pair replies with hints, a reference
// responder (Answer) that the XDP program is tested against, whole-frame
// building and parsing (Endpoints, Parser), and pcap capture and writing
// (Recorder, OpenCapture).
//
// The UDP port is configuration, not global state: Parser, Endpoints and the
// XDP program take it as a parameter. Nothing registers itself with
// gopacket's process-wide tables unless a main calls Register.
//
// wire imports matcher (for chunk keys) and gopacket; it must not import nic
// or any backend.
//
// Decoding errors wrap ErrTruncated, ErrMagic, ErrVersion, ErrType,
// ErrLength, ErrCount, ErrFragment, ErrFlags or ErrReserved inside a
// *DecodeError that names the field, its offset, the value and the limit;
// Parser returns ErrNotKVLP for frames that are not KVLP traffic; capture
// functions return ErrNotSupported off Linux.
package wire
