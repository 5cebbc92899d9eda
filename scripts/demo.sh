#!/bin/sh
# The main job, end to end: demonstrations -> delta -> queries without the
# demonstrations in the prompt, beside zero-shot and in-context learning.
#
# With the shipped model and adapter (data/model.gguf, data/adapter.gguf) it
# runs a task from data/tasks.  Without them it shows the mechanism on a toy:
# a random model, and an adapter trained here in seconds to carry the label
# of its demonstrations into the weights.
set -eu
cd "$(dirname "$0")/.."
bin=bin
out=${SA_DEMO_DIR:-run/demo}
mkdir -p "$out"
say() { printf '\n== %s\n' "$*"; }

if [ -f data/model.gguf ] && [ -f data/adapter.gguf ]; then
	model=data/model.gguf adapter=data/adapter.gguf task=data/tasks/first-letter
	say "encode 16 demonstrations of $task into a delta"
	head -17 "$task/train.tsv" > "$out/demos.tsv"
	cat "$out/demos.tsv"
	$bin/sa-encode -q -m $model -a $adapter -o "$out/demos.delta" "$out/demos.tsv"
	$bin/sa-info "$out/demos.delta"
	say "accuracy on 20 test queries: zero-shot, ICL (demonstrations in the prompt), StreamAdapter (delta)"
	$bin/sa-eval -q -m $model -a $adapter -k 16 --limit 20 "$task"
	exit 0
fi

say "no trained model in data/: the mechanism on a toy model"
tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o "$out/toy.gguf"
printf 'apple\nbread\nchair\ndoor\neagle\nfrost\ngrape\nhill\n' > "$out/words.txt"
printf 'red\nblue\ngreen\nbig\nsmall\n' > "$out/labels.txt"
mkdir -p "$out/pool" && mv "$out/words.txt" "$out/labels.txt" "$out/pool/"
if [ ! -f "$out/toy-adapter.gguf" ]; then
	say "train an adapter for it (random mappings; a few seconds)"
	rm -rf "$out/toy-adapter.gguf.ckpt"
	$bin/sa-train --adapter -m "$out/toy.gguf" -o "$out/toy-adapter.gguf" --pool "$out/pool" \
	    --mix 0,0,1 --kmin 1 --kmax 1 --rank 8 --chunk 16 --steps 800 --batch-tokens 512 \
	    --eval-every 800 --lr 1e-2 --warmup 10 -t 1
fi
say "demonstrations (data/demo/toy.tsv)"
cat data/demo/toy.tsv
$bin/sa-encode -q -m "$out/toy.gguf" -a "$out/toy-adapter.gguf" -o "$out/toy.delta" data/demo/toy.tsv
say "greedy answers: the query alone, the query after the demonstrations, the query alone with the delta"
for how in zero-shot ICL StreamAdapter; do
	case $how in
	zero-shot) args="" prompt="chair ->" ;;
	ICL) args="" prompt="chair -> green
chair ->" ;;
	StreamAdapter) args="-d $out/toy.delta" prompt="chair ->" ;;
	esac
	answer=$($bin/sa-run -m "$out/toy.gguf" $args -p "$prompt" -n 6 --temp 0 | head -1 | tr -d '\n' | tr -c '[:print:]' '?')
	printf '%-14s chair ->%s\n' "$how" "$answer"
done
