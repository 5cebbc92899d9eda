#!/bin/sh
# Training speed: tokens/s of pretraining and adapter training on a model
# of about 5M parameters (d 256, 6 layers, 8 heads, 4 KV heads, vocab 4096,
# context 512), the FLOPs per token this implies, their share of the
# machine's sgemm rate measured in the same run, and peak memory.
#
# Then adapter training on random bases of TinyLlama's shape (d 2048, 22
# layers, 32 heads, 4 KV heads, FFN 5632, the 32000-token Llama vocab) in
# F16, Q8_0 and, with llama.cpp's llama-quantize in LLAMA_CPP_DIR (default
# ~/.cache/sa-llama.cpp; see bench-compare.sh), Q4_K_M: contexts of 512
# tokens (--seq 512), one episode per thread and step, 3 steps.  Per base:
# tokens/s, peak memory against the file's size, and how many times the
# forward passes of its tokens a step takes (the inference engine's prefill
# rate over 512 tokens, tests/helpers/bench, divided by training's).
# -s picks the sets (default f16,q8_0,q4_k_m; "" none); -d DIR keeps the
# models in DIR, made there when missing.
# usage: scripts/bench-train.sh [-t THREADS] [-s SETS] [-d DIR] [--dry-run]
set -eu
cd "$(dirname "$0")/.."
prog=bench-train
. "$(dirname "$0")/bench-common.sh"
threads=0 dry=0 sets=f16,q8_0,q4_k_m dir=
while [ $# -gt 0 ]; do
	case $1 in
	-t) threads=$2; shift 2 ;;
	-s) sets=$2; shift 2 ;;
	-d) dir=$2; shift 2 ;;
	--dry-run) dry=1; shift ;;
	*) echo "usage: scripts/bench-train.sh [-t THREADS] [-s SETS] [-d DIR] [--dry-run]" >&2; exit 64 ;;
	esac
done
bench_sets "$sets" "f16 q8_0 q4_k_m"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
dir=${dir:-$out}
if [ $dry = 1 ]; then
	shape="--dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32" d=32 L=2 H=4 Hk=2 ff=128 T=32 steps=2 bt=256
	tl="--dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 192 --ctx 64" tlT=63 k=8 sets=f16,q8_0
else
	shape="--dim 256 --layers 6 --heads 8 --kv-heads 4 --ctx 512" d=256 L=6 H=8 Hk=4 ff=704 T=512 steps=4 bt=16384
	tl="--dim 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 --ctx 2048" tlT=512 k=64
fi
V=$(awk 'NR > 1' data/tokenizer/sa4k.tsv | wc -l)
zcat data/corpus/valid.txt.gz > "$out/text.txt"

peak() { awk '/Maximum resident/ { printf "%.0f", $NF / 1024 }' "$1"; }
rate() {  # median tok/s of all steps but the first
	grep '"tok_per_s"' "$1" | sed 's/.*"tok_per_s":\([0-9.]*\).*/\1/' | tail -n +2 | sort -n |
	    awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : 0 }'
}

sgemm=$(tests/helpers/bench-sgemm 1024 "$threads" 10)
/usr/bin/time -v bin/sa-train --pretrain --vocab data/tokenizer/sa4k.tsv --text "$out/text.txt" \
    --pool data/pools $shape --steps $steps --batch-tokens $bt --micro 8 --eval-every 0 \
    --mix 1,0,0 -t "$threads" -q -o "$out/base.gguf" 2> "$out/pre.time"
/usr/bin/time -v bin/sa-train --adapter -m "$out/base.gguf" --pool data/pools --text "$out/text.txt" \
    --mix 0,0,1 --kmin 16 --kmax 16 --steps $steps --batch-tokens $bt --eval-every 0 \
    -t "$threads" -q -o "$out/adapter.gguf" 2> "$out/ad.time"
sgemm2=$(tests/helpers/bench-sgemm 1024 "$threads" 10)

pre=$(rate "$out/base.gguf.ckpt/log.jsonl")
ad=$(rate "$out/adapter.gguf.ckpt/log.jsonl")
awk -v d=$d -v L=$L -v H=$H -v Hk=$Hk -v ff=$ff -v V=$V -v T=$T -v pre="$pre" -v ad="$ad" \
    -v g1="$sgemm" -v g2="$sgemm2" -v m1="$(peak "$out/pre.time")" -v m2="$(peak "$out/ad.time")" 'BEGIN {
	dh = d / H
	lin = L * (d * d + 2 * d * Hk * dh + d * d + 3 * d * ff)   # q, k, v, o, gate, up, down
	P = lin + V * d                                            # the tied output is a product too
	attn = 12 * L * T * d                                      # QK^T and PV, full T x T, fwd + bwd
	fpt = 6 * P + attn
	g = (g1 + g2) / 2
	printf "model: %d parameters in products (%d in the layers), %.1f MFLOP per trained token\n", P, lin, fpt / 1e6
	printf "sgemm: %.1f GFLOP/s (before %.1f, after %.1f)\n", g, g1, g2
	printf "pretraining:      %8.0f tok/s  %5.1f GFLOP/s  %4.1f%% of sgemm  peak %d MiB\n", pre, pre * fpt / 1e9, 100 * pre * fpt / 1e9 / g, m1
	# adapter training: forward and input gradients of the frozen base for the
	# queries (about 4/6 of a training step), and a forward over the context
	printf "adapter training: %8.0f tok/s (context and query tokens)  peak %d MiB\n", ad, m2
}'

# ------------------------------------------------ TinyLlama-shaped bases
n=$threads
[ "$n" -gt 0 ] || n=$(nproc)
quant=${LLAMA_CPP_DIR:-$HOME/.cache/sa-llama.cpp}/build/bin/llama-quantize
spm=tests/data/vocab/ggml-vocab-llama-spm.gguf
for s in $(echo "$sets" | tr , ' '); do
	m=$dir/tinyllama-shape-$s.gguf
	case $s in
	f16|q8_0) [ -f "$m" ] || tests/helpers/mkmodel $tl --vocab $spm -t $s -o "$m" 2>/dev/null ;;
	q4_k_m)
		if [ ! -x "$quant" ]; then
			echo "bench-train: no $quant: Q4_K_M left out" >&2
			continue
		fi
		f16=$dir/tinyllama-shape-f16.gguf
		[ -f "$f16" ] || tests/helpers/mkmodel $tl --vocab $spm -t f16 -o "$f16" 2>/dev/null
		[ -f "$m" ] || LD_LIBRARY_PATH=$(dirname "$quant") "$quant" "$f16" "$m" Q4_K_M \
		    >"$out/quantize.log" 2>&1 ;;
	esac
	/usr/bin/time -v bin/sa-train --adapter -m "$m" --pool data/pools --text "$out/text.txt" \
	    --mix 0,0,1 --kmin $k --kmax $k --seq $tlT --steps 3 --batch-tokens $((n * 500)) \
	    --eval-every 0 -t "$threads" -q -o "$out/tl-$s.gguf" 2> "$out/tl.time"
	fwd=$(tests/helpers/bench -t $n -p $tlT -n 1 "$m" | awk '/prefill/ { print $6 }')
	awk -v s=$s -v r="$(rate "$out/tl-$s.gguf.ckpt/log.jsonl")" -v f="$fwd" -v m="$(peak "$out/tl.time")" \
	    -v file="$(wc -c < "$m")" 'BEGIN {
		printf "adapter, TinyLlama shape, %-6s: %6.1f tok/s  step = %.2f x its forward passes (prefill %.0f tok/s)  peak %d MiB = file + %d MiB\n",
		    s, r, f / r, f, m, m - file / 1048576
	}'
done
