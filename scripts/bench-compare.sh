#!/bin/sh
# bench-compare.sh - libsa's forward pass against llama.cpp's on the same
# GGUF files: prefill (ppP) and decode (tgN) tokens per second, side by side.
#
#   scripts/bench-compare.sh [-r reps] [-t threads] [-p n_prompt] [-n n_gen]
#                            [-s sets] [-D model.gguf] [-M model.gguf]... [-o dir]
#                            [--dry-run]
#   make bench-compare [BENCH_ARGS='...']
#
# Models, made by tests/helpers/mkmodel in a temporary directory (removed
# at the end), chosen with -s (comma-separated; default all):
#   default   the -D file, else data/model.gguf when present; otherwise a
#             model of its shape
#             with random weights (d 256, 6 layers, 8 heads, 4 KV heads,
#             FFN 704, ctx 512, F16, tied, mkmodel's built-in vocab)
#   f16       TinyLlama's shape (d 2048, 22 layers, 32 heads, 4 KV heads,
#   q8_0      FFN 5632, the 32000-token Llama vocab) in F16 and in Q8_0
#   q4_k_m    the F16 one quantized by llama.cpp's llama-quantize to Q4_K_M
#   q6_k      and to Q6_K (built beside llama-bench when missing)
# and every -M file.
#
# Each repetition runs llama.cpp's llama-bench and libsa's tests/helpers/
# bench, one after the other, on the same file with the same thread count:
# prefill of P tokens (default 512, or the context less N when shorter),
# then N tokens (default 128) decoded one at a time after them, llama-bench
# being given -d P so that its decode runs at the same positions.  Both
# warm up alike before timing: llama-bench by default runs the prompt once
# before timing ppP and decodes one token before timing tgN (its
# --no-warmup turns that off), and tests/helpers/bench does the same, so
# neither times the first run's page faults and allocations.  The table
# gives medians over the repetitions and the median of the per-repetition
# ratios libsa / llama.cpp (pairs measured seconds apart share the machine's
# load).  With -o, the samples go to DIR/compare.csv and the table to
# DIR/compare.md.
#
# llama.cpp: LLAMA_CPP_DIR (default ~/.cache/sa-llama.cpp) with llama-bench
# built in build/bin.  When missing it is built there from the npm package
# as doc/speed.md says (npm, git, cmake, a C++ compiler; a few minutes);
# when that fails, only libsa is measured.  Where ggml's AMX kernels cannot
# run (the CPU reports AMX, the kernel does not grant it: SIGILL on Q8_0),
# a libggml-cpu built the same way without AMX (build-noamx/) is used
# instead, for every model.
#
# ik_llama.cpp (a fork of llama.cpp with kernels of its own): with
# IK_LLAMA_CPP_DIR set to a tree whose build/bin holds its llama-bench
# (doc/speed.md says how to build it), each repetition runs it too, on
# the same file and threads, after libsa (its decode at depth P through
# -gp P,N, as it has no -d), and the table gets its column and libsa's
# ratio to it.  It is never built here.
#
# --dry-run: two tiny models, 32 + 8 tokens, one repetition, libsa (and
# the IK_LLAMA_CPP_DIR one when set) only:
# checks the script in seconds.
#
# Run it on a quiet machine, or under nice(1) beside other work; the numbers
# of a loaded machine move from run to run, their ratios much less.
set -eu

prog=bench-compare
. "$(dirname "$0")/bench-common.sh"
reps=3 threads= n_prompt=512 n_gen=128 sets=default,f16,q8_0 outdir= dry=0 extra=
default_model=data/model.gguf
usage() {
	echo "usage: scripts/bench-compare.sh [-r reps] [-t threads] [-p n_prompt] [-n n_gen]" >&2
	echo "                                [-s default,f16,q8_0] [-D model.gguf] [-M model.gguf]..." >&2
	echo "                                [-o dir] [--dry-run]" >&2
	exit 64
}
while [ $# -gt 0 ]; do
	case $1 in
	-r) reps=${2:?}; shift ;;
	-t) threads=${2:?}; shift ;;
	-p) n_prompt=${2:?}; shift ;;
	-n) n_gen=${2:?}; shift ;;
	-s) sets=${2?}; shift ;;
	-D) default_model=${2:?}; shift ;;
	-M) extra="$extra ${2:?}"; shift ;;
	-o) outdir=${2:?}; shift ;;
	--dry-run) dry=1 ;;
	-h|--help) bench_help ;;
	*) usage ;;
	esac
	shift
done
bench_counts "$reps" "$n_prompt" "$n_gen" ${threads:+"$threads"}
bench_sets "$sets" "default f16 q8_0 q4_k_m q6_k" "tiny-f16 tiny-q8_0"

bench=tests/helpers/bench
mkmodel=tests/helpers/mkmodel
spm=tests/data/vocab/ggml-vocab-llama-spm.gguf
bench_tree $bench $mkmodel
threads=${threads:-$(nproc)}

bench_tmp

if [ $dry = 1 ]; then
	reps=1 n_prompt=32 n_gen=8
	sets=tiny-f16,tiny-q8_0
fi

# ------------------------------------------------------------- llama.cpp

LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-$HOME/.cache/sa-llama.cpp}
llama_bench= llama_libs= llama_note=

build_llama() {
	log=$LLAMA_CPP_DIR.build.log
	echo "$prog: building llama.cpp in $LLAMA_CPP_DIR (log: $log)" >&2
	for c in npm git cmake c++ tar; do
		command -v $c >/dev/null || { echo "$prog: no $c" >&2; return 1; }
	done
	mkdir -p "$(dirname "$LLAMA_CPP_DIR")" || return 1
	{
		if [ ! -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]; then
			(cd "$tmp" && npm pack --silent node-llama-cpp@3.21.1) &&
			mkdir "$tmp/n" && tar xzf "$tmp"/node-llama-cpp-3.21.1.tgz -C "$tmp/n" &&
			git clone -q "$tmp/n/package/llama/gitRelease.bundle" "$LLAMA_CPP_DIR"
		fi &&
		cmake -S "$LLAMA_CPP_DIR" -B "$LLAMA_CPP_DIR/build" -DCMAKE_BUILD_TYPE=Release \
		    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF \
		    -DGGML_NATIVE=ON &&
		cmake --build "$LLAMA_CPP_DIR/build" -j"$(nproc)" --target llama-bench
	} >"$log" 2>&1
}

# libggml-cpu as the native build, less AMX (-mno-amx-*: ggml compiles its
# AMX kernels only when the compiler targets AMX).
build_noamx() {
	log=$LLAMA_CPP_DIR.build-noamx.log
	echo "$prog: building libggml-cpu without AMX in $LLAMA_CPP_DIR/build-noamx (log: $log)" >&2
	noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
	{
		cmake -S "$LLAMA_CPP_DIR" -B "$LLAMA_CPP_DIR/build-noamx" -DCMAKE_BUILD_TYPE=Release \
		    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DCMAKE_C_FLAGS="$noamx" \
		    -DCMAKE_CXX_FLAGS="$noamx" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF \
		    -DLLAMA_BUILD_COMMON=OFF &&
		cmake --build "$LLAMA_CPP_DIR/build-noamx" -j"$(nproc)" --target ggml-cpu
	} >"$log" 2>&1
}

# Does llama-bench survive a small Q8_0 model with these libraries?
probe_q8() {
	$mkmodel --dim 64 --ff 192 -t q8_0 -o "$tmp/probe.gguf" &&
	env LD_LIBRARY_PATH="$1" "$llama_bench" -m "$tmp/probe.gguf" -p 32 -n 2 -r 1 \
	    -t 1 -o csv >/dev/null 2>&1
}

setup_llama() {
	llama_bench=$LLAMA_CPP_DIR/build/bin/llama-bench
	if [ ! -x "$llama_bench" ] && ! build_llama; then
		echo "$prog: cannot build llama.cpp (see $log): measuring libsa alone" >&2
		llama_bench= llama_note="llama.cpp: not available"
		return 0
	fi
	llama_libs=$LLAMA_CPP_DIR/build/bin
	if ! probe_q8 "$llama_libs"; then
		if [ -f "$LLAMA_CPP_DIR/build-noamx/bin/libggml-cpu.so" ] || build_noamx; then
			llama_libs=$LLAMA_CPP_DIR/build-noamx/bin:$llama_libs
		fi
		if ! probe_q8 "$llama_libs"; then
			echo "$prog: llama-bench fails on a Q8_0 model, even without AMX: measuring libsa alone" >&2
			llama_bench= llama_note="llama.cpp: fails on Q8_0"
			return 0
		fi
		llama_note="llama.cpp: native build, libggml-cpu without AMX (the native one dies on Q8_0 here)"
	else
		llama_note="llama.cpp: native build"
	fi
	llama_note="$llama_note, $(cd "$LLAMA_CPP_DIR" && git log -1 --format=%h 2>/dev/null || echo '?')"
}

if [ $dry = 1 ]; then
	llama_note="llama.cpp: not run (--dry-run)"
else
	setup_llama
fi
ik_bench= ik_note=
if [ -n "${IK_LLAMA_CPP_DIR:-}" ]; then
	ik_bench=$IK_LLAMA_CPP_DIR/build/bin/llama-bench
	[ -x "$ik_bench" ] || { echo "$prog: no $ik_bench" >&2; exit 66; }
	ik_note="; ik_llama.cpp: native build in $IK_LLAMA_CPP_DIR"
fi

# ---------------------------------------------------------------- models

# make NAME ARGS...: a model in $tmp/NAME.gguf
make_model() {
	name=$1
	shift
	echo "$prog: making $name" >&2
	$mkmodel --name "$name" "$@" -o "$tmp/$name.gguf"
}

# goals: lines "model-name pp-goal tg-goal"
models=
: >"$tmp/goals"
for s in $(echo "$sets" | tr , ' '); do
	case $s in
	default)
		if [ -f "$default_model" ]; then
			models="$models $default_model"
			echo "$(basename "$default_model" .gguf) 1.2 1.2" >>"$tmp/goals"
		else
			echo "$prog: no $default_model: using a random model of its shape instead" >&2
			make_model default-shape-f16 --layers 6 --dim 256 --heads 8 --kv-heads 4 \
			    --ff 704 --ctx 512 --tied -t f16
			models="$models $tmp/default-shape-f16.gguf"
			echo "default-shape-f16 1.2 1.2" >>"$tmp/goals"
		fi ;;
	f16|q8_0)
		make_model tinyllama-shape-$s --layers 22 --dim 2048 --heads 32 --kv-heads 4 \
		    --ff 5632 --ctx 2048 --vocab $spm -t $s
		models="$models $tmp/tinyllama-shape-$s.gguf"
		echo "tinyllama-shape-$s 1.0 1.0" >>"$tmp/goals" ;;
	q4_k_m|q6_k)
		quant=$LLAMA_CPP_DIR/build/bin/llama-quantize
		if [ ! -x "$quant" ] && ! cmake --build "$LLAMA_CPP_DIR/build" -j"$(nproc)" \
		    --target llama-quantize >"$LLAMA_CPP_DIR.quantize.log" 2>&1; then
			echo "$prog: no llama-quantize: set $s left out" >&2
			continue
		fi
		[ -f "$tmp/tinyllama-shape-f16.gguf" ] ||
			make_model tinyllama-shape-f16 --layers 22 --dim 2048 --heads 32 --kv-heads 4 \
			    --ff 5632 --ctx 2048 --vocab $spm -t f16
		echo "$prog: quantizing to $s" >&2
		LD_LIBRARY_PATH=$LLAMA_CPP_DIR/build/bin "$quant" "$tmp/tinyllama-shape-f16.gguf" \
		    "$tmp/tinyllama-shape-$s.gguf" "$(echo $s | tr a-z A-Z)" >"$tmp/quantize.log" 2>&1 ||
			{ echo "$prog: llama-quantize failed:" >&2; tail -3 "$tmp/quantize.log" >&2; exit 70; }
		models="$models $tmp/tinyllama-shape-$s.gguf"
		echo "tinyllama-shape-$s 1.0 1.0" >>"$tmp/goals" ;;
	tiny-f16|tiny-q8_0)
		make_model $s --dim 64 --ff 192 --ctx 256 -t ${s#tiny-}
		models="$models $tmp/$s.gguf" ;;
	esac
done
models="$models $extra"

# --------------------------------------------------------------- measure

# GGUF context_length, through sa-info when built, else assume enough.
ctx_of() {
	if [ -x bin/sa-info ]; then
		bin/sa-info -j "$1" 2>/dev/null | sed -n 's/.*"n_ctx":\([0-9]*\).*/\1/p'
	else
		echo 1000000
	fi
}

median() {
	sort -g | awk '{ x[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) print x[(NR + 1) / 2]; else print (x[NR / 2] + x[NR / 2 + 1]) / 2 }'
}

# The tokens a second of llama-bench's JSON (jsonl or json) on stdin.
avg_ts() { sed -n 's/.*"avg_ts": *\([0-9.e+-]*\).*/\1/p'; }

samples=$tmp/samples.csv
echo "model,test,threads,rep,libsa_tps,llama_tps,ik_llama_tps" >"$samples"
kernels= core=
for model in $models; do
	[ -f "$model" ] || { echo "$prog: $model: no such file" >&2; exit 66; }
	name=$(basename "$model" .gguf)
	ctx=$(ctx_of "$model")
	p=$n_prompt
	[ $((p + n_gen)) -le "$ctx" ] || p=$((ctx - n_gen))
	[ $p -ge 1 ] || { echo "$prog: $model: context $ctx too short" >&2; exit 65; }
	for r in $(seq 1 "$reps"); do
		echo "$prog: $name, repetition $r/$reps: pp$p tg$n_gen, $threads threads" >&2
		lpp=- ltg=-
		if [ -n "$llama_bench" ]; then
			# decode first: it runs P tokens (untimed) before its N
			ltg=$(env LD_LIBRARY_PATH="$llama_libs" "$llama_bench" -m "$model" -p 0 \
			    -n "$n_gen" -d "$p" -r 1 -t "$threads" -o jsonl 2>>"$tmp/llama.err" | avg_ts)
			lpp=$(env LD_LIBRARY_PATH="$llama_libs" "$llama_bench" -m "$model" -p "$p" \
			    -n 0 -r 1 -t "$threads" -o jsonl 2>>"$tmp/llama.err" | avg_ts)
			[ -n "$lpp" ] && [ -n "$ltg" ] ||
				{ echo "$prog: llama-bench failed on $model:" >&2; tail -5 "$tmp/llama.err" >&2; exit 70; }
		fi
		out=$($bench -t "$threads" -p "$p" -n "$n_gen" "$model") ||
			{ echo "$prog: $bench failed on $model" >&2; exit 70; }
		kernels=$(echo "$out" | sed -n 's/.*kernels \([^,]*\),.*/\1/p')
		core=$(echo "$out" | sed -n 's/.*OpenBLAS core \([^,]*\),.*/\1/p')
		set -- $(echo "$out" | sed -n 's/.*prefill *[0-9]*: *\([0-9.]*\) tok\/s *decode *[0-9]*: *\([0-9.]*\) tok\/s.*/\1 \2/p')
		[ $# = 2 ] || { echo "$prog: cannot read $bench's output: $out" >&2; exit 70; }
		ipp=- itg=-
		if [ -n "$ik_bench" ]; then
			ipp=$(env LD_LIBRARY_PATH="$(dirname "$ik_bench")" "$ik_bench" -m "$model" \
			    -p "$p" -n 0 -r 1 -t "$threads" -o json 2>>"$tmp/ik.err" | avg_ts)
			itg=$(env LD_LIBRARY_PATH="$(dirname "$ik_bench")" "$ik_bench" -m "$model" \
			    -p 0 -n 0 -gp "$p,$n_gen" -r 1 -t "$threads" -o json 2>>"$tmp/ik.err" | avg_ts)
			[ -n "$ipp" ] && [ -n "$itg" ] ||
				{ echo "$prog: ik_llama.cpp's llama-bench failed on $model:" >&2; tail -5 "$tmp/ik.err" >&2; exit 70; }
		fi
		echo "$name,pp$p,$threads,$r,$1,$lpp,$ipp" >>"$samples"
		echo "$name,tg$n_gen,$threads,$r,$2,$ltg,$itg" >>"$samples"
	done
done

# ----------------------------------------------------------------- table

# "-" or the number with one decimal (fmt %.1f) or two (%.2f)
num() { case $1 in -) echo - ;; *) printf "$2" "$1" ;; esac; }

table() {
	ikh= iks=
	[ -z "$ik_bench" ] || ikh=" ik_llama.cpp tok/s | libsa / ik_llama.cpp |" iks="--:|--:|"
	echo "| model | test | threads | libsa tok/s | llama.cpp tok/s | libsa / llama.cpp |$ikh goal |"
	echo "|---|---|--:|--:|--:|--:|$iks--:|"
	tail -n +2 "$samples" | cut -d, -f1-3 | awk '!seen[$0]++' | while IFS=, read -r name test th; do
		rows=$(awk -F, -v n="$name" -v t="$test" -v h="$th" '$1 == n && $2 == t && $3 == h' "$samples")
		sa=$(echo "$rows" | cut -d, -f5 | median)
		ll=$(echo "$rows" | cut -d, -f6 | grep -v '^-$' | median)
		ratio=$(echo "$rows" | awk -F, '$6 != "-" && $6 > 0 { print $5 / $6 }' | median)
		ik=
		if [ -n "$ik_bench" ]; then
			ikt=$(echo "$rows" | cut -d, -f7 | grep -v '^-$' | median)
			ikr=$(echo "$rows" | awk -F, '$7 != "-" && $7 > 0 { print $5 / $7 }' | median)
			ik=" $(num "$ikt" %.1f) | $(num "$ikr" %.2f) |"
		fi
		goal=$(awk -v n="$name" -v t="$test" '$1 == n { print ">= " (t ~ /^pp/ ? $2 : $3) }' "$tmp/goals")
		printf '| %s | %s | %s | %.1f | %s | %s |%s %s |\n' "$name" "$test" "$th" "$sa" \
		    "$(num "$ll" %.1f)" "$(num "$ratio" %.2f)" "$ik" "$goal"
	done
	echo
	echo "Medians of $reps repetitions; libsa kernels ${kernels:-?}, OpenBLAS core ${core:-?}; $llama_note$ik_note."
}

table
if [ -n "$outdir" ]; then
	mkdir -p "$outdir"
	cp "$samples" "$outdir/compare.csv"
	table >"$outdir/compare.md"
	echo "$prog: wrote $outdir/compare.csv and $outdir/compare.md" >&2
fi
