#!/usr/bin/env bats
# The foundation of libsa: messages and output files (test_util), tensor
# types and the GGUF reader and writer (test_gguf), and the test models
# that tests/helpers/mkmodel makes.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	cd "$BATS_TEST_DIRNAME/.."
	export TMPDIR="$BATS_TEST_TMPDIR"
	mk=tests/helpers/mkmodel
	dump="tests/unit/test_gguf --dump"
}

@test "util: messages, hashes, output files, whole-file reads" {
	run tests/unit/test_util
	assert_success
	assert_output --partial ", 0 failed"
}

@test "util: a fatal signal removes the output's temporary file and still kills" {
	mkdir "$TMPDIR/d"
	run tests/unit/test_util signal "$TMPDIR/d"
	assert_equal "$status" 143
	run ls -A "$TMPDIR/d"
	assert_output ""
	# without the handlers the temporary file stays: the check above can fail
	run tests/unit/test_util nohandler "$TMPDIR/d"
	assert_equal "$status" 143
	run ls -A "$TMPDIR/d"
	assert_output --regexp '^\.out\.......$'
}

@test "util: a signal ignored before sa_outfile_install_signals stays ignored" {
	mkdir "$TMPDIR/d"
	run tests/unit/test_util nohup "$TMPDIR/d"
	assert_success
	assert_equal "$(cat "$TMPDIR/d/out")" "all of it"
}

@test "gguf: every value type, v2 and v3, truncations, bad files, writer, fp16/bf16/Q8_0" {
	run tests/unit/test_gguf
	assert_success
	assert_output --partial ", 0 failed"
}

@test "gguf: the vocab files of llama.cpp's tests open, v2 and v3 alike" {
	vocab=/work/oracle/llama.cpp/models
	[ -e $vocab/ggml-vocab-llama-spm.gguf ] || skip "llama.cpp's vocab files are not here"
	for f in $vocab/ggml-vocab-*.gguf; do
		run $dump "$f"
		assert_success
		assert_line --regexp '^version [23]$'
		assert_line --regexp '^kv tokenizer.ggml.tokens arr str [0-9]+$'
	done
}

@test "mkmodel: same arguments, same bytes; another seed, other weights" {
	$mk --arch qwen2 --type q8_0 --kv-heads 2 --seed 5 -o "$TMPDIR/a.gguf"
	$mk --arch qwen2 --type q8_0 --kv-heads 2 --seed 5 -o "$TMPDIR/b.gguf"
	cmp "$TMPDIR/a.gguf" "$TMPDIR/b.gguf"
	$mk --arch qwen2 --type q8_0 --kv-heads 2 --seed 5 > "$TMPDIR/c.gguf"
	cmp "$TMPDIR/a.gguf" "$TMPDIR/c.gguf"
	$mk --arch qwen2 --type q8_0 --kv-heads 2 --seed 6 -o "$TMPDIR/d.gguf"
	run cmp -s "$TMPDIR/a.gguf" "$TMPDIR/d.gguf"
	assert_failure
	# same size, and every weight tensor differs, not just a few bytes
	assert_equal "$(stat -c %s "$TMPDIR/a.gguf")" "$(stat -c %s "$TMPDIR/d.gguf")"
	$dump "$TMPDIR/a.gguf" | grep '^tensor' | sort > "$TMPDIR/a.txt"
	$dump "$TMPDIR/d.gguf" | grep '^tensor' | sort > "$TMPDIR/d.txt"
	[ "$(wc -l < "$TMPDIR/a.txt")" -eq 27 ]
	run comm -12 "$TMPDIR/a.txt" "$TMPDIR/d.txt"
	assert_output ""
}

@test "mkmodel: the reader sees the metadata and tensors llama.cpp expects" {
	$mk --layers 3 --dim 64 --heads 4 --kv-heads 2 --ff 96 --ctx 128 --type f16 \
	    --rope-base 500000 --eps 1e-6 -o "$TMPDIR/m.gguf"
	run $dump "$TMPDIR/m.gguf"
	assert_success
	assert_line "version 3"
	assert_line "kv general.architecture str llama"
	assert_line "kv llama.context_length u32 128"
	assert_line "kv llama.embedding_length u32 64"
	assert_line "kv llama.block_count u32 3"
	assert_line "kv llama.feed_forward_length u32 96"
	assert_line "kv llama.attention.head_count u32 4"
	assert_line "kv llama.attention.head_count_kv u32 2"
	assert_line "kv llama.rope.freq_base f32 500000"
	assert_line "kv llama.rope.dimension_count u32 16"
	assert_line "kv llama.attention.layer_norm_rms_epsilon f32 1e-06"
	assert_line "kv tokenizer.ggml.model str llama"
	assert_line "kv tokenizer.ggml.tokens arr str 406"
	assert_line "kv tokenizer.ggml.scores arr f32 406"
	assert_line "kv tokenizer.ggml.token_type arr i32 406"
	assert_line "kv tokenizer.ggml.bos_token_id u32 1"
	assert_line "kv tokenizer.ggml.eos_token_id u32 2"
	assert_line --regexp '^tensor token_embd.weight F16 64 406 '
	assert_line --regexp '^tensor blk.2.attn_norm.weight F32 64 '
	assert_line --regexp '^tensor blk.2.attn_q.weight F16 64 64 '
	assert_line --regexp '^tensor blk.2.attn_k.weight F16 64 32 '
	assert_line --regexp '^tensor blk.2.attn_v.weight F16 64 32 '
	assert_line --regexp '^tensor blk.2.attn_output.weight F16 64 64 '
	assert_line --regexp '^tensor blk.2.ffn_gate.weight F16 64 96 '
	assert_line --regexp '^tensor blk.2.ffn_up.weight F16 64 96 '
	assert_line --regexp '^tensor blk.2.ffn_down.weight F16 96 64 '
	assert_line --regexp '^tensor output_norm.weight F32 64 '
	assert_line --regexp '^tensor output.weight F16 64 406 '
	run grep -c '^tensor' <<< "$output"
	assert_output "30"
	run grep -c 'bias' <<< "$output"
	assert_output "0"
}

@test "mkmodel: qwen2 has q/k/v biases; --tied drops output.weight" {
	$mk --arch qwen2 --tied --type bf16 -o "$TMPDIR/q.gguf"
	run $dump "$TMPDIR/q.gguf"
	assert_success
	assert_line "kv general.architecture str qwen2"
	assert_line "kv qwen2.block_count u32 2"
	assert_line --regexp '^tensor blk.1.attn_q.bias F32 64 '
	assert_line --regexp '^tensor blk.1.attn_k.bias F32 64 '
	assert_line --regexp '^tensor blk.1.attn_v.bias F32 64 '
	assert_line --regexp '^tensor blk.1.attn_q.weight BF16 64 64 '
	refute_line --regexp '^tensor output.weight '
}

@test "mkmodel: more layers or another type keep the weights they share" {
	$mk --layers 1 -o "$TMPDIR/one.gguf"
	$mk --layers 3 -o "$TMPDIR/three.gguf"
	$dump "$TMPDIR/one.gguf" | grep '^tensor blk.0' > "$TMPDIR/one.txt"
	$dump "$TMPDIR/three.gguf" | grep '^tensor blk.0' > "$TMPDIR/three.txt"
	[ -s "$TMPDIR/one.txt" ]
	cmp "$TMPDIR/one.txt" "$TMPDIR/three.txt"
	# norms stay F32 whatever the type: identical across types
	$mk --type q8_0 -o "$TMPDIR/q8.gguf"
	$dump "$TMPDIR/one.gguf" | grep '^tensor blk.0.attn_norm' > "$TMPDIR/n1.txt"
	$dump "$TMPDIR/q8.gguf" | grep '^tensor blk.0.attn_norm' > "$TMPDIR/n2.txt"
	cmp "$TMPDIR/n1.txt" "$TMPDIR/n2.txt"
}

@test "mkmodel: --vocab copies every tokenizer key and takes the vocab size from it" {
	vocab=/work/oracle/llama.cpp/models/ggml-vocab-llama-spm.gguf
	[ -e $vocab ] || skip "llama.cpp's vocab files are not here"
	$mk --vocab $vocab --dim 32 --heads 2 --layers 1 -o "$TMPDIR/v.gguf"
	run $dump "$TMPDIR/v.gguf"
	assert_success
	assert_line "kv tokenizer.ggml.tokens arr str 32000"
	assert_line --regexp '^tensor token_embd.weight F32 32 32000 '
	assert_line --regexp '^tensor output.weight F32 32 32000 '
	# the tokenizer keys are the vocab file's, value for value
	diff <($dump $vocab | grep '^kv tokenizer') <(grep '^kv tokenizer' <<< "$output")
}

@test "mkmodel: bad arguments are usage errors; --help and --version succeed" {
	run $mk --type iq4_xs -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --type q4_k -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --type q8_0 --dim 48 --heads 2 -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --dim 64 --heads 3 -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --heads 4 --kv-heads 3 -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --layers 0 -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk --arch gpt2 -o "$TMPDIR/x.gguf"
	assert_failure 64
	run $mk extra -o "$TMPDIR/x.gguf"
	assert_failure 64
	[ ! -e "$TMPDIR/x.gguf" ]
	run $mk --vocab "$TMPDIR/missing.gguf" -o "$TMPDIR/x.gguf"
	assert_failure 66
	[ ! -e "$TMPDIR/x.gguf" ]
	run $mk -o /nonexistent-dir/x.gguf
	assert_failure 73
	run $mk --help
	assert_success
	assert_output --partial "usage: mkmodel"
	run $mk --version
	assert_success
}

@test "mkmodel: a full disk is an I/O error" {
	[ -w /dev/full ] || skip "no /dev/full"
	run $mk -o /dev/full
	assert_failure 74
	assert_output --partial "/dev/full"
	run bash -c "$mk > /dev/full"
	assert_failure 74
	assert_output --partial "stdout"
}
