#!/usr/bin/env bats
# The tools together, through pipes and files.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 11 --kv-heads 2 --ctx 64 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 3 --w1-scale 0.5 -o "$D/a.gguf"
	{
		printf 'input\tlabel\n'
		for i in $(seq 30); do
			printf 'review %d %s\t%s\n' $i "$(printf 'good%.0s ' $(seq $((i % 4))))" \
			    $([ $((i % 2)) = 0 ] && echo pos || echo neg)
		done
	} >"$D/all.tsv"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	M="$D/m.gguf"
	A="$D/a.gguf"
	T="$BATS_TEST_TMPDIR"
	PATH="$ROOT/bin:$PATH"
	DIFF="$ROOT/tests/helpers/delta-diff"
	unset SA_MODEL SA_ADAPTER
}

@test "sa-encode | sa-merge --chain - other | sa-run -d - equals the same through files" {
	printf 'input\tlabel\nwarm day\tpos\n' >"$T/other.tsv"
	sa-encode -m "$M" -a "$A" -o "$T/other.delta" "$T/other.tsv"
	run --separate-stderr bash -c "set -o pipefail
	    sa-encode -m '$M' -a '$A' '$D/all.tsv' | sa-merge --chain - '$T/other.delta' |
	    sa-run -m '$M' -d - --choice pos --choice neg -p 'review 99 good ->'"
	assert_success
	piped=$output
	assert_output --partial "best "
	sa-encode -m "$M" -a "$A" -o "$T/all.delta" "$D/all.tsv"
	sa-merge --chain "$T/all.delta" "$T/other.delta" -o "$T/both.delta"
	filed=$(sa-run -m "$M" -d "$T/both.delta" --choice pos --choice neg -p 'review 99 good ->')
	[ "$piped" = "$filed" ]
	# and the delta did something.
	base=$(sa-run -m "$M" --choice pos --choice neg -p 'review 99 good ->')
	[ "$piped" != "$base" ]
}

@test "a TSV split in three, encoded apart and chained in order, equals one encode of the three" {
	head -1 "$D/all.tsv" >"$T/header"
	tail -n +2 "$D/all.tsv" | split -l 10 - "$T/part."
	for p in aa ab ac; do
		cat "$T/header" "$T/part.$p" >"$T/$p.tsv"
		sa-encode -m "$M" -a "$A" -o "$T/$p.delta" "$T/$p.tsv"
	done
	sa-merge --chain "$T/aa.delta" "$T/ab.delta" "$T/ac.delta" -o "$T/chained.delta"
	sa-encode -m "$M" -a "$A" -o "$T/one.delta" "$T/aa.tsv" "$T/ab.tsv" "$T/ac.tsv"
	run "$DIFF" -t 1e-5 "$T/one.delta" "$T/chained.delta"
	assert_success
	run sa-info --json "$T/chained.delta"
	assert_output --partial '"n_demos":30'
	# Out of order it is another state.
	sa-merge --chain "$T/ab.delta" "$T/aa.delta" "$T/ac.delta" -o "$T/shuffled.delta"
	run "$DIFF" -t 1e-5 "$T/one.delta" "$T/shuffled.delta"
	assert_failure 1
}

@test "a delta grows with --append through a pipe and matches a full encode" {
	head -16 "$D/all.tsv" >"$T/first.tsv"
	{ head -1 "$D/all.tsv"; tail -n +17 "$D/all.tsv"; } >"$T/rest.tsv"
	sa-encode -m "$M" -a "$A" "$T/first.tsv" |
	    sa-encode -m "$M" -a "$A" --append - -o "$T/grown.delta" "$T/rest.tsv"
	sa-encode -m "$M" -a "$A" -o "$T/full.delta" "$T/first.tsv" "$T/rest.tsv"
	run "$DIFF" -t 1e-5 "$T/full.delta" "$T/grown.delta"
	assert_success
}

@test "a delta moved with its adapter finds it beside itself: sa-run, sa-export" {
	mkdir "$T/one"
	cp "$A" "$T/one/ad.gguf"
	sa-encode -m "$M" -a "$T/one/ad.gguf" -o "$T/one/x.delta" "$D/all.tsv"
	want=$(sa-run -m "$M" -d "$T/one/x.delta" --choice pos --choice neg -p 'review 99 good ->')
	mv "$T/one" "$T/two"
	run -0 sa-run -m "$M" -d "$T/two/x.delta" --choice pos --choice neg -p 'review 99 good ->'
	assert_output "$want"
	cd "$T"
	run -0 sa-run -m "$M" -d two/x.delta --choice pos --choice neg -p 'review 99 good ->'
	assert_output "$want"
	run -0 sa-export -m "$M" -o "$T/lora.gguf" two/x.delta
	# gone from beside it too: the message names the adapter it records
	rm two/ad.gguf
	run -66 sa-run -m "$M" -d two/x.delta -p x -n 1
	assert_output --partial "one/ad.gguf is missing"
}

@test "every tool that reads a model takes a quantized one (Q4_K, Q5_0)" {
	cd "$T"
	for t in q4_k q5_0; do
		"$ROOT/tests/helpers/mkmodel" -t $t --dim 256 --ff 256 --heads 4 --kv-heads 2 \
		    --ctx 64 --seed 5 -o q.gguf
		run -0 sa-info q.gguf
		assert_output --regexp "tensor types: +F32 [0-9]+, $(echo $t | tr a-z A-Z) 16$"
		sa-init -m q.gguf -r 4 -C 8 --seed 3 --w1-scale 0.5 -o qa.gguf
		sa-encode -q -m q.gguf -a qa.gguf -o q.delta "$D/all.tsv"
		run -0 sa-run -m q.gguf -d q.delta -p "review 3 ->" --choice " pos" --choice " neg"
		assert_line --regexp '^best [01]$'
		sa-export -m q.gguf -o lora.gguf q.delta
		printf 'review one good good\nreview two\nreview three good\n' > t.txt
		run -0 sa-eval -m q.gguf -a qa.gguf --text t.txt --segment 4 --limit 1
		mkdir -p pool
		printf 'apple\nbread\nchair\ndoor\n' > pool/words.txt
		printf 'red\nblue\ngreen\nbig\n' > pool/labels.txt
		sa-train --adapter -m q.gguf -o qt.gguf --pool pool --mix 0,0,1 --kmin 1 --kmax 1 \
		    --rank 4 --chunk 16 --steps 1 --batch-tokens 256 --eval-every 0 -t 1 -q
		[ -s qt.gguf ]
	done
}
