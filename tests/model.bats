#!/usr/bin/env bats
# The model loader and the forward pass: tests/unit/test_model compares
# sa_forward with a naive reference on mkmodel models; here it also makes
# broken copies of a model and loads them.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	cd "$BATS_TEST_DIRNAME/.."
	export TMPDIR="$BATS_TEST_TMPDIR"
	model="$BATS_TEST_TMPDIR/m.gguf"
	tests/helpers/mkmodel --layers 2 --dim 64 --heads 4 --kv-heads 2 -o "$model"
}

@test "model: forward pass matches the reference (llama, qwen2, GQA, tied, all types)" {
	run tests/unit/test_model
	assert_success
	assert_output --partial 'qwen2-tied-q8_0'
}

@test "model: the portable kernels give the same results" {
	SA_KERNELS=generic run tests/unit/test_model
	assert_success
}

@test "kernels: every path this CPU has against the portable one; SA_KERNELS picks a path, OpenBLAS's core type follows unless set" {
	for k in '' generic avx2 avx512 bogus; do
		SA_KERNELS=$k run env -u OPENBLAS_CORETYPE tests/unit/test_kernels
		assert_success
	done
	SA_KERNELS=avx2 OPENBLAS_CORETYPE=Prescott run tests/unit/test_kernels
	assert_success
}

@test "model: a good model loads" {
	run tests/unit/test_model --load "$model"
	assert_success
	assert_output 'mkmodel-llama: 2 layers'
}

@test "model: unknown architecture" {
	tests/unit/test_model --make-bad arch "$model" "$TMPDIR/bad.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
	assert_output "$TMPDIR/bad.gguf: unknown architecture 'gptj' (llama and qwen2 are supported)"
}

@test "model: missing tensor" {
	tests/unit/test_model --make-bad missing "$model" "$TMPDIR/bad.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
	assert_output "$TMPDIR/bad.gguf: missing tensor blk.1.attn_k.weight"
}

@test "model: unsupported tensor type" {
	tests/helpers/mkmodel --layers 2 --dim 256 --heads 4 -o "$model"
	tests/unit/test_model --make-bad type "$model" "$TMPDIR/bad.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
	assert_output "$TMPDIR/bad.gguf: tensor blk.1.attn_k.weight has type IQ4_XS, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K .. Q6_K are)"
}

@test "model: a NaN block scale of a quantized matrix is bad data naming the tensor and row" {
	for t in q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k; do
		tests/helpers/mkmodel --layers 2 --dim 256 --ff 256 --heads 4 -t $t -o "$model"
		run -0 tests/unit/test_model --load "$model"
		tests/unit/test_model --make-bad scale "$model" "$TMPDIR/bad.gguf"
		run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
		assert_output "$TMPDIR/bad.gguf: tensor blk.1.attn_k.weight holds a non-finite value in row 3"
	done
}

@test "model: a quantized tensor whose bytes overrun the file is refused when opened" {
	tests/helpers/mkmodel --layers 1 --dim 256 --ff 256 --heads 4 -t q4_k -o "$model"
	head -c $(($(stat -c %s "$model") - 1)) "$model" > "$TMPDIR/bad.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
	assert_output --regexp "^$TMPDIR/bad.gguf: tensor [a-z_.0-9]+: data out of bounds$"
}

@test "model: wrong shape" {
	tests/unit/test_model --make-bad shape "$model" "$TMPDIR/bad.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/bad.gguf"
	assert_output "$TMPDIR/bad.gguf: tensor blk.1.attn_k.weight has shape [64, 33], expected [64, 32]"
}

@test "model: not a model" {
	printf 'hello' > "$TMPDIR/x.gguf"
	run -65 tests/unit/test_model --load "$TMPDIR/x.gguf"
	assert_output --partial "$TMPDIR/x.gguf"
	run -66 tests/unit/test_model --load "$TMPDIR/nonexistent.gguf"
}
