#!/usr/bin/env bats
# scripts/demo.sh (make demo): the main job of the README, on the toy model
# and, when data/ holds them, on the shipped model and adapter.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	export SA_DEMO_DIR="$BATS_TEST_TMPDIR/demo"
}

@test "demo on the toy model: the delta carries the demonstration's label" {
	SA_MODEL=/nonexistent run sh "$ROOT/scripts/demo.sh"
	assert_success
	assert_line "StreamAdapter  chair -> green"
	refute_line "zero-shot      chair -> green"
	[ -s "$SA_DEMO_DIR/toy.delta" ]
	# the training stopped at a margin on every token of the answer, which
	# holds whatever kernels the CPU runs, not at a lucky step count
	last=$(grep "log-probabilities of the answer's tokens: " <<<"$output" | tail -n 1)
	[ -n "$last" ]
	awk '{ for (i = 1; i <= NF; i++) if ($i < log(0.52)) exit 1 }' <<<"${last##*: }"
}

@test "demo on the shipped model: answers side by side and the accuracy table" {
	[ -f "$ROOT/data/model.gguf" ] && [ -f "$ROOT/data/adapter.gguf" ] ||
		skip "no data/model.gguf and data/adapter.gguf"
	run sh "$ROOT/scripts/demo.sh"
	assert_success
	assert_line --regexp '^query +zero-shot +ICL +StreamAdapter +expected$'
	# eight answered queries, then sa-eval's row for the task
	[ "$(sed -n '/^query /,/^$/p' <<<"$output" | grep -c .)" -eq 9 ]
	assert_line --regexp '^\| plural \| seen \| gen \| 50 \|( [0-9.]+ \|){4} [0-9]+ \|$'
}
