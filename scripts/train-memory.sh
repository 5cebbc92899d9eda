#!/bin/sh
# Train a least-squares memory adapter (sa-adapter(5), --kind lsq) for the
# default base model on the seen tasks (half of their classification
# episodes with new label words), open-vocabulary random mappings of up to
# 255 pairs over up to 16 segments, and text.  Resumable like
# scripts/train-adapter.sh: run it again with the same arguments to go on
# from run/memory.gguf.ckpt.  See data/train/README.md.
set -e
cd "$(dirname "$0")/.."
seen=$(awk -F '\t' 'NR > 1 && $2 == "seen" { printf " --task data/tasks/%s", $1 }' data/tasks/TASKS.tsv)
case " $* " in
*" --init "* | *" --init="*) new= ;;
*) new="--kind lsq --d-key 64 --lambda 1" ;;
esac
mkdir -p run
exec bin/sa-train --adapter -m "${SA_MODEL:-data/model.gguf}" $seen --map-vocab --rename 0.5 \
    --text data/corpus/train.txt.gz $new --mats attn_output,ffn_down \
    --steps 2000 --batch-tokens 8192 --lr 1e-3 --warmup 20 \
    --mix 0.2,0.4,0.4 --kmax 256 --text-segs 4 --gate-lr 10 \
    --seed 1 --ckpt run/memory.gguf.ckpt --ckpt-every 25 --eval-every 100 \
    -o run/memory.gguf --resume "$@"
