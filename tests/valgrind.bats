#!/usr/bin/env bats
# Memcheck over the main pipeline, encode | merge | run: no invalid reads
# or writes, no uninitialised values, and no leaked block (definitely or
# indirectly lost).  Threads still alive at exit (OpenBLAS's workers, the
# library's pool) keep their stacks: valgrind calls those "possibly lost"
# and they are not counted.  Skipped where valgrind is not installed.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	command -v valgrind > /dev/null || skip "valgrind is not installed"
	[ -z "${SA_SANITIZED:-}" ] || skip "valgrind and the sanitizers do not mix"
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	T="$BATS_TEST_TMPDIR"
	VG="valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect"
	# one thread each: the same code paths, valgrind runs them faster
	export OPENBLAS_NUM_THREADS=1
	# valgrind runs no AVX-512: OpenBLAS's kernels for a CPU that has it
	# (OPENBLAS_CORETYPE=SkylakeX, say) stop on an illegal instruction.
	# Its SSE3 ones run under valgrind on any x86-64 CPU, and the run
	# without valgrind takes them too, to compute the same bits.
	[ "$(uname -m)" != x86_64 ] || export OPENBLAS_CORETYPE=Prescott
}

@test "encode | merge | run under valgrind: no memory errors, no leaks" {
	"$ROOT/tests/helpers/mkmodel" --seed 3 --ctx 64 -o "$T/m.gguf"
	"$ROOT/bin/sa-init" -m "$T/m.gguf" -r 2 -C 8 -o "$T/a.gguf"
	printf 'input\tlabel\ncat\tcats\ndog\tdogs\nox\toxen\n' > "$T/d.tsv"
	printf 'input\tlabel\nmouse\tmice\n' > "$T/e.tsv"
	"$ROOT/bin/sa-encode" -q -m "$T/m.gguf" -a "$T/a.gguf" -o "$T/e.delta" "$T/e.tsv"
	run bash -c "$VG --log-file='$T/encode.log' '$ROOT/bin/sa-encode' -q -t 1 -m '$T/m.gguf' -a '$T/a.gguf' '$T/d.tsv' |
	    $VG --log-file='$T/merge.log' '$ROOT/bin/sa-merge' -q - '$T/e.delta' |
	    $VG --log-file='$T/run.log' '$ROOT/bin/sa-run' -t 1 -m '$T/m.gguf' -d - -p 'the cat' -n 4 --temp 0 > '$T/out';
	    echo \${PIPESTATUS[*]}"
	for f in encode merge run; do
		[ ! -s "$T/$f.log" ] || { echo "--- $f"; cat "$T/$f.log"; }
	done
	assert_output "0 0 0"
	[ -s "$T/out" ]
	# the same text as without valgrind
	"$ROOT/bin/sa-encode" -q -m "$T/m.gguf" -a "$T/a.gguf" "$T/d.tsv" |
	    "$ROOT/bin/sa-merge" -q - "$T/e.delta" |
	    "$ROOT/bin/sa-run" -m "$T/m.gguf" -d - -p 'the cat' -n 4 --temp 0 > "$T/plain"
	cmp "$T/out" "$T/plain"
}

@test "sa-train under valgrind: pretraining stopped and resumed, --show-data, an adapter: no memory errors, no leaks" {
	cd "$T"
	"$ROOT/tests/helpers/mkmodel" --dim 32 --layers 1 --heads 2 --kv-heads 1 --ctx 32 -o m.gguf
	for i in $(seq 200); do echo "the cat sat on the mat and the dog ran to the big red house $i"; done > text.txt
	mkdir pool task
	printf 'apple\nbread\nchair\ndoor\n' > pool/words.txt
	printf 'red\nblue\ngreen\nbig\n' > pool/labels.txt
	printf 'input\tlabel\ncat\tanimal\nred\tcolour\ndog\tanimal\nblue\tcolour\n' > task/train.tsv
	printf 'input\tlabel\nox\tanimal\ngreen\tcolour\n' > task/dev.tsv
	P="--pretrain --vocab $ROOT/data/tokenizer/sa4k.tsv --text text.txt --task task --pool pool --rename 0.5
	    --mix 0.3,0.2,0.3,0.2 --dim 16 --layers 1 --heads 2 --kv-heads 1 --ctx 32 --batch-tokens 64
	    --micro 2 --steps 2 --eval-every 1 -t 1 -q -o p.gguf"
	run -0 $VG "$ROOT/bin/sa-train" $P --run-steps 1
	run -0 $VG "$ROOT/bin/sa-train" $P --resume
	run -0 $VG "$ROOT/bin/sa-train" $P --map-vocab --show-data 3
	run -0 $VG "$ROOT/bin/sa-train" --adapter -m m.gguf --text text.txt --task task --pool pool \
	    --mix 0.3,0.4,0.3 --text-segs 2 --kmin 1 --kmax 4 --rank 2 --chunk 8 --steps 1 \
	    --batch-tokens 64 --eval-every 1 -t 1 -q -o a.gguf
	run -0 $VG "$ROOT/bin/sa-train" --adapter -m m.gguf --text text.txt --task task --pool pool \
	    --mix 0.3,0.4,0.3 --text-segs 2 --kmin 1 --kmax 4 -q -o b.gguf --show-data 6
	[ "${#lines[@]}" -eq 6 ]
	[ "$(grep -c '"loss"' p.gguf.ckpt/log.jsonl)" -eq 2 ]
}
