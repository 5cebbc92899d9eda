#!/bin/sh
# Pretrain the default base model (data/model.gguf) on the project's data.
# Long: run it in the background and again with the same arguments to go on
# from the last checkpoint (run/base.gguf.ckpt).  On a machine without that
# checkpoint, go on from saved weights: data/model.gguf is step 1449 (see
# data/train/README.md), e.g. scripts/pretrain.sh --init data/model.gguf
# --start-step 0 --steps N for a new schedule of N steps.  A base that also
# copies repeated text, data/train/base-copy.gguf, came from adding
# repeated-span episodes (--mix T,K,M,R); data/train/README.md has how.
# See sa-train(1).
set -e
cd "$(dirname "$0")/.."
seen=$(awk -F '\t' 'NR > 1 && $2 == "seen" { printf " --task data/tasks/%s", $1 }' data/tasks/TASKS.tsv)
mkdir -p run
exec bin/sa-train --pretrain --vocab data/tokenizer/sa4k.tsv \
    --text data/corpus/train.txt.gz --valid data/corpus/valid.txt.gz \
    $seen --pool data/pools \
    --dim 256 --layers 6 --heads 8 --kv-heads 4 --ctx 512 --type f16 \
    --steps 2000 --batch-tokens 16384 --micro 8 --lr 1e-3 --min-lr 1e-4 \
    --warmup 100 --mix 0.4,0.3,0.3 --seed 1 \
    --ckpt run/base.gguf.ckpt --ckpt-every 25 --eval-every 50 \
    -o run/base.gguf --resume "$@"
