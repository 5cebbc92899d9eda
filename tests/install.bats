#!/usr/bin/env bats
# make install and make uninstall, in a copy of the sources (the build here
# is not touched): the tools, the man pages, and the model and adapter under
# PREFIX/share/sa, where the installed tools look for them by default; and
# libsa (static and shared), sa.h and sa.pc, for programs of one's own.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	S="$BATS_FILE_TMPDIR/src"
	mkdir -p "$S/bin" "$S/data"
	# The library as built (with its times, so that only the tools are
	# built again); a toy model and adapter stand in for the shipped ones.
	cp -p "$ROOT/Makefile" "$S/"
	cp -pr "$ROOT/lib" "$ROOT/man" "$S/"
	cp -p "$ROOT"/bin/*.c "$ROOT"/bin/*.h "$S/bin/"
	"$ROOT/tests/helpers/mkmodel" --seed 7 -o "$S/data/model.gguf"
	"$ROOT/bin/sa-init" -m "$S/data/model.gguf" -r 2 -C 8 --w1-scale 0.5 -o "$S/data/adapter.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	S="$BATS_FILE_TMPDIR/src"
	T="$BATS_TEST_TMPDIR"
	unset SA_MODEL SA_ADAPTER
}

@test "make install: tools, man pages, model and adapter under PREFIX; the tools use them" {
	P="$T/usr"
	run -0 make -C "$S" install PREFIX="$P"
	for f in bin/sa-run bin/sa-encode share/man/man1/sa-run.1 share/man/man5/sa-delta.5 \
	    share/sa/model.gguf share/sa/adapter.gguf; do
		[ -f "$P/$f" ] || fail "$P/$f is not installed"
	done
	[ ! -e "$P/data" ]
	cmp "$S/data/model.gguf" "$P/share/sa/model.gguf"
	# no -m: the installed model, nothing else
	run -0 "$P/bin/sa-run" -m "$P/share/sa/model.gguf" --temp 0 -n 6 -p hello
	want="$output"
	run -0 "$P/bin/sa-run" --temp 0 -n 6 -p hello
	assert_output "$want"
	# and the installed adapter: sa-encode with neither -m nor -a
	printf 'input\tlabel\ngreat\tpos\n' > "$T/d.tsv"
	"$P/bin/sa-encode" -q -m "$P/share/sa/model.gguf" -a "$P/share/sa/adapter.gguf" \
	    -o "$T/a.delta" "$T/d.tsv"
	"$P/bin/sa-encode" -q -o "$T/b.delta" "$T/d.tsv"
	cmp "$T/a.delta" "$T/b.delta"
	mv "$P/share/sa/model.gguf" "$T/elsewhere.gguf"
	run -64 "$P/bin/sa-run" -n 1 -p hello
	assert_output --partial "no model: give -m MODEL or set SA_MODEL (there is no $P/share/sa/model.gguf)"
}

@test "make uninstall removes exactly what make install put in place" {
	P="$T/usr"
	mkdir -p "$P/bin" "$P/share/man/man1"
	echo other > "$P/bin/other-tool"
	echo other > "$P/share/man/man1/other.1"
	find "$P" | sort > "$T/before"
	run -0 make -C "$S" install PREFIX="$P"
	[ "$(find "$P/share/sa" -type f | wc -l)" -eq 2 ]
	run -0 make -C "$S" uninstall PREFIX="$P"
	# mkdir -p made these directories; the rest is as it was
	find "$P" | grep -vxF -e "$P/share/man/man3" -e "$P/share/man/man5" -e "$P/lib" \
	    -e "$P/lib/pkgconfig" -e "$P/include" | sort > "$T/after"
	diff "$T/before" "$T/after"
}

@test "DESTDIR stages the files; the tools look in PREFIX, not in DESTDIR" {
	run -0 make -C "$S" install DESTDIR="$T/stage" PREFIX=/opt/sa-test
	[ -f "$T/stage/opt/sa-test/share/sa/model.gguf" ]
	[ -f "$T/stage/opt/sa-test/share/sa/adapter.gguf" ]
	run -64 "$T/stage/opt/sa-test/bin/sa-run" -n 1 -p hello
	assert_output --partial "there is no /opt/sa-test/share/sa/model.gguf"
	run -0 make -C "$S" uninstall DESTDIR="$T/stage" PREFIX=/opt/sa-test
	[ -z "$(find "$T/stage" ! -type d)" ]
}

@test "make install: libsa.a, libsa.so with its soname, sa.h, sa.pc, sa(3); a program built with pkg-config runs" {
	P="$T/usr"
	run -0 make -C "$S" install PREFIX="$P"
	for f in lib/libsa.a lib/libsa.so lib/libsa.so.0 include/sa.h lib/pkgconfig/sa.pc \
	    share/man/man3/sa.3; do
		[ -e "$P/$f" ] || fail "$P/$f is not installed"
	done
	cmp "$S/lib/sa.h" "$P/include/sa.h"
	run -0 readelf -d "$P/lib/libsa.so"
	assert_output --partial "Library soname: [libsa.so.0]"
	export PKG_CONFIG_PATH="$P/lib/pkgconfig"
	run -0 pkg-config --cflags --libs sa
	assert_equal "$(echo $output)" "-I$P/include -L$P/lib -lsa"
	# sa.h's usage example, against the installed header and shared library
	# (a sanitized libsa wants the sanitizers' runtime in the program too)
	san=${SA_SANITIZED:+-fsanitize=address,undefined}
	cc $san $(pkg-config --cflags sa) -o "$T/usage" "$ROOT/tests/unit/test_usage.c" \
	    $(pkg-config --libs sa)
	printf 'cat -> chat\ndog -> chien\n' > "$T/demos.txt"
	SA_CACHE_DIR="$T/cache" "$P/bin/sa-run" --demos "$T/demos.txt" --temp 0 -n 16 \
	    -p "dog ->" > "$T/want"
	[ -s "$T/want" ]
	run ! "$T/usage" "$P/share/sa/model.gguf" "$P/share/sa/adapter.gguf" "$T/demos.txt" "dog ->"
	LD_LIBRARY_PATH="$P/lib" "$T/usage" "$P/share/sa/model.gguf" "$P/share/sa/adapter.gguf" \
	    "$T/demos.txt" "dog ->" | cmp - "$T/want"
	# and the static library, with the libraries it needs
	cc $san $(pkg-config --cflags sa) -o "$T/usage-static" "$ROOT/tests/unit/test_usage.c" \
	    "$P/lib/libsa.a" $(pkg-config --static --libs-only-l sa | sed 's/-lsa //')
	"$T/usage-static" "$P/share/sa/model.gguf" "$P/share/sa/adapter.gguf" "$T/demos.txt" \
	    "dog ->" | cmp - "$T/want"
	run -0 make -C "$S" uninstall PREFIX="$P"
	[ -z "$(find "$P/lib" "$P/include" ! -type d)" ]
}
