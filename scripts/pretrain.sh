#!/bin/sh
# Pretrain the default base model (data/model.gguf) on the project's data.
# Long: run it in the background and again with the same arguments to go on
# from the last checkpoint (run/base.gguf.ckpt).  These defaults are stage 1
# of data/model.gguf; stages 2-4 went on with --init, --start-step 0, a new
# --steps and a fourth --mix share of repeated spans, as data/train/README.md
# lists.  To go on from the shipped weights:
#   scripts/pretrain.sh --init data/model.gguf --start-step 0 --steps N ...
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
