#!/usr/bin/env python3
"""ICL of a base model on random mappings, prompt by prompt through sa-run.

sa-eval --map measures a fixed draw; this probe changes one thing of the
prompt at a time, to see what the base's in-context recall depends on:

  --keys pool      keys drawn from POOL/words.txt (held-out words)
  --keys common    keys drawn from --common (words of one token)
  --layout text    "key -> label" lines as one text, as a user types them
  --layout records each key after a space, as the encoder tokenizes records
  --pad N          N characters of held-out text before the pairs

Labels are drawn from POOL/labels.txt.  Every query is asked alone after
the whole context, greedy, and is right when the generated line is the
label.  Prints the recall of each episode and of all.

  scripts/icl-probe.py -m data/model.gguf --pool data/pools/dev -n 16 \\
      --episodes 8 --layout text --pad 1200
"""
import argparse
import gzip
import random
import subprocess
import sys

COMMON = ("court range fixed house water light small place young music party "
          "table field story money power black river paper night").split()


def lines(path):
    with open(path) as f:
        return [w.strip() for w in f if w.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="data/model.gguf")
    ap.add_argument("--run", default="bin/sa-run", help="the sa-run to use")
    ap.add_argument("--pool", default="data/pools/dev")
    ap.add_argument("--text", default="data/corpus/valid.txt.gz",
                    help="held-out text for --pad")
    ap.add_argument("-n", "--pairs", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--keys", choices=("pool", "common"), default="pool")
    ap.add_argument("--layout", choices=("text", "records"), default="text")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("-s", "--seed", type=int, default=1)
    a = ap.parse_args()

    words = lines(a.pool + "/words.txt")
    labels = lines(a.pool + "/labels.txt")
    keys_from = COMMON if a.keys == "common" else words
    if a.pairs > len(keys_from):
        sys.exit(f"icl-probe: {a.pairs} pairs, but only {len(keys_from)} keys")
    text = ""
    if a.pad:
        with gzip.open(a.text, "rt") as f:
            text = f.read()
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
                sys.exit(f"icl-probe: episode {e}: {p.stderr.strip()}")
            ok += p.stdout.split("\n")[0].strip() == l
        print(f"episode {e}: {ok}/{a.pairs}", flush=True)
        right += ok
        total += a.pairs
    print(f"{a.keys} keys, {a.layout}, pad {a.pad}, {a.pairs} pairs: "
          f"{100 * right / total:.1f} % of {total}")


if __name__ == "__main__":
    main()
