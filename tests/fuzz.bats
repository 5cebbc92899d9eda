#!/usr/bin/env bats
# The fuzzing harnesses of tests/fuzz/, replayed without libFuzzer on their
# seeds and on every input that once crashed, leaked or hung
# (tests/fuzz/regress/HARNESS/, one file each, named after what it found).
# A harness aborts on a wrong result, so each input is a check.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	export SA_FUZZ_VOCAB="$ROOT/tests/data/vocab"
}

replay() {
	local h=$1 files=()
	for f in "$ROOT/tests/fuzz/corpus/$h"/* "$ROOT/tests/fuzz/regress/$h"/*; do
		[ -f "$f" ] && files+=("$f")
	done
	[ "${#files[@]}" -gt 0 ]
	run "$ROOT/tests/helpers/fuzz-replay" "$h" "${files[@]}"
	assert_success
	assert_output "$h: ${#files[@]} inputs"
}

@test "fuzz replay: GGUF reader, getters, vocabulary, write and read back" {
	replay gguf
}

@test "fuzz replay: delta reader, descriptions, write and read back, algebra" {
	replay delta
}

@test "fuzz replay: adapter reader" {
	replay adapter
}

@test "fuzz replay: demonstrations, templates and segments" {
	replay demos
}

@test "fuzz replay: JSON reader and writers" {
	replay json
}

@test "fuzz replay: tokenizers on arbitrary bytes" {
	replay tokenizer
}

@test "fuzz-replay: an unknown harness is a usage error" {
	run -64 "$ROOT/tests/helpers/fuzz-replay" nosuch
	assert_output --partial "unknown harness nosuch"
}
