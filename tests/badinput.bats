#!/usr/bin/env bats
# Bad input of every kind: each must give its exit status and a message that
# names the problem, quickly, and never a crash.  Bad files are made from a
# good mkmodel output with head, printf and dd.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	"$ROOT/tests/helpers/mkmodel" --seed 5 --ctx 32 -o "$BATS_FILE_TMPDIR/good.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	RUN="$ROOT/bin/sa-run"
	GOOD="$BATS_FILE_TMPDIR/good.gguf"
	T="$BATS_TEST_TMPDIR"
}

# Byte offset of the first occurrence of a string in a file.
offset_of() {
	LC_ALL=C grep -obUaF -m1 "$1" "$2" | head -1 | cut -d: -f1
}

# Write the bytes of a printf format at an offset, in place.
patch_bytes() {
	printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

@test "sa-run: a file that is not GGUF is bad data" {
	printf 'hello, this is text and not a model\n' > "$T/text.gguf"
	run -65 "$RUN" -m "$T/text.gguf" -p hi
	assert_output --partial "not a GGUF file"
	: > "$T/empty.gguf"
	run -65 "$RUN" -m "$T/empty.gguf" -p hi
	assert_output --regexp "sa-run: .*empty.gguf: "
}

@test "sa-run: a missing model cannot be opened" {
	run -66 "$RUN" -m "$T/absent.gguf" -p hi
	assert_output --partial "absent.gguf"
	run -66 "$RUN" -m "$T" -p hi
}

@test "sa-run: a truncated model is bad data, cut anywhere" {
	size=$(stat -c %s "$GOOD")
	for n in 4 20 100 1000 $((size / 2)) $((size - 1)); do
		head -c "$n" "$GOOD" > "$T/cut.gguf"
		run -65 "$RUN" -m "$T/cut.gguf" -p hi
		assert_output --partial "cut.gguf"
	done
	head -c $((size - 1)) "$GOOD" > "$T/cut.gguf"
	run -65 "$RUN" -m "$T/cut.gguf" -p hi
	assert_output --regexp "truncated|out of bounds"
}

@test "sa-run: an unknown architecture is bad data" {
	cp "$GOOD" "$T/arch.gguf"
	# The value follows the key, its type (u32) and its length (u64).
	at=$(offset_of general.architecture "$T/arch.gguf")
	patch_bytes "$T/arch.gguf" $((at + 20 + 4 + 8)) 'gpt_x'
	run -65 "$RUN" -m "$T/arch.gguf" -p hi
	assert_output --partial "unknown architecture 'gpt_x'"
}

@test "sa-run: a missing tensor is bad data naming it" {
	cp "$GOOD" "$T/miss.gguf"
	at=$(offset_of blk.1.ffn_up.weight "$T/miss.gguf")
	patch_bytes "$T/miss.gguf" $((at + 18)) 'X'
	run -65 "$RUN" -m "$T/miss.gguf" -p hi
	assert_output --partial "missing tensor blk.1.ffn_up.weight"
}

@test "sa-run: an unsupported tensor type is bad data naming the type" {
	cp "$GOOD" "$T/type.gguf"
	# Tensor info: name, u32 n_dims (2), two u64 dims, then the u32 type.
	at=$(offset_of blk.0.attn_q.weight "$T/type.gguf")
	patch_bytes "$T/type.gguf" $((at + 19 + 4 + 16)) '\024'    # IQ4_NL
	run -65 "$RUN" -m "$T/type.gguf" -p hi
	assert_output --partial "blk.0.attn_q.weight has type IQ4_NL, which is not supported"
	patch_bytes "$T/type.gguf" $((at + 19 + 4 + 16)) '\377'    # no such type
	run -65 "$RUN" -m "$T/type.gguf" -p hi
	assert_output --partial "blk.0.attn_q.weight"
}

@test "sa-run: absurd header counts fail fast" {
	for field in 8 16; do
		cp "$GOOD" "$T/count.gguf"
		patch_bytes "$T/count.gguf" "$field" '\377\377\377\377\377\377\377\177'
		SECONDS=0
		run -65 timeout 10 "$RUN" -m "$T/count.gguf" -p hi
		assert_output --partial "count.gguf"
		[ "$SECONDS" -le 2 ]
	done
	# A string length of 2^63 in the first key.
	cp "$GOOD" "$T/len.gguf"
	patch_bytes "$T/len.gguf" 24 '\377\377\377\377\377\377\377\177'
	run -65 timeout 10 "$RUN" -m "$T/len.gguf" -p hi
	assert_output --partial "len.gguf"
}

@test "out-of-range numbers: the bounds in the message are written out, not as 2.14748e+09" {
	printf '%s\n' '{"prompt":"a","n_predict":99999999999}' '{"prompt":"a","top_k":-1}' > "$T/range.jsonl"
	run -65 --separate-stderr "$RUN" -m "$GOOD" --batch "$T/range.jsonl"
	[[ "${lines[0]}" == *'\"n_predict\" must be an integer from -1 to 2147483647"}' ]]
	[[ "${lines[1]}" == *'\"top_k\" must be an integer from 0 to 2147483647"}' ]]
	run -64 "$ROOT/bin/sa-train" --rope-base 1e12
	assert_output "sa-train: --rope-base: invalid value '1e12' (want a number from 1 to 1000000000)"
	for t in encode run eval train; do
		run -64 "$ROOT/bin/sa-$t" -t 99999999999
		assert_output --regexp "^sa-$t: (-t|--threads): invalid value '99999999999' \(want an integer from [0-9]+ to [0-9]+\)$"
	done
}

@test "sa-run: a prompt longer than the context is bad data" {
	long=$(printf 'many words %.0s' $(seq 30))
	run -65 "$RUN" -m "$GOOD" -p "$long"
	assert_output --partial "exceeds the context of 32"
	run -65 "$RUN" -m "$GOOD" -p "x" --choice "$long"
	assert_output --partial "exceed the context of 32"
}

@test "sa-run: an invalid JSON line in a batch gets an error record, the others results" {
	printf '%s\n' '{"id":1,"prompt":"a","n_predict":2}' '{"id":2,,}' '{"id":3,"prompt":"b","n_predict":2}' \
	    '{"id":4,"prompt":"\ud800"}' '{"id":5,"prompt":"a","choices":"b"}' \
	    '{"id":6,"prompt":"a","n_predict":1.5}' > "$T/bad.jsonl"
	printf '\377\376{}\n' >> "$T/bad.jsonl"
	run -65 --separate-stderr "$RUN" -m "$GOOD" --batch "$T/bad.jsonl"
	[ "${#lines[@]}" -eq 7 ]
	[[ "${lines[0]}" == '{"id":1,"text":'* ]]
	[ "${lines[1]}" = '{"id":null,"error":"line 2: column 9: string key expected, found '"','"'"}' ]
	[[ "${lines[2]}" == '{"id":3,"text":'* ]]
	[[ "${lines[3]}" == '{"id":null,"error":"line 4: column 19: unpaired surrogate'* ]]
	[[ "${lines[4]}" == '{"id":5,"error":"line 5: \"choices\" must be'* ]]
	[[ "${lines[5]}" == '{"id":6,"error":"line 6: \"n_predict\" must be an integer'* ]]
	[[ "${lines[6]}" == '{"id":null,"error":"line 7: column 1: '* ]]
	[ -z "$stderr" ]
}

@test "-m given an adapter, a LoRA, a checkpoint or a delta: says what the file is, exit 65" {
	"$ROOT/bin/sa-init" -m "$GOOD" -r 2 -C 8 --w1-scale 0.5 -o "$T/ad.gguf"
	printf 'input\tlabel\ncat\tcats\n' > "$T/d.tsv"
	"$ROOT/bin/sa-encode" -q -m "$GOOD" -a "$T/ad.gguf" -o "$T/x.delta" "$T/d.tsv"
	"$ROOT/bin/sa-export" -m "$GOOD" -o "$T/lora.gguf" "$T/x.delta"
	mkdir "$T/pool"
	printf 'apple\nbread\nchair\ndoor\n' > "$T/pool/words.txt"
	printf 'red\nblue\ngreen\nbig\n' > "$T/pool/labels.txt"
	"$ROOT/bin/sa-train" -q --adapter -m "$GOOD" -o "$T/tr.gguf" --pool "$T/pool" --rank 2 \
	    --chunk 8 --steps 1 --batch-tokens 32 --eval-every 0 -t 1
	run -65 "$RUN" -m "$T/ad.gguf" -p hi
	assert_output "sa-run: $T/ad.gguf: this is an sa adapter, not a model (give it with -a)"
	run -65 "$ROOT/bin/sa-encode" -m "$T/ad.gguf" -a "$T/ad.gguf" "$T/d.tsv"
	assert_output "sa-encode: $T/ad.gguf: this is an sa adapter, not a model (give it with -a)"
	run -65 "$RUN" -m "$T/lora.gguf" -p hi
	assert_output "sa-run: $T/lora.gguf: this is a LoRA adapter, not a model"
	run -65 "$RUN" -m "$T/tr.gguf.ckpt/state.gguf" -p hi
	assert_output --partial "state.gguf: this is a checkpoint of sa-train, not a model"
	run -65 "$RUN" -m "$T/x.delta" -p hi
	assert_output "sa-run: $T/x.delta: this is an sa delta, not a GGUF file"
	run -65 "$RUN" -m - -p hi < "$T/x.delta"
	assert_output "sa-run: stdin: this is an sa delta, not a GGUF file"
}
