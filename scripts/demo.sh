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

	# words and labels no training episode bound (data/pools/SPLIT), paired
	# at random: only what the demonstrations say can answer
	say "16 pairs of held-out words, each shown once: recalled from the context, and from a delta"
	{
		printf 'input\tlabel\n'
		awk 'NR % 17 == 3' data/pools/test/words.txt | head -16 > "$out/words.txt"
		awk 'NR % 6 == 1' data/pools/test/labels.txt | head -16 | sort -r > "$out/labels.txt"
		paste "$out/words.txt" "$out/labels.txt"
	} > "$out/pairs.tsv"
	$bin/sa-encode -q -m "$model" -a "$adapter" -o "$out/pairs.delta" "$out/pairs.tsv"
	sed 1d "$out/pairs.tsv" | sed 's/\t/ -> /' > "$out/pairs.txt"
	printf '%-16s %-14s %-14s %s\n' word ICL StreamAdapter expected
	sed 1d "$out/pairs.tsv" | while IFS="$(printf '\t')" read -r word label; do
		icl=$($bin/sa-run -m "$model" -p "$(cat "$out/pairs.txt")
$word ->" -n 4 --temp 0 | head -1 | sed 's/^ //')
		sa=$($bin/sa-run -m "$model" -d "$out/pairs.delta" -p "$word ->" -n 4 --temp 0 |
		    head -1 | sed 's/^ //')
		printf '%-16s %-14s %-14s %s\n' "$word" "$icl" "$sa" "$label"
	done | tee "$out/pairs.out"
	awk '{ i += $2 == $4; s += $3 == $4 } END { printf "recalled: ICL %d of %d, StreamAdapter %d of %d\n", i, NR, s, NR }' "$out/pairs.out"
	exit 0
fi

say "no trained model in data/: the mechanism on a toy model"
tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o "$out/toy.gguf"
printf 'apple\nbread\nchair\ndoor\neagle\nfrost\ngrape\nhill\n' > "$out/words.txt"
printf 'red\nblue\ngreen\nbig\nsmall\n' > "$out/labels.txt"
mkdir -p "$out/pool" && mv "$out/words.txt" "$out/labels.txt" "$out/pool/"
# The log-probability of each token of the demonstration's answer and the
# newline after it, given the query alone and the delta of adapter $1: the
# differences of the scores of the answer's growing prefixes (the toy's
# vocabulary spells a word one letter a token).
answer_logprobs() {
	$bin/sa-encode -q -m "$out/toy.gguf" -a "$1" -o "$out/toy.delta" data/demo/toy.tsv
	label=$(sed -n 2p data/demo/toy.tsv | cut -f 2)
	set --
	i=1
	while [ $i -le ${#label} ]; do
		set -- "$@" --choice " $(printf %s "$label" | cut -c 1-$i)"
		i=$((i + 1))
	done
	$bin/sa-run -m "$out/toy.gguf" -d "$out/toy.delta" -p "chair ->" "$@" --choice " $label
" | awk '/^choice/ { printf "%s%.3f", n++ ? " " : "", $4 - prev; prev = $4 } END { print "" }'
}

# Train in rounds until every token of the answer has a probability of
# 0.52 or more: more likely than all the others together, by a margin in
# the logits (log 0.52/0.48 = 0.08) far beyond what another kernel's
# rounding moves them (1e-4).  How many rounds that takes depends on the
# CPU's float kernels, which the training follows.  (Not much more than
# 0.52: the toy's random output layer caps a token whose row of it is short,
# 'r' at about 0.57.)
if [ ! -f "$out/toy-adapter.gguf" ]; then
	say "train an adapter for it (random mappings; a few seconds)"
	rm -rf "$out/toy-train.gguf" "$out/toy-train.gguf.ckpt"
	steps=0 resume=
	while [ $steps -lt 2400 ]; do
		$bin/sa-train --adapter -m "$out/toy.gguf" -o "$out/toy-train.gguf" \
		    --pool "$out/pool" --mix 0,0,1 --kmin 1 --kmax 1 --rank 16 --chunk 16 \
		    --mats attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down \
		    --steps 2400 --run-steps 400 --batch-tokens 512 --eval-every 400 \
		    --lr 3e-3 --warmup 10 -t 1 $resume
		steps=$((steps + 400)) resume=--resume
		lp=$(answer_logprobs "$out/toy-train.gguf")
		echo "step $steps: log-probabilities of the answer's tokens: $lp"
		echo "$lp" | awk '{ for (i = 1; i <= NF; i++) if ($i < log(0.52)) exit 1 }' && break
	done
	mv "$out/toy-train.gguf" "$out/toy-adapter.gguf"
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
