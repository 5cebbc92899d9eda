#!/usr/bin/env bats
# libsa's forward pass against llama.cpp's, through the references that
# scripts/oracle/make-refs.sh made with llama.cpp (tests/data/oracle/*.ref).
# llama.cpp itself is not needed here: the models are made again by mkmodel
# and tests/unit/test_oracle compares.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	cd "$BATS_TEST_DIRNAME/.."
	export TMPDIR="$BATS_TEST_TMPDIR"
	refs=tests/data/oracle
}

# Run test_oracle on the references matching some globs; fail unless each
# matches.
oracle() {
	local files=() pat
	for pat; do
		set -- $refs/$pat
		[ -e "$1" ] || fail "no reference matches $refs/$pat"
		files+=( "$@" )
	done
	run tests/unit/test_oracle -v "${files[@]}"
}

@test "oracle: the references cover both architectures, tied and untied output, GQA, every type" {
	for pat in 'llama-*' 'qwen2-*' '*-f32-*' '*-f16-*' '*-bf16-*' '*-q8_0-*' \
	    '*-q4_0-*' '*-q4_1-*' '*-q5_0-*' '*-q5_1-*' \
	    '*-q2_k-*' '*-q3_k-*' '*-q4_k-*' '*-q5_k-*' '*-q6_k-*' \
	    '*-gqa*' '*-mha*' '*-tied*' '*-untied*' '*-spm' '*-bpe'; do
		files=( $refs/$pat.ref )
		[ -e "${files[0]}" ] || fail "no reference for $pat"
	done
}

@test "oracle: mkmodel makes the same model twice (the references depend on it)" {
	args=$(sed -n 's/^mkmodel //p' $refs/llama-q8_0-*.ref | head -n 1)
	[ -n "$args" ] || fail "no mkmodel line"
	tests/helpers/mkmodel $args -o "$TMPDIR/a.gguf"
	tests/helpers/mkmodel $args -o "$TMPDIR/b.gguf"
	cmp "$TMPDIR/a.gguf" "$TMPDIR/b.gguf"
}

@test "oracle: F32 models: logits within 1e-4 of llama.cpp, greedy continuation identical" {
	oracle '*-f32-*.ref'
	assert_success
	assert_output --partial 'greedy identical'
}

@test "oracle: F16 models: logits within tolerance, greedy continuation identical" {
	oracle '*-f16-*.ref'
	assert_success
}

@test "oracle: BF16 models: logits within tolerance, greedy continuation identical" {
	oracle '*-bf16-*.ref'
	assert_success
}

@test "oracle: Q8_0 models: logits within tolerance, greedy continuation identical" {
	oracle '*-q8_0-*.ref'
	assert_success
}

@test "oracle: Q4_0, Q4_1, Q5_0, Q5_1 models: logits within tolerance, greedy continuation identical" {
	oracle '*-q[45]_[01]-*.ref'
	assert_success
	assert_output --partial 'greedy identical'
}

@test "oracle: Q2_K .. Q6_K models: logits within tolerance, greedy continuation identical" {
	oracle '*-q[2-6]_k-*.ref'
	assert_success
	assert_output --partial 'greedy identical'
}

@test "oracle: the quantized models agree with the portable kernels too" {
	SA_KERNELS=generic oracle '*-q[2-6]_[01k]-*.ref'
	assert_success
}

@test "oracle: SentencePiece and Qwen2 BPE vocabs: a text tokenized as llama.cpp does it" {
	oracle '*-spm.ref' '*-bpe.ref'
	assert_success
	assert_output --partial 'spm.ref'
	assert_output --partial 'bpe.ref'
}

@test "oracle: a reference with one logit moved by 1% is caught" {
	ref=$(ls $refs/*-f32-*.ref | head -n 1)
	# Scale the largest logit of the first position by 1.01.
	awk '$1 == "pos" && !done {
		m = 3; for (i = 3; i <= NF; i++) if ($i * $i > $m * $m) m = i
		$m = $m * 1.01; done = 1 } { print }' "$ref" > "$TMPDIR/bad.ref"
	run tests/unit/test_oracle "$TMPDIR/bad.ref"
	assert_failure
	assert_output --partial 'logits differ'
}

@test "oracle: a reference with another greedy token is caught" {
	ref=$(ls $refs/*-f32-*.ref | head -n 1)
	awk '$1 == "greedy" { $10 = $10 == 0 ? 1 : $10 - 1 } { print }' \
	    "$ref" > "$TMPDIR/bad.ref"
	run tests/unit/test_oracle "$TMPDIR/bad.ref"
	assert_failure
	assert_output --partial 'greedy token 7'
}

@test "oracle: the references see the RoPE base and the norm epsilon" {
	ref=$refs/llama-f32-d128-gqa-untied.ref
	grep -q -- '--rope-base 500 --eps 0.01 ' "$ref" || fail "$ref: expected --rope-base 500 --eps 0.01"
	sed 's/--rope-base 500/--rope-base 10000/' "$ref" > "$TMPDIR/rope.ref"
	run tests/unit/test_oracle "$TMPDIR/rope.ref"
	assert_failure
	sed 's/--eps 0.01/--eps 0.0099/' "$ref" > "$TMPDIR/eps.ref"
	run tests/unit/test_oracle "$TMPDIR/eps.ref"
	assert_failure
	assert_output --partial 'logits differ'
}
