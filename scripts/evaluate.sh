#!/bin/sh
# The evaluation of the shipped model and adapter, as README.md reports it:
#   doc/eval/tasks.md    sa-eval's table over every task of data/tasks
#                        (test split, k = 16, K = 4 times what fits, seed 1)
#   doc/eval/tasks.jsonl.gz one line per query and method
#   doc/eval/map.md, map.csv, map.png
#                        recall of random word -> label pairs as their number
#                        grows, for ICL and for a delta (each adapter given)
#   doc/eval/text.md     perplexity of held-out text with the previous segment
#                        in the prompt or in a delta
# Usage: scripts/evaluate.sh [-t threads] [ADAPTER...]  (default data/adapter.gguf)
set -eu
cd "$(dirname "$0")/.."
threads=
if [ "${1:-}" = -t ]; then threads="-t $2"; shift 2; fi
model=${SA_MODEL:-data/model.gguf}
[ $# -gt 0 ] || set -- data/adapter.gguf
out=${SA_EVAL_DIR:-doc/eval}
mkdir -p "$out"
tasks=$(ls -d data/tasks/*/ | sed 's/^/--task /')
bin/sa-eval -q $threads -m "$model" -a "$1" -k 16 -s 1 --jsonl "$out/tasks.jsonl" $tasks > "$out/tasks.md"
gzip -9nf "$out/tasks.jsonl"
adapters=$(for a in "$@"; do printf ' -a %s' "$a"; done)
bin/sa-eval -q $threads -m "$model" $adapters --map --pool data/pools \
    --pairs 1,2,4,8,16,32,64,128,256 --episodes 4 --csv "$out/map.csv" > "$out/map.md"
if command -v gnuplot >/dev/null; then
	gnuplot -e "csv='$out/map.csv'; png='$out/map.png'" scripts/plot-map.gp
fi
bin/sa-eval -q $threads -m "$model" -a "$1" --text data/corpus/valid.txt.gz --limit 64 > "$out/text.md"
cat "$out/tasks.md"
