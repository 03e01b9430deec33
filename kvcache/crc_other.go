//go:build !amd64 || purego

package kvcache

import "unsafe"

const haveCRCFold = false

func crc32cFold(uint32, []byte, *[16]byte) { panic("kvcache: crc32cFold without the amd64 kernel") }

func crc32cCopyFold(uint32, []byte, []byte, *[16]byte) {
	panic("kvcache: crc32cCopyFold without the amd64 kernel")
}

func crc32cCopyFoldNT(uint32, []byte, []byte, *[16]byte) {
	panic("kvcache: crc32cCopyFoldNT without the amd64 kernel")
}

const haveCopyNT = false

func copyNT(unsafe.Pointer, unsafe.Pointer, int) { panic("kvcache: copyNT without the amd64 kernel") }
