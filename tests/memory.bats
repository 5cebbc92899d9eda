#!/usr/bin/env bats
# The least-squares memory (sa-adapter(5), mapping "lsq") through the tools:
# the adapter and delta formats, the exact algebra on (G, S), an untrained
# adapter as a no-op, merged against side paths, and bad files.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 11 --kv-heads 2 --ctx 64 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" --kind lsq --d-key 16 --seed 3 --w1-scale 0.5 -o "$D/a.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" --kind lsq --d-key 16 --seed 3 -o "$D/a0.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 3 --w1-scale 0.5 -o "$D/pool.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" --kind lsq --key-source input --d-key 16 --seed 3 -o "$D/in.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" --kind lsq --key-source input --mats ffn_down \
	    --d-key 16 --lambda 0.1 --seed 3 -o "$D/down.gguf"
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

@test "memory unit tests: recall, composition, float sums, gradients" {
	run "$ROOT/tests/unit/test_memory"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "sa-init --kind lsq: the kind, d_key and lambda in the file and in sa-info; seeded" {
	run sa-info -j "$A"
	assert_success
	assert_output --partial '"mapping":"lsq","rank":32,"d_key":16,"lambda":1,'
	run sa-info -j "$D/pool.gguf"
	assert_output --partial '"mapping":"pool","rank":4,"chunk":8,'
	sa-init -m "$M" --kind lsq --d-key 16 --seed 3 --w1-scale 0.5 -o "$T/again.gguf"
	cmp "$A" "$T/again.gguf"
	sa-init -m "$M" --kind lsq --d-key 16 --seed 4 --w1-scale 0.5 -o "$T/other.gguf"
	! cmp -s "$A" "$T/other.gguf"
	sa-init -m "$M" --kind lsq --d-key 8 --lambda 0.25 -o "$T/small.gguf"
	run sa-info "$T/small.gguf"
	assert_output --partial "d key:               8"
	assert_output --partial "lambda:              0.25"
}

@test "sa-init --kind: usage errors exit 64" {
	run -64 sa-init -m "$M" --kind bogus -o "$T/x.gguf"
	assert_output --partial "unknown kind"
	run -64 sa-init -m "$M" --kind lsq -r 4 -o "$T/x.gguf"
	run -64 sa-init -m "$M" --d-key 8 -o "$T/x.gguf"
	run -64 sa-init -m "$M" --kind lsq --lambda 0 -o "$T/x.gguf"
	run -64 sa-init -m "$M" --kind lsq --d-key 0 -o "$T/x.gguf"
	[ ! -e "$T/x.gguf" ]
}

@test "an untrained memory (W1 = 0) leaves scores exactly the base model's" {
	sa-encode -m "$M" -a "$D/a0.gguf" -o "$T/d.delta" "$D/all.tsv"
	run sa-info -j "$T/d.delta"
	assert_output --partial '"mapping":"lsq"'
	refute_output --partial '"g_norm":0,'
	base=$(sa-run -m "$M" --score -p 'review 99 good -> pos')
	[ "$base" = "$(sa-run -m "$M" -d "$T/d.delta" --score -p 'review 99 good -> pos')" ]
	[ "$base" = "$(sa-run -m "$M" -d "$T/d.delta:3" --unmerged --score -p 'review 99 good -> pos')" ]
}

@test "with a random W1, merged and side paths agree within 1e-4 and differ from the base" {
	sa-encode -m "$M" -a "$A" -o "$T/d.delta" "$D/all.tsv"
	p='review 99 good -> pos'
	base=$(sa-run -m "$M" --score -p "$p" | awk '{print $2}')
	merged=$(sa-run -m "$M" -d "$T/d.delta" --score -p "$p" | awk '{print $2}')
	side=$(sa-run -m "$M" -d "$T/d.delta" --unmerged --score -p "$p" | awk '{print $2}')
	echo "base $base merged $merged side $side"
	awk -v a="$merged" -v b="$side" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }'
	awk -v a="$merged" -v b="$base" 'BEGIN { d = a - b; exit !(d > 1e-3 || d < -1e-3) }'
}

# Chain, append and shards of adapter $1's memory equal one encode within
# 1e-5 of its scale.
composes() {
	head -1 "$D/all.tsv" >"$T/header"
	tail -n +2 "$D/all.tsv" | split -l 10 - "$T/part."
	for p in aa ab ac; do
		cat "$T/header" "$T/part.$p" >"$T/$p.tsv"
		sa-encode -m "$M" -a "$1" -o "$T/$p.delta" "$T/$p.tsv"
	done
	sa-encode -m "$M" -a "$1" -o "$T/one.delta" "$T/aa.tsv" "$T/ab.tsv" "$T/ac.tsv"
	sa-merge --chain "$T/aa.delta" "$T/ab.delta" "$T/ac.delta" -o "$T/chained.delta"
	run "$DIFF" -r 1e-5 "$T/one.delta" "$T/chained.delta"
	assert_success
	sa-encode -m "$M" -a "$1" "$T/aa.tsv" "$T/ab.tsv" |
	    sa-encode -m "$M" -a "$1" --append - -o "$T/grown.delta" "$T/ac.tsv"
	run "$DIFF" -r 1e-5 "$T/one.delta" "$T/grown.delta"
	assert_success
	# The sums do not depend on the order of the shards, but the states differ
	# from an encode of one shard alone: the check can fail.
	run "$DIFF" -r 1e-5 "$T/one.delta" "$T/aa.delta"
	assert_failure 1
}

# The mean of adapter $1's memory is the mean of (G, S); a sum with
# opposite weights cancels.
averages() {
	sa-encode -m "$M" -a "$1" -o "$T/a.delta" "$D/all.tsv"
	sa-merge --mean "$T/a.delta" "$T/a.delta" -o "$T/mean.delta"
	# (the counts add up, so only the state is compared)
	run "$DIFF" "$T/a.delta" "$T/mean.delta"
	assert_line "max difference: 0"
	sa-merge --sum "$T/a.delta:1" "$T/a.delta:-1" -o "$T/zero.delta"
	run sa-info -j "$T/zero.delta"
	assert_output --partial '"g_norm":0,"s_trace":0,'
}

@test "chain, append and shards of the memory equal one encode within 1e-5 of its scale" {
	composes "$A"
}

@test "value offset 1: in the file and sa-info; chain equals one encode; not offset 0's delta" {
	sa-init -m "$M" --kind lsq --d-key 16 --seed 3 --w1-scale 0.5 --value-offset 1 -o "$T/a1.gguf"
	run sa-info -j "$T/a1.gguf"
	assert_output --partial '"lambda":1,"value_offset":1,'
	run sa-info -j "$A"
	assert_output --partial '"value_offset":0,'
	! cmp -s "$A" "$T/a1.gguf"
	head -1 "$D/all.tsv" >"$T/header"
	tail -n +2 "$D/all.tsv" | split -l 15 - "$T/part."
	for p in aa ab; do
		cat "$T/header" "$T/part.$p" >"$T/$p.tsv"
		sa-encode -m "$M" -a "$T/a1.gguf" -o "$T/$p.delta" "$T/$p.tsv"
	done
	sa-encode -m "$M" -a "$T/a1.gguf" -o "$T/one.delta" "$T/aa.tsv" "$T/ab.tsv"
	sa-merge --chain "$T/aa.delta" "$T/ab.delta" -o "$T/chained.delta"
	run "$DIFF" -r 1e-5 "$T/one.delta" "$T/chained.delta"
	assert_success
	# the same tokens bound to other values: another memory
	sa-encode -m "$M" -a "$A" -o "$T/zero.delta" "$T/aa.tsv" "$T/ab.tsv"
	run "$DIFF" -r 1e-5 "$T/one.delta" "$T/zero.delta"
	assert_failure
	sa-export -m "$M" -o "$T/lora.gguf" "$T/one.delta"
	p='review 99 good -> pos'
	merged=$(sa-run -m "$M" -d "$T/one.delta" --score -p "$p" | awk '{print $2}')
	side=$(sa-run -m "$M" -d "$T/one.delta" --unmerged --score -p "$p" | awk '{print $2}')
	awk -v a="$merged" -v b="$side" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }'
	# an offset the format does not know: one line, 65
	off=$(grep -obUa 'streamadapter.value_offset' "$T/a1.gguf" | cut -d: -f1)
	cp "$T/a1.gguf" "$T/bad.gguf"
	printf '\002' | dd of="$T/bad.gguf" bs=1 seek=$((off + 26 + 4)) conv=notrunc 2>/dev/null
	run -65 sa-info "$T/bad.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "value_offset 2 out of range"
	run -64 sa-init -m "$M" --value-offset 1 -o "$T/x.gguf"
	run -64 sa-init -m "$M" --kind lsq --value-offset 2 -o "$T/x.gguf"
	[ ! -e "$T/x.gguf" ]
}

@test "the mean of the memory is the mean of (G, S); a sum with opposite weights cancels" {
	averages "$A"
}

@test "the memory's update exports as a LoRA of rank n_head_kv * d_key" {
	sa-encode -m "$M" -a "$A" -o "$T/d.delta" "$D/all.tsv"
	sa-export -m "$M" -o "$T/lora.gguf" "$T/d.delta"
	run sa-info -j "$T/lora.gguf"
	assert_success
	assert_output --partial '"kind":"lora adapter"'
}

@test "a memory delta with a pool adapter, or chained with a pool delta, exits 65" {
	sa-encode -m "$M" -a "$A" -o "$T/lsq.delta" "$D/all.tsv"
	sa-encode -m "$M" -a "$D/pool.gguf" -o "$T/pool.delta" "$D/all.tsv"
	run -65 sa-run -m "$M" -a "$D/pool.gguf" -d "$T/lsq.delta" -p x
	[ "${#lines[@]}" -eq 1 ]
	run -65 sa-merge --chain "$T/lsq.delta" "$T/pool.delta"
	[ "${#lines[@]}" -eq 1 ]
	run -65 sa-encode -m "$M" -a "$D/pool.gguf" --append "$T/lsq.delta" "$D/all.tsv"
}

@test "bad memory files: truncated, a changed byte, a kind that contradicts the version" {
	sa-encode -m "$M" -a "$A" -o "$T/d.delta" "$D/all.tsv"
	size=$(stat -c %s "$T/d.delta")
	head -c $((size / 2)) "$T/d.delta" >"$T/half.delta"
	run -65 sa-info "$T/half.delta"
	[ "${#lines[@]}" -eq 1 ]
	# the kind field (bytes 12-15) says pool in a version 2 file
	cp "$T/d.delta" "$T/kind.delta"
	printf '\0' | dd of="$T/kind.delta" bs=1 seek=12 conv=notrunc 2>/dev/null
	run -65 sa-info "$T/kind.delta"
	assert_output --partial "kind 0 in a version 2 delta"
	# an adapter whose d_key does not match its tensors
	size=$(stat -c %s "$A")
	head -c $((size - 100)) "$A" >"$T/cut.gguf"
	run -65 sa-info "$T/cut.gguf"
	[ "${#lines[@]}" -eq 1 ]
}

# tests/helpers/memory-floor: the untrained memory over the model's own keys,
# on sa-eval --map's episodes.  Labels of one token, contexts of two segments.
floor_pool() {
	mkdir -p "$T/pool"
	printf '%s\n' apple bread chair door eagle frost grape hill ice jar kite lamp >"$T/pool/words.txt"
	printf '%s\n' a b c d e f g h >"$T/pool/labels.txt"
}

@test "memory-floor: a row per head of --layer, else per number of pairs; one pair is always read back" {
	floor_pool
	FLOOR="$ROOT/tests/helpers/memory-floor"
	run --separate-stderr "$FLOOR" -m "$M" --pool "$T/pool" --pairs 1,2,8 --episodes 3 --layer 1 -t 1
	assert_success
	one="$output"
	[ "${#lines[@]}" -eq 15 ]
	assert_line --index 2 --regexp '^ +n layer head +attn +soft( +[0-9.]+){16}$'
	# rows: n, layer 1, each head; 16 memories and attention in percent
	echo "$output" | awk 'NR > 3 {
		if (NF != 21 || $1 != (NR <= 7 ? 1 : NR <= 11 ? 2 : 8) || $2 != 1 || $3 != (NR - 4) % 4) bad++
		for (i = 4; i <= NF; i++) if ($i < 0 || $i > 100) bad++
		# one pair: its label is the only one, so every readout is right
		for (i = 5; NR <= 7 && i <= NF; i++) if ($i != "100.0") bad++
	} END { exit bad }'
	# the same on any number of threads; without --layer, the best head per row
	run --separate-stderr "$FLOOR" -m "$M" --pool "$T/pool" --pairs 1,2,8 --episodes 3 --layer 1 -t 2
	[ "$output" = "$one" ]
	run --separate-stderr "$FLOOR" -m "$M" --pool "$T/pool" --pairs 1,2,8 --episodes 3 --lambdas 0.5,2
	assert_success
	[ "${#lines[@]}" -eq 6 ]
	echo "$output" | awk 'NR > 3 && (NF != 13 || $2 > 1 || $3 > 3) { bad++ } END { exit bad }'
	# the records as one text: one pair is read back too
	run --separate-stderr "$FLOOR" -m "$M" --pool "$T/pool" --pairs 1,4 --episodes 3 --layout text
	assert_success
	assert_line --index 0 --partial ", one text, 3 episodes,"
	echo "$output" | awk 'NR == 4 { for (i = 5; i <= NF; i++) if ($i != "100.0") bad++ }
	    NR > 5 { bad++ } END { exit bad + (NR != 5) }'
}

@test "memory-floor: usage errors exit 64, a missing pool 66" {
	floor_pool
	FLOOR="$ROOT/tests/helpers/memory-floor"
	run -64 "$FLOOR" -m "$M" --pairs 1
	assert_output --partial "no pool"
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" --pairs 13
	assert_output --partial "memory-floor: --pairs: 13 is not a number of pairs from 1 to 12"
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" --pairs 1.5
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" --layer 2
	assert_output "memory-floor: --layer 2: the model has 2 layers"
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" --lambdas 0
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" extra
	run -64 "$FLOOR" -m "$M" --pool "$T/pool" --layout spaced
	run -64 --separate-stderr "$FLOOR" -m "$M" --pool "$T/pool" --pairs 12 --layout text
	[[ "$stderr" =~ ^memory-floor:\ 12\ pairs\ as\ one\ text\ take\ [0-9]+\ tokens\;\ the\ context\ has\ 64$ ]]
	run -66 "$FLOOR" -m "$M" --pool "$T/none"
}

# tests/helpers/delta-fill: per layer and head, the trace of S and the key
# directions the read-out uses, df = tr(S (S + lambda I)^-1).
@test "delta-fill: df grows with what is written, shrinks with lambda, stays below d_key" {
	FILL="$ROOT/tests/helpers/delta-fill"
	head -2 "$D/all.tsv" | sa-encode -m "$M" -a "$D/in.gguf" -o "$T/one.delta" -
	sa-encode -m "$M" -a "$D/in.gguf" -o "$T/all.delta" "$D/all.tsv"
	run --separate-stderr "$FILL" "$T/one.delta"
	assert_success
	[ "${#lines[@]}" -eq 2 ]
	assert_line --index 1 --regexp '^layer 1 trace [0-9.]+ [0-9.]+ df [0-9.]+ [0-9.]+$'
	one="$output"
	all=$("$FILL" "$T/all.delta")
	loose=$("$FILL" -l 10 "$T/all.delta")
	# per layer and head: 0 < df(one) <= df(all) < 16, and df(lambda 10) < df(0.1)
	paste -d ' ' <(echo "$one") <(echo "$all") <(echo "$loose") | awk '{
		for (h = 0; h < 2; h++) {
			a = $(7 + h); b = $(15 + h); c = $(23 + h)
			if (!(a > 0 && a <= b && b < 16 && c < b)) bad++
		}
	} END { exit bad + (NR != 2) }'
	run -66 "$FILL" "$T/missing.delta"
	head -c 100 "$T/all.delta" >"$T/cut.delta"
	run -65 "$FILL" "$T/cut.delta"
	[ "${#lines[@]}" -eq 1 ]
	run -64 "$FILL" -l 0 "$T/one.delta"
	sa-encode -m "$M" -a "$D/pool.gguf" -o "$T/pool.delta" "$D/all.tsv"
	run -65 "$FILL" "$T/pool.delta"
	assert_output "delta-fill: $T/pool.delta: not a delta of the least-squares memory"
}

@test "--key-source input: in the file and sa-info, absent from the keys' files; defaults; seeded" {
	run sa-info -j "$D/in.gguf"
	assert_success
	assert_output --partial '"rank":32,"d_key":16,"lambda":0.100000001,"value_offset":1,"key_source":"input","records":"alone","matrices":["attn_output"],'
	# P, w, c per layer and W1, W2 per matrix: no feature offsets
	assert_output --partial '"tensors":10,'
	run sa-info "$D/down.gguf"
	assert_output --partial "key source:          input"
	assert_output --partial "matrices:            ffn_down"
	run sa-info -j "$A"
	assert_output --partial '"value_offset":0,"key_source":"keys","records":"packed",'
	! grep -q key_source "$A"
	sa-init -m "$M" --kind lsq --key-source input --d-key 16 --seed 3 -o "$T/again.gguf"
	cmp "$D/in.gguf" "$T/again.gguf"
	sa-init -m "$M" --kind lsq --key-source input --d-key 16 --seed 4 -o "$T/other.gguf"
	! cmp -s "$D/in.gguf" "$T/other.gguf"
	sa-init -m "$M" --kind lsq --key-source input --value-offset 0 --mats attn_v -o "$T/v0.gguf"
	run sa-info -j "$T/v0.gguf"
	assert_output --partial '"value_offset":0,"key_source":"input","records":"alone","matrices":["attn_v"],'
}

@test "records alone: in the file and sa-info; a file's delta is the chain of its records' in any order" {
	sa-init -m "$M" --kind lsq --key-source input --d-key 16 --seed 3 --records packed -o "$T/packed.gguf"
	run sa-info -j "$T/packed.gguf"
	assert_output --partial '"key_source":"input","records":"packed",'
	! grep -q streamadapter.records "$T/packed.gguf"
	grep -q streamadapter.records "$D/in.gguf"
	sa-init -m "$M" -r 4 -C 8 --seed 3 --w1-scale 0.5 --records alone -o "$T/pool-alone.gguf"
	run sa-info "$T/pool-alone.gguf"
	assert_output --partial "records:             alone"
	head -1 "$D/all.tsv" >"$T/header"
	for i in 2 3 4 5; do
		{ cat "$T/header"; sed -n "${i}p" "$D/all.tsv"; } >"$T/r$i.tsv"
		sa-encode -m "$M" -a "$D/in.gguf" -o "$T/in$i.delta" "$T/r$i.tsv"
		sa-encode -m "$M" -a "$T/packed.gguf" -o "$T/packed$i.delta" "$T/r$i.tsv"
	done
	sed -n 1,5p "$D/all.tsv" >"$T/four.tsv"
	sa-encode -m "$M" -a "$D/in.gguf" -o "$T/four.delta" "$T/four.tsv"
	sa-merge --chain "$T/in5.delta" "$T/in3.delta" "$T/in2.delta" "$T/in4.delta" -o "$T/chained.delta"
	# (one source against four: only the states are compared)
	run "$DIFF" "$T/four.delta" "$T/chained.delta"
	assert_line "sources differ: 1, 4"
	state_within 1e-5
	# packed, each record reads those before it: not the chain of the four
	sa-encode -m "$M" -a "$T/packed.gguf" -o "$T/four.delta" "$T/four.tsv"
	sa-merge --chain "$T/packed2.delta" "$T/packed3.delta" "$T/packed4.delta" "$T/packed5.delta" \
	    -o "$T/chained.delta"
	run "$DIFF" "$T/four.delta" "$T/chained.delta"
	! state_within 1e-3
}

# $3: a copy of adapter $1 with the first byte of string key $2's value
# made 'X' (it follows the key's name, its type and its length).
spoil_value() {
	local off
	off=$(grep -obUa "$2" "$1" | cut -d: -f1)
	cp "$1" "$3"
	printf 'X' | dd of="$3" bs=1 seek=$((off + ${#2} + 4 + 8)) conv=notrunc 2>/dev/null
}

# delta-diff's output in $output: the states differ by at most $1 of the
# largest |h|.
state_within() {
	awk -v r="$1" '/^max \|h\|:/ { h = $3 } /^max difference:/ { d = $3 }
	    END { print "difference " d " of " h; exit !(h > 0 && d <= r * h) }' <<<"$output"
}

@test "records: an unknown layout exits 64 (sa-init) and 65 (a file)" {
	run -64 sa-init -m "$M" --kind lsq --key-source input --records spaced -o "$T/x.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "unknown layout 'spaced' (packed, alone)"
	[ ! -e "$T/x.gguf" ]
	spoil_value "$D/in.gguf" streamadapter.records "$T/bad.gguf"
	run -65 sa-info "$T/bad.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "unknown records 'Xlone'"
}

@test "--key-source input: more than one matrix kind, the pool kind, too many features exit 64" {
	run -64 sa-init -m "$M" --kind lsq --key-source input --mats attn_q,attn_output -o "$T/x.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "exactly one matrix kind"
	run -64 sa-init -m "$M" --kind lsq --key-source input --mats all -o "$T/x.gguf"
	run -64 sa-init -m "$M" --key-source input -o "$T/x.gguf"
	run -64 sa-init -m "$M" --kind lsq --key-source bogus -o "$T/x.gguf"
	assert_output --partial "unknown source"
	run -64 sa-init -m "$M" --kind lsq --key-source input --d-key 65 -o "$T/x.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "exceeds the input's width 64"
	[ ! -e "$T/x.gguf" ]
}

@test "a memory keyed by the input: chain, append and shards equal one encode (attn_output, ffn_down)" {
	composes "$D/in.gguf"
	composes "$D/down.gguf"
}

@test "a memory keyed by the input: the mean is the mean of (G, S)" {
	averages "$D/in.gguf"
	averages "$D/down.gguf"
}

@test "a memory keyed by the input: the same delta with any number of threads" {
	sa-encode -t 1 -m "$M" -a "$D/in.gguf" -o "$T/t1.delta" "$D/all.tsv"
	sa-encode -t 3 -m "$M" -a "$D/in.gguf" -o "$T/t3.delta" "$D/all.tsv"
	cmp "$T/t1.delta" "$T/t3.delta"
	sa-encode -t 1 -m "$M" -a "$D/down.gguf" -o "$T/t1.delta" "$D/all.tsv"
	sa-encode -t 3 -m "$M" -a "$D/down.gguf" -o "$T/t3.delta" "$D/all.tsv"
	cmp "$T/t1.delta" "$T/t3.delta"
}

@test "a memory keyed by the input: W1 = 0 (ffn_gate) is an exact no-op; attn_output's W1 is not" {
	sa-init -m "$M" --kind lsq --key-source input --mats ffn_gate --d-key 16 -o "$T/gate.gguf"
	sa-encode -m "$M" -a "$T/gate.gguf" -o "$T/d.delta" "$D/all.tsv"
	run sa-info -j "$T/d.delta"
	refute_output --partial '"g_norm":0,'
	p='review 99 good -> pos'
	base=$(sa-run -m "$M" --score -p "$p")
	[ "$base" = "$(sa-run -m "$M" -d "$T/d.delta" --score -p "$p")" ]
	[ "$base" = "$(sa-run -m "$M" -d "$T/d.delta:3" --unmerged --score -p "$p")" ]
	sa-encode -m "$M" -a "$D/in.gguf" -o "$T/in.delta" "$D/all.tsv"
	[ "$base" != "$(sa-run -m "$M" -d "$T/in.delta" --score -p "$p")" ]
}

@test "a memory keyed by the input: merged and side paths agree within 1e-4; it exports as a LoRA" {
	p='review 99 good -> pos'
	for a in in down; do
		sa-encode -m "$M" -a "$D/$a.gguf" -o "$T/$a.delta" "$D/all.tsv"
		merged=$(sa-run -m "$M" -d "$T/$a.delta" --score -p "$p" | awk '{print $2}')
		side=$(sa-run -m "$M" -d "$T/$a.delta" --unmerged --score -p "$p" | awk '{print $2}')
		echo "$a: merged $merged side $side"
		awk -v a="$merged" -v b="$side" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }'
	done
	sa-export -m "$M" -o "$T/lora.gguf" "$T/in.delta"
	run sa-info -j "$T/lora.gguf"
	assert_output --partial '"kind":"lora adapter"'
}

@test "adapter-scale: a layer's factor scales its update; 0 everywhere is the base, 1 the same file" {
	S="$ROOT/tests/helpers/adapter-scale"
	p='review 99 good -> pos'
	"$S" -m "$M" "$D/in.gguf" "$T/one.gguf" 1,1
	cmp "$D/in.gguf" "$T/one.gguf"
	"$S" -m "$M" "$D/in.gguf" "$T/zero.gguf" 0,0
	sa-encode -m "$M" -a "$T/zero.gguf" -o "$T/zero.delta" "$D/all.tsv"
	[ "$(sa-run -m "$M" --score -p "$p")" = "$(sa-run -m "$M" -d "$T/zero.delta" --score -p "$p")" ]
	# twice W1 at both layers is the delta at scale 2; at one layer it is not
	sa-encode -m "$M" -a "$D/in.gguf" -o "$T/in.delta" "$D/all.tsv"
	want=$(sa-run -m "$M" -d "$T/in.delta:2" --score -p "$p" | awk '{print $2}')
	for f in 2,2 1,2; do
		"$S" -m "$M" "$D/in.gguf" "$T/$f.gguf" $f
		sa-encode -m "$M" -a "$T/$f.gguf" -o "$T/$f.delta" "$D/all.tsv"
		got=$(sa-run -m "$M" -d "$T/$f.delta" --score -p "$p" | awk '{print $2}')
		echo "$f: $got, scale 2: $want"
		awk -v a="$got" -v b="$want" -v f=$f 'BEGIN { d = a - b; near = d < 1e-5 && d > -1e-5
		    exit (f == "2,2") != near }'
	done
	run "$S" -m "$M" "$D/in.gguf" "$T/bad.gguf" 1,1,1
	assert_failure 64
	assert_output --partial 'want 2 factors'
	[ ! -e "$T/bad.gguf" ]
}

@test "bad files keyed by the input: an unknown source, tensors of the other source exit 65" {
	spoil_value "$D/in.gguf" streamadapter.key_source "$T/bad.gguf"
	run -65 sa-info "$T/bad.gguf"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "unknown key_source 'Xnput'"
	# another key's name: the file reads as keyed by the layer's keys, whose
	# tensors it does not have
	off=$(grep -obUa 'streamadapter.key_source' "$D/in.gguf" | cut -d: -f1)
	cp "$D/in.gguf" "$T/other.gguf"
	printf 'X' | dd of="$T/other.gguf" bs=1 seek=$((off + 14)) conv=notrunc 2>/dev/null
	run -65 sa-info "$T/other.gguf"
	[ "${#lines[@]}" -eq 1 ]
	run -65 sa-encode -m "$M" -a "$T/other.gguf" "$D/all.tsv"
	[ "${#lines[@]}" -eq 1 ]
}

@test "key sums that are not positive definite exit 65 with the reason, on any thread count" {
	sa-encode -m "$M" -a "$A" -o "$T/a.delta" "$D/all.tsv"
	sa-merge --sum "$T/a.delta:-1" -o "$T/neg.delta"
	for t in 1 2 3; do
		for m in "" --unmerged; do
			run --separate-stderr sa-run -m "$M" -t $t -d "$T/neg.delta" $m -p x -n 1
			[ "$status" -eq 65 ]
			[[ "$stderr" == *"not positive definite"* ]]
		done
	done
}
