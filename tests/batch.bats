#!/usr/bin/env bats
# Batch jobs as doc/batch.md describes them: a demonstration stream split
# into shards with split(1), encoded in parallel with xargs -P, chained in
# order with sa-merge --chain; and a task collection run with make -j.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 3 --kv-heads 2 -o "$D/model.gguf"
	"$ROOT/bin/sa-init" -m "$D/model.gguf" -r 4 -C 8 --seed 1 --w1-scale 0.5 -o "$D/adapter.gguf"
	# 48 records of a TSV with a header
	awk 'BEGIN { srand(7); print "input\tlabel"
		split("good fine dull warm flat bright slow kind", w, " ")
		for (i = 1; i <= 48; i++)
			printf "%s and %s, take %d\t%s\n", w[1 + i % 8], w[1 + (i * 5) % 8], i,
			    (i % 3 ? "pos" : "neg") }' > "$D/big.tsv"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	PATH="$ROOT/bin:$PATH"
	cd "$T"
}

# split big.tsv into shards/part-NNNN.tsv of 12 records, each with the header
make_shards() {
	mkdir -p shards
	tail -n +2 "$D/big.tsv" | split -l 12 -d -a 4 --additional-suffix=.tsv \
	    --filter='{ head -n 1 "$HEADER_OF"; cat; } > $FILE' - shards/part-
}

# encode every shard with xargs -P $1, then chain them in name order into $2
sharded_encode() {
	ls shards/part-*.tsv | xargs -P "$1" -I{} \
	    sa-encode -q -t 1 -m "$D/model.gguf" -a "$D/adapter.gguf" -o {}.delta {}
	sa-merge --chain -o "$2" shards/part-*.tsv.delta
}

# sa-info --json without the file name and the two state summaries
info_meta() {
	sa-info --json "$1" | sed 's/"file":"[^"]*",//; s/"h_norm":[^,]*,//; s/"p_mean":[^,]*,//'
}

json_num() {
	sed "s/.*\"$1\":\([^,}]*\).*/\1/"
}

@test "split(1) keeps the header in every shard and loses no record" {
	HEADER_OF="$D/big.tsv" make_shards
	[ "$(ls shards | wc -l)" -eq 4 ]
	for f in shards/*.tsv; do
		[ "$(head -n 1 "$f")" = "$(head -n 1 "$D/big.tsv")" ]
	done
	[ "$(cat shards/*.tsv | grep -vc '^input')" -eq 48 ]
	[ "$(sa-encode --dump shards/*.tsv | wc -l)" -eq 48 ]
}

@test "sharded encode (xargs -P2, chain in order) equals the single encode of the shards" {
	HEADER_OF="$D/big.tsv" make_shards
	sharded_encode 2 chained.delta
	sa-encode -q -m "$D/model.gguf" -a "$D/adapter.gguf" -o single.delta shards/part-*.tsv

	# Exactly equal: fingerprints, shapes, token and demonstration counts,
	# the sources (names and hashes, in order) and the parameters.
	[ "$(info_meta chained.delta)" = "$(info_meta single.delta)" ]
	sa-info --json single.delta | grep -q '"n_demos":48'

	# The state: the single encode carries it from file to file in double
	# and rounds once; each shard is rounded to float and chained in float.
	# Their difference (a weighted sum of the two) is float rounding.
	sa-merge --sum -o diff.delta chained.delta single.delta:-1
	d=$(sa-info --json diff.delta | json_num h_norm)
	h=$(sa-info --json single.delta | json_num h_norm)
	awk -v d="$d" -v h="$h" 'BEGIN { exit !(h > 1 && d <= 1e-6 * h) }' ||
	    fail "|h_chained - h_single| = $d for |h| = $h"
	pc=$(sa-info --json chained.delta | json_num p_mean)
	ps=$(sa-info --json single.delta | json_num p_mean)
	awk -v a="$pc" -v b="$ps" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-6 * (b < 0 ? -b : b) + 1e-12) }' ||
	    fail "P means $pc and $ps"

	# and the model reads them the same way
	a=$(sa-run -m "$D/model.gguf" -d chained.delta --temp 0 -n 16 -p 'kind and good ->')
	b=$(sa-run -m "$D/model.gguf" -d single.delta --temp 0 -n 16 -p 'kind and good ->')
	[ "$a" = "$b" ]
}

@test "the sharded result is the same bytes with any parallelism and completion order" {
	HEADER_OF="$D/big.tsv" make_shards
	sharded_encode 2 p2.delta
	rm shards/*.delta
	sharded_encode 1 p1.delta
	rm shards/*.delta
	# shards submitted last first: they finish in another order
	ls -r shards/part-*.tsv | xargs -P 4 -I{} \
	    sa-encode -q -m "$D/model.gguf" -a "$D/adapter.gguf" -o {}.delta {}
	sa-merge --chain -o p4.delta shards/part-*.tsv.delta
	cmp p1.delta p2.delta
	cmp p1.delta p4.delta
}

@test "chaining is exact only in order: another order gives another state" {
	HEADER_OF="$D/big.tsv" make_shards
	sharded_encode 2 inorder.delta
	sa-merge --chain -o reversed.delta $(ls -r shards/part-*.tsv.delta)
	! cmp -s inorder.delta reversed.delta
	sa-merge --sum -o diff.delta inorder.delta reversed.delta:-1
	d=$(sa-info --json diff.delta | json_num h_norm)
	h=$(sa-info --json inorder.delta | json_num h_norm)
	awk -v d="$d" -v h="$h" 'BEGIN { exit !(d > 1e-3 * h) }'
}

@test "a shard appended later: chain onto the old result equals encoding all of them" {
	HEADER_OF="$D/big.tsv" make_shards
	last=$(ls shards/part-*.tsv | tail -n 1)
	mv "$last" later.tsv
	sharded_encode 2 first.delta
	sa-encode -q -m "$D/model.gguf" -a "$D/adapter.gguf" -o later.delta later.tsv
	sa-merge --chain -o all.delta first.delta later.delta
	mv later.tsv "$last"
	rm shards/*.delta
	sharded_encode 2 again.delta
	# the same shards in the same order, chained in two steps: the same
	# metadata; the state within float rounding (chaining is associative up
	# to rounding)
	[ "$(info_meta all.delta | sed 's/"sources".*//')" = "$(info_meta again.delta | sed 's/"sources".*//')" ]
	sa-merge --sum -o diff.delta all.delta again.delta:-1
	d=$(sa-info --json diff.delta | json_num h_norm)
	h=$(sa-info --json again.delta | json_num h_norm)
	awk -v d="$d" -v h="$h" 'BEGIN { exit !(d <= 1e-6 * h) }'
}

@test "a task collection with make -j2: one delta and one result file per task" {
	mkdir tasks
	for t in alpha beta gamma; do
		head -n 9 "$D/big.tsv" > "tasks/$t.tsv"
		printf '{"id":"%s","prompt":"kind and good ->","n_predict":4,"temp":0}\n' $t > "tasks/$t.jsonl"
	done
	sed -i 's/take/try/' tasks/beta.tsv
	{
		echo "MODEL = $D/model.gguf"
		echo "ADAPTER = $D/adapter.gguf"
		echo 'TASKS = $(basename $(wildcard tasks/*.tsv))'
		echo 'all: $(TASKS:=.out.jsonl)'
		echo '.SECONDARY:'
		echo '%.delta: %.tsv'
		printf '\t%s\n' 'sa-encode -q -t 1 -m $(MODEL) -a $(ADAPTER) -o $@ $<'
		echo '%.out.jsonl: %.delta %.jsonl'
		printf '\t%s\n' 'sa-run -t 1 -m $(MODEL) -d $< --batch $*.jsonl > $@.tmp && mv $@.tmp $@'
	} > Makefile
	run make -j2 -s
	assert_success
	[ "$(ls tasks/*.delta | wc -l)" -eq 3 ]
	for t in alpha beta gamma; do
		grep -q "^{\"id\":\"$t\",\"text\":" "tasks/$t.out.jsonl"
	done
	# alpha and gamma have the same demonstrations, beta others
	cmp <(sed 's/"id":"[a-z]*"//' tasks/alpha.out.jsonl) <(sed 's/"id":"[a-z]*"//' tasks/gamma.out.jsonl)
	# nothing to do the second time
	run make -j2
	assert_output --partial "Nothing to be done"
}

@test "GNU parallel, when installed: the same chained delta as xargs" {
	command -v parallel > /dev/null || skip "GNU parallel is not installed"
	HEADER_OF="$D/big.tsv" make_shards
	sharded_encode 2 xargs.delta
	rm shards/*.delta
	parallel -j 2 sa-encode -q -m "$D/model.gguf" -a "$D/adapter.gguf" -o {}.delta {} ::: shards/part-*.tsv
	sa-merge --chain -o parallel.delta shards/part-*.tsv.delta
	cmp xargs.delta parallel.delta
}
