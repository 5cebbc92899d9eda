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

model=${SA_MODEL:-data/model.gguf} adapter=${SA_ADAPTER:-data/adapter.gguf}
if [ -f "$model" ] && [ -f "$adapter" ]; then
	task=${SA_DEMO_TASK:-data/tasks/plural}
	name=$(basename "$task")
	case $(awk -F '\t' -v t="$name" '$1 == t { print $2 }' data/tasks/TASKS.tsv) in
	seen) why="a seen task: its train split was in the training data, these queries were not" ;;
	unseen) why="an unseen task: the model and the adapter never trained on it" ;;
	*) why="a task of your own" ;;
	esac
	say "16 demonstrations of $name ($why)"
	head -17 "$task/train.tsv" > "$out/demos.tsv"
	sed 1d "$out/demos.tsv" | sed 's/\t/ -> /'
	say "encode them into a delta"
	$bin/sa-encode -q -m "$model" -a "$adapter" -o "$out/demos.delta" "$out/demos.tsv"
	$bin/sa-info "$out/demos.delta"
	sed 1d "$out/demos.tsv" | sed 's/\t/ -> /' > "$out/demos.txt"
	say "greedy answers to test queries: alone, after the demonstrations (ICL), alone with the delta"
	printf '%-16s %-14s %-14s %-14s %s\n' query zero-shot ICL StreamAdapter expected
	sed -n 2,9p "$task/test.tsv" | while IFS="$(printf '\t')" read -r input label; do
		for how in zero ICL SA; do
			case $how in
			zero) set -- -p "$input ->" ;;
			ICL) set -- -p "$(cat "$out/demos.txt")
$input ->" ;;
			SA) set -- -d "$out/demos.delta" -p "$input ->" ;;
			esac
			$bin/sa-run -m "$model" "$@" -n 6 --temp 0 | head -1 | sed 's/^ //' | cut -c1-14 > "$out/$how.txt"
		done
		printf '%-16s %-14s %-14s %-14s %s\n' "$input" "$(cat "$out/zero.txt")" \
		    "$(cat "$out/ICL.txt")" "$(cat "$out/SA.txt")" "$label"
	done
	say "accuracy on 50 test queries (sa-eval)"
	$bin/sa-eval -q -m "$model" -a "$adapter" -k 16 --limit 50 --task "$task"
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
