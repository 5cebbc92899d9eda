#!/usr/bin/env bats
# sa-run serving many deltas from one process: per-request "deltas",
# "demos" and "lora" in a batch, the held side paths, and --lora.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 3 --kv-heads 2 -o "$D/model.gguf"
	"$ROOT/bin/sa-init" -m "$D/model.gguf" -r 4 -C 8 --seed 1 --w1-scale 0.5 -o "$D/adapter.gguf"
	for i in 1 2 3 4; do
		"$ROOT/tests/helpers/mkdelta" -a "$D/adapter.gguf" -s "$i" -o "$D/d$i.delta"
	done
	# a delta of another model and adapter
	"$ROOT/tests/helpers/mkdelta" --layers 2 --kv-heads 2 --head-dim 16 --rank 4 --chunk 8 \
	    --mats attn_q,attn_k,attn_v,attn_output -o "$D/other.delta"
	printf 'input\tlabel\ngood film\tpos\ndull plot\tneg\nfine cast\tpos\n' > "$D/demos.tsv"
	"$ROOT/bin/sa-export" -m "$D/model.gguf" -o "$D/d1.lora.gguf" "$D/d1.delta"
	# a least-squares memory: side paths of rank 128 on 64 x 64, held dense
	"$ROOT/bin/sa-init" -m "$D/model.gguf" --kind lsq --key-source input --seed 1 \
	    --w1-scale 0.5 -o "$D/lsq.gguf"
	for i in 1 2 3; do
		"$ROOT/tests/helpers/mkdelta" -a "$D/lsq.gguf" -s "$i" -o "$D/m$i.delta"
	done
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	PATH="$ROOT/bin:$PATH"
	unset SA_MODEL SA_ADAPTER
	export SA_CACHE_DIR="$T/cache"
	cd "$D"
}

# One request: greedy text, then the score of a text (full precision).
req() {	# id extra-members
	printf '{"id":"%s-t","prompt":"the cat","n_predict":10,"temp":0%s}\n' "$1" "$2"
	printf '{"id":"%s-s","score":true,"text":"the cat sat on the mat"%s}\n' "$1" "$2"
}

# What sa-run gives for the same two requests with options "$@".
alone() {	# id options...
	local id="$1"
	shift
	printf '{"id":"%s-t",%s\n' "$id" "$(sa-run -m model.gguf "$@" -p 'the cat' -n 10 --temp 0 --json | cut -c2-)"
	printf '{"id":"%s-s",%s\n' "$id" "$(sa-run -m model.gguf "$@" --score -p 'the cat sat on the mat' --json | cut -c2-)"
}

# Requests of deltas PREFIXi.delta for each i given, then of PREFIX1 and
# PREFIX2 at -0.5, into $T/req.jsonl; what sa-run gives for each with the
# same deltas and --unmerged into $T/want.
held() {	# prefix i...
	local p="$1" i
	shift
	for i in "$@"; do
		req "$p$i" ",\"deltas\":[\"$p$i.delta\"]"
	done > "$T/req.jsonl"
	req two ",\"deltas\":[\"${p}1.delta\",{\"file\":\"${p}2.delta\",\"scale\":-0.5}]" \
	    >> "$T/req.jsonl"
	for i in "$@"; do
		alone "$p$i" -d "$p$i.delta" --unmerged
	done > "$T/want"
	alone two -d "${p}1.delta" -d "${p}2.delta:-0.5" --unmerged >> "$T/want"
}

@test "each request's deltas give what sa-run -d --unmerged gives, with two held of four" {
	held d 1 2 1 3 4 2 1 4 3 3
	req base "" >> "$T/req.jsonl"
	alone base >> "$T/want"
	run --separate-stderr sa-run -m model.gguf --max-deltas 2 --batch "$T/req.jsonl"
	assert_success
	echo "$output" > "$T/got"
	diff "$T/want" "$T/got"
	# the deltas change the answers
	[ "$(sed -n 1p "$T/got" | cut -d, -f2-)" != "$(sed -n 3p "$T/got" | cut -d, -f2-)" ]
}

@test "memory deltas, their side paths held dense, give what sa-run -d --unmerged gives" {
	held m 1 2 3 1 3 2
	for p in 1 4; do
		run --separate-stderr sa-run -m model.gguf --max-deltas 2 --parallel $p \
		    --batch "$T/req.jsonl"
		assert_success
		echo "$output" > "$T/got$p"
	done
	diff "$T/want" "$T/got1"
	diff <(sort "$T/want") <(sort "$T/got4")
	[ "$(sed -n 1p "$T/got1" | cut -d, -f2-)" != "$(sed -n 3p "$T/got1" | cut -d, -f2-)" ]
}

@test "a prefix cached under other deltas is not reused" {
	{
		req a ',"deltas":["d1.delta"]'
		req b ',"deltas":["d2.delta"]'
		req c ""
		req d ',"deltas":["d2.delta"]'
	} > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf --batch "$T/req.jsonl"
	assert_success
	echo "$output" > "$T/got"
	{
		alone a -d d1.delta --unmerged
		alone b -d d2.delta --unmerged
		alone c
		alone d -d d2.delta --unmerged
	} > "$T/want"
	diff "$T/want" "$T/got"
}

@test "request deltas add to the command line's" {
	req x ',"deltas":["d2.delta"]' > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf -d d1.delta --unmerged --batch "$T/req.jsonl"
	assert_success
	diff <(alone x -d d1.delta -d d2.delta --unmerged) <(echo "$output")
}

@test "a missing or mismatched delta fails its line only" {
	{
		req ok ',"deltas":["d1.delta"]'
		echo '{"id":"missing","prompt":"x","deltas":["nothere.delta"]}'
		echo '{"id":"other","prompt":"x","deltas":["other.delta"]}'
		echo '{"id":"notdelta","prompt":"x","deltas":["model.gguf"]}'
		echo '{"id":"badscale","prompt":"x","deltas":[{"file":"d1.delta","scale":"2"}]}'
		echo '{"id":"badlist","prompt":"x","deltas":"d1.delta"}'
		echo '{"id":"stdin","prompt":"x","deltas":["-"]}'
		req ok2 ',"deltas":["d1.delta"]'
	} > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf -a adapter.gguf --batch "$T/req.jsonl"
	assert_failure 65
	[ "$(grep -c '"error"' <<<"$output")" -eq 6 ]
	assert_line --index 2 --partial '"id":"missing","error":"line 3: nothere.delta: No such file'
	assert_line --index 3 --partial 'other.delta was made for another model'
	assert_line --index 4 --partial 'not a delta'
	assert_line --index 5 --partial '"scale\" must be a finite float'
	assert_line --index 6 --partial 'must be an array of files'
	assert_line --index 7 --partial '"id":"stdin","error":"line 8: \"deltas\": item 1: want a file name'
	[ "$(sed -n 1,2p <<<"$output" | cut -d, -f2-)" = "$(sed -n 9,10p <<<"$output" | cut -d, -f2-)" ]
}

@test "a delta file rewritten between two requests is read again" {
	cp d1.delta "$T/x.delta"
	mkfifo "$T/in"
	sa-run -m model.gguf -a adapter.gguf --batch "$T/in" > "$T/out" 3>&- &
	exec 4> "$T/in"
	echo '{"prompt":"the cat","n_predict":10,"temp":0,"deltas":["'"$T"'/x.delta"]}' >&4
	while [ "$(wc -l < "$T/out")" -lt 1 ]; do sleep 0.1; done
	cp d2.delta "$T/x.delta"
	echo '{"prompt":"the cat","n_predict":10,"temp":0,"deltas":["'"$T"'/x.delta"]}' >&4
	exec 4>&-
	wait
	[ "$(sed -n 1p "$T/out")" = "$(alone x -d d1.delta --unmerged | sed -n 1p | sed 's/"id":"x-t",/"id":null,/')" ]
	[ "$(sed -n 2p "$T/out")" = "$(alone x -d d2.delta --unmerged | sed -n 1p | sed 's/"id":"x-t",/"id":null,/')" ]
}

@test "\"demos\" in a request equals sa-run --demos --unmerged" {
	{
		req e ',"demos":"demos.tsv"'
		req f ',"demos":["demos.tsv"],"deltas":["d3.delta"]'
	} > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf -a adapter.gguf --batch "$T/req.jsonl"
	assert_success
	echo "$output" > "$T/got"
	{
		alone e -a adapter.gguf --demos demos.tsv --unmerged
		alone f -a adapter.gguf -d d3.delta --demos demos.tsv --unmerged
	} > "$T/want"
	diff "$T/want" "$T/got"
	# with the command line's deltas merged, there is no bare base to encode on
	req g ',"demos":"demos.tsv"' > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf -d d1.delta --batch "$T/req.jsonl"
	assert_failure 65
	assert_output --partial 'give the command line'"'"'s deltas with --unmerged'
}

@test "--lora reads an exported delta back: the same text as the delta" {
	for m in "" --unmerged; do
		a="$(sa-run -m model.gguf -d d1.delta $m -p 'the cat' -n 16 --temp 0)"
		b="$(sa-run -m model.gguf --lora d1.lora.gguf $m -p 'the cat' -n 16 --temp 0)"
		[ "$a" = "$b" ]
		[ "$a" != "$(sa-run -m model.gguf -p 'the cat' -n 16 --temp 0)" ]
	done
	# unmerged, the side paths are the delta's own: the same bits
	diff <(alone x -d d1.delta --unmerged) <(alone x --lora d1.lora.gguf --unmerged)
	# beside a delta, and at a scale
	diff <(alone x -d d2.delta -d d1.delta:0.5 --unmerged) \
	    <(alone x -d d2.delta --lora d1.lora.gguf:0.5 --unmerged)
}

@test "\"lora\" in a request equals sa-run --lora --unmerged" {
	{
		req l ',"lora":["d1.lora.gguf"]'
		req m ',"deltas":["d2.delta"],"lora":[{"file":"d1.lora.gguf","scale":2}]'
	} > "$T/req.jsonl"
	run --separate-stderr sa-run -m model.gguf --batch "$T/req.jsonl"
	assert_success
	echo "$output" > "$T/got"
	{
		alone l --lora d1.lora.gguf --unmerged
		alone m -d d2.delta --lora d1.lora.gguf:2 --unmerged
	} > "$T/want"
	diff "$T/want" "$T/got"
}

@test "--lora refuses what is not a LoRA of the model" {
	run --separate-stderr sa-run -m model.gguf --lora adapter.gguf -p x -n 1
	assert_failure 65
	[[ "$stderr" == "sa-run: "*"not a LoRA adapter"* ]]
	"$ROOT/tests/helpers/mkmodel" --seed 9 --kv-heads 2 -o "$T/other.gguf"
	run --separate-stderr sa-run -m "$T/other.gguf" --lora d1.lora.gguf -p x -n 1
	assert_failure 65
	[[ "$stderr" == *"d1.lora.gguf was made for another model"* ]]
	run --separate-stderr sa-run -m model.gguf --lora nothere.gguf -p x -n 1
	assert_failure 66
}

@test "--max-deltas and --max-delta-mem: usage" {
	run --separate-stderr sa-run -m model.gguf --max-deltas 2 -p x
	assert_failure 64
	[[ "$stderr" == *"go with --batch"* ]]
	run --separate-stderr sa-run -m model.gguf --max-deltas 0 --batch /dev/null
	assert_failure 64
	run --separate-stderr sa-run -m model.gguf --max-delta-mem 1 --max-deltas 1 --batch /dev/null
	assert_success
}

# Requests of every kind, some with deltas, some with prompts longer than
# the row kernels' 16 tokens, some failing.
mix() {
	awk 'BEGIN { srand(5); for (i = 1; i <= 40; i++) { r = rand()
		d = rand() < 0.5 ? ",\"deltas\":[\"d" (1 + int(rand() * 3)) ".delta\"]" : ""
		p = "the story " i " begins when"
		if (rand() < 0.3) p = p " a long prompt goes on and on with many words, past sixteen tokens for sure"
		if (r < 0.15) printf "{\"id\":%d,\"text\":\"%s\",\"score\":true%s}\n", i, p, d
		else if (r < 0.25) printf "{\"id\":%d,\"prompt\":\"%s\",\"choices\":[\" a\",\" b\"]%s}\n", i, p, d
		else if (r < 0.3) printf "{\"id\":%d,\"prompt\":\"%s\",\"deltas\":[\"none.delta\"]}\n", i, p
		else if (r < 0.33) printf "not json %d\n", i
		else printf "{\"id\":%d,\"prompt\":\"%s\",\"n_predict\":%d,\"seed\":%d%s}\n", i, p, int(rand() * 30), i, d } }'
}

@test "--parallel: each answer is the request's alone, in the order of the lines" {
	mix > "$T/mix.jsonl"
	n=0
	while IFS= read -r line; do
		n=$((n + 1))
		printf '%s\n' "$line" > "$T/one.jsonl"
		sa-run -m model.gguf --batch "$T/one.jsonl" | sed "s/\"line 1: /\"line $n: /"
	done < "$T/mix.jsonl" > "$T/alone"
	grep -q '"error"' "$T/alone"
	grep -q '"logprob"' "$T/alone"
	for p in 2 5 16; do
		run -65 --separate-stderr sa-run -m model.gguf --parallel "$p" --batch "$T/mix.jsonl"
		diff "$T/alone" <(echo "$output")
	done
}

@test "--parallel gives --parallel 1's answers to short prompts" {
	for i in 1 2 3 4 5 6 7 8 9; do
		req "r$i" ",\"seed\":$i,\"temp\":0.9,\"n_predict\":$((i * 3)),\"deltas\":[\"d$((i % 4 + 1)).delta\"]"
	done | grep -v '"score"' > "$T/req.jsonl"
	run -0 sa-run -m model.gguf --batch "$T/req.jsonl"
	one="$output"
	run -0 sa-run -m model.gguf --batch "$T/req.jsonl" --parallel 4 --max-deltas 2
	[ "$output" = "$one" ]
	run --separate-stderr sa-run -m model.gguf --parallel 2 -p x
	assert_failure 64
	run --separate-stderr sa-run -m model.gguf --parallel 17 --batch /dev/null
	assert_failure 64
}

# A chat request with a delta, greedy and penalized: $1 extra members.
chat_req() {
	printf '{"id":7,"messages":[{"role":"user","content":"the cat"}],"deltas":["d1.delta"],'
	printf '"n_predict":16,"temp":0,"repeat_penalty":1.3%s}\n' "$1"
}

@test "a request's deltas go with its messages, stop strings and log-probabilities" {
	export LC_ALL=C
	full=$(chat_req "" | sa-run -m model.gguf --chat-template chatml --batch - |
	    "$ROOT/tests/helpers/jsonl-get" text)
	plain=$(chat_req "" | sed 's/"deltas":\["d1.delta"\],//' |
	    sa-run -m model.gguf --chat-template chatml --batch - | "$ROOT/tests/helpers/jsonl-get" text)
	[ "$full" != "$plain" ]
	# a letter after the first character: the text stops before it
	stop=$(grep -o '[A-Za-z]' <<<"${full:1}" | head -n 1)
	[ -n "$stop" ]
	run -0 --separate-stderr sa-run -m model.gguf --chat-template chatml --batch - \
	    <<<"$(chat_req ",\"stop\":[\"zzzz\",\"$stop\"],\"logprobs\":1")"
	[[ "$output" == *'"logprobs":[{"id":'* ]]
	[ "$("$ROOT/tests/helpers/jsonl-get" text <<<"$output")" = "${full%%"$stop"*}" ]
	want=$(sa-run -m model.gguf -d d1.delta --unmerged --chat --chat-template chatml -p 'the cat' \
	    -n 16 --temp 0 --repeat-penalty 1.3 --stop zzzz --stop "$stop" --logprobs 1 --json)
	[ "$output" = "{\"id\":7,${want#\{}" ]
}

@test "--parallel: stop strings, messages, log-probabilities and the repeat penalty as alone" {
	export LC_ALL=C
	full=$(printf '{"prompt":"the story begins when","n_predict":16,"temp":0}\n' |
	    sa-run -m model.gguf --batch - | "$ROOT/tests/helpers/jsonl-get" text)
	stop=$(grep -o '[A-Za-z]' <<<"${full:1}" | head -n 1)
	[ -n "$stop" ]
	{
		printf '{"id":1,"prompt":"the story begins when","n_predict":16,"temp":0,"stop":["%s"]}\n' "$stop"
		chat_req ",\"stop\":[\"$stop\"],\"logprobs\":2"
		printf '{"id":2,"prompt":"the story begins when","n_predict":12,"seed":4,"repeat_penalty":1.5,"deltas":["d2.delta"]}\n'
		printf '{"id":3,"prompt":"the cat","n_predict":5,"temp":0,"logprobs":1,"stop":["zz"]}\n'
		printf '{"id":4,"prompt":"<|im_start|>the cat","special":true,"n_predict":6,"seed":2}\n'
	} > "$T/req.jsonl"
	run -0 --separate-stderr sa-run -m model.gguf --chat-template chatml --batch "$T/req.jsonl"
	one="$output"
	[ "$("$ROOT/tests/helpers/jsonl-get" text <<<"${lines[0]}")" = "${full%%"$stop"*}" ]
	[ "$(grep -c '"logprobs":\[{' <<<"$one")" -eq 2 ]
	run -0 --separate-stderr sa-run -m model.gguf --chat-template chatml --batch "$T/req.jsonl" \
	    --parallel 2
	[ "$output" = "$one" ]
}

@test "-v with --parallel: the tokens of every session counted" {
	for i in 1 2 3; do
		printf '{"prompt":"the story %d begins","n_predict":%d,"seed":%d}\n' "$i" $((i * 4)) "$i"
	done > "$T/req.jsonl"
	run -0 --separate-stderr sa-run -m model.gguf -v --batch "$T/req.jsonl"
	one=$(grep -o 'generation: [0-9]* tokens' <<<"$stderr")
	[ -n "$one" ]
	run -0 --separate-stderr sa-run -m model.gguf -v --parallel 3 --batch "$T/req.jsonl"
	[ "$(grep -o 'generation: [0-9]* tokens' <<<"$stderr")" = "$one" ]
}
