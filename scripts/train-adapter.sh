#!/bin/sh
# Train an adapter of the default kind (a least-squares memory of records
# alone, keyed by attn_output's input: sa-adapter(5)) for the default base
# model, on the seen tasks with half their labels renamed, mappings of new
# words (up to 255 pairs, half of them shown once each) and text of up to 8
# passages (data/SPLIT.md); the unseen tasks are never read.  Resumable
# like scripts/pretrain.sh: run it again with the same arguments to go on
# from run/adapter.gguf.ckpt.  Without --init it starts from sa-init's
# untrained memory, which already recalls pairs; to train the shipped one
# further:
#   scripts/train-adapter.sh --init data/adapter.gguf --lr 5e-4 --seed N
# (a new seed, and a new run/ folder, for each schedule).  data/train/README.md
# tells how data/adapter.gguf was made, schedule by schedule.
set -e
cd "$(dirname "$0")/.."
model=${SA_MODEL:-data/model.gguf}
seen=$(awk -F '\t' 'NR > 1 && $2 == "seen" { printf " --task data/tasks/%s", $1 }' data/tasks/TASKS.tsv)
mkdir -p run
case " $* " in
*" --init "* | *" --init="*) init= ;;
*)	[ -f run/adapter-init.gguf ] ||
	    bin/sa-init -m "$model" --kind lsq --key-source input --d-key 256 -o run/adapter-init.gguf
	init="--init run/adapter-init.gguf" ;;
esac
exec bin/sa-train --adapter -m "$model" $init $seen --map-vocab --rename 0.5 \
    --text data/corpus/train.txt.gz --steps 1500 --batch-tokens 8192 --lr 1e-3 \
    --warmup 20 --mix 0.25,0.2,0.55 --kmax 256 --text-segs 8 --gate-lr 10 \
    --seed 1 --ckpt run/adapter.gguf.ckpt --ckpt-every 25 --eval-every 100 \
    -o run/adapter.gguf --resume "$@"
