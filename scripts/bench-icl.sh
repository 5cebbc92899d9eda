#!/bin/sh
# bench-icl.sh - the per-query cost of in-context learning against a delta,
# as the number of demonstrations k grows (tests/helpers/bench-icl).
#
#   scripts/bench-icl.sh [-t threads] [-r reps] [-q queries] [-s sets]
#                        [-D model.gguf] [-a adapter.gguf] [-T task_dir]
#                        [--dry-run | --plot] [dir]
#   make bench-icl [BENCH_ARGS='...']
#
# For k = 0, 1, 2, 4, ... : time per query and KV cache of ICL with the
# demonstrations recomputed every query, of ICL with their KV cache made
# once and reused, and of a delta of the same k demonstrations (merged, and
# as side paths), with the query alone; plus the one-time costs (cache
# prefill, encoding, merging).  ICL stops where the context is full, deltas
# go on to four times that k.  Demonstrations and queries come from the
# task directory (default data/tasks/sentiment).
#
# Models (-s, comma-separated; default both):
#   default     the -D file, else data/model.gguf when present, else a random
#               model of its shape (d 256, 6 layers, 8 heads, 4 KV heads,
#               FFN 704, ctx 512, F16, tied, mkmodel's built-in vocab);
#               its full context
#   tinyllama   TinyLlama's shape (d 2048, 22 layers, 32 heads, 4 KV heads,
#               FFN 5632, Llama vocab), random F16 weights, context cut to
#               256 tokens and 2 queries to keep the run short
# Output in dir (default bench-out/): icl-NAME.csv per model (columns: see
# tests/helpers/bench-icl.c), and icl-cost.png drawn by scripts/plot-icl.gp
# (when gnuplot is installed).
#
# --dry-run: a tiny model, context 128, one query, one repetition: checks
# the script in seconds.  --plot: measure nothing, plot the icl-*.csv files
# already in dir (the first two, by name) into dir/icl-cost.png.
set -eu

prog=bench-icl
. "$(dirname "$0")/bench-common.sh"
threads= reps=3 nq=4 sets=default,tinyllama outdir=bench-out dry=0 adapter= task= plot_only=0
default_model=data/model.gguf
usage() {
	echo "usage: scripts/bench-icl.sh [-t threads] [-r reps] [-q queries] [-s default,tinyllama]" >&2
	echo "                            [-D model.gguf] [-a adapter.gguf] [-T task_dir]" >&2
	echo "                            [--dry-run | --plot] [dir]" >&2
	exit 64
}
while [ $# -gt 0 ]; do
	case $1 in
	-t) threads=${2:?}; shift ;;
	-r) reps=${2:?}; shift ;;
	-q) nq=${2:?}; shift ;;
	-s) sets=${2?}; shift ;;
	-D) default_model=${2:?}; shift ;;
	-a) adapter=${2:?}; shift ;;
	-T) task=${2:?}; shift ;;
	--dry-run) dry=1 ;;
	--plot) plot_only=1 ;;
	-h|--help) bench_help ;;
	-*) usage ;;
	*) outdir=$1 ;;
	esac
	shift
done
bench_counts "$reps" "$nq" ${threads:+"$threads"}
bench_sets "$sets" "default tinyllama"

helper=tests/helpers/bench-icl
mkmodel=tests/helpers/mkmodel
spm=tests/data/vocab/ggml-vocab-llama-spm.gguf
bench_tree $helper $mkmodel
threads=${threads:-$(nproc)}
mkdir -p "$outdir" || exit 73
bench_tmp

[ $dry = 0 ] || sets=tiny
[ $plot_only = 0 ] || sets=

# run NAME MODEL HELPER-ARGS...
run() {
	name=$1 model=$2
	shift 2
	echo "$prog: $name: $helper $* $model" >&2
	$helper -t "$threads" ${adapter:+-a "$adapter"} ${task:+-T "$task"} "$@" "$model" \
	    >"$tmp/icl-$name.csv"
	mv "$tmp/icl-$name.csv" "$outdir/icl-$name.csv"
	csvs="$csvs $outdir/icl-$name.csv"
}

csvs=
for s in $(echo "$sets" | tr , ' '); do
	case $s in
	default)
		if [ -f "$default_model" ]; then
			model=$default_model name=$(basename "$default_model" .gguf)
		else
			echo "$prog: no $default_model: using a random model of its shape instead" >&2
			model=$tmp/default.gguf name=default-shape-f16
			$mkmodel --name $name --layers 6 --dim 256 --heads 8 --kv-heads 4 --ff 704 \
			    --ctx 512 --tied -t f16 -o "$model"
		fi
		run "$name" "$model" -r "$reps" -q "$nq" ;;
	tinyllama)
		echo "$prog: making a model of TinyLlama's shape" >&2
		$mkmodel --name tinyllama-shape-f16 --layers 22 --dim 2048 --heads 32 --kv-heads 4 \
		    --ff 5632 --ctx 2048 --vocab $spm -t f16 -o "$tmp/tinyllama.gguf"
		run tinyllama-shape-f16 "$tmp/tinyllama.gguf" -c 256 -r "$reps" -q 2
		rm -f "$tmp/tinyllama.gguf" ;;
	tiny)
		$mkmodel --name tiny --dim 64 --ff 192 --ctx 128 -o "$tmp/tiny.gguf"
		run tiny "$tmp/tiny.gguf" -r 1 -q 1 ;;
	esac
done

if [ $plot_only = 1 ]; then
	csvs=$(ls "$outdir"/icl-*.csv 2>/dev/null | head -2)
	[ -n "$csvs" ] || { echo "$prog: no icl-*.csv in $outdir" >&2; exit 66; }
fi
for c in $csvs; do
	echo "== $c"
	column -s, -t <"$c" 2>/dev/null || cat "$c"
done
if command -v gnuplot >/dev/null; then
	set -- $csvs
	n1=$(basename "$1" .csv) n2=$(basename "${2:-x}" .csv)
	gnuplot -e "csv1='$1'; name1='${n1#icl-}'; csv2='${2:-}'; name2='${n2#icl-}'; png='$outdir/icl-cost.png'" \
	    scripts/plot-icl.gp
	echo "$prog: wrote $outdir/icl-cost.png" >&2
else
	echo "$prog: no gnuplot: no plot" >&2
fi
