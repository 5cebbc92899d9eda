#!/usr/bin/env bats
# Training: gradients, and sa-train runs on tiny models.

bats_require_minimum_version 1.5.0

setup() {
	bats_load_library bats-support
	bats_load_library bats-assert
	cd "$BATS_TEST_DIRNAME/.."
}

@test "training gradients match finite differences (every op, whole model, side path)" {
	run tests/unit/test_train
	assert_success
	assert_output --partial " 0 failed"
}
