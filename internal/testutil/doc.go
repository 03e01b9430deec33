// Package testutil holds the test helpers that more than one package needs:
// real servers started on loopback (redis-server, a Redis Cluster), network
// namespaces joined by veth pairs, fake sysfs trees (PCI devices, FPGA
// managers, DFL cards, BARs backed by shared files), a stand-in for XRT's
// tools, BPF objects compiled with clang, signed test images, and the paths
// of the repository root and of the shared test data beside it (the real
// tiny model, the Mooncake trace). It is imported only by _test.go files.
//
// A helper whose tool, kernel feature or data file is missing fails the test
// with what to install; nothing here skips.
package testutil
