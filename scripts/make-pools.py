#!/usr/bin/env python3
"""Held-out word pools for random-mapping evaluation (data/pools/README.md).

A word of two or three tokens is held out when the FNV-1a hash of its
text, mod 10, is 0 (dev) or 1 (test); sa-train --map-vocab never draws such
a word as a key or a label, so these pools measure binding of words the
model never bound in training.  Each pool directory has words.txt (keys:
corpus words of 2-3 tokens) and labels.txt: single-token labels in dev/ and
test/ (of the same hash class; sa-train draws every single-token word, since
a token that never answers is one the model learns never to answer), labels
of 2-3 tokens in dev-multi/ and test-multi/, and in dev-pieces/ and
test-pieces/ labels of 2-3 tokens that are no word: a word-start piece and
one or two other pieces of the vocabulary, as most labels of several tokens
that sa-train --map-vocab draws are.  Tokens are counted with the sa4k vocabulary's
own merges (SentencePiece BPE: merge the best-scoring adjacent pair).

usage: scripts/make-pools.py   (from the top of the tree; deterministic)
"""
import collections, gzip, os, random, re

from wordpieces import fnv1a, load_merges, tokens as tokens_of

score = load_merges()

def tokens(word):
    return tokens_of(word, score)

old = set()
for f in ('data/pools/words.txt', 'data/pools/labels.txt'):
    old |= set(open(f).read().split())
freq = collections.Counter()
with gzip.open('data/corpus/train.txt.gz', 'rt', encoding='utf-8') as f:
    for line in f:
        freq.update(re.findall(r"(?<![A-Za-z'])[a-z]{3,12}(?![A-Za-z'])", line))
pieces = [p[1:] for p in score if re.fullmatch('\u2581[a-z]{3,}', p)]
common = sorted((w for w, c in freq.items() if c >= 5 and w not in old), key=lambda w: (-freq[w], w))

for cls, name in ((0, 'dev'), (1, 'test')):
    mine = [w for w in common if fnv1a(w) % 10 == cls]
    rng = random.Random(cls + 1)
    ntok = {w: len(tokens(w)) for w in mine}
    one = sorted(w for w in pieces if fnv1a(w) % 10 == cls and w not in old)
    multi = [w for w in mine if ntok[w] in (2, 3)]
    rng.shuffle(multi)
    keys = multi[:300]
    labels3 = multi[300:500]
    rng.shuffle(one)
    for d, labs in ((name, one), (name + '-multi', labels3)):
        os.makedirs('data/pools/' + d, exist_ok=True)
        open('data/pools/%s/words.txt' % d, 'w').write('\n'.join(sorted(keys)) + '\n')
        open('data/pools/%s/labels.txt' % d, 'w').write('\n'.join(sorted(labs)) + '\n')
        print(d, len(keys), 'words,', len(labs), 'labels')

# made-up labels: as many tokens as the multi pools' labels, no corpus word
starts = sorted(p[1:] for p in score if re.fullmatch('\u2581[a-z]{2,5}', p))
conts = sorted(p for p in score if re.fullmatch('[a-z]{2,4}', p))
for cls, name in ((0, 'dev'), (1, 'test')):
    rng = random.Random(cls + 11)
    labs = set()
    while len(labs) < 200:
        w = rng.choice(starts) + ''.join(rng.choice(conts) for _ in range(rng.choice((1, 2))))
        if fnv1a(w) % 10 == cls and w not in freq and w not in old and len(tokens(w)) in (2, 3):
            labs.add(w)
    d = name + '-pieces'
    os.makedirs('data/pools/' + d, exist_ok=True)
    keys = open('data/pools/%s/words.txt' % name).read()
    open('data/pools/%s/words.txt' % d, 'w').write(keys)
    open('data/pools/%s/labels.txt' % d, 'w').write('\n'.join(sorted(labs)) + '\n')
    print(d, len(keys.split()), 'words,', len(labs), 'labels')
