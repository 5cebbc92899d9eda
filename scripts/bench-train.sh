#!/bin/sh
# Training speed: tokens/s of pretraining and adapter training on a model
# of about 5M parameters (d 256, 6 layers, 8 heads, 4 KV heads, vocab 4096,
# context 512), the FLOPs per token this implies, their share of the
# machine's sgemm rate measured in the same run, and peak memory.
# usage: scripts/bench-train.sh [-t THREADS] [--dry-run]
set -eu
cd "$(dirname "$0")/.."
threads=0 dry=0
while [ $# -gt 0 ]; do
	case $1 in
	-t) threads=$2; shift 2 ;;
	--dry-run) dry=1; shift ;;
	*) echo "usage: scripts/bench-train.sh [-t THREADS] [--dry-run]" >&2; exit 64 ;;
	esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ $dry = 1 ]; then
	shape="--dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32" d=32 L=2 H=4 Hk=2 ff=128 T=32 steps=2 bt=256
else
	shape="--dim 256 --layers 6 --heads 8 --kv-heads 4 --ctx 512" d=256 L=6 H=8 Hk=4 ff=704 T=512 steps=4 bt=16384
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
