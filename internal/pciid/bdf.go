package pciid

import (
	"fmt"
	"strconv"
	"strings"
)

// BDF is a PCI function address: domain, bus, device, function.
type BDF struct {
	Domain uint32
	Bus    uint8
	Dev    uint8 // 0–31
	Fn     uint8 // 0–7
}

// String is the sysfs form: lower case, at least four domain digits
// ("0000:3b:00.0").
func (b BDF) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%d", b.Domain, b.Bus, b.Dev, b.Fn)
}

// ParseBDF parses a PCI address in any of the forms we meet: sysfs
// ("0000:3b:00.0"), NVML ("00000000:3B:00.0", 8-digit domain, upper case),
// NVML legacy ("0000:3B:00.0"), or lspci's short form without a domain
// ("3b:00.0"). Normalize(s) is ParseBDF(s).String().
func ParseBDF(s string) (BDF, error) {
	t := strings.TrimSpace(s)
	parts := strings.Split(t, ":")
	var dom, bus, devfn string
	switch len(parts) {
	case 2:
		bus, devfn = parts[0], parts[1]
	case 3:
		dom, bus, devfn = parts[0], parts[1], parts[2]
	default:
		return BDF{}, &ParseError{What: "PCI bus id", Offset: 0, Value: s, Reason: `want "[domain:]bus:device.function"`}
	}
	var b BDF
	if dom != "" || len(parts) == 3 {
		if len(dom) == 0 || len(dom) > 8 {
			return BDF{}, &ParseError{What: "PCI bus id", Offset: 0, Value: s, Reason: "domain must have 1 to 8 hex digits"}
		}
		d, err := strconv.ParseUint(dom, 16, 32)
		if err != nil {
			return BDF{}, &ParseError{What: "PCI bus id", Offset: 0, Value: s, Reason: "domain is not hex"}
		}
		b.Domain = uint32(d)
	}
	busOff := len(dom) + 1
	if len(parts) == 2 {
		busOff = 0
	}
	if len(bus) == 0 || len(bus) > 2 {
		return BDF{}, &ParseError{What: "PCI bus id", Offset: busOff, Value: s, Reason: "bus must have 1 or 2 hex digits"}
	}
	v, err := strconv.ParseUint(bus, 16, 8)
	if err != nil {
		return BDF{}, &ParseError{What: "PCI bus id", Offset: busOff, Value: s, Reason: "bus is not hex"}
	}
	b.Bus = uint8(v)
	devOff := busOff + len(bus) + 1
	dev, fn, ok := strings.Cut(devfn, ".")
	if !ok || len(dev) == 0 || len(dev) > 2 || len(fn) != 1 {
		return BDF{}, &ParseError{What: "PCI bus id", Offset: devOff, Value: s, Reason: `want "device.function"`}
	}
	v, err = strconv.ParseUint(dev, 16, 8)
	if err != nil || v > 31 {
		return BDF{}, &ParseError{What: "PCI bus id", Offset: devOff, Value: s, Reason: "device must be hex 00–1f"}
	}
	b.Dev = uint8(v)
	if fn[0] < '0' || fn[0] > '7' {
		return BDF{}, &ParseError{What: "PCI bus id", Offset: devOff + len(dev) + 1, Value: s, Reason: "function must be 0–7"}
	}
	b.Fn = fn[0] - '0'
	return b, nil
}

// Normalize turns any bus id form ParseBDF accepts into sysfs form.
func Normalize(s string) (string, error) {
	b, err := ParseBDF(s)
	if err != nil {
		return "", err
	}
	return b.String(), nil
}
