#!/usr/bin/env bats
# sa-merge: chain, mean and sum of deltas; weights; stdin; mismatched inputs;
# output through a temporary file.  Also runs the delta unit tests.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 7 --kv-heads 2 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 1 --w1-scale 0.5 -o "$D/a1.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 2 --w1-scale 0.5 -o "$D/a2.gguf"
	for s in 1 2 3; do
		"$ROOT/tests/helpers/mkdelta" -a "$D/a1.gguf" -s $s --source "s$s.tsv" \
		    --tokens $((10 * s)) --demos $s -o "$D/d$s.delta"
	done
	"$ROOT/tests/helpers/mkdelta" -a "$D/a2.gguf" -s 1 -o "$D/other.delta"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	MERGE="$ROOT/bin/sa-merge"
	INFO="$ROOT/bin/sa-info"
	GET="$ROOT/tests/helpers/jsonl-get"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
}

@test "delta unit tests: files, corruption, limits, chain, mean, factors, absorption" {
	run "$ROOT/tests/unit/test_delta" "$D/m.gguf"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$MERGE" --help
	assert_success
	assert_output --partial "usage: sa-merge"
	assert_output --partial "--chain"
	[ -z "$stderr" ]
	run --separate-stderr "$MERGE" --version
	assert_success
	assert_output --regexp '^sa-merge [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors exit 64 and write nothing to stdout" {
	run -64 --separate-stderr "$MERGE" --bogus "$D/d1.delta"
	[[ "$stderr" == *"usage: sa-merge"* ]]
	[ -z "$output" ]
	run -64 "$MERGE" --mean --sum "$D/d1.delta" "$D/d2.delta"
	assert_output --partial "exclude each other"
	run -64 "$MERGE" "$D/d1.delta:2" "$D/d2.delta"
	assert_output --partial "weights (FILE:W) need --mean or --sum"
	run -64 "$MERGE" --mean "$D/d1.delta:1" "$D/d2.delta:-1"
	assert_output --partial "sum to 0"
	run -64 "$MERGE" - "$D/d1.delta" - </dev/null
	assert_output --partial "more than once"
}

@test "chain is a left fold: merging in steps gives the same bytes" {
	"$MERGE" "$D/d1.delta" "$D/d2.delta" "$D/d3.delta" >"$T/all.delta"
	"$MERGE" "$D/d1.delta" "$D/d2.delta" -o "$T/12.delta"
	"$MERGE" --chain "$T/12.delta" "$D/d3.delta" -o "$T/12-3.delta"
	cmp "$T/all.delta" "$T/12-3.delta"
	# and it is not the other order
	"$MERGE" "$D/d3.delta" "$D/d2.delta" "$D/d1.delta" >"$T/rev.delta"
	! cmp -s "$T/all.delta" "$T/rev.delta"
}

@test "chain adds counts and appends sources in order" {
	"$MERGE" "$D/d1.delta" "$D/d2.delta" "$D/d3.delta" -o "$T/all.delta"
	run "$INFO" --json "$T/all.delta"
	assert_success
	run "$GET" n_tokens n_demos sources <<<"$output"
	assert_success
	assert_output --partial $'60\t6\t[{"name":"s1.tsv"'
	[[ "$output" == *'"s1.tsv"'*'"s2.tsv"'*'"s3.tsv"'* ]]
}

@test "one delta through sa-merge comes out byte for byte" {
	"$MERGE" <"$D/d1.delta" >"$T/copy.delta"
	cmp "$D/d1.delta" "$T/copy.delta"
	"$MERGE" --mean "$D/d2.delta" -o "$T/m.delta"
	cmp "$D/d2.delta" "$T/m.delta"
}

@test "mean: weights are normalised; --sum with the same weights agrees" {
	"$MERGE" --mean "$D/d1.delta" "$D/d2.delta" -o "$T/mean.delta"
	"$MERGE" --mean "$D/d1.delta:3" "$D/d2.delta:3" -o "$T/mean3.delta"
	"$MERGE" --sum "$D/d1.delta:0.5" "$D/d2.delta:0.5" -o "$T/half.delta"
	cmp "$T/mean.delta" "$T/mean3.delta"
	cmp "$T/mean.delta" "$T/half.delta"
	# A mean of a delta with itself is that state; only the counts double.
	"$MERGE" --mean "$D/d1.delta" "$D/d1.delta" -o "$T/self.delta"
	a=$("$INFO" -j "$D/d1.delta" | "$GET" h_norm p_mean n_tokens)
	b=$("$INFO" -j "$T/self.delta" | "$GET" h_norm p_mean n_tokens)
	[ "$(cut -f1,2 <<<"$a")" = "$(cut -f1,2 <<<"$b")" ]
	[ "$(cut -f3 <<<"$b")" = 20 ]
	# Unequal weights move the state.
	"$MERGE" --mean "$D/d1.delta:3" "$D/d2.delta:1" -o "$T/w.delta"
	! cmp -s "$T/mean.delta" "$T/w.delta"
}

@test "sum with opposite weights cancels the state" {
	"$MERGE" --sum "$D/d1.delta:1" "$D/d1.delta:-1" -o "$T/zero.delta"
	run "$GET" h_norm p_mean < <("$INFO" -j "$T/zero.delta")
	assert_output $'0\t0'
}

@test "stdin: '-' among the files, or no file at all" {
	"$MERGE" "$D/d1.delta" "$D/d2.delta" -o "$T/a.delta"
	"$MERGE" - "$D/d2.delta" <"$D/d1.delta" >"$T/b.delta"
	cmp "$T/a.delta" "$T/b.delta"
	# A weighted stdin starts with '-': it goes after "--" like any such operand.
	cat "$D/d2.delta" | "$MERGE" --mean -o "$T/c.delta" "$D/d1.delta:1" -- -:3
	"$MERGE" --mean "$D/d1.delta:1" "$D/d2.delta:3" -o "$T/d.delta"
	cmp "$T/c.delta" "$T/d.delta"
}

@test "a file name with a colon is a name unless a number follows and no such file exists" {
	cp "$D/d1.delta" "$T/x:y.delta"
	cp "$D/d2.delta" "$T/z:2"
	run "$MERGE" --sum "$T/x:y.delta" "$T/z:2:1" -o "$T/s.delta"
	assert_success
	# The file z:2 wins over z at weight 2; without it, z:2 is z at 2.
	"$MERGE" --sum "$T/x:y.delta" "$T/z:2" -o "$T/s2.delta"
	cmp "$T/s.delta" "$T/s2.delta"
	run -66 "$MERGE" --sum "$T/y:2" -o "$T/s3.delta"
	assert_output --partial "y: No such file"
	for w in 1e40 -1e39 nan inf; do
		run -64 "$MERGE" --sum "$D/d1.delta:$w" -o "$T/s4.delta"
		assert_output "sa-merge: weight $w in '$D/d1.delta:$w' is not a finite float"
	done
	[ ! -e "$T/s4.delta" ]
}

@test "deltas from different adapters: exit 65 naming both files" {
	run -65 --separate-stderr "$MERGE" "$D/d1.delta" "$D/other.delta" -o "$T/out.delta"
	[[ "$stderr" == "sa-merge: "*"d1.delta and "*"other.delta were made with different adapters"* ]]
	[ -z "$output" ]
	run -65 "$MERGE" --mean "$D/other.delta" - <"$D/d2.delta"
	assert_output --partial "other.delta and stdin"
}

@test "-o: a failed merge leaves the old output and no temporary file" {
	mkdir "$T/out"
	echo old >"$T/out/r.delta"
	run -65 "$MERGE" "$D/d1.delta" "$D/other.delta" -o "$T/out/r.delta"
	[ "$(cat "$T/out/r.delta")" = old ]
	run -66 "$MERGE" "$D/d1.delta" "$T/missing.delta" -o "$T/out/r.delta"
	[ "$(cat "$T/out/r.delta")" = old ]
	[ "$(ls -A "$T/out")" = r.delta ]
	"$MERGE" "$D/d1.delta" -o "$T/out/r.delta"
	cmp "$D/d1.delta" "$T/out/r.delta"
	[ "$(ls -A "$T/out")" = r.delta ]
	run -73 "$MERGE" "$D/d1.delta" -o "$T/nodir/r.delta"
}

@test "bad inputs: truncated, corrupted, not a delta, missing" {
	size=$(stat -c %s "$D/d1.delta")
	head -c $((size - 3)) "$D/d1.delta" >"$T/short.delta"
	run -65 "$MERGE" "$T/short.delta"
	assert_output --partial "short.delta: truncated"
	cp "$D/d1.delta" "$T/flip.delta"
	printf '\x01' | dd of="$T/flip.delta" bs=1 seek=60 conv=notrunc status=none
	run -65 "$MERGE" "$T/flip.delta"
	assert_output --partial "flip.delta: CRC mismatch (corrupted)"
	run -65 "$MERGE" "$D/m.gguf"
	assert_output --partial "m.gguf: not a delta file"
	cp "$D/d1.delta" "$T/v9.delta"
	printf '\x09' | dd of="$T/v9.delta" bs=1 seek=8 conv=notrunc status=none
	run -65 "$MERGE" "$T/v9.delta"
	assert_output --partial "v9.delta: unsupported version 9"
	run -65 "$MERGE" </dev/null
	assert_output --partial "stdin: empty, not a delta file"
	run -66 "$MERGE" "$T/none.delta"
}

@test "a failing standard output is an I/O error" {
	[ -w /dev/full ] || skip "no /dev/full"
	run -74 bash -c '"$0" "$1" >/dev/full' "$MERGE" "$D/d1.delta"
	assert_output --partial "sa-merge: stdout: No space left on device"
}

@test "-v reports what was merged on stderr" {
	run --separate-stderr "$MERGE" -v --sum "$D/d1.delta" "$D/d2.delta" -o "$T/s.delta"
	assert_success
	[[ "$stderr" == "sa-merge: summed 2 deltas (30 tokens, 3 demonstrations) into $T/s.delta" ]]
}

@test "shards encoded apart and chained equal one encoding of all of them" {
	[ -x "$ROOT/bin/sa-encode" ] && [ -x "$ROOT/tests/helpers/delta-diff" ] ||
	    skip "sa-encode or delta-diff not built"
	printf 'input\tlabel\nthe cat sat\tanimal\na red car\tthing\n' >"$T/a.tsv"
	printf 'input\tlabel\nthe dog ran\tanimal\na big house\tthing\nsome fish\tanimal\n' >"$T/b.tsv"
	enc() { "$ROOT/bin/sa-encode" -m "$D/m.gguf" -a "$D/a1.gguf" "$@"; }
	enc -o "$T/a.delta" "$T/a.tsv"
	enc -o "$T/b.delta" "$T/b.tsv"
	enc -o "$T/ab.delta" "$T/a.tsv" "$T/b.tsv"
	"$MERGE" "$T/a.delta" "$T/b.delta" -o "$T/chained.delta"
	run "$ROOT/tests/helpers/delta-diff" -t 1e-5 "$T/ab.delta" "$T/chained.delta"
	assert_success
	# In the other order they differ: chaining is not commutative.
	"$MERGE" "$T/b.delta" "$T/a.delta" -o "$T/ba.delta"
	run "$ROOT/tests/helpers/delta-diff" -t 1e-5 "$T/ab.delta" "$T/ba.delta"
	assert_failure
	diff=$(awk '/^max difference:/ { print $3 }' <<<"$output")
	awk -v d="$diff" 'BEGIN { exit !(d > 1e-3) }'
}
