#!/bin/sh
# bench-serve.sh - serving many deltas from one process: 16 tasks of 50
# queries each (-q), every task its own delta, the queries in random order.
#
#   scripts/bench-serve.sh [-t threads] [-n tokens] [-q queries]
#                          [-s default,tinyllama] [--dry-run] [dir]
#   make bench-serve [BENCH_ARGS='...']
#
# Runs, for each model:
#   per-task     one sa-run process per task (-d its delta, --unmerged),
#                the tasks one after the other
#   parallel-N   one sa-run process for all queries, each request naming
#                its delta, --parallel N for N = 1, 4 and 8
# and prints the wall time, the tokens generated and the decoding rate
# (sa-run -v's "generation" line, summed over the processes), and each
# rate against that of one request at a time (parallel-1).  The goal of
# --parallel 8 is four times parallel-1's decoding rate on TinyLlama's
# shape.  Every run must give the same answers: the script checks it.
#
# Models (-s, comma-separated; default both):
#   default     data/model.gguf and data/adapter.gguf
#   tinyllama   TinyLlama's shape (d 2048, 22 layers, 32 heads, 4 KV heads,
#               FFN 5632, Llama vocab), random F16 weights, an adapter
#               from sa-init with random W1, context cut to 256
# Queries generate -n tokens (default 32) greedily; -q queries a task
# (default 50).  Deltas are random
# states (tests/helpers/mkdelta) of the model's adapter.  Output in dir
# (default bench-out/): serve-NAME.csv per model.
#
# --dry-run: a tiny model, 2 tasks of 3 queries, 4 tokens: checks the
# script in seconds, with an adapter of the shipped one's kind (a
# least-squares memory) where the TinyLlama shape has the paper's.
set -eu

prog=bench-serve
. "$(dirname "$0")/bench-common.sh"
threads= ntok=32 nq=50 sets=default,tinyllama outdir=bench-out dry=0
usage() {
	echo "usage: scripts/bench-serve.sh [-t threads] [-n tokens] [-q queries]" >&2
	echo "                              [-s default,tinyllama] [--dry-run] [dir]" >&2
	exit 64
}
while [ $# -gt 0 ]; do
	case $1 in
	-t) threads=${2:?}; shift ;;
	-n) ntok=${2:?}; shift ;;
	-q) nq=${2:?}; shift ;;
	-s) sets=${2?}; shift ;;
	--dry-run) dry=1 ;;
	-h|--help) bench_help ;;
	-*) usage ;;
	*) outdir=$1 ;;
	esac
	shift
done
bench_counts "$ntok" "$nq" ${threads:+"$threads"}
bench_sets "$sets" "default tinyllama"

mkmodel=tests/helpers/mkmodel
mkdelta=tests/helpers/mkdelta
spm=tests/data/vocab/ggml-vocab-llama-spm.gguf
bench_tree $mkmodel $mkdelta bin/sa-run bin/sa-init
threads=${threads:-$(nproc)}
mkdir -p "$outdir" || exit 73
bench_tmp

ntask=16 ctx=
if [ $dry = 1 ]; then
	sets=tiny ntask=2 nq=3 ntok=4
fi

now() {
	date +%s.%N
}

# "generation: N tokens in T s, ..." of sa-run -v in file $1: "N T"
gen_of() {
	sed -n 's/.*generation: \([0-9]*\) tokens in \([0-9.]*\) s.*/\1 \2/p' "$1"
}

# The tasks of model $1 and adapter $2 in $tmp: deltas tK.delta, queries
# tK.jsonl (no delta named) and all.jsonl (each naming its delta, shuffled).
make_tasks() {
	k=1
	while [ $k -le $ntask ]; do
		$mkdelta -a "$2" -s $k -o "$tmp/t$k.delta"
		k=$((k + 1))
	done
	awk -v nt=$ntask -v nq=$nq -v n=$ntok -v dir="$tmp" 'BEGIN {
		srand(17)
		split("the cat,once upon a time,a good film,my friend said,in the morning,the old house", w, ",")
		for (t = 1; t <= nt; t++)
			for (q = 1; q <= nq; q++) {
				p = sprintf("%s %d", w[1 + (t * 7 + q) % 6], q)
				line[++m] = sprintf("{\"id\":\"%d-%d\",\"prompt\":\"%s\",\"n_predict\":%d,\"temp\":0", t, q, p, n)
				task[m] = t
				printf "%s}\n", line[m] > (dir "/t" t ".jsonl")
			}
		for (i = m; i > 1; i--) {
			j = 1 + int(rand() * i)
			s = line[i]; line[i] = line[j]; line[j] = s
			s = task[i]; task[i] = task[j]; task[j] = s
		}
		for (i = 1; i <= m; i++)
			printf "%s,\"deltas\":[\"%s/t%d.delta\"]}\n", line[i], dir, task[i] > (dir "/all.jsonl")
	}'
}

# bench NAME MODEL ADAPTER
bench() {
	name=$1 model=$2
	make_tasks "$2" "$3"
	csv=$tmp/serve-$name.csv
	echo "model,run,wall_s,tokens,decode_s,decode_tok_s,vs_parallel_1" >"$csv"
	base=
	for run in parallel-1 parallel-4 parallel-8 per-task; do
		echo "$prog: $name: $run" >&2
		t0=$(now)
		case $run in
		per-task)
			: >"$tmp/out"
			: >"$tmp/err"
			k=1
			while [ $k -le $ntask ]; do
				bin/sa-run -v -t "$threads" -m "$model" ${ctx:+-c $ctx} -d "$tmp/t$k.delta" \
				    --unmerged --batch "$tmp/t$k.jsonl" >>"$tmp/out" 2>>"$tmp/err"
				k=$((k + 1))
			done
			# the answers, as the one process gives them, by id
			sort "$tmp/out" >"$tmp/got" ;;
		*)
			bin/sa-run -v -t "$threads" -m "$model" ${ctx:+-c $ctx} --parallel "${run#parallel-}" \
			    --batch "$tmp/all.jsonl" >"$tmp/out" 2>"$tmp/err"
			sort "$tmp/out" >"$tmp/got" ;;
		esac
		wall=$(echo "$(now) - $t0" | bc -l)
		if [ -f "$tmp/want" ]; then
			cmp -s "$tmp/want" "$tmp/got" ||
			    { echo "$prog: $name: $run gives other answers than parallel-1" >&2; exit 70; }
		else
			mv "$tmp/got" "$tmp/want"
		fi
		set -- $(gen_of "$tmp/err" | awk '{ n += $1; t += $2 } END { print n + 0, t + 0 }')
		rate=$(echo "if ($2 > 0) $1 / $2 else 0" | bc -l)
		base=${base:-$rate}
		printf '%s,%s,%.2f,%d,%.2f,%.1f,%.2f\n' "$name" "$run" "$wall" "$1" "$2" "$rate" \
		    "$(echo "if ($base > 0) $rate / $base else 0" | bc -l)" >>"$csv"
	done
	rm -f "$tmp"/t*.delta "$tmp"/t*.jsonl "$tmp/all.jsonl" "$tmp/want"
	mv "$csv" "$outdir/serve-$name.csv"
	echo "== $outdir/serve-$name.csv"
	column -s, -t <"$outdir/serve-$name.csv" 2>/dev/null || cat "$outdir/serve-$name.csv"
}

for s in $(echo "$sets" | tr , ' '); do
	case $s in
	default)
		ctx=
		bench default data/model.gguf data/adapter.gguf ;;
	tinyllama)
		echo "$prog: making a model of TinyLlama's shape" >&2
		$mkmodel --name tinyllama-shape-f16 --layers 22 --dim 2048 --heads 32 --kv-heads 4 \
		    --ff 5632 --ctx 2048 --vocab $spm -t f16 -o "$tmp/tinyllama.gguf"
		bin/sa-init -m "$tmp/tinyllama.gguf" --seed 1 --w1-scale 0.5 -o "$tmp/tinyllama-adapter.gguf"
		ctx=256
		bench tinyllama-shape-f16 "$tmp/tinyllama.gguf" "$tmp/tinyllama-adapter.gguf"
		rm -f "$tmp/tinyllama.gguf" "$tmp/tinyllama-adapter.gguf" ;;
	tiny)
		$mkmodel --name tiny --dim 64 --ff 192 --ctx 128 -o "$tmp/tiny.gguf"
		bin/sa-init -m "$tmp/tiny.gguf" --kind lsq --key-source input --seed 1 \
		    --w1-scale 0.5 -o "$tmp/tiny-adapter.gguf"
		ctx=
		bench tiny "$tmp/tiny.gguf" "$tmp/tiny-adapter.gguf" ;;
	esac
done
