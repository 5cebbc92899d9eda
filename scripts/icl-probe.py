#!/usr/bin/env python3
"""ICL of a base model on random mappings, prompt by prompt through sa-run.

sa-eval --map measures a fixed draw; this probe changes one thing of the
prompt at a time, to see what the base's in-context recall depends on:

  --keys pool      keys drawn from POOL/words.txt (held-out words)
  --keys common    keys drawn from twenty common words of one token
  --keys compound  keys of a word-start piece and one or two other pieces
                   of the tokenizer, as pretraining makes them up
  --keys corpus    keys drawn from the words of --text of two or three
                   tokens that pretraining does not hold out
  --layout text    "key -> label" lines as one text, as a user types them
  --layout records each key after a space, as the encoder tokenizes records
  --pad N          N characters of held-out text before the pairs

Labels are drawn from POOL/labels.txt.  Every query is asked alone after
the whole context, greedy, and is right when the generated line is the
label.  Prints the recall of each episode and of all.  Exit status: 64
usage, 65 a prompt sa-run refuses or a file that is not what it should be
(UTF-8 text, a whole gzip file, a vocabulary), 66 a file that cannot be
read; the message names the file.

  scripts/icl-probe.py -m data/model.gguf --pool data/pools/dev -n 16 \\
      --episodes 8 --layout text --pad 1200
"""
import argparse
import gzip
import random
import re
import subprocess
import sys

from wordpieces import held_out, load_merges, tokens

COMMON = ("court range fixed house water light small place young music party "
          "table field story money power black river paper night").split()


def fail(status, msg):
    print("icl-probe: " + msg, file=sys.stderr)
    sys.exit(status)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        fail(64, message)


def read_text(path, gz=False):
    """The whole of a text file (gzip-compressed if gz), or exit: 66 if it
    cannot be read, 65 if it is not what it should be, naming it."""
    try:
        with (gzip.open(path, "rt") if gz else open(path)) as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError):
        fail(65, f"{path}: not a whole gzip file")
    except OSError as e:
        fail(66, f"{path}: {e.strerror}")
    except UnicodeDecodeError:
        fail(65, f"{path}: not UTF-8 text")


def lines(path):
    return [w.strip() for w in read_text(path).splitlines() if w.strip()]


def vocabulary(path):
    try:
        score = load_merges(path)
    except OSError as e:
        fail(66, f"{path}: {e.strerror}")
    except (UnicodeDecodeError, IndexError, ValueError):
        score = None
    if not score:
        fail(65, f"{path}: not a vocabulary of pieces (sa4k.tsv's columns)")
    return score


def compounds(score, n, rng):
    start = [p[1:] for p in score if p.startswith("\u2581") and
             p[1:].isalpha() and p[1:].islower() and len(p) > 2]
    cont = [p for p in score if p.isalpha() and p.islower() and len(p) >= 2]
    words = set()
    while len(words) < n:
        words.add(rng.choice(start) +
                  "".join(rng.choice(cont) for _ in range(rng.choice((1, 2)))))
    return sorted(words)


def corpus_words(text, score, n, rng):
    words = sorted(set(re.findall(r"\b[a-z]{5,11}\b", text[:400000])))
    rng.shuffle(words)
    out = []
    for w in words:
        if not held_out(w) and len(tokens(w, score)) in (2, 3):
            out.append(w)
            if len(out) == n:
                break
    return out


def main():
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="data/model.gguf")
    ap.add_argument("--run", default="bin/sa-run", help="the sa-run to use")
    ap.add_argument("--pool", default="data/pools/dev")
    ap.add_argument("--text", default="data/corpus/valid.txt.gz",
                    help="held-out text (--pad, --keys corpus)")
    ap.add_argument("-n", "--pairs", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--keys", choices=("pool", "common", "compound", "corpus"),
                    default="pool")
    ap.add_argument("--vocab", default="data/tokenizer/sa4k.tsv",
                    help="the tokenizer's pieces (--keys compound, corpus)")
    ap.add_argument("--layout", choices=("text", "records"), default="text")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("-s", "--seed", type=int, default=1)
    a = ap.parse_args()

    words = lines(a.pool + "/words.txt")
    labels = lines(a.pool + "/labels.txt")
    text = read_text(a.text, gz=True) if a.pad or a.keys == "corpus" else ""
    if a.keys == "pool":
        keys_from = words
    elif a.keys == "common":
        keys_from = COMMON
    elif a.keys == "compound":
        keys_from = compounds(vocabulary(a.vocab), 300, random.Random(0))
    else:
        keys_from = corpus_words(text, vocabulary(a.vocab), 300, random.Random(0))
    if a.pairs > len(keys_from):
        fail(64, f"{a.pairs} pairs, but only {len(keys_from)} keys")
    sp = " " if a.layout == "records" else ""
    right = total = 0
    for e in range(a.episodes):
        r = random.Random(f"{a.seed}-{e}")
        keys = r.sample(keys_from, a.pairs)
        labs = [r.choice(labels) for _ in keys]
        pad = ""
        if a.pad:
            at = r.randrange(len(text) - a.pad - 1)
            pad = text[at:at + a.pad]
            # whole lines only
            pad = pad[pad.find("\n") + 1:pad.rfind("\n") + 1]
        ctx = pad + "".join(f"{sp}{k} -> {l}\n" for k, l in zip(keys, labs))
        ok = 0
        for k, l in zip(keys, labs):
            p = subprocess.run(
                [a.run, "-m", a.model, "-t", "1", "--temp", "0", "-n", "6",
                 "--no-escape", "-p", ctx + f"{sp}{k} ->"],
                capture_output=True, text=True)
            if p.returncode:
                fail(65, f"episode {e}: {p.stderr.strip()}")
            ok += p.stdout.split("\n")[0].strip() == l
        print(f"episode {e}: {ok}/{a.pairs}", flush=True)
        right += ok
        total += a.pairs
    print(f"{a.keys} keys, {a.layout}, pad {a.pad}, {a.pairs} pairs: "
          f"{100 * right / total:.1f} % of {total}")


if __name__ == "__main__":
    main()
