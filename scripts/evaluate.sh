#!/bin/sh
# The evaluation of a model and its adapters, as README.md reports it, every
# table once per adapter given (the first is the one the task table uses):
#   tasks.md         sa-eval's table over every task of data/tasks (k = 16,
#                    K = 4 times what fits, seed 1); tasks.jsonl.gz per query
#   rename.md        the two-class seen tasks with their labels swapped in the
#                    demonstrations, per adapter (tasks.md has the true labels)
#   map.md, map.csv, map.png
#                    recall of new word -> single-token label pairs as their
#                    number grows, ICL and each adapter's delta
#                    (data/pools/SPLIT: words no training episode bound);
#                    map.jsonl.gz per query, for scripts/map-ci.py
#   map-multi.md     the same with labels of two or three tokens
#                    (data/pools/SPLIT-multi)
#   map-pieces.md    the same with made-up labels of two or three tokens
#                    (data/pools/SPLIT-pieces)
#   map-text.md, map-multi-text.md
#                    the same with ICL's prompt as one text (sa-eval
#                    --icl-layout text: a prompt as sa-run -p tokenizes it)
#   text.md          perplexity of held-out text: the previous segment, the 8
#                    previous ones and the segment itself, in the prompt or in
#                    a delta, per adapter (dev: the first 24 passages of
#                    data/corpus/valid.txt.gz; test: 64 from the 33rd on)
# Usage: scripts/evaluate.sh [-t threads] [-s test|dev] [ADAPTER...]
#   (default data/adapter.gguf; -s dev reads the dev split and the dev pools,
#   for choosing settings; the tables go to $SA_EVAL_DIR, else doc/eval for
#   test and run/eval-dev for dev)
set -eu
cd "$(dirname "$0")/.."
threads= split=test
while [ $# -gt 0 ]; do
	case $1 in
	-t) threads="-t $2"; shift 2 ;;
	-s) split=$2; shift 2 ;;
	*) break ;;
	esac
done
case $split in
test) out=${SA_EVAL_DIR:-doc/eval} passages="--skip 32 --limit 64" ;;
dev) out=${SA_EVAL_DIR:-run/eval-dev} passages="--limit 24" ;;
*) echo "evaluate.sh: -s test or dev, not '$split'" >&2; exit 64 ;;
esac
model=${SA_MODEL:-data/model.gguf}
[ $# -gt 0 ] || set -- data/adapter.gguf
mkdir -p "$out"
eval="bin/sa-eval -q $threads -m $model"
tasks=$(ls -d data/tasks/*/ | sed 's/^/--task /')
two=$(for t in gender sentiment spam sotu-party; do printf ' --task data/tasks/%s' $t; done)
adapters=$(for a in "$@"; do printf ' -a %s' "$a"; done)

$eval -a "$1" -k 16 -s 1 --split $split --jsonl "$out/tasks.jsonl" $tasks > "$out/tasks.md"
gzip -9nf "$out/tasks.jsonl"
: > "$out/rename.md"
: > "$out/text.md"
for a in "$@"; do
	printf '\n### %s\n\n' "$a" | tee -a "$out/rename.md" >> "$out/text.md"
	$eval -a "$a" -k 16 -s 1 --split $split --rename swap $two >> "$out/rename.md"
	$eval -a "$a" --text data/corpus/valid.txt.gz $passages --many 8 >> "$out/text.md"
done
$eval $adapters --map --pool data/pools/$split --pairs 1,2,4,8,16,32,64,128,256 \
    --episodes 4 --queries 128 --csv "$out/map.csv" --jsonl "$out/map.jsonl" > "$out/map.md"
gzip -9nf "$out/map.jsonl"
for p in multi pieces; do
	$eval $adapters --map --pool data/pools/$split-$p --pairs 1,4,16,64 \
	    --episodes 4 --queries 128 > "$out/map-$p.md"
done
for p in "" -multi; do
	$eval -a "$1" --map --pool data/pools/$split$p --pairs 1,4,16,64 --episodes 4 \
	    --queries 128 --icl-layout text > "$out/map$p-text.md"
done
if command -v gnuplot >/dev/null; then
	gnuplot -e "csv='$out/map.csv'; png='$out/map.png'" scripts/plot-map.gp
fi
cat "$out/tasks.md"
