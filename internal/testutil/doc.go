// Package testutil holds the test helpers that more than one package needs:
// real servers started on loopback (redis-server, a Redis Cluster), network
// namespaces joined by veth pairs, fake sysfs trees (PCI devices, FPGA
// managers, DFL cards, BARs backed by shared files), a stand-in for XRT's
// tools, BPF objects compiled with clang, signed test images and the real
// tiny model. It is imported only by _test.go files.
//
// A helper whose tool, kernel feature or data file is missing fails the test
// with what to install; nothing here skips.
package testutil
