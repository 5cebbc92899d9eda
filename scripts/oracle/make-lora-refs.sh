#!/bin/sh
# make-lora-refs.sh - write the llama.cpp references of the LoRA export tests.
#
#   scripts/oracle/make-lora-refs.sh       (from the top of the tree, after make)
#
# For each case below: make a model with tests/helpers/mkmodel, an adapter
# with a random, non-zero W1 (sa-init --w1-scale), two deltas of the
# demonstrations in tests/data/oracle/lora/ (sa-encode), and their weighted
# sum exported by sa-export as a llama.cpp LoRA GGUF.  llama.cpp (built in
# LLAMA_CPP_DIR, default /work/oracle/llama.cpp) then runs the model with the
# LoRA through scripts/oracle/lora-greedy.c, and without it, and the result
# goes to tests/data/oracle/lora/NAME.ref.  tests/sa-export.bats makes the
# same files again and checks that sa-run -d gives what llama.cpp gave, so CI
# needs no llama.cpp.
#
# A reference is text, one record a line:
#   mkmodel ARGS...        how to make the model
#   init ARGS...           sa-init options (besides -m and -o)
#   delta NAME FILE        sa-encode FILE into NAME.delta (default options)
#   apply NAME:S ...       the deltas and scales: sa-run -d NAME.delta:S ...,
#                          sa-export NAME.delta:S ...
#   prompt TEXT
#   n N                    tokens generated
#   tokens N id...         llama.cpp's tokenization of the prompt
#   logprob X              the prompt's log-likelihood with the LoRA
#   greedy G id...         greedy continuation with the LoRA
#   gap G d...             its top-1 minus top-2 logit at each step
#   text HEX               the continuation's bytes
#   base-logprob X         the same without the LoRA
#   base-text HEX
set -eu

LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-/work/oracle/llama.cpp}
libdir=$LLAMA_CPP_DIR/build/bin
out=tests/data/oracle/lora

[ -f lib/sa.h ] || { echo "make-lora-refs.sh: run from the top of the sa tree" >&2; exit 64; }
[ -f "$libdir/libllama.so" ] ||
	{ echo "make-lora-refs.sh: no libllama in $libdir: build llama.cpp first" >&2; exit 66; }

# As make-refs.sh: a ggml-cpu built without AVX-512, whose F16 dot products
# do not round to F16 (see there); made by make-refs.sh when missing.
portable=${LLAMA_PORTABLE_BUILD:-$LLAMA_CPP_DIR/build-portable}
[ -f "$portable/bin/libggml-cpu.so" ] ||
	{ echo "make-lora-refs.sh: no $portable: run scripts/oracle/make-refs.sh first" >&2; exit 66; }
LD_LIBRARY_PATH=$portable/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra \
    -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
    -o "$tmp/lora-greedy" scripts/oracle/lora-greedy.c \
    -L"$libdir" -lllama -lggml -lggml-base -Wl,-rpath,"$libdir" -lm
make -s bin/sa-init bin/sa-encode bin/sa-export bin/sa-run tests/helpers/mkmodel

commit=$(git -C "$LLAMA_CPP_DIR" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
n=24

# Smallest margin between the best and the second-best logit that a greedy
# step may have: the two engines round differently (F16 weights: by ~1e-3),
# and a closer call could go either way.  Exact ties (gap 0: identical
# output rows) are safe, both take the lowest id.
min_gap=0.02

# ref NAME MKMODEL-ARGS INIT-ARGS APPLY PROMPT...: the first prompt whose
# greedy steps keep min_gap is the one kept.
ref() {
	name=$1 margs=$2 iargs=$3 apply=$4
	shift 4
	prompts=$(for p; do printf '%s\n' "$p"; done)
	m=$tmp/$name.gguf a=$tmp/$name.adapter.gguf
	tests/helpers/mkmodel $margs -o "$m"
	bin/sa-init -m "$m" $iargs -o "$a"
	for f in "$out"/demos-*.tsv; do
		d=$(basename "$f" .tsv)
		bin/sa-encode -q -m "$m" -a "$a" -o "$tmp/$d.delta" "$f"
	done
	set --
	for x in $apply; do
		set -- "$@" "$tmp/${x%%:*}.delta:${x#*:}"
	done
	bin/sa-export -m "$m" -a "$a" -o "$tmp/$name.lora.gguf" "$@"
	prompt=
	while IFS= read -r p; do
		"$tmp/lora-greedy" -n $n -l "$tmp/$name.lora.gguf" "$m" "$p" > "$tmp/lora.out"
		if awk -v g=$min_gap '$1 == "gap" { for (i = 3; i <= NF; i++)
		    if ($i > 0 && $i < g) exit 1 }' "$tmp/lora.out"; then
			prompt=$p
			break
		fi
	done <<-EOF
	$prompts
	EOF
	[ -n "$prompt" ] || { echo "make-lora-refs.sh: $name: every prompt has a greedy step closer than $min_gap" >&2; exit 70; }
	"$tmp/lora-greedy" -n $n "$m" "$prompt" > "$tmp/base.out"
	# A reference where the LoRA changes nothing would prove nothing.
	if [ "$(sed -n 's/^text //p' "$tmp/lora.out")" = "$(sed -n 's/^text //p' "$tmp/base.out")" ]; then
		echo "make-lora-refs.sh: $name: the LoRA does not change the continuation" >&2
		exit 70
	fi
	{
		echo "# $name: llama.cpp $commit, made by scripts/oracle/make-lora-refs.sh"
		echo "mkmodel $margs"
		echo "init $iargs"
		for f in "$out"/demos-*.tsv; do
			echo "delta $(basename "$f" .tsv) $f"
		done
		echo "apply $apply"
		echo "prompt $prompt"
		echo "n $n"
		cat "$tmp/lora.out"
		sed -n 's/^logprob /base-logprob /p; s/^text /base-text /p' "$tmp/base.out"
	} > "$tmp/$name.ref"
	mv "$tmp/$name.ref" "$out/$name.ref"
	echo "$out/$name.ref"
}

ref llama-f32-gqa \
    "--arch llama --type f32 --dim 64 --layers 2 --heads 4 --kv-heads 2 --seed 61" \
    "-r 4 -C 8 --mats all --seed 3 --w1-scale 0.5" \
    "demos-a:0.75 demos-b:-0.5" "the film was" "a great cast" "we left" "so warm" "it was fun"
ref llama-f16-mha \
    "--arch llama --type f16 --dim 128 --layers 2 --heads 4 --kv-heads 4 --seed 62" \
    "-r 8 -C 16 --seed 4 --w1-scale 0.5" \
    "demos-a:1" "the soup was" "a great cast" "we left" "so warm" "it was fun" "the plot"
ref qwen2-f32-gqa \
    "--arch qwen2 --type f32 --dim 64 --layers 2 --heads 4 --kv-heads 1 --seed 63" \
    "-r 4 -C 8 --mats attn_q,attn_v,ffn_up,ffn_down --seed 5 --w1-scale 0.5" \
    "demos-a:1 demos-b:1" "brilliant" "a great cast" "we left" "so warm" "it was fun" "the plot"
