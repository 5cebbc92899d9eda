#!/bin/sh
# Train the default adapter (data/adapter.gguf) for the default base model
# on the seen tasks, random mappings and text (data/SPLIT.md); the unseen
# tasks are never read.  Resumable like scripts/pretrain.sh: run it again
# with the same arguments to go on from run/adapter.gguf.ckpt.  An adapter
# trained for an earlier checkpoint of the base is a good start (the gate
# bias then comes from it):
#   scripts/train-adapter.sh --init OLD.gguf --rebind
# Gates start at sigmoid(1) = 0.73 and learn 10 times faster than the rest,
# and contexts reach 128 demonstrations or 4 text segments, so that the
# context state stays in bounds over long contexts.  See sa-train(1) and
# data/train/README.md for how data/adapter.gguf was made.
set -e
cd "$(dirname "$0")/.."
seen=$(awk -F '\t' 'NR > 1 && $2 == "seen" { printf " --task data/tasks/%s", $1 }' data/tasks/TASKS.tsv)
case " $* " in
*" --init "* | *" --init="*) gate= ;;
*) gate="--gate-bias 1" ;;
esac
mkdir -p run
exec bin/sa-train --adapter -m "${SA_MODEL:-data/model.gguf}" $seen --pool data/pools \
    --text data/corpus/train.txt.gz \
    --rank 16 --chunk 64 --steps 400 --batch-tokens 8192 --lr 1e-3 --warmup 10 \
    --mix 0.15,0.65,0.2 --kmax 128 --text-segs 4 $gate --gate-lr 10 \
    --seed 1 --ckpt run/adapter.gguf.ckpt --ckpt-every 50 --eval-every 100 \
    -o run/adapter.gguf --resume "$@"
