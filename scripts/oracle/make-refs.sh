#!/bin/sh
# make-refs.sh - write the llama.cpp references of the oracle tests.
#
#   scripts/oracle/make-refs.sh            (from the top of the tree)
#   scripts/oracle/make-refs.sh -s N       (measure only: see the end)
#   ONLY='*-q4_k-*' scripts/oracle/make-refs.sh   (only the references whose
#                                          names match; the others are kept)
#
# Builds dump-logits against a built llama.cpp (LLAMA_CPP_DIR, default
# /work/oracle/llama.cpp, with its libraries in build/bin), makes each model
# below with tests/helpers/mkmodel, runs it through llama.cpp and writes
# tests/data/oracle/NAME.ref.  tests/unit/test_oracle makes the same models
# again and compares libsa with these files, so CI needs no llama.cpp.
#
# A reference is text, one record a line:
#   mkmodel ARGS...        how to make the model (test_oracle adds -o FILE)
#   text STRING            (only with a vocab) the text llama.cpp tokenized
#   tokens N id...         the ids evaluated, as one batch, positions 0..N-1
#   vocab V
#   logits P               then P lines "pos I x0 ... x(V-1)" (%.9g)
#   steps S                then S lines "step I x0 ... x(V-1)": the logits
#                          that chose greedy token I (one-token batches)
#   greedy 64 id...        llama.cpp's greedy continuation
#   gap 64 d...            its top-1 minus top-2 logit at each step
set -eu

sweep=
case ${1:-} in
-s)	sweep=${2:?usage: make-refs.sh [-s seeds]} ;;
"")	;;
*)	echo "usage: make-refs.sh [-s seeds]" >&2; exit 64 ;;
esac

LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-/work/oracle/llama.cpp}
libdir=$LLAMA_CPP_DIR/build/bin
out=tests/data/oracle
spm=tests/data/vocab/ggml-vocab-llama-spm.gguf
qwen=tests/data/vocab/ggml-vocab-qwen2.gguf

[ -f lib/sa.h ] || { echo "make-refs.sh: run from the top of the sa tree" >&2; exit 64; }
[ -f "$libdir/libllama.so" ] || [ -f "$libdir/libllama.a" ] ||
	{ echo "make-refs.sh: no libllama in $libdir: build llama.cpp first" >&2; exit 66; }

# ggml's CPU kernels as built for any x86-64 with AVX2/FMA/F16C, without
# AVX-512.  A -march=native build on a CPU with AVX512-FP16 (the default
# build/) sums F16 dot products in F16 (_mm512_fmadd_ph in ggml's
# simd-mappings.h), which rounds the logits of F16 models to F16 and moves
# them by ~1e-3: a property of that build, not of llama.cpp's arithmetic.
# Only libggml-cpu differs, so only that target is built, and it is put
# first on the library path.
portable=${LLAMA_PORTABLE_BUILD:-$LLAMA_CPP_DIR/build-portable}
if [ ! -f "$portable/bin/libggml-cpu.so" ]; then
	cmake -S "$LLAMA_CPP_DIR" -B "$portable" -DCMAKE_BUILD_TYPE=Release \
	    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF \
	    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
	    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=OFF >/dev/null
	cmake --build "$portable" --target ggml-cpu -j"$(nproc)" >/dev/null
fi
LD_LIBRARY_PATH=$portable/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra \
    -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
    -o "$tmp/dump-logits" scripts/oracle/dump-logits.c \
    -L"$libdir" -lllama -lggml -lggml-base -Wl,-rpath,"$libdir" -lm
make -s tests/helpers/mkmodel

for v in "$spm" "$qwen"; do
	[ -f "$v" ] || cp "$LLAMA_CPP_DIR/models/$(basename "$v")" "$v"
done

commit=$(git -C "$LLAMA_CPP_DIR" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
sysinfo=$("$tmp/dump-logits" -s)
case $sysinfo in *"AVX512 = 1"*)
	echo "make-refs.sh: ggml-cpu still uses AVX-512: $sysinfo" >&2; exit 70;;
esac

# 24 ids from the built-in vocab of mkmodel (406 tokens), BOS first, drawn
# by a small linear congruential generator (exact in awk's doubles).
ids() {
	awk -v seed="$1" -v n=24 -v v=406 'BEGIN {
		x = seed; printf "1"
		for (i = 1; i < n; i++) { x = (x * 75 + 74) % 65537
			printf " %d", 3 + x % (v - 3) }
		print "" }'
}

# run NAME MKMODEL-ARGS SEED MINGAP TEXT DUMP-LOGITS-ARGS...: make the model
# with --seed SEED, write the reference ("MODEL" in the arguments stands for
# the model's path).  If llama.cpp's greedy path passes a near tie (top-1
# minus top-2 below MINGAP), the next seed (SEED+1000, ...) is tried: there
# the choice is decided by rounding noise (see below), not by correctness.
run() {
	name=$1 args=$2 seed=$3 mingap=$4 text=$5
	shift 5
	case $name in ${ONLY:-*}) ;; *) return 0 ;; esac
	model=$tmp/$name.gguf
	for a; do
		shift
		[ "$a" = MODEL ] && a=$model
		set -- "$@" "$a"
	done
	tries=0
	while :; do
		tests/helpers/mkmodel $args --seed "$seed" -o "$model"
		{
			echo "# $name: llama.cpp $commit, made by scripts/oracle/make-refs.sh"
			echo "# $sysinfo"
			echo "mkmodel $args --seed $seed"
			[ -z "$text" ] || echo "text $text"
			"$tmp/dump-logits" -t 2 -n 64 "$@"
		} > "$tmp/$name.ref"
		gap=$(awk '$1 == "gap" { m = $3; for (i = 4; i <= NF; i++) if ($i < m) m = $i; print m }' \
		    "$tmp/$name.ref")
		awk -v g="$gap" -v m="$mingap" 'BEGIN { exit !(g >= m) }' && break
		tries=$((tries + 1))
		[ "$tries" -lt 100 ] ||
			{ echo "make-refs.sh: $name: no seed without a near tie" >&2; exit 70; }
		seed=$((seed + 1000))
	done
	mv "$tmp/$name.ref" "$out/$name.ref"
	rm -f "$model"
	echo "$out/$name.ref: seed $seed, smallest greedy gap $gap"
}

# The smallest top-1 minus top-2 gap allowed on the greedy path, by type.
# libsa rounds the input of every matrix product to the weight type as ggml
# does, but the F32 values it rounds differ from ggml's in the last bits
# (another order of summation), so now and then an element falls on the
# other side of a rounding boundary: one F16 or BF16 ulp, one Q8_0 step.
# Random untrained models amplify that from layer to layer.  The sweep (-s 4,
# 24 models a type) measured at most 1.8e-6 of the largest logit for F32,
# 7.5e-4 for F16, 5.9e-3 for BF16 and 2.2e-2 for Q8_0; llama.cpp's own
# native (AVX-512) and portable builds differ by as much (BF16 3.4e-3) and
# do not even agree on the greedy continuation of every BF16 or Q8_0 model.
# Greedy paths through closer ties than these are not a fair test.
mingap() {
	case $1 in
	*-f32-*) echo 0.001 ;;
	*-f16-*) echo 0.01 ;;
	# random Q2_K models are flat: few keep a lead of 0.05 for 64 tokens,
	# and libsa follows llama.cpp's Q8_K rounding to about 1e-6 (measured)
	*-q2_k-*) echo 0.02 ;;
	*) echo 0.05 ;;
	esac
}

# ref NAME MKMODEL-ARGS SEED: a model on mkmodel's built-in vocab, 24 ids;
# the logits of every position and of greedy steps 21, 42 and 63.
ref() {
	run "$1" "$2" "$3" "$(mingap "$1")" "" -g 21 MODEL $(ids "$3")
}

# reftext NAME MKMODEL-ARGS SEED EVERY TEXT: the ids are llama.cpp's
# tokenization of TEXT; logits of the last position and the last greedy
# step, and every EVERY before them (0: none).
reftext() {
	run "$1" "$2" "$3" "$(mingap "$1")" "$5" -e "$4" -g "$4" -p "$5" MODEL
}

# -s N: measure instead.  N seeds of each type, architecture and size go to
# a temporary directory and test_oracle -v reports libsa's errors on them.
if [ -n "$sweep" ]; then
	make -s tests/unit/test_oracle
	out=$tmp/sweep
	mkdir -p "$out"
	for type in f32 f16 bf16 q8_0; do
		for arch in llama qwen2; do
			for shape in "64 2 4 2" "128 3 8 4" "256 4 8 8"; do
				set -- $shape
				for s in $(seq 1 "$sweep"); do
					run "$arch-$type-d$1-s$s" \
					    "--arch $arch --type $type --dim $1 --layers $2 --heads $3 --kv-heads $4" \
					    "$s" 0 "" -g 21 MODEL $(ids "$s") >/dev/null
				done
			done
		done
	done
	tests/unit/test_oracle -v "$out"/*.ref > "$tmp/sweep.txt" 2>&1 || :
	grep -v '^FAIL' "$tmp/sweep.txt"
	grep '^FAIL' "$tmp/sweep.txt" || :
	grep -v '^FAIL' "$tmp/sweep.txt" | awk '/smallest gap/ { t = $2; e = $6 + 0; if (e > max[t]) max[t] = e; n[t]++
		if ($0 ~ /DIVERGED/) div[t]++ }
	    END { for (t in n) printf "%-5s %3d models: max rel err %.3g, greedy diverged in %d\n",
		t, n[t], max[t], div[t] + 0 }'
	exit 0
fi

mkdir -p "$out"
[ -n "${ONLY:-}" ] || rm -f "$out"/*.ref

# name: arch-type-dim-attention-output[-vocab]; mha = as many kv heads as
# heads, gqa = fewer.  Some models move eps and the RoPE base far from the
# defaults, so that reading either key wrongly shows in the logits.
ref llama-f32-d64-mha-tied \
    "--arch llama --type f32 --dim 64 --layers 2 --heads 4 --kv-heads 4 --tied" 11
ref llama-f32-d128-gqa-untied \
    "--arch llama --type f32 --dim 128 --layers 3 --heads 8 --kv-heads 2 --rope-base 500 --eps 0.01" 12
ref qwen2-f32-d64-gqa-tied \
    "--arch qwen2 --type f32 --dim 64 --layers 2 --heads 4 --kv-heads 2 --tied --eps 1e-6" 13
ref qwen2-f32-d256-mha-untied \
    "--arch qwen2 --type f32 --dim 256 --layers 4 --heads 4 --kv-heads 4 --rope-base 1000000 --eps 0.03" 14

ref llama-f16-d128-gqa-untied \
    "--arch llama --type f16 --dim 128 --layers 3 --heads 8 --kv-heads 2" 21
ref qwen2-f16-d64-mha-tied \
    "--arch qwen2 --type f16 --dim 64 --layers 2 --heads 4 --kv-heads 4 --tied" 22

# Untied random models rarely keep a clear lead for 64 tokens; tied ones,
# which tend to repeat themselves, do: the looser types use them.
ref llama-bf16-d64-gqa-tied \
    "--arch llama --type bf16 --dim 64 --layers 2 --heads 4 --kv-heads 2 --tied" 31
ref qwen2-bf16-d128-gqa-tied \
    "--arch qwen2 --type bf16 --dim 128 --layers 2 --heads 8 --kv-heads 4 --tied" 32

ref llama-q8_0-d256-mha-tied \
    "--arch llama --type q8_0 --dim 256 --layers 4 --heads 8 --kv-heads 8 --tied" 41
ref qwen2-q8_0-d128-gqa-tied \
    "--arch qwen2 --type q8_0 --dim 128 --layers 2 --heads 4 --kv-heads 1 --tied" 42

# The block types of llama-quantize's presets, written by mkmodel (rounding
# to nearest; llama.cpp reads any valid blocks the same way).  K-quants need
# rows of 256.  Their logits are long lines: only those of the first and
# last position and of the last greedy step are kept.
refq() {
	run "$1" "$2" "$3" "$(mingap "$1")" "" -e 23 -g 63 MODEL $(ids "$3")
}
refq llama-q4_0-d256-gqa-tied \
    "--arch llama --type q4_0 --dim 256 --layers 2 --heads 4 --kv-heads 2 --tied" 61
refq qwen2-q4_1-d256-mha-tied \
    "--arch qwen2 --type q4_1 --dim 256 --layers 2 --heads 4 --kv-heads 4 --tied" 62
refq llama-q5_0-d256-mha-tied \
    "--arch llama --type q5_0 --dim 256 --layers 2 --heads 8 --kv-heads 8 --tied" 63
refq qwen2-q5_1-d256-gqa-tied \
    "--arch qwen2 --type q5_1 --dim 256 --layers 2 --heads 4 --kv-heads 2 --tied" 64
refq llama-q2_k-d256-gqa-tied \
    "--arch llama --type q2_k --dim 256 --layers 2 --heads 4 --kv-heads 2 --tied" 71
refq qwen2-q3_k-d256-mha-tied \
    "--arch qwen2 --type q3_k --dim 256 --layers 2 --heads 4 --kv-heads 4 --tied" 72
refq llama-q4_k-d256-gqa-tied \
    "--arch llama --type q4_k --dim 256 --layers 2 --heads 8 --kv-heads 2 --tied" 73
refq qwen2-q5_k-d256-gqa-tied \
    "--arch qwen2 --type q5_k --dim 256 --layers 2 --heads 4 --kv-heads 1 --tied" 74
refq llama-q6_k-d256-mha-tied \
    "--arch llama --type q6_k --dim 256 --layers 2 --heads 4 --kv-heads 4 --tied" 75

# Real vocabularies, from a text: llama.cpp's tokenization is checked too.
# The vocabularies are large, so only the logits of the last position and
# the last step are kept (SPM, 32000 tokens) or none (Qwen2, 151k): the
# greedy continuation still runs through the whole output matrix.
text='Hello world! Ça va?  naïve café, 3.14159 and 日本語 🙂 -- the end.'
reftext llama-f32-d64-gqa-untied-spm \
    "--arch llama --type f32 --dim 64 --layers 2 --heads 4 --kv-heads 2 --vocab $spm" \
    51 1000 "$text"
reftext qwen2-q8_0-d64-mha-tied-bpe \
    "--arch qwen2 --type q8_0 --dim 64 --layers 2 --heads 4 --kv-heads 4 --tied --vocab $qwen" \
    52 0 "$text I'm 12345 don't"

du -ch "$out"/*.ref | tail -n 1
