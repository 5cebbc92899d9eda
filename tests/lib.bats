#!/usr/bin/env bats
# libsa's C unit tests, one bats test per program (built by make check).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$BATS_TEST_DIRNAME/.."
}

@test "json: values, escapes, error columns, depth limit, writers, random bytes" {
	run "$ROOT/tests/unit/test_json"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "sample: greedy, log-probabilities, top-k, top-p, min-p, temperature, seeded stream" {
	run "$ROOT/tests/unit/test_sample"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "memory: recall of what was written, exact composition, float sums, gradients against finite differences" {
	run "$ROOT/tests/unit/test_memory"
	assert_success
	assert_output --partial ", 0 failed"
}
