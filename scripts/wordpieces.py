"""The sa4k tokenizer's pieces and sa-train's held-out rule, for the scripts
that draw words as sa-train does (make-pools.py, icl-probe.py).

A word of two or three tokens is held out by sa-train --map-vocab when
fnv1a(word) % 10 is 0 (the dev pools) or 1 (the test pools).
"""


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def held_out(word):
    return fnv1a(word) % 10 < 2


def load_merges(path='data/tokenizer/sa4k.tsv'):
    """{piece: score} of the vocabulary's normal pieces."""
    with open(path, encoding='utf-8') as f:
        rows = [l.rstrip('\n').split('\t') for l in f][1:]
    return {r[1]: float(r[2]) for r in rows if r[3] == '1'}


def tokens(word, score):
    """The pieces of word after a space (SentencePiece BPE: merge the
    best-scoring adjacent pair until none is in the vocabulary)."""
    parts = list('\u2581' + word)
    while True:
        best = None
        for i in range(len(parts) - 1):
            m = parts[i] + parts[i + 1]
            if m in score and (best is None or score[m] > score[parts[best] + parts[best + 1]]):
                best = i
        if best is None:
            return parts
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
