#!/usr/bin/env bats
# sa-run: generation, scoring, choices, batch requests, deltas, usage.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	"$ROOT/tests/helpers/mkmodel" --seed 3 -o "$BATS_FILE_TMPDIR/m.gguf"
	"$ROOT/tests/helpers/mkmodel" --arch qwen2 --kv-heads 2 --tied --seed 4 \
	    -o "$BATS_FILE_TMPDIR/q.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	RUN="$ROOT/bin/sa-run"
	M="$BATS_FILE_TMPDIR/m.gguf"
	Q="$BATS_FILE_TMPDIR/q.gguf"
	T="$BATS_TEST_TMPDIR"
	unset SA_MODEL SA_ADAPTER
}

# Field $2 of the line starting with $1 in $output ("choice 0 logprob X ...").
field() {
	awk -v k="$1" -v f="$2" '$0 ~ "^" k " " { print $f; exit }' <<<"$output"
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$RUN" --help
	assert_success
	assert_output --partial "usage: sa-run"
	assert_output --partial "--choice"
	[ -z "$stderr" ]
	run --separate-stderr "$RUN" --version
	assert_success
	assert_output --regexp '^sa-run [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors exit 64 with the synopsis" {
	run -64 --separate-stderr "$RUN" -m "$M" --bogus
	[[ "$stderr" == *"usage: sa-run"* ]]
	run -64 "$RUN" -m "$M" -n abc -p x
	assert_output --partial "-n: invalid value 'abc'"
	run -64 "$RUN" -m "$M" --temp -1 -p x
	run -64 "$RUN" -m "$M" --top-p 1.5 -p x
	run -64 "$RUN" -m "$M" -n -2 -p x
	run -64 "$RUN" -m "$M" --seed -5 -p x
	run -64 "$RUN" -m "$M" -p x -f /dev/null
	run -64 "$RUN" -m "$M" --score --choice a -p x
	run -64 "$RUN" -m "$M" --batch - -p x
	run -64 "$RUN" -m "$M" -p x stray
	assert_output --partial "unexpected argument 'stray'"
	run -64 "$RUN" -m "$M" -a adapter.gguf -p x
	run -64 "$RUN" -m "$M" -d - -f -
	# No usage error ever reaches the standard output.
	run --separate-stderr -64 "$RUN" -m "$M" --top-k x -p x
	[ -z "$output" ]
}

@test "a sampling option takes the values of the batch key of its name (sa_sampling_keys)" {
	local opt key bad range
	for opt in -n:n_predict --temp:temp --top-k:top_k --top-p:top_p --min-p:min_p \
	    --repeat-penalty:repeat_penalty --repeat-last-n:repeat_last_n --logprobs:logprobs; do
		key=${opt#*:} opt=${opt%%:*}
		run -64 "$RUN" -m "$M" "$opt" 1e300 -p x
		range=$(sed -n 's/.*(want \(.*\))$/\1/p' <<<"$output")
		[ -n "$range" ] || fail "$opt: no range in '$output'"
		printf '{"prompt":"x","%s":1e300}\n' "$key" > "$T/r.jsonl"
		run -65 --separate-stderr "$RUN" -m "$M" --batch "$T/r.jsonl"
		[[ "$output" == *"\\\"$key\\\" must be $range\""* ]] || fail "$opt: '$range'; $key: $output"
	done
}

@test "without -m: SA_MODEL, then data/model.gguf above the executable, else a usage error" {
	mkdir -p "$T/inst/bin"
	cp "$RUN" "$T/inst/bin/sa-run"
	run -64 "$T/inst/bin/sa-run" -p x -n 1
	assert_output --partial "give -m MODEL"
	SA_MODEL="$M" run -0 "$T/inst/bin/sa-run" --temp 0 -n 8 -p "Hello"
	want="$output"
	mkdir -p "$T/inst/data"
	cp "$M" "$T/inst/data/model.gguf"
	run -0 "$T/inst/bin/sa-run" --temp 0 -n 8 -p "Hello"
	assert_output "$want"
}

@test "generation is deterministic for a seed, and varies with it" {
	run -0 "$RUN" -m "$M" -n 24 --seed 11 -p "The quick brown fox"
	a="$output"
	[ -n "$a" ]
	run -0 "$RUN" -m "$M" -n 24 --seed 11 -p "The quick brown fox"
	assert_output "$a"
	run -0 "$RUN" -m "$M" -n 24 --seed 12 -p "The quick brown fox"
	[ "$output" != "$a" ]
	# The same with the other architecture and a thread count of one.
	run -0 "$RUN" -m "$Q" -n 24 --seed 11 -t 1 -p "The quick brown fox"
	b="$output"
	run -0 "$RUN" -m "$Q" -n 24 --seed 11 -t 2 -p "The quick brown fox"
	assert_output "$b"
}

@test "--temp 0 is greedy: independent of the seed and the other sampling options" {
	run -0 "$RUN" -m "$M" -n 16 --temp 0 --seed 1 -p "abc"
	a="$output"
	run -0 "$RUN" -m "$M" -n 16 --temp 0 --seed 99 --top-k 3 --top-p 0.5 -p "abc"
	assert_output "$a"
	# top-k 1 at any temperature picks the same tokens.
	run -0 "$RUN" -m "$M" -n 16 --temp 1.5 --top-k 1 --seed 5 -p "abc"
	assert_output "$a"
}

@test "-n is honoured, and a shorter run is a prefix of a longer one" {
	run -0 --separate-stderr "$RUN" -m "$M" -n 5 --temp 0 -v -p "Once upon"
	short="$output"
	[[ "$stderr" == *"generation: 5 tokens"* ]]
	run -0 --separate-stderr "$RUN" -m "$M" -n 12 --seed 4 -v -p "Once upon"
	[[ "$stderr" == *"generation: 12 tokens"* ]]
	[[ "$stderr" == *"prompt: "*" tokens/s"* ]]
	run -0 "$RUN" -m "$M" -n 12 --temp 0 -p "Once upon"
	[[ "$output" == "$short"* ]]
	[ "${#output}" -gt "${#short}" ]
	run -0 --separate-stderr "$RUN" -m "$M" -n 0 -v -p "Once upon"
	[ -z "$output" ]
	# Until the end of a small context: every position is filled, and one
	# more token comes from the logits of the last.
	run -0 --separate-stderr "$RUN" -m "$M" -n -1 -c 20 --temp 0 -v -p "Once upon"
	[[ "$stderr" =~ prompt:\ ([0-9]+)\ tokens ]]
	n_prompt="${BASH_REMATCH[1]}"
	[[ "$stderr" =~ generation:\ ([0-9]+)\ tokens ]]
	[ "${BASH_REMATCH[1]}" -eq $((20 - n_prompt + 1)) ]
}

@test "-v: the timings start a line of their own after the text, on one file" {
	# 2>&1: one pipe
	run -0 "$RUN" -m "$M" --echo -n 0 -v -p hi
	[ "${lines[0]}" = hi ]
	[[ "${lines[1]}" == "sa-run: load "* ]]
	# A text that ends its line gets no blank line after it.
	run -0 "$RUN" -m "$M" --echo -n 0 -v -p 'hi\n'
	[ "${lines[0]}" = hi ]
	[[ "${lines[1]}" == "sa-run: load "* ]]
	# Apart, the text and the timings are as they were.
	run -0 --separate-stderr "$RUN" -m "$M" --echo -n 0 -v -p hi
	[ "$output" = hi ]
	[[ "$stderr" == "sa-run: load "* ]]
	# A terminal.
	command -v script > /dev/null || skip "no script(1)"
	run -0 script -qec "'$RUN' -m '$M' --echo -n 0 -v -p hi" /dev/null < /dev/null
	[[ "$output" == $'hi\r\nsa-run: load '* ]]
}

@test "-p, -f FILE, -f - and standard input give the same text" {
	run -0 "$RUN" -m "$M" -n 10 --seed 3 -p "hello world"
	a="$output"
	printf 'hello world\n' > "$T/p.txt"
	run -0 "$RUN" -m "$M" -n 10 --seed 3 -f "$T/p.txt"
	assert_output "$a"
	run -0 bash -c "'$RUN' -m '$M' -n 10 --seed 3 < '$T/p.txt'"
	assert_output "$a"
	run -0 bash -c "printf 'hello world' | '$RUN' -m '$M' -n 10 --seed 3 -f -"
	assert_output "$a"
	run -0 "$RUN" -m "$M" -n 10 --seed 3 --echo -p "hello world"
	assert_output "hello world$a"
	run -0 "$RUN" -m "$M" -n 10 --seed 3 --json -p "hello world"
	[[ "$output" == '{"text":'* ]]
	run -66 "$RUN" -m "$M" -f "$T/absent.txt"
}

@test "session unit tests: prefix reuse, scores and choices from scratch, greedy generation, KV peak, the request of the options" {
	run "$ROOT/tests/unit/test_session" "$M"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "--echo prints the whole prompt, with -n 0 too, a cut UTF-8 sequence at its end as well" {
	run -0 "$RUN" -m "$M" --echo -n 0 -p 'ab\xc3'
	[ "$output" = $'ab\xc3' ]
	run -0 "$RUN" -m "$M" --echo -n 0 -p 'ab\xc3\xa9'
	[ "$output" = 'abé' ]
}

@test "-p and --choice expand llama.cpp's escapes unless --no-escape" {
	run -0 "$RUN" -m "$M" --echo -n 0 -p 'a\tb\x41\\\q\x4\"\'"'"'\r\n'
	[ "$output" = $'a\tbA\\\\q\\x4"\'\r' ]
	run -0 "$RUN" -m "$M" --echo -n 0 -e --no-escape -p 'a\tb\x41'
	[ "$output" = 'a\tb\x41' ]
	# A newline in a prompt, and in a choice.
	run -0 "$RUN" -m "$M" --score -p $'one\ntwo'
	want="$output"
	run -0 "$RUN" -m "$M" --score -p 'one\ntwo'
	assert_output "$want"
	run -0 "$RUN" -m "$M" --score --no-escape -p 'one\ntwo'
	[ "$output" != "$want" ]
	run -0 "$RUN" -m "$M" -p 'one' --choice $'\ntwo' --choice ' two'
	want="$output"
	run -0 "$RUN" -m "$M" -p 'one' --choice '\ntwo' --choice ' two'
	assert_output "$want"
	# Files and standard input are taken as they are.
	printf 'one\\ntwo' > "$T/p.txt"
	run -0 "$RUN" -m "$M" --score --no-escape -p 'one\ntwo'
	want="$output"
	run -0 "$RUN" -m "$M" --score -f "$T/p.txt"
	assert_output "$want"
}

@test "--score agrees with --choice: score(prompt+choice) - score(prompt) = choice" {
	run -0 "$RUN" -m "$M" --score -p "the cat sat"
	whole=$(field logprob 2)
	n_whole=$(field logprob 4)
	run -0 "$RUN" -m "$M" --score -p "the cat"
	part=$(field logprob 2)
	n_part=$(field logprob 4)
	ppl=$(field logprob 6)
	# ppl = exp(-logprob / tokens)
	awk -v l="$part" -v n="$n_part" -v p="$ppl" 'BEGIN { d = exp(-l / n) - p; exit !(d < 1e-3 * p && d > -1e-3 * p) }'
	run -0 "$RUN" -m "$M" -p "the cat" --choice " sat" --choice " on the mat" --choice "s"
	sat=$(field "choice 0" 4)
	n_sat=$(field "choice 0" 6)
	mean=$(field "choice 0" 8)
	echo "whole $whole part $part sat $sat" >&2
	awk -v w="$whole" -v p="$part" -v c="$sat" 'BEGIN { d = w - p - c; exit !(d < 1e-3 && d > -1e-3) }'
	[ "$n_sat" -eq $((n_whole - n_part)) ]
	awk -v c="$sat" -v n="$n_sat" -v m="$mean" 'BEGIN { d = c / n - m; exit !(d < 1e-5 && d > -1e-5) }'
	# best names the largest log-likelihood.
	best=$(field best 2)
	l0=$(field "choice 0" 4); l1=$(field "choice 1" 4); l2=$(field "choice 2" 4)
	top=$(printf '%s\n' "0 $l0" "1 $l1" "2 $l2" | sort -k2 -g -r | head -1 | cut -d' ' -f1)
	[ "$best" = "$top" ]
}

@test "choices share the prompt's cache without changing the scores" {
	run -0 "$RUN" -m "$M" -p "one two three" --choice " four" --choice " five six"
	both="$output"
	run -0 "$RUN" -m "$M" -p "one two three" --choice " five six"
	alone=$(field "choice 0" 4)
	output="$both"
	shared=$(field "choice 1" 4)
	awk -v a="$alone" -v b="$shared" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }'
	run -0 "$RUN" -m "$M" --json -p "one two three" --choice " four" --choice " five six"
	assert_output --regexp '^\{"logprobs":\[-[0-9.e+-]+,-[0-9.e+-]+\],"mean_logprobs":\[[^]]*\],"best":[01]\}$'
	run -0 "$RUN" -m "$M" --json --score -p "one two three"
	assert_output --regexp '^\{"logprob":-[0-9.e+-]+,"tokens":[0-9]+,"ppl":[0-9.e+-]+\}$'
	# A choice that adds nothing is bad data.
	run -65 "$RUN" -m "$M" -p "one two" --choice ""
	assert_output --partial "choice 0 adds no tokens"
}

@test "batch: one line out per request, ids kept, a bad line reported and the next served" {
	cat > "$T/req.jsonl" <<-'EOF'
	{"id": 1, "prompt": "hello world", "n_predict": 10, "seed": 3}
	{"id": "two", "prompt": "the cat", "choices": [" sat", " on the mat"]}
	{"id": [3], "text": "the cat sat", "score": true}
	{"id": 4, "prompt": "broken
	{"id": 5, "n_predict": 3}
	{"id": 6, "prompt": "x", "temp": "hot"}
	{"id": {"k": 7}, "prompt": "hello world", "n_predict": 10, "seed": 3, "temp": 0}

	[1, 2]
	EOF
	run -65 --separate-stderr "$RUN" -m "$M" --batch "$T/req.jsonl"
	batch=("${lines[@]}")
	[ "${#lines[@]}" -eq 8 ]
	[[ "${lines[0]}" == '{"id":1,"text":'* ]]
	[[ "${lines[1]}" == '{"id":"two","logprobs":['* ]]
	[[ "${lines[2]}" == '{"id":[3],"logprob":'* ]]
	[ "${lines[3]}" = '{"id":null,"error":"line 4: column 28: unterminated string"}' ]
	[ "${lines[4]}" = '{"id":5,"error":"line 5: missing \"prompt\""}' ]
	[[ "${lines[5]}" == '{"id":6,"error":"line 6: \"temp\" must be a number'* ]]
	[[ "${lines[6]}" == '{"id":{"k": 7},"text":'* ]]
	[ "${lines[7]}" = '{"id":null,"error":"line 9: a request must be a JSON object"}' ]

	# The same requests on the command line give the same results.
	run -0 "$RUN" -m "$M" -n 10 --seed 3 --json -p "hello world"
	[ "${batch[0]}" = "{\"id\":1,${output#\{}" ]
	run -0 "$RUN" -m "$M" -n 10 --temp 0 --json -p "hello world"
	[ "${batch[6]}" = "{\"id\":{\"k\": 7},${output#\{}" ]
	run -0 "$RUN" -m "$M" --score --json -p "the cat sat"
	score_cli="$output"
	run -0 --separate-stderr "$RUN" -m "$M" --batch - < <(sed -n 3p "$T/req.jsonl")
	[ "$output" = "{\"id\":[3],${score_cli#\{}" ]
}

@test "batch: an id comes back exactly as it was sent, whatever JSON value it is" {
	ids=(10 9007199254740993 -0 1.50 2E+3 '"a\u0041"' null true '[1, 2.0]' '{"k": [null, "x"]}' '""')
	for id in "${ids[@]}"; do
		printf '{"id": %s, "prompt": "ab", "n_predict": 1, "temp": 0}\n' "$id"
		printf '{"id":%s, "prompt": "ab", "choices": [" c"]}\n' "$id"
		printf '{"score": true, "id":\t%s\t, "text": "ab c"}\n' "$id"
		printf '{"id": %s, "prompt": 1}\n' "$id"
	done > "$T/ids.jsonl"
	run -65 --separate-stderr "$RUN" -m "$M" --batch "$T/ids.jsonl"
	[ "${#lines[@]}" -eq $((4 * ${#ids[@]})) ]
	for i in "${!ids[@]}"; do
		for k in 0 1 2 3; do
			line="${lines[$((4 * i + k))]}"
			[[ "$line" == "{\"id\":${ids[$i]},"* ]] || { echo "want id ${ids[$i]}: $line"; false; }
		done
	done
}

@test "batch: an error names its line once, and its column where the line goes wrong" {
	printf '%s\n' '{"id": 1,' '{"id": 2, "prompt": "cut' '{"id": 3, "prompt": "x", "echo": tru}' > "$T/cut.jsonl"
	printf '{"id": 4, "prompt": nul\r\n[\n' >> "$T/cut.jsonl"
	run -65 --separate-stderr "$RUN" -m "$M" --batch "$T/cut.jsonl"
	[ "${lines[0]}" = '{"id":null,"error":"line 1: column 10: string key expected, found end of input"}' ]
	[ "${lines[1]}" = '{"id":null,"error":"line 2: column 25: unterminated string"}' ]
	[ "${lines[2]}" = '{"id":null,"error":"line 3: column 37: '"'true'"' expected, found '"'}'"'"}' ]
	[ "${lines[3]}" = '{"id":null,"error":"line 4: column 24: '"'null'"' expected, found end of input"}' ]
	[ "${lines[4]}" = '{"id":null,"error":"line 5: column 2: value expected, found end of input"}' ]
}

@test "batch: \"seed\": -1 takes a seed from the clock, as -s -1 does" {
	for i in 1 2 3; do
		printf '{"id": %d, "prompt": "The quick brown fox", "n_predict": 24, "seed": -1}\n' "$i"
	done > "$T/clock.jsonl"
	run -0 --separate-stderr "$RUN" -m "$M" --batch "$T/clock.jsonl"
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" == '{"id":1,"text":'* ]]
	texts=$(printf '%s\n' "${lines[@]}" | sed 's/^{"id":[0-9]*,//' | sort -u | wc -l)
	[ "$texts" -ge 2 ]
	printf '{"prompt": "x", "seed": -2}\n' > "$T/bad.jsonl"
	run -65 --separate-stderr "$RUN" -m "$M" --batch "$T/bad.jsonl"
	assert_output --partial '\"seed\" must be an integer from -1 to'
}

@test "batch: all good lines exit 0; the command line's sampling is the default" {
	printf '%s\n' '{"prompt": "abc", "n_predict": 6}' '{"id": 2, "prompt": "abc"}' > "$T/ok.jsonl"
	run -0 "$RUN" -m "$M" --batch "$T/ok.jsonl" -n 6 --temp 0
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" == '{"id":null,"text":'* ]]
	first="${lines[0]#\{\"id\":null,}"
	[ "${lines[1]}" = "{\"id\":2,$first" ]
	run -0 "$RUN" -m "$M" -n 6 --temp 0 --json -p abc
	assert_output "{$first"
}

@test "-c more than the model's context is refused, as sa-encode refuses it" {
	run -64 --separate-stderr "$RUN" -m "$M" -c 100000 --temp 0 -n 2 -p hello
	[ "$stderr" = "sa-run: --ctx-size 100000 exceeds the model's context of 256" ]
	[ -z "$output" ]
	run -64 --separate-stderr "$RUN" -m "$M" -c 257 --batch /dev/null
	"$ROOT/bin/sa-init" -m "$M" -o "$T/a.gguf"
	printf 'some text\n' > "$T/t.txt"
	run -64 --separate-stderr "$ROOT/bin/sa-encode" -m "$M" -a "$T/a.gguf" -c 100000 -o "$T/d.delta" "$T/t.txt"
	[ "$stderr" = "sa-encode: --ctx-size 100000 exceeds the model's context of 256" ]
	# The model's own context, and 0 for it, are fine.
	run -0 --separate-stderr "$RUN" -m "$M" -c 256 -v --temp 0 -n 1 -p hello
	[[ "$stderr" == *"context 256"* ]]
	run -0 --separate-stderr "$RUN" -m "$M" -c 0 -v --temp 0 -n 1 -p hello
	[[ "$stderr" == *"context 256"* ]]
}

@test "a BOS id outside the vocabulary: one warning, and the default BOS instead" {
	"$ROOT/tests/helpers/mkmodel" --seed 3 --bos 100000 -o "$T/bad.gguf"
	run -0 --separate-stderr "$RUN" -m "$M" --temp 0 -n 8 -p hello
	want="$output"
	[ -z "$stderr" ]
	run -0 --separate-stderr "$RUN" -m "$T/bad.gguf" --temp 0 -n 8 -p hello
	assert_output "$want"
	[ "$stderr" = "sa-run: $T/bad.gguf: tokenizer.ggml.bos_token_id 100000 is outside the vocabulary of 406 tokens: using 1 instead" ]
	# Once per run, not once per request.
	printf '{"prompt": "a", "n_predict": 1}\n{"prompt": "b", "n_predict": 1}\n' > "$T/two.jsonl"
	run -0 --separate-stderr "$RUN" -m "$T/bad.gguf" --batch "$T/two.jsonl"
	[ "$(printf '%s\n' "$stderr" | grep -c 'outside the vocabulary')" -eq 1 ]
	# Without a BOS, nothing to say.
	run -0 --separate-stderr "$RUN" -m "$T/bad.gguf" --no-bos --temp 0 -n 8 -p hello
	[ -z "$stderr" ]
}

@test "sa-run(1): every example works as printed, and the batch requests shown are JSON" {
	command -v mandoc > /dev/null || skip "no mandoc"
	cd "$T"
	cp "$M" model.gguf
	printf 'A short note to score.\n' > notes.txt
	printf 'input,label\ngreat film,pos\ndull,neg\n' > train.csv
	mandoc -Tascii "$ROOT/man/sa-run.1" | col -b > page.txt
	sed -n '/^EXAMPLES/,/^SEE ALSO/p' page.txt > examples.txt
	# requests.jsonl, tasks.jsonl: the lines shown after "$ cat FILE.jsonl"
	awk '/\$ cat [a-z]+\.jsonl/ { f = $NF; on = 1; next } on && /^[[:space:]]*\$/ { on = 0 } on && NF { sub(/^[[:space:]]+/, ""); print > f }' \
	    examples.txt
	[ "$(wc -l < requests.jsonl)" -eq 3 ]
	[ "$(wc -l < tasks.jsonl)" -eq 3 ]
	# The commands: each "$ " line and the lines it continues with "\" or "|".
	awk '/^[[:space:]]*\$ / { sub(/^[[:space:]]*\$ /, ""); print; more = /[\\|]$/; next }
	    more { print; more = /[\\|]$/ }' examples.txt > examples.sh
	[ "$(grep -c '^sa-run' examples.sh)" -ge 6 ]
	PATH="$ROOT/bin:$PATH" SA_CACHE_DIR="$T/cache" run -0 bash -e examples.sh
	[ "$(wc -l < results.jsonl)" -eq 3 ]
	run -1 grep -q '"error"' results.jsonl
	# The requests of BATCH REQUESTS, copied from the page, are served.
	sed -n '/^BATCH REQUESTS/,/^ENVIRONMENT/p' page.txt | grep '^[[:space:]]*{"id": [0-9]' |
	    sed 's/^[[:space:]]*//' > shown.jsonl
	[ "$(wc -l < shown.jsonl)" -eq 3 ]
	run -0 "$RUN" -m model.gguf --batch shown.jsonl
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[1]}" == '{"id":2,"logprobs":['* ]]
}

@test "a prompt longer than the context is bad data" {
	long=$(printf 'word %.0s' $(seq 40))
	run -65 "$RUN" -m "$M" -c 16 -p "$long"
	assert_output --partial "exceeds the context of 16"
	run -65 "$RUN" -m "$M" -c 16 --score -p "$long"
	printf '{"id":1,"prompt":"%s"}\n{"id":2,"prompt":"ok","n_predict":2}\n' "$long" > "$T/long.jsonl"
	run -65 --separate-stderr "$RUN" -m "$M" -c 16 --batch "$T/long.jsonl"
	[[ "${lines[0]}" == '{"id":1,"error":"line 1: prompt of '*' tokens exceeds the context of 16"}' ]]
	[[ "${lines[1]}" == '{"id":2,"text":'* ]]
}

@test "JSON output is valid UTF-8 whatever bytes the model makes" {
	run -0 "$RUN" -m "$M" -n 64 --temp 2 --top-k 0 --top-p 1 --min-p 0 --seed 9 --json -p "é"
	printf '%s' "$output" | iconv -f UTF-8 -t UTF-8 > /dev/null
}

@test "a full standard output is an I/O error" {
	[ -w /dev/full ] || skip "no /dev/full"
	run -74 bash -c "'$RUN' -m '$M' -n 4 -p hi > /dev/full"
	assert_output --partial "sa-run: stdout"
}

@test "deltas: -d changes the model, scale 0 does not, scales add, --unmerged agrees" {
	"$ROOT/bin/sa-init" -m "$M" --w1-scale 0.05 --seed 3 -o "$T/a.gguf"
	printf 'input\tlabel\ngreat film\tpos\ndull\tneg\nthe cat sat\tyes\n' > "$T/train.tsv"
	"$ROOT/bin/sa-encode" -m "$M" -a "$T/a.gguf" -o "$T/d.delta" "$T/train.tsv"
	text="the cat sat on the mat"
	close() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; exit !(d < t && d > -t) }'; }

	run -0 "$RUN" -m "$M" --score -p "$text"; base=$(field logprob 2)
	# The adapter comes from the path the delta records, or from -a.
	run -0 "$RUN" -m "$M" -d "$T/d.delta" --score -p "$text"; one=$(field logprob 2)
	recorded="$output"
	run -0 "$RUN" -m "$M" -d "$T/d.delta" -a "$T/a.gguf" --score -p "$text"
	assert_output "$recorded"
	run ! close "$base" "$one" 0.01
	run -0 "$RUN" -m "$M" -d "$T/d.delta:0" --score -p "$text"
	close "$base" "$(field logprob 2)" 1e-4
	run -0 "$RUN" -m "$M" -d "$T/d.delta:0.5" -d "$T/d.delta:0.5" --score -p "$text"
	close "$one" "$(field logprob 2)" 1e-3
	run -0 "$RUN" -m "$M" -d "$T/d.delta" --unmerged --score -p "$text"
	close "$one" "$(field logprob 2)" 1e-3
	run -0 "$RUN" -m "$M" -d "$T/d.delta:2" --score -p "$text"; two=$(field logprob 2)
	run ! close "$one" "$two" 0.01
	# A colon not followed by a number is part of the file name.
	cp "$T/d.delta" "$T/x:y.delta"
	run -0 "$RUN" -m "$M" -d "$T/x:y.delta" --score -p "$text"
	close "$one" "$(field logprob 2)" 1e-6
	run -0 "$RUN" -m "$M" -d "$T/x:y.delta:1e0" --score -p "$text"
	close "$one" "$(field logprob 2)" 1e-6
	run -66 "$RUN" -m "$M" -d "$T/d.delta:x" --score -p "$text"
	assert_output --partial "d.delta:x"
	# A file whose whole name exists wins over a scale.
	cp "$T/d.delta" "$T/z:2"
	run -0 "$RUN" -m "$M" -d "$T/z:2" --score -p "$text"
	close "$one" "$(field logprob 2)" 1e-6
	# A scale must be a finite float, as for sa-export and sa-merge.
	for s in 1e40 -1e39 nan inf; do
		run -64 "$RUN" -m "$M" -d "$T/d.delta:$s" --score -p "$text"
		assert_output "sa-run: scale $s in '$T/d.delta:$s' is not a finite float"
	done
	# Generation and batch requests see the delta too.
	run -0 "$RUN" -m "$M" --temp 0 -n 12 -p "$text"; plain="$output"
	run -0 "$RUN" -m "$M" -d "$T/d.delta:4" --temp 0 -n 12 -p "$text"
	[ "$output" != "$plain" ]
}

@test "any number of threads gives the same bytes: scores, choices, text, deltas" {
	# a text of about 190 tokens on a model 128 wide: products large enough
	# for sgemm to be cut in blocks, attention through sgemm
	"$ROOT/tests/helpers/mkmodel" --seed 7 --dim 128 --kv-heads 2 --ctx 256 -o "$T/t.gguf"
	"$ROOT/bin/sa-init" -m "$T/t.gguf" -r 4 -C 8 --seed 2 --w1-scale 0.5 -o "$T/a.gguf"
	text=$(awk 'BEGIN { for (i = 1; i <= 14; i++) printf "word %d and more ", i }')
	printf 'input\tlabel\n%s\tyes\n' "$text" > "$T/d.tsv"
	"$ROOT/bin/sa-encode" -q -t 1 -m "$T/t.gguf" -a "$T/a.gguf" -o "$T/d.delta" "$T/d.tsv"
	for t in 1 3; do
		{
			"$RUN" -t $t -m "$T/t.gguf" --score --json -p "$text"
			"$RUN" -t $t -m "$T/t.gguf" --json --choice ' yes' --choice ' no' -p "$text"
			"$RUN" -t $t -m "$T/t.gguf" -d "$T/d.delta" --score --json -p "$text"
			"$RUN" -t $t -m "$T/t.gguf" -d "$T/d.delta" --unmerged --score --json -p "$text"
			"$RUN" -t $t -m "$T/t.gguf" -d "$T/d.delta" --temp 0.8 --seed 5 -n 24 -p "$text"
		} > "$T/out$t"
	done
	[ "$(wc -l < "$T/out1")" -ge 4 ]
	cmp "$T/out1" "$T/out3"
}

@test "deltas: another model's adapter, a broken delta, a missing adapter" {
	"$ROOT/bin/sa-init" -m "$M" --w1-scale 0.05 -o "$T/a.gguf"
	"$ROOT/bin/sa-init" -m "$Q" --w1-scale 0.05 -o "$T/qa.gguf"
	printf 'some text to absorb\n' > "$T/t.txt"
	"$ROOT/bin/sa-encode" -m "$M" -a "$T/a.gguf" -o "$T/d.delta" "$T/t.txt"
	run -65 "$RUN" -m "$Q" -d "$T/d.delta" -p x -n 1
	run -65 "$RUN" -m "$M" -d "$T/d.delta" -a "$T/qa.gguf" -p x -n 1
	head -c 100 "$T/d.delta" > "$T/cut.delta"
	run -65 "$RUN" -m "$M" -d "$T/cut.delta" -p x -n 1
	assert_output --partial "cut.delta"
	rm "$T/a.gguf"
	run -66 "$RUN" -m "$M" -d "$T/d.delta" -p x -n 1
	assert_output --partial "a.gguf"
}
