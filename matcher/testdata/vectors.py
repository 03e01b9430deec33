#!/usr/bin/env python3
"""Regenerates vectors.json: test vectors of kvloom's hashing contract
(docs/hashing.md), computed independently of the Go code with the reference
xxHash C library (libxxhash, Debian package libxxhash0) through ctypes.

    python3 matcher/testdata/vectors.py > matcher/testdata/vectors.json

TestHashVectors compares the Go implementation against this file; a change
to the contract must change this script and the document together.
"""
import ctypes
import ctypes.util
import json
import struct
import sys

lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")


class XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


lib.XXH3_64bits_withSeed.restype = ctypes.c_uint64
lib.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
lib.XXH3_128bits_withSeed.restype = XXH128
lib.XXH3_128bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
lib.XXH_versionNumber.restype = ctypes.c_uint

M64 = (1 << 64) - 1


def h64(b, seed):
    return lib.XXH3_64bits_withSeed(b, len(b), seed)


def h128(b, seed):
    r = lib.XXH3_128bits_withSeed(b, len(b), seed)
    return struct.pack(">QQ", r.high64, r.low64)  # XXH128 canonical form


def le32(toks):
    return b"".join(struct.pack("<I", t) for t in toks)


TENANT_SEED = 0x6B766C6F6F6D5401
SALT_ID_SEED = 0x6B766C6F6F6D5301
PREFIX_SEED = 0x6B766C6F6F6D5001
CHUNK_SEED = 0x6B766C6F6F6D4301


def salt(model_fp, tenant):
    model = model_fp[:8]
    if tenant is None:
        return model + bytes(8)
    h = h64(tenant.encode(), TENANT_SEED) or 1
    return model + struct.pack("<Q", h)


def salt_id(s):
    return h64(s, SALT_ID_SEED)


def chunk_key(s, toks):
    return h128(s + struct.pack("<Q", len(toks)) + h128(le32(toks), 0), CHUNK_SEED)


def prefix_keys(s, toks, b):
    keys, parent = [], bytes(16)
    for off in range(0, len(toks) - b + 1, b):
        parent = h128(s + parent + h128(le32(toks[off:off + b]), 0), PREFIX_SEED)
        keys.append(parent)
    return keys


def dynamo_blocks(toks, b):
    return [h64(le32(toks[off:off + b]), 1337) for off in range(0, len(toks) - b + 1, b)]


def dynamo_seq(blocks):
    out = []
    for i, x in enumerate(blocks):
        out.append(x if i == 0 else h64(struct.pack("<QQ", out[-1], x), 1337))
    return out


def fingerprint(kgram):
    h = 0
    for t in kgram:
        h = (h * 0x9FB21C651E98DF25 + (t + 1) * 0x9E3779B97F4A7C15) & M64
    return h


def anchors(toks, k, w):
    if len(toks) < k + w - 1:
        return []
    fps = [fingerprint(toks[j:j + k]) for j in range(len(toks) - k + 1)]
    out, last = [], -1
    for s in range(len(fps) - w + 1):
        best = s
        for j in range(s, s + w):
            if fps[j] <= fps[best]:
                best = j  # rightmost minimum
        if best != last:
            out.append([best, str(fps[best])])
            last = best
    return out


def tokens(n, mul=2654435761, add=12345, vocab=100277):
    return [(i * mul + add) % vocab for i in range(n)]


def main():
    model = b"kvloom-test-model"
    salts = {"alice": salt(model, "alice"), "bob": salt(model, "bob"), "shared": salt(model, None)}
    toks = tokens(1000)
    periodic = [5, 9, 5, 9, 2] * 20
    v = {
        "xxhash_version": lib.XXH_versionNumber(),
        "model_fingerprint": model.hex(),
        "token_rule": "t_i = (i*2654435761 + 12345) mod 100277",
        "salts": {name: {"bytes": s.hex(), "id": str(salt_id(s))} for name, s in salts.items()},
        "chunk_keys": [
            {"salt": name, "n": n, "key": chunk_key(salts[name], toks[:n]).hex()}
            for name in ("alice", "shared")
            for n in (1, 3, 16, 64, 100, 257, 1000)
        ],
        "prefix_keys": [
            {"salt": name, "n": 1000, "block": b, "keys": [k.hex() for k in prefix_keys(salts[name], toks, b)]}
            for name in ("alice", "bob")
            for b in (16, 256)
        ],
        "dynamo": {
            "block_size": 16,
            "n": 100,
            "blocks": [str(x) for x in dynamo_blocks(toks[:100], 16)],
            "sequence": [str(x) for x in dynamo_seq(dynamo_blocks(toks[:100], 16))],
            "blocks_0_to_15": str(dynamo_blocks(list(range(16)), 16)[0]),
        },
        "fingerprints": [{"n": k, "fp": str(fingerprint(toks[:k]))} for k in (4, 16, 32, 64)],
        "anchors": [
            {"k": 32, "w": 33, "input": "tokens(600)", "anchors": anchors(toks[:600], 32, 33)},
            {"k": 16, "w": 49, "input": "tokens(600)", "anchors": anchors(toks[:600], 16, 49)},
            {"k": 4, "w": 8, "input": "tokens(200)", "anchors": anchors(toks[:200], 4, 8)},
            {"k": 4, "w": 5, "input": "periodic", "anchors": anchors(periodic, 4, 5)},
        ],
        "periodic": periodic,
    }
    json.dump(v, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
