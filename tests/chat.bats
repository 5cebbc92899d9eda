#!/usr/bin/env bats
# sa-run with chat models and llama.cpp's generation habits: control tokens
# parsed from the prompt (--special), chat templates (--chat, batch
# "messages"), stop strings, the repeat penalty, log-probabilities, and
# --tokenize.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

CHATML="{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	mk="$ROOT/tests/helpers/mkmodel"
	"$mk" --seed 3 --special '<|im_start|>' --special '<|im_end|>' \
	    --chat-template "$CHATML" -o "$BATS_FILE_TMPDIR/c.gguf"
	"$mk" --seed 3 -o "$BATS_FILE_TMPDIR/plain.gguf"
	# Llama 3's header tokens, a template of a family llama.cpp knows that
	# is not written here (Phi 3), and one nobody knows.
	"$mk" --seed 3 --special '<|start_header_id|>' --special '<|end_header_id|>' \
	    --special '<|eot_id|>' \
	    --chat-template "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}" \
	    -o "$BATS_FILE_TMPDIR/l3.gguf"
	"$mk" --seed 3 --chat-template "{{ '<|user|>' }}{{ '<|assistant|>' }}{{ '<|end|>' }}" \
	    -o "$BATS_FILE_TMPDIR/phi3.gguf"
	"$mk" --seed 3 --chat-template "{{ messages }}" -o "$BATS_FILE_TMPDIR/odd.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	RUN="$ROOT/bin/sa-run"
	GET="$ROOT/tests/helpers/jsonl-get"
	C="$BATS_FILE_TMPDIR/c.gguf"
	P="$BATS_FILE_TMPDIR/plain.gguf"
	unset SA_MODEL SA_ADAPTER
	export LC_ALL=C
	cd "$BATS_TEST_TMPDIR"
}

@test "--special: a control token written in the prompt is one token" {
	run -0 "$RUN" -m "$C" --tokenize -p 'a<|im_start|>b'
	plain="$output"
	run -0 "$RUN" -m "$C" --tokenize --special -p 'a<|im_start|>b'
	# BOS, " a", the control token (the vocab's last but one), " b": text
	# after a control token starts a word, as llama.cpp's SentencePiece does
	assert_output "[1, 354, 406, 355]"
	[ "$output" != "$plain" ]
	run -0 "$RUN" -m "$C" --tokenize --special --no-bos -p '<|im_end|><|im_start|>'
	assert_output "[407, 406]"
	run -0 "$RUN" -m "$C" --tokenize --json -p 'ab'
	assert_output '{"tokens":[{"id":1,"piece":"<s>"},{"id":354,"piece":" a"},{"id":325,"piece":"b"}]}'
	run -0 "$RUN" -m "$C" --tokenize --json --special --no-bos -p '<|im_end|>'
	assert_output '{"tokens":[{"id":407,"piece":"<|im_end|>"}]}'
}

@test "--chat renders the model's template, with --system, and parses its control tokens" {
	run -0 "$RUN" -m "$C" --chat --system 'Be brief' -p 'Hello' -n 0 --echo
	assert_output "$(printf '<|im_start|>system\nBe brief<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n')"
	run -0 "$RUN" -m "$C" --chat -p 'Hello' --tokenize
	want="$output"
	run -0 "$RUN" -m "$C" --special --tokenize \
	    -p '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n'
	assert_output "$want"
	[[ "$output" == "[1, 406, "* ]]
}

@test "--chat-template names a family: llama3 for a model without a template" {
	run -0 "$RUN" -m "$BATS_FILE_TMPDIR/l3.gguf" --chat -p 'Hi' -n 0 --echo
	assert_output "$(printf '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n')"
	run -0 "$RUN" -m "$P" --chat --chat-template zephyr --system S -p 'Hi' -n 0 --echo
	assert_output "$(printf '<|system|>\nS<|endoftext|>\n<|user|>\nHi<|endoftext|>\n<|assistant|>\n')"
	# The name wins over the model's own template.
	run -0 "$RUN" -m "$C" --chat --chat-template mistral-v7 -p 'Hi' -n 0 --echo
	assert_output "[INST] Hi[/INST]"
}

@test "--chat refuses a model without a template, and templates it does not know" {
	run -65 --separate-stderr "$RUN" -m "$P" --chat -p Hi
	[ "${#lines[@]}" -eq 0 ]
	[[ "$stderr" == "sa-run: "*"has no chat template"*"--chat-template"* ]]
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
	run -65 "$RUN" -m "$BATS_FILE_TMPDIR/phi3.gguf" --chat -p Hi
	assert_output --partial "family 'phi3' is not supported"
	run -65 "$RUN" -m "$BATS_FILE_TMPDIR/odd.gguf" --chat -p Hi
	assert_output --partial "chat template not recognised"
	run -64 "$RUN" -m "$C" --chat --chat-template jinja -p Hi
	assert_output --partial "unknown family 'jinja'"
	run -64 "$RUN" -m "$C" --system S -p Hi
	run -64 "$RUN" -m "$C" --chat-template chatml -p Hi
	run -64 "$RUN" -m "$C" --logprobs 2 -p Hi
	run -64 "$RUN" -m "$C" --tokenize --score -p Hi
}

@test "batch: \"messages\" in the chat template, errors on their own lines" {
	printf '%s\n' \
	    '{"id":1,"messages":[{"role":"system","content":"S"},{"role":"user","content":"Hi"}],"n_predict":4,"temp":0}' \
	    '{"id":2,"messages":[{"role":"user"}]}' \
	    '{"id":3,"messages":[{"role":"user","content":"x"}],"prompt":"x"}' > req.jsonl
	run -65 --separate-stderr "$RUN" -m "$C" --batch req.jsonl
	[ "${#lines[@]}" -eq 3 ]
	got=$("$GET" text <<<"${lines[0]}")
	run -0 "$RUN" -m "$C" --chat --system S -p Hi -n 4 --temp 0 --json
	[ "$got" = "$("$GET" text <<<"$output")" ]
	run -65 --separate-stderr "$RUN" -m "$C" --batch req.jsonl
	[[ "${lines[1]}" == *'"messages\"[0] must have a string \"role\" and \"content\""'* ]]
	[[ "${lines[2]}" == *'give \"prompt\" or \"messages\", not both'* ]]
	# Without a template, a line fails; --chat-template serves it.
	head -n 1 req.jsonl > one.jsonl
	run -65 "$RUN" -m "$P" --batch one.jsonl
	assert_output --partial "has no chat template"
	run -0 "$RUN" -m "$P" --chat-template chatml --batch one.jsonl
	assert_output --partial '"text":'
}

@test "--stop: generation ends before the stop string, which is not printed" {
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0
	full="$output"
	[ "${#full}" -gt 12 ]
	for at in 3 6 9; do
		stop="${full:$at:3}"
		run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --no-escape --stop "$stop" --stop zzzz
		assert_output "${full%%"$stop"*}"
	done
	# A stop string that starts at the end but never completes: nothing lost.
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --no-escape --stop "${full: -1}zzzz"
	assert_output "$full"
	# The same in a batch request, in JSON.
	stop=$(grep -o '[A-Za-z]' <<<"${full:1}" | head -n 1)
	[ -n "$stop" ]
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --stop "$stop" --json
	want="$output"
	[[ "$want" == '{"text":'* ]]
	printf '{"prompt":"Once upon","n_predict":24,"temp":0,"stop":["zzzz","%s"]}\n' "$stop" \
	    > req.jsonl
	run -0 "$RUN" -m "$C" --batch req.jsonl
	assert_output "{\"id\":null,${want#\{}"
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --json
	[ "$output" != "$want" ]
}

@test "--repeat-penalty: llama.cpp's penalty changes greedy text; 1 is off" {
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0
	plain="$output"
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --repeat-penalty 1
	assert_output "$plain"
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --repeat-penalty 1.5 --repeat-last-n 0
	assert_output "$plain"
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 24 --temp 0 --repeat-penalty 1.5
	[ "$output" != "$plain" ]
	run -64 "$RUN" -m "$C" -p x --repeat-penalty -1
	run -64 "$RUN" -m "$C" -p x --repeat-last-n -2
}

@test "--logprobs N: each generated token with its log-probability and the N best" {
	run -0 --separate-stderr "$RUN" -m "$C" -p 'Once upon' -n 3 --temp 0 --json --logprobs 2
	probs=$("$GET" logprobs <<<"$output")
	[ "$(grep -o '"top_logprobs"' <<<"$probs" | wc -l)" -eq 3 ]
	[ "$(grep -o '"id"' <<<"$probs" | wc -l)" -eq 9 ]
	# Greedy: the token drawn is the best of its list, with the same logprob.
	first=$(sed 's/^\[{"id":\([0-9]*\),"token":.*,"logprob":\([^,]*\),"top_logprobs":\[{"id":\([0-9]*\),"token":.*,"logprob":\([^,}]*\)}.*/\1 \2 \3 \4/' <<<"$probs")
	read -r id lp best blp <<<"$first"
	[ "$id" = "$best" ] && [ "$lp" = "$blp" ]
	# Without --logprobs, the JSON is as before.
	run -0 "$RUN" -m "$C" -p 'Once upon' -n 3 --temp 0 --json
	[[ "$output" != *logprobs* ]]
	printf '%s\n' '{"prompt":"Once upon","n_predict":2,"temp":0,"logprobs":1}' \
	    '{"prompt":"x","logprobs":-1}' > req.jsonl
	run -65 "$RUN" -m "$C" --batch req.jsonl
	[[ "${lines[0]}" == *'"logprobs":[{"id":'* ]]
	[[ "${lines[1]}" == *'"logprobs\" must be an integer from 0 to 100'* ]]
}

@test "sa-encode --chat: records as chat turns of the model's template, control tokens parsed" {
	ENC="$ROOT/bin/sa-encode"
	printf 'input\tlabel\ngreat film\tpos\ndull {x}\tneg\n' > t.tsv
	run -0 "$ENC" --dump --chat -m "$C" t.tsv
	assert_line --index 0 '{"source":"t.tsv","line":2,"text":"<|im_start|>user\ngreat film<|im_end|>\n<|im_start|>assistant\npos<|im_end|>\n"}'
	assert_line --index 1 --partial '"text":"<|im_start|>user\ndull {x}<|im_end|>'
	run -0 "$ENC" --dump --chat --chat-template mistral-v7 -m "$P" t.tsv
	assert_line --index 0 --partial '"text":"[INST] great film[/INST] pos</s>"'
	"$ROOT/bin/sa-init" -m "$C" -r 4 -C 8 --seed 1 -o a.gguf
	"$ENC" -m "$C" -a a.gguf --chat -o chat.delta t.tsv
	"$ENC" -m "$C" -a a.gguf -o as-text.delta \
	    -T '<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n{label}<|im_end|>\n' t.tsv
	chat=$("$ROOT/bin/sa-info" --json chat.delta | "$GET" n_tokens)
	text=$("$ROOT/bin/sa-info" --json as-text.delta | "$GET" n_tokens)
	# Four control tokens a record, each one token instead of several.
	[ "$chat" -lt "$text" ]
	run -65 "$ENC" --dump --chat -m "$P" t.tsv
	assert_output --partial "has no chat template"
	run -64 "$ENC" --dump --chat -T '{input}' -m "$C" t.tsv
	run -64 "$ENC" --dump --chat-template chatml -m "$C" t.tsv
	printf 'hello\n' > x.txt
	run -64 "$ENC" --dump --chat -m "$C" x.txt
	assert_output --partial "x.txt is text"
}

@test "--chat recognises each family by llama.cpp's substrings of the template" {
	mk="$ROOT/tests/helpers/mkmodel"
	check() {   # template, --system or "", expected rendering of "Hi"
		"$mk" --layers 1 --dim 8 --heads 2 --ff 8 --ctx 64 --chat-template "$1" -o t.gguf
		run -0 "$RUN" -m t.gguf --chat ${2:+--system "$2"} -p Hi -n 0 --echo
		assert_output "$(printf '%s' "$3")"
	}
	check "{{ '[INST] ' }}" "" "[INST] Hi [/INST]"
	check "{{ '[INST] <<SYS>>' }}" S $'[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]'
	check "{{ bos_token + '[INST] ' + content.strip() + '<<SYS>>' }}" " S " \
	    $'[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]'
	check "{{ bos_token + '[INST] ' + '<<SYS>>' }}" S $'[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]'
	check "{{ ' [INST] ' + system_message }}" S $' [INST] S\n\nHi [/INST]'
	check "[AVAILABLE_TOOLS]{{'[INST]'}}" S $'[INST] S\n\nHi[/INST]'
	check '[AVAILABLE_TOOLS]{{"[INST]"}}' S $'[INST]S\n\nHi[/INST]'
	check "{{ '[SYSTEM_PROMPT]' + '[INST]' }}" S '[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] Hi[/INST]'
	check "{{ '<|user|>' + '<|endoftext|>' }}" "" $'<|user|>\nHi<|endoftext|>\n<|assistant|>\n'
	check "{{ '<|im_start|>' }}" "" $'<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
	# Phi 4 is ChatML with <|im_sep|>: llama.cpp's own family, refused here.
	"$mk" --layers 1 --dim 8 --heads 2 --ff 8 --ctx 64 \
	    --chat-template "{{ '<|im_start|>' + '<|im_sep|>' }}" -o t.gguf
	run -65 "$RUN" -m t.gguf --chat -p Hi
	assert_output --partial "family 'phi4' is not supported"
}
