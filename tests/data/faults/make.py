#!/usr/bin/env python3
"""Write the hand-made bad files of tests/faults.bats (run from this
directory; the outputs are committed).  Each needs a correct CRC or
layout to reach the check it is for, which printf and dd cannot give.

  nan.delta, inf.delta   a valid delta whose state holds NaN / +Inf
  huge-claim.delta       a valid header promising 1.9 GB of state,
                         then no payload at all
  huge-rank.gguf         an adapter header of rank 16384 and head size
                         4096 (a 256 MiB query tensor) in 80 KB, with
                         only the W1 and W2 tensors present
"""
import struct
import zlib


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def s32(b):
    return u32(len(b)) + b


def delta(n_layer, hk, dh, rank, chunk, mats, values, payload=None):
    used = n_layer * bin(mats).count("1")
    nh, np_ = used * hk * rank * dh, used * hk * rank
    h = b"SADELTA\0" + u32(1) + u32(0) + u64(1) + u64(2)
    h += b"".join(u32(x) for x in (n_layer, hk, dh, rank, chunk, mats))
    h += u64(10) + u64(1) + s32(b"") + s32(b"made by make.py") + u32(0)
    h += u64((nh + np_) * 4 if payload is None else payload)
    h += u32(zlib.crc32(h))
    if values is None:
        return h
    raw = struct.pack("<%df" % (nh + np_), *values(nh, np_))
    z = zlib.compress(raw, 6)
    return h + s32(z) + u32(0) + u32(zlib.crc32(raw)) + b"SADELEND"


def with_bad(bad):
    def values(nh, np_):
        v = [0.5] * nh + [1.0] * np_
        v[nh // 2] = bad
        return v
    return values


open("nan.delta", "wb").write(delta(1, 1, 4, 2, 8, 1, with_bad(float("nan"))))
open("inf.delta", "wb").write(delta(1, 1, 4, 2, 8, 1, with_bad(float("inf"))))
open("huge-claim.delta", "wb").write(delta(4096, 2, 128, 64, 64, 0x7f, None))

# GGUF
STR, ARR, U32 = 8, 9, 4


def gs(x):
    return u64(len(x)) + x.encode()


def kv(k, t, v):
    out = gs(k) + u32(t)
    if t == STR:
        return out + gs(v)
    if t == U32:
        return out + u32(v)
    return out + u32(STR) + u64(len(v)) + b"".join(gs(x) for x in v)


kvs = [("general.architecture", STR, "llama"), ("general.type", STR, "adapter"),
       ("adapter.type", STR, "streamadapter"), ("streamadapter.version", U32, 1),
       ("streamadapter.n_layer", U32, 1), ("streamadapter.n_head_kv", U32, 1),
       ("streamadapter.d_head", U32, 4096), ("streamadapter.rank", U32, 16384),
       ("streamadapter.chunk", U32, 1), ("streamadapter.matrices", ARR, ["attn_q"]),
       ("streamadapter.model_fingerprint", STR, "0" * 16),
       ("streamadapter.fingerprint", STR, "0" * 16)]
tensors = [("blk.0.attn_q.sa_w1", [4096, 1], 16384), ("blk.0.attn_q.sa_w2", [1, 16384], 65536)]
g = b"GGUF" + u32(3) + u64(len(tensors)) + u64(len(kvs)) + b"".join(kv(*x) for x in kvs)
off = 0
for name, ne, nbytes in tensors:
    g += gs(name) + u32(len(ne)) + b"".join(u64(n) for n in ne) + u32(0) + u64(off)
    off += nbytes
g += b"\0" * (-len(g) % 32) + b"\0" * off
open("huge-rank.gguf", "wb").write(g)
