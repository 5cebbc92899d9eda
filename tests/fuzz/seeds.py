#!/usr/bin/env python3
"""Write the hand-made seed inputs of tests/fuzz/corpus/: small GGUF files
with every value type, and tiny SentencePiece and byte-level BPE
vocabularies, so the fuzzer starts from every branch of the readers.
The seeds made by the tools themselves (a model, adapters, deltas) are
listed in tests/fuzz/README.  Usage: tests/fuzz/seeds.py [DIR]"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
       F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(val(et, i) for i in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors=(), align=32, version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + val(t, v)
    off, blobs = 0, []
    for name, typ, ne, data in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", typ, off)
        blobs.append(data)
        off += len(data) + (-len(data)) % align
    out += b"\0" * ((-len(out)) % align)
    for d in blobs:
        out += d + b"\0" * ((-len(d)) % align)
    return out


def f32s(*xs):
    return struct.pack("<%df" % len(xs), *xs)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    d = os.path.join(top, "gguf")
    os.makedirs(d, exist_ok=True)
    every = [
        ("u8", U8, 7), ("i8", I8, -7), ("u16", U16, 700), ("i16", I16, -700),
        ("u32", U32, 70000), ("i32", I32, -70000), ("f32", F32, 1.5), ("bool", BOOL, 1),
        ("str", STR, "h\xe9llo"), ("u64", U64, 1 << 40), ("i64", I64, -(1 << 40)),
        ("f64", F64, 0.25), ("arr.i32", ARR, (I32, [1, -2, 3])),
        ("arr.str", ARR, (STR, ["a", "", "bc"])),
        ("arr.arr", ARR, (ARR, [(U8, [1, 2]), (STR, ["x"])])),
        ("general.alignment", U32, 16),
    ]
    q8 = struct.pack("<e", 0.5) + bytes(range(32))
    tensors = [
        ("a.f32", 0, [2, 2], f32s(1, 2, 3, 4)),
        ("b.f16", 1, [4], struct.pack("<4e", 1, -2, 0.5, 65504)),
        ("c.bf16", 30, [2, 1, 1, 2], struct.pack("<4H", 0x3f80, 0xbf80, 0, 0x7f7f)),
        ("d.q8_0", 8, [32], q8),
    ]
    open(os.path.join(d, "every-type.gguf"), "wb").write(gguf(every, tensors, align=16))
    open(os.path.join(d, "v2-empty.gguf"), "wb").write(gguf([], version=2))

    # One block of each of llama-quantize's types, two rows of the K-quants:
    # bytes from a fixed pattern, fp16 scales of 0.5 and 0.25 at the offsets
    # of ggml's layouts, so that every element decodes to a finite value.
    blocks = [  # name, ggml id, elements, bytes, fp16 scale offsets
        ("q4_0", 2, 32, 18, [0]), ("q4_1", 3, 32, 20, [0, 2]),
        ("q5_0", 6, 32, 22, [0]), ("q5_1", 7, 32, 24, [0, 2]),
        ("q2_k", 10, 256, 84, [80, 82]), ("q3_k", 11, 256, 110, [108]),
        ("q4_k", 12, 256, 144, [0, 2]), ("q5_k", 13, 256, 176, [0, 2]),
        ("q6_k", 14, 256, 210, [208]),
    ]
    qt = []
    for name, tid, ne, nb, scales in blocks:
        rows = 2 if ne == 256 else 1
        blk = bytearray((i * 37 + tid) & 0xff for i in range(nb * rows))
        for r in range(rows):
            for k, o in enumerate(scales):
                blk[r * nb + o:r * nb + o + 2] = struct.pack("<e", 0.5 / (k + 1))
        qt.append(("w." + name, tid, [ne, rows], bytes(blk)))
    open(os.path.join(d, "quant-types.gguf"), "wb").write(gguf([], qt))

    # SentencePiece: bytes, pieces with scores, a user-defined token.
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "<user>", "\u00e9"]
    types = [2, 3, 3] + [6] * 256 + [1, 1, 1, 1, 1, 1, 4, 1]
    scores = [0.0] * 259 + [-1.0, -2.0, -2.0, -0.5, -0.7, -0.1, 0.0, -3.0]
    spm = [
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)),
        ("tokenizer.ggml.scores", ARR, (F32, scores)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
    ]
    open(os.path.join(d, "vocab-spm.gguf"), "wb").write(gguf(spm))

    # Byte-level BPE: the 256-symbol alphabet, a few merges, specials.
    alpha = [c for c in range(ord("!"), ord("~") + 1)] + list(range(0xa1, 0xad)) + list(range(0xae, 0x100))
    extra = [b for b in range(256) if b not in alpha]
    sym = {b: chr(b) for b in alpha}
    for i, b in enumerate(extra):
        sym[b] = chr(256 + i)
    btoks = [sym[b] for b in range(256)] + ["\u0120a", "ab", "\u0120ab", "<|end|>", "<|user|>"]
    btypes = [1] * 259 + [3, 4]
    merges = ["\u0120 a", "a b", "\u0120a b"]
    for pre in ("gpt-2", "llama-bpe", "qwen2"):
        bpe = [
            ("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.pre", STR, pre),
            ("tokenizer.ggml.tokens", ARR, (STR, btoks)),
            ("tokenizer.ggml.token_type", ARR, (I32, btypes)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.eos_token_id", U32, 259),
            ("tokenizer.ggml.bos_token_id", U32, 259),
        ]
        open(os.path.join(d, "vocab-bpe-%s.gguf" % pre), "wb").write(gguf(bpe))


main()
