#!/usr/bin/env bats
# Training: gradients, agreement with the inference engine, and sa-train runs
# on tiny models (loss goes down, resume is exact, signals checkpoint, an
# adapter learns to carry context into the weights).

bats_require_minimum_version 1.5.0

setup_file() {
	cd "$BATS_TEST_DIRNAME/.."
	export D="$BATS_FILE_TMPDIR"
	tests/helpers/mkmodel -o "$D/vocab.gguf"
	# a small text of random sentences over a few words
	awk 'BEGIN { srand(1); split("the cat sat on a mat and dog ran to big red house with blue car", w, " ");
		for (i = 0; i < 3000; i++) { s = w[int(rand() * 16) + 1];
			for (j = 1; j < 12; j++) s = s " " w[int(rand() * 16) + 1]; print s } }' > "$D/text.txt"
	mkdir -p "$D/pool"
	printf 'apple\nbread\nchair\ndoor\neagle\nfrost\ngrape\nhill\n' > "$D/pool/words.txt"
	printf 'red\nblue\ngreen\nbig\nsmall\n' > "$D/pool/labels.txt"
}

# The last evaluation in a run's log $1: with the delta, half of all answers
# more are right than zero-shot.
delta_beats_zero_shot() {
	local last sa zs
	last=$(grep '"sa_acc"' "$1" | tail -1)
	sa=$(echo "$last" | sed 's/.*"sa_acc":\([^,]*\).*/\1/')
	zs=$(echo "$last" | sed 's/.*"zero_shot_acc":\([^,]*\).*/\1/')
	echo "with delta $sa, zero-shot $zs"
	awk -v a="$sa" -v b="$zs" 'BEGIN { exit !(a >= b + 0.5) }'
}

setup() {
	bats_load_library bats-support
	bats_load_library bats-assert
	cd "$BATS_TEST_DIRNAME/.."
	D="$BATS_FILE_TMPDIR"
	# an adapter learns one random label a context, on a tiny random base
	MAP="--pool $D/pool --mix 0,0,1 --kmin 1 --kmax 1 --steps 160 --batch-tokens 512 --eval-every 160 --lr 1e-2 --warmup 10 -t 1 -q"
	TINY="--pretrain --vocab $D/vocab.gguf --text $D/text.txt --pool $D/pool --dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32 --batch-tokens 512 --micro 4 --eval-every 0 -t 1 -q"
}

@test "training gradients match finite differences (every op, whole model, side path, context mapping)" {
	run tests/unit/test_train
	assert_success
	assert_output --partial " 0 failed"
}

@test "the training forward and the inference engine give the same logits" {
	run tests/unit/test_trainsave "$D/vocab.gguf" "$BATS_TEST_TMPDIR"
	assert_success
}

@test "sa-train --pretrain lowers the loss by more than 1.5 nats in 30 steps" {
	run bin/sa-train $TINY --steps 30 --lr 3e-3 --warmup 5 -o "$BATS_TEST_TMPDIR/m.gguf"
	assert_success
	log="$BATS_TEST_TMPDIR/m.gguf.ckpt/log.jsonl"
	first=$(grep -m1 '"loss"' "$log" | sed 's/.*"loss":\([^,]*\).*/\1/')
	last=$(grep '"loss"' "$log" | tail -1 | sed 's/.*"loss":\([^,]*\).*/\1/')
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(a - b > 1.5) }'
	# the result loads and runs in the engine
	run bin/sa-run -m "$BATS_TEST_TMPDIR/m.gguf" -p "the cat" --score
	assert_success
}

@test "sa-train is deterministic for a seed, and a stopped and resumed run equals an uninterrupted one" {
	cd "$BATS_TEST_TMPDIR"
	A="$TINY --steps 12 --ckpt-every 4"
	"$OLDPWD"/bin/sa-train $A -o a.gguf
	"$OLDPWD"/bin/sa-train $A -o a2.gguf
	cmp a.gguf a2.gguf
	"$OLDPWD"/bin/sa-train $A -o b.gguf --run-steps 6
	! cmp -s a.gguf b.gguf
	"$OLDPWD"/bin/sa-train $A -o b.gguf --resume
	cmp a.gguf b.gguf
}

@test "the trainer's API: a resumed run ends as an uninterrupted one; errors are status codes" {
	run tests/unit/test_trainer "$D/vocab.gguf" "$D/text.txt" "$D/pool" "$BATS_TEST_TMPDIR"
	assert_success
	assert_output --partial " 0 failed"
}

@test "a data-parallel step gives the same gradient bits on 1, 2 or 3 workers" {
	run tests/unit/test_trainworkers
	assert_success
	assert_output --partial " 0 failed"
}

@test "sa-train gives the same bytes with 1 and 2 threads (pretraining and adapter training)" {
	cd "$BATS_TEST_TMPDIR"
	P="${TINY% -t 1 -q} --steps 6 --eval-every 3 -q"
	"$OLDPWD"/bin/sa-train $P -t 1 -o p1.gguf
	"$OLDPWD"/bin/sa-train $P -t 2 -o p2.gguf
	cmp p1.gguf p2.gguf
	cmp p1.gguf.ckpt/state.gguf p2.gguf.ckpt/state.gguf
	# the evaluations too: the logs differ in speed only
	diff <(sed 's/,"tok_per_s".*//' p1.gguf.ckpt/log.jsonl) <(sed 's/,"tok_per_s".*//' p2.gguf.ckpt/log.jsonl)
	"$OLDPWD"/tests/helpers/mkmodel --dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32 -o base.gguf
	A="--adapter -m base.gguf --pool $D/pool --text $D/text.txt --mix 0.4,0,0.6 --kmin 2 --kmax 12 --rank 4 --chunk 8 --steps 4 --batch-tokens 512 --eval-every 2 -q"
	"$OLDPWD"/bin/sa-train $A --text-segs 3 -t 1 -o a1.gguf
	"$OLDPWD"/bin/sa-train $A --text-segs 3 -t 2 -o a2.gguf
	cmp a1.gguf a2.gguf
	diff <(sed 's/,"tok_per_s".*//' a1.gguf.ckpt/log.jsonl) <(sed 's/,"tok_per_s".*//' a2.gguf.ckpt/log.jsonl)
	# text contexts of several segments are a different stream from one
	"$OLDPWD"/bin/sa-train $A -t 2 -o a3.gguf
	! cmp -s a1.gguf a3.gguf
}

@test "sa-train --resume at the end of the schedule writes the checkpoint's weights" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/bin/sa-train $TINY --steps 3 -o a.gguf
	"$OLDPWD"/bin/sa-train $TINY --steps 3 --ckpt a.gguf.ckpt -o b.gguf --resume
	cmp a.gguf b.gguf
	"$OLDPWD"/bin/sa-train $TINY --steps 1 --ckpt a.gguf.ckpt -o c.gguf --resume
	cmp a.gguf c.gguf
}

@test "SIGTERM saves a checkpoint, leaves no temporary file, and the run resumes" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/bin/sa-train $TINY --steps 100000 --ckpt-every 100000 -o s.gguf &
	pid=$!
	for i in $(seq 50); do [ -s s.gguf.ckpt/log.jsonl ] && break; sleep 0.1; done
	kill -TERM $pid
	st=0
	wait $pid || st=$?
	assert_equal "$st" 143
	[ -s s.gguf.ckpt/state.gguf ]
	[ -s s.gguf ]
	[ -z "$(find . -name '.*.*' -newer s.gguf.ckpt/log.jsonl -type f)" ]
	steps=$(grep -c '"loss"' s.gguf.ckpt/log.jsonl)
	run "$OLDPWD"/bin/sa-train $TINY --steps $((steps + 2)) --ckpt-every 100000 -o s.gguf --resume -v
	assert_success
	assert_output --partial "resumed from"
	[ "$(grep -c '"loss"' s.gguf.ckpt/log.jsonl)" -eq $((steps + 2)) ]
}

@test "sa-train --adapter: the delta carries the context's answer, zero-shot cannot" {
	# A random base knows none of the answers; each episode's demonstrations
	# share one random label, which only the delta can bring to the query.
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o base.gguf
	"$OLDPWD"/bin/sa-train --adapter -m base.gguf -o ad.gguf --rank 8 --chunk 16 $MAP
	delta_beats_zero_shot ad.gguf.ckpt/log.jsonl
	# and the tools agree: encode a demonstration, the delta picks its label
	printf 'input\tlabel\nchair\tgreen\n' > demo.tsv
	"$OLDPWD"/bin/sa-encode -q -m base.gguf -a ad.gguf -o d.delta demo.tsv
	with=$("$OLDPWD"/bin/sa-run -m base.gguf -d d.delta -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	without=$("$OLDPWD"/bin/sa-run -m base.gguf -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	echo "log-likelihood of the demonstrated label: $with with the delta, $without without"
	awk -v a="$with" -v b="$without" 'BEGIN { exit !(a > b + 3) }'
}

@test "sa-train --adapter --kind lsq: the memory's delta carries the context's answer, zero-shot cannot" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o base.gguf
	"$OLDPWD"/bin/sa-train --adapter -m base.gguf -o ad.gguf --kind lsq --d-key 16 $MAP
	run "$OLDPWD"/bin/sa-info -j ad.gguf
	assert_output --partial '"mapping":"lsq","rank":32,"d_key":16,'
	delta_beats_zero_shot ad.gguf.ckpt/log.jsonl
	printf 'input\tlabel\nchair\tgreen\n' > demo.tsv
	"$OLDPWD"/bin/sa-encode -q -m base.gguf -a ad.gguf -o d.delta demo.tsv
	with=$("$OLDPWD"/bin/sa-run -m base.gguf -d d.delta -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	without=$("$OLDPWD"/bin/sa-run -m base.gguf -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	echo "log-likelihood of the demonstrated label: $with with the delta, $without without"
	awk -v a="$with" -v b="$without" 'BEGIN { exit !(a > b + 3) }'
	# the memory's options are for a new memory adapter only
	run -64 "$OLDPWD"/bin/sa-train --adapter -m base.gguf -o x.gguf --pool "$D/pool" --kind lsq -r 4
	run -64 "$OLDPWD"/bin/sa-train --adapter -m base.gguf -o x.gguf --pool "$D/pool" --d-key 8
	run -64 "$OLDPWD"/bin/sa-train --adapter -m base.gguf -o x.gguf --pool "$D/pool" --init ad.gguf --kind lsq
}

@test "sa-train --adapter --kind lsq --value-offset 1: a key bound to the next value learns the mapping too" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o base.gguf
	"$OLDPWD"/bin/sa-train --adapter -m base.gguf -o ad.gguf --kind lsq --d-key 16 --value-offset 1 $MAP
	run "$OLDPWD"/bin/sa-info -j ad.gguf
	assert_output --partial '"d_key":16,"lambda":1,"value_offset":1,'
	delta_beats_zero_shot ad.gguf.ckpt/log.jsonl
	run -64 "$OLDPWD"/bin/sa-train --adapter -m base.gguf -o x.gguf --pool "$D/pool" --value-offset 1
	run -64 "$OLDPWD"/bin/sa-train --adapter -m base.gguf -o x.gguf --pool "$D/pool" --kind lsq --value-offset 2
}

@test "sa-train --adapter --init of a memory keyed by the input: it learns the mapping, the write side too" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 -o base.gguf
	"$OLDPWD"/bin/sa-init -m base.gguf --kind lsq --key-source input --d-key 16 -o init.gguf
	"$OLDPWD"/bin/sa-train --adapter -m base.gguf --init init.gguf -o ad.gguf $MAP
	run "$OLDPWD"/bin/sa-info -j ad.gguf
	assert_output --partial '"value_offset":1,"key_source":"input","records":"alone","matrices":["attn_output"],'
	delta_beats_zero_shot ad.gguf.ckpt/log.jsonl
	# the sums depend on P, w and c alone: training moved the write side
	printf 'input\tlabel\nchair\tgreen\n' > demo.tsv
	"$OLDPWD"/bin/sa-encode -q -m base.gguf -a init.gguf -o before.delta demo.tsv
	"$OLDPWD"/bin/sa-encode -q -m base.gguf -a ad.gguf -o after.delta demo.tsv
	before=$("$OLDPWD"/bin/sa-info -j before.delta | "$OLDPWD"/tests/helpers/jsonl-get s_trace)
	after=$("$OLDPWD"/bin/sa-info -j after.delta | "$OLDPWD"/tests/helpers/jsonl-get s_trace)
	echo "trace of S: $before before training, $after after"
	[ "$before" != "$after" ]
}

@test "sa-train --adapter --init --rebind: an adapter of an earlier base goes on for the new one" {
	cd "$BATS_TEST_TMPDIR"
	shape="--dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32"
	"$OLDPWD"/tests/helpers/mkmodel $shape --seed 1 -o old.gguf
	"$OLDPWD"/tests/helpers/mkmodel $shape --seed 2 -o new.gguf
	A="--adapter --pool $D/pool --mix 0,0,1 --kmin 1 --kmax 1 --rank 4 --chunk 8 --batch-tokens 256 --eval-every 0 -t 1 -q"
	"$OLDPWD"/bin/sa-train $A -m old.gguf -o old-ad.gguf --steps 20 --lr 1e-2 --warmup 2
	run -65 "$OLDPWD"/bin/sa-train $A -m new.gguf --init old-ad.gguf -o new-ad.gguf --steps 1
	assert_output --partial "old-ad.gguf was made for another model"
	# a learning rate of almost nothing: the result is the old adapter's weights
	run -0 "$OLDPWD"/bin/sa-train $A -m new.gguf --init old-ad.gguf --rebind -o new-ad.gguf --steps 1 --lr 1e-30
	printf 'input\tlabel\nchair\tgreen\n' > demo.tsv
	"$OLDPWD"/bin/sa-encode -q -m new.gguf -a new-ad.gguf -o d.delta demo.tsv
	run -65 "$OLDPWD"/bin/sa-encode -q -m old.gguf -a new-ad.gguf -o x.delta demo.tsv
	# the trained W1 came along: the delta changes the new model's scores (an
	# untrained adapter's W1 is zero and would not)
	with=$("$OLDPWD"/bin/sa-run -m new.gguf -d d.delta -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	without=$("$OLDPWD"/bin/sa-run -m new.gguf -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	[ "$with" != "$without" ]
	run -64 "$OLDPWD"/bin/sa-train $A -m new.gguf --rebind -o x.gguf --steps 1
}

@test "sa-train --adapter --init -r: a grown adapter makes the old deltas, then learns" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32 -o m.gguf
	A="--adapter -m m.gguf --pool $D/pool --mix 0,0,1 --kmin 1 --kmax 1 --chunk 8 --batch-tokens 256 --eval-every 0 -t 1 -q"
	"$OLDPWD"/bin/sa-train $A --rank 4 -o r4.gguf --steps 20 --lr 1e-2 --warmup 2
	"$OLDPWD"/bin/sa-train $A --init r4.gguf --rank 12 -o r12.gguf --steps 1 --lr 1e-30
	run -0 "$OLDPWD"/bin/sa-info r12.gguf
	assert_line --regexp '^rank: +12$'
	# new slots take the mean gate bias of their head's trained ones
	b4=$("$OLDPWD"/tests/helpers/adapter-stat r4.gguf | awk '$1 == "b" { print $3 }')
	b12=$("$OLDPWD"/tests/helpers/adapter-stat r12.gguf | awk '$1 == "b" { print $3 }')
	echo "mean gate bias: rank 4 $b4, grown $b12"
	awk -v a="$b4" -v b="$b12" 'BEGIN { d = a - b; exit !(a != 3 && d < 1e-4 && d > -1e-4) }'
	printf 'input\tlabel\nchair\tgreen\n' > demo.tsv
	for r in 4 12; do
		"$OLDPWD"/bin/sa-encode -q -m m.gguf -a r$r.gguf -o d$r.delta demo.tsv
		"$OLDPWD"/bin/sa-run -m m.gguf -d d$r.delta -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }' > s$r
	done
	none=$("$OLDPWD"/bin/sa-run -m m.gguf -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	echo "log-likelihood: rank 4 $(cat s4), grown to 12 $(cat s12), no delta $none"
	awk -v a="$(cat s4)" -v b="$(cat s12)" -v z="$none" 'BEGIN { d = a - b; exit !(d < 1e-3 && d > -1e-3 && (a - z > 1e-2 || z - a > 1e-2)) }'
	# training moves the new slots: W2's new rows leave zero
	"$OLDPWD"/bin/sa-train $A --init r4.gguf --rank 12 -o g.gguf --steps 5 --lr 1e-2 --warmup 1
	"$OLDPWD"/bin/sa-encode -q -m m.gguf -a g.gguf -o dg.delta demo.tsv
	moved=$("$OLDPWD"/bin/sa-run -m m.gguf -d dg.delta -p "chair ->" --choice " green" | awk '/^choice/ { print $4 }')
	[ "$moved" != "$(cat s12)" ]
	run -64 "$OLDPWD"/bin/sa-train $A --init r12.gguf --rank 4 -o x.gguf --steps 1
	assert_output --partial "rank 4 is below the adapter's 12"
}

@test "sa-train --gate-lr: the gate biases move that much faster, the default changes nothing" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 32 --layers 2 --heads 4 --kv-heads 2 --ctx 32 -o m.gguf
	A="--adapter -m m.gguf --pool $D/pool --mix 0,0,1 --kmin 1 --kmax 8 --rank 4 --chunk 8 --batch-tokens 256 --steps 10 --lr 1e-3 --warmup 1 --eval-every 0 -t 1 -q"
	"$OLDPWD"/bin/sa-train $A -o d.gguf
	"$OLDPWD"/bin/sa-train $A --gate-lr 1 -o g1.gguf
	cmp d.gguf g1.gguf
	"$OLDPWD"/bin/sa-train $A --gate-lr 30 -o g30.gguf
	# biases start at 3; how far they went, on average
	for g in 1 30; do
		"$OLDPWD"/tests/helpers/adapter-stat g$g.gguf | awk '$1 == "b" { d = $3 - 3; print d < 0 ? -d : d }' > moved$g
	done
	echo "mean gate-bias move: factor 1 $(cat moved1), factor 30 $(cat moved30)"
	awk -v a="$(cat moved1)" -v b="$(cat moved30)" 'BEGIN { exit !(a > 0 && b > 5 * a) }'
	# a new adapter's biases start where --gate-bias says
	"$OLDPWD"/bin/sa-train ${A/--steps 10/--steps 1} --lr 1e-30 --gate-bias 0.5 -o b.gguf
	run -0 "$OLDPWD"/tests/helpers/adapter-stat b.gguf
	assert_line 'b mean 0.5 absmean 0.5'
	run -64 "$OLDPWD"/bin/sa-train $A --init b.gguf --gate-bias 1 -o x.gguf
}

@test "sa-train --mats: the names of sa-init, or all" {
	cd "$BATS_TEST_TMPDIR"
	"$OLDPWD"/tests/helpers/mkmodel --dim 32 --layers 1 --heads 4 --kv-heads 2 --ctx 32 -o m.gguf
	A="--adapter -m m.gguf --pool $D/pool --rank 2 --chunk 8 --steps 1 --batch-tokens 64 --eval-every 0 -t 1 -q"
	"$OLDPWD"/bin/sa-train $A --mats all -o all.gguf
	run -0 "$OLDPWD"/bin/sa-info all.gguf
	assert_line --regexp '^matrices: +attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down$'
	run -64 "$OLDPWD"/bin/sa-train $A --mats attn_q,attn_z -o x.gguf
	assert_output "sa-train: --mats: unknown matrix 'attn_z' (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)"
}

@test "sa-train --mix: a fourth share of repeated spans, for pretraining only" {
	cd "$BATS_TEST_TMPDIR"
	# three shares and the same three with a zero fourth draw the same stream
	"$OLDPWD"/bin/sa-train $TINY --steps 3 --mix 0.5,0.25,0.25 -o a.gguf
	"$OLDPWD"/bin/sa-train $TINY --steps 3 --mix 0.5,0.25,0.25,0 -o b.gguf
	cmp a.gguf b.gguf
	# repeated spans teach copying: after them, a line costs less after
	# itself than after another line, by more than after as much plain text
	score() { "$OLDPWD"/bin/sa-run -m "$1" --score --no-bos -p "$2" | awk '{ print -$2 }'; }
	for mix in 0,0,0,1 1,0,0; do
		"$OLDPWD"/bin/sa-train $TINY --steps 300 --lr 1e-2 --warmup 10 --mix $mix -o m$mix.gguf
		s="dog ran to the mat " o="a big cat sat on "
		echo "$(score m$mix.gguf "$s") $(score m$mix.gguf "$s$s") $(score m$mix.gguf "$o") $(score m$mix.gguf "$o$s")" |
		    awk '{ print ($2 - $1) / ($4 - $3) }' > ratio$mix
	done
	echo "cost of a line after itself / after another: after repeats $(cat ratio0,0,0,1), after text $(cat ratio1,0,0)"
	awk -v r="$(cat ratio0,0,0,1)" -v t="$(cat ratio1,0,0)" 'BEGIN { exit !(r < t - 0.1) }'
	run -64 "$OLDPWD"/bin/sa-train $TINY --steps 1 --mix 0.5,0.25,0.25, -o x.gguf
	run -64 "$OLDPWD"/bin/sa-train --adapter -m a.gguf --text $D/text.txt --mix 0,0,0,1 -o x.gguf
	assert_output --partial "for --pretrain"
}

@test "sa-train --map-vocab: mappings of new words, never the held-out pools' words of several tokens" {
	cd "$BATS_TEST_TMPDIR"
	V="--pretrain --vocab $OLDPWD/data/tokenizer/sa4k.tsv --dim 32 --layers 1 --heads 2 --kv-heads 1 --ctx 256 -o x.gguf -q"
	zcat "$OLDPWD"/data/corpus/valid.txt.gz | head -4000 > text.txt
	# (past 303 sequences: where drawing words alike once never ended)
	timeout 60 "$OLDPWD"/bin/sa-train $V --text text.txt --map-vocab --mix 0,0,1 --show-data 1000 > map.jsonl
	[ "$(grep -c '"kind":"map"' map.jsonl)" -eq 1000 ]
	# the words of every "key -> label" line, one a line
	sed 's/\\n/\n/g' map.jsonl | sed -n 's/^[{"a-z:,]*\(text":"\)\{0,1\} *\([a-z]*\) -> \([a-z]*\)$/\2\n\3/p' | sort -u > seen
	echo "$(wc -l < seen) distinct words in mappings"
	[ "$(wc -l < seen)" -gt 3000 ]
	# both layouts: records tokenized one by one (a space after each
	# newline) and one text (none)
	spaced=$(grep -c '\\n [a-z]' map.jsonl)
	joined=$(grep -c '\\n[a-z]' map.jsonl)
	echo "$spaced spaced, $joined joined"
	[ "$spaced" -gt 400 ] && [ "$joined" -gt 400 ]
	# a label is not scored at its first sight, and only then: as many
	# unscored runs as distinct keys, each the label of a key's first line
	head -50 map.jsonl | while read -r line; do
		keys=$(printf '%s\n' "$line" | sed 's/"unscored".*//; s/^{"kind":"map","text":"//; s/\\n/\n/g' | sed -n 's/^ *\([a-z]*\) -> .*/\1/p' | sort -u | wc -l)
		n=$(printf '%s\n' "$line" | sed 's/.*"unscored":\[//' | tr -cd ',' | wc -c)
		[ "$((n + 1))" -eq "$keys" ] || { echo "$keys keys, $((n + 1)) unscored: $line"; exit 1; }
	done
	# after the first pass the pairs come in passes, each key once a pass
	# (drawn at random, a pass of 3 or more keys would repeat one)
	head -200 map.jsonl | sed 's/"unscored".*//; s/^{"kind":"map","text":"//; s/\\n/\n/g; s/$/\n=/' |
	    sed -n 's/^ *\([a-z]*\) -> .*/\1/p; /^=$/p' > keys
	run awk '/^=$/ { n = 0; k = 0; split("", all); next }
	    { line[n++] = $0; if (!($0 in all)) k++; all[$0] = 1 }
	    { if (n > k && n % k == 0) { split("", pass)
	        for (i = n - k; i < n; i++) { if (line[i] in pass) bad++; pass[line[i]] = 1 } } }
	    END { print bad + 0 }' keys
	assert_output 0
	# the held-out pools' words of several tokens are never drawn
	cat "$OLDPWD"/data/pools/*/words.txt "$OLDPWD"/data/pools/*-multi/labels.txt | sort -u > held
	run comm -12 seen held
	assert_output ""
	# and the check can fail: the old pool's words are drawn when present
	[ "$(comm -12 seen <(sort -u "$OLDPWD"/data/pools/labels.txt) | wc -l)" -gt 0 ]
	run -64 "$OLDPWD"/bin/sa-train $V --map-vocab --mix 0,0,1 --steps 1
	assert_output --partial "give --text"
}

@test "sa-train --adapter --show-data: mapping episodes, half of them pairs shown once each, up to 255" {
	cd "$BATS_TEST_TMPDIR"
	zcat "$OLDPWD"/data/corpus/valid.txt.gz | head -3000 > text.txt
	"$OLDPWD"/bin/sa-train --adapter -m "$OLDPWD"/data/model.gguf --init "$OLDPWD"/data/adapter.gguf \
	    --map-vocab --text text.txt \
	    --mix 0,0,1 --kmax 256 --ckpt ck -o a.gguf --show-data 200 -q > ep.jsonl
	[ "$(grep -c '^{"kind":"map","context":\["' ep.jsonl)" -eq 200 ]
	# per episode: records, distinct records, queries whose "key ->" and
	# answer are not a record of the context
	sed 's/^{"kind":"map","context":\[//; s/\],"queries":\[\[/\n/; s/\]\]}$//' ep.jsonl |
	    awk 'NR % 2 == 1 { n = split($0, rec, "\",\""); split("", has)
	            for (i = 1; i <= n; i++) { gsub(/^"|"$/, "", rec[i]); has[rec[i]] = 1 }
	            d = 0; for (r in has) d++; next }
	        { m = split($0, q, "\\],\\["); bad = 0
	            for (i = 1; i <= m; i++) { gsub(/^"|"$/, "", q[i]); sub(/","/, " ", q[i]); if (!(q[i] in has)) bad++ }
	            print n, d, bad }' > counts
	[ "$(wc -l < counts)" -eq 200 ]
	# every answer is in the context
	[ "$(awk '{ s += $3 } END { print s }' counts)" -eq 0 ]
	# half the episodes show each pair once; with repeats, every pair is
	# seen about three times: without the once-shown half, none would be
	once=$(awk '$1 == $2 && $1 > 1' counts | wc -l)
	many=$(awk '$1 == $2 && $1 >= 100' counts | wc -l)
	echo "$once of 200 shown once, $many of them 100 pairs or more"
	[ "$once" -ge 70 ] && [ "$once" -le 130 ] && [ "$many" -ge 5 ]
}

@test "sa-train --adapter --word-labels: mappings whose labels are words of the text" {
	cd "$BATS_TEST_TMPDIR"
	zcat "$OLDPWD"/data/corpus/valid.txt.gz | head -3000 > text.txt
	tr -c 'A-Za-z' '\n' < text.txt | sort -u > words
	A="--adapter -m $OLDPWD/data/model.gguf --init $OLDPWD/data/adapter.gguf --map-vocab --text text.txt"
	A="$A --mix 0,0,1 --kmax 64 --ckpt ck -o a.gguf --show-data 100 -q"
	# the labels of the context's records, one a line, and how many of
	# them the text does not hold as a word
	labels() { grep -o ' -> [^"]*\\n"' "$1" | sed 's/^ -> //; s/\\n"$//' | sort -u; }
	"$OLDPWD"/bin/sa-train $A > made.jsonl
	"$OLDPWD"/bin/sa-train $A --word-labels 1 > words.jsonl
	labels made.jsonl > made
	labels words.jsonl > real
	[ "$(wc -l < real)" -gt 200 ]
	run comm -23 real words
	assert_output ""
	[ "$(comm -23 made words | wc -l)" -gt 100 ]
	run "$OLDPWD"/bin/sa-train --adapter -m "$OLDPWD"/data/model.gguf --task "$OLDPWD"/data/tasks/gender \
	    --word-labels 0.5 -o a.gguf --show-data 1
	assert_failure 64
	assert_output --partial "--word-labels goes with --adapter, --map-vocab and --text"
}

@test "sa-train --rename: classification episodes with new label words" {
	cd "$BATS_TEST_TMPDIR"
	V="--pretrain --vocab $OLDPWD/data/tokenizer/sa4k.tsv --dim 32 --layers 1 --heads 2 --kv-heads 1 --ctx 128 -o x.gguf -q"
	zcat "$OLDPWD"/data/corpus/valid.txt.gz | head -2000 > text.txt
	T="--text text.txt --task $OLDPWD/data/tasks/gender --task $OLDPWD/data/tasks/plural --mix 0,1,0"
	"$OLDPWD"/bin/sa-train $V $T --show-data 200 > plain.jsonl
	"$OLDPWD"/bin/sa-train $V $T --rename 1 --show-data 200 > renamed.jsonl
	# gender's labels are new words, or its own swapped: every name then
	# answers the other gender; plural (not a classification) keeps its own
	grep -q -- '-> \(fe\)\{0,1\}male' plain.jsonl
	sed 's/\\n/\n/g' renamed.jsonl | sed -n 's/^[{"a-z:,]*\(text":"\)\{0,1\} *\([A-Za-z]*\) -> \(male\|female\)$/\2\t\3/p' |
	    sort -u > shown
	[ "$(wc -l < shown)" -gt 20 ]
	tail -n +2 "$OLDPWD"/data/tasks/gender/train.tsv | sort -u > truth
	run comm -12 shown truth
	assert_output ""
	[ "$(join -t "$(printf '\t')" shown truth | wc -l)" -gt 20 ]
	[ "$(grep -c -- '-> ' renamed.jsonl)" -eq 200 ]
	grep -qE ' ([a-z]{3,}) -> \1(s|es)\\n' renamed.jsonl
	# a renamed episode uses two label words, each for one gender throughout
	"$OLDPWD"/bin/sa-train $V --text text.txt --task "$OLDPWD"/data/tasks/gender --mix 0,1,0 --rename 1 --show-data 20 |
	    while read -r line; do
		n=$(printf '%s\n' "$line" | sed 's/\\n/\n/g' | sed -n 's/.* -> \([a-z]*\)$/\1/p' | sort -u | wc -l)
		[ "$n" -le 2 ] || { echo "$n labels in: $line"; exit 1; }
		# each name's first answer, and nothing else, is unscored
		u=$(printf '%s\n' "$line" | sed 's/.*"unscored":\[//' | tr -cd ',' | wc -c)
		[ "$((u + 1))" -eq "$n" ] || { echo "$n names, $((u + 1)) unscored: $line"; exit 1; }
	    done
}

@test "sa-train --task: a task is read as sa-eval reads it" {
	cd "$BATS_TEST_TMPDIR"
	mkdir t
	printf 'input\tlabel\ncat\tanimal\nred\tcolour\n' > t/train.tsv
	printf 'input\tlabel\n' > t/dev.tsv
	run -65 "$OLDPWD"/bin/sa-train $TINY --steps 1 --task t -o x.gguf
	assert_output "sa-train: t/dev.tsv:2: no examples"
	printf 'input\tlabel\nox\tanimal\n' > t/dev.tsv
	"$OLDPWD"/bin/sa-train $TINY --steps 1 --task t -o x.gguf
	printf 'input\tlabel\ncat\tanimal\n' > t/train.tsv
	run -65 "$OLDPWD"/bin/sa-train $TINY --steps 1 --task t -o x.gguf
	assert_output "sa-train: t: fewer than 2 training examples"
	printf 'input\tclass\ncat\tanimal\nred\tcolour\n' > t/train.tsv
	run -65 "$OLDPWD"/bin/sa-train $TINY --steps 1 --task t -o x.gguf
	assert_output "sa-train: t/train.tsv:1: no column 'label' in the header (want input and label)"
}

@test "sa-train -o -: one result on stdout, at the end, the same bytes as -o FILE; checkpoints in --ckpt" {
	cd "$BATS_TEST_TMPDIR"
	A="$TINY --steps 4 --ckpt-every 2"
	"$OLDPWD"/bin/sa-train $A -o m.gguf
	"$OLDPWD"/bin/sa-train $A -o - --ckpt run > out.gguf
	cmp m.gguf out.gguf
	[ -s run/state.gguf ]
	[ ! -e ./-.ckpt ]
	run -64 "$OLDPWD"/bin/sa-train $A -o -
	assert_output --partial "--ckpt"
	[ ! -e ./-.ckpt ]
	# not to a terminal
	if command -v script > /dev/null; then
		run -64 script -qec "'$OLDPWD/bin/sa-train' $A -o - --ckpt run2" /dev/null
		assert_output --partial "refusing to write a binary result to a terminal"
		[ ! -e run2 ]
	fi
}

@test "sa-train: usage errors exit 64" {
	run -64 bin/sa-train
	run -64 bin/sa-train --pretrain -o x.gguf
	# no model anywhere: a copy of the tool outside the source tree
	mkdir -p "$BATS_TEST_TMPDIR/inst/bin"
	cp bin/sa-train "$BATS_TEST_TMPDIR/inst/bin/"
	run -64 "$BATS_TEST_TMPDIR/inst/bin/sa-train" --adapter -o x.gguf
	assert_output --partial "no model: give -m MODEL or set SA_MODEL"
	run -64 bin/sa-train --adapter
	assert_output --partial "no output: give -o FILE"
	run -64 bin/sa-train --adapter --pretrain -m a.gguf --vocab v -o x.gguf
	assert_output --partial "--pretrain and --adapter are exclusive"
	run -64 bin/sa-train --pretrain --vocab v
	assert_output --partial "-o"
	run -64 bin/sa-train --pretrain --vocab v -o x --mix 1,2
	run -64 bin/sa-train --bogus
	run bin/sa-train --help
	assert_success
	assert_output --partial "--pretrain"
	run bin/sa-train --version
	assert_success
	assert_output --partial "sa-train"
}

@test "the training benchmark works (dry run on a tiny model)" {
	run sh scripts/bench-train.sh --dry-run
	assert_success
	assert_output --partial "pretraining:"
	assert_output --partial "of sgemm"
	assert_output --partial "adapter training:"
}
