#!/usr/bin/env bats
# The tokenizer (lib/tokenizer.c) against llama.cpp's vocabulary test vectors
# in tests/data/vocab, through the C program tests/unit/test_tokenizer.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$BATS_TEST_DIRNAME/.."
	VOCAB="$ROOT/tests/data/vocab"
}

@test "tokenizer: every llama.cpp test case of llama-spm, gpt-2, llama-bpe and qwen2, round trips, BOS/EOS, byte fallback, synthetic vocabularies" {
	run "$ROOT/tests/unit/test_tokenizer" "$VOCAB"
	assert_success
	assert_output --partial ", 0 failed"
	for v in llama-spm gpt-2 llama-bpe qwen2; do
		n=$(grep -c '' "$VOCAB/ggml-vocab-$v.gguf.out")
		assert_output --partial "$v: $n/$n cases match llama.cpp, $n/$n round trips"
	done
}

@test "tokenizer: usage error without a vocabulary directory" {
	run -64 "$ROOT/tests/unit/test_tokenizer"
	assert_output --partial "usage: test_tokenizer VOCAB_DIR"
}

@test "tokenizer: lib/unicode_tables.h is what scripts/gen-unicode.py makes" {
	want=$(sed -n 's/^#define SA_UNICODE_VERSION "\(.*\)"/\1/p' "$ROOT/lib/unicode_tables.h")
	have=$(python3 -c 'import unicodedata; print(unicodedata.unidata_version)')
	[ "$want" = "$have" ] || skip "python3 has Unicode $have, the tables are $want"
	python3 "$ROOT/scripts/gen-unicode.py" > "$BATS_TEST_TMPDIR/tables.h"
	run cmp "$BATS_TEST_TMPDIR/tables.h" "$ROOT/lib/unicode_tables.h"
	assert_success
}
