# sa - StreamAdapter as Unix tools.
#   make            build lib/libsa.a and the tools in bin/
#   make check      run every test (C unit tests and bats suites)
#   make bench      speed benchmarks (never part of check)

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Wno-unused-parameter
ALLCFLAGS = -std=c11 -D_GNU_SOURCE -pthread -Ilib $(WARN) $(CFLAGS)
LDLIBS   = -lopenblas -lz -lm -lpthread

LIB_SRC  = $(sort $(wildcard lib/*.c))
LIB_OBJ  = $(LIB_SRC:.c=.o)
TOOLS    = $(patsubst %.c,%,$(sort $(wildcard bin/sa-*.c)))
UNIT     = $(patsubst %.c,%,$(sort $(wildcard tests/unit/test_*.c)))
HELPERS  = $(patsubst %.c,%,$(sort $(wildcard tests/helpers/*.c)))

PREFIX  ?= /usr/local
LIBDIR   = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
# libsa.so.$(VERSION), its soname libsa.so.$(SOMAJOR)
VERSION  = $(shell sed -n 's/^\#define SA_VERSION "\(.*\)"/\1/p' lib/sa.h)
SOMAJOR  = $(firstword $(subst ., ,$(VERSION)))
LIB_PIC  = $(LIB_SRC:.c=.pic.o)
# The shipped model and adapter, installed; the tools look there by default.
DATADIR  = $(PREFIX)/share/sa
DATA     = data/model.gguf data/adapter.gguf
ALLCFLAGS += -DSA_DATADIR='"$(DATADIR)"'

all: $(TOOLS)

lib/%.o: lib/%.c lib/sa.h $(wildcard lib/*_impl.h)
	$(CC) $(ALLCFLAGS) -c -o $@ $<

# The memory's read-out substitutes many right-hand sides side by side:
# loops that vectorize without reordering a sum (so the same bits), which
# -O2's cheapest cost model leaves scalar (2.5 times slower).  No fused
# multiply-adds, so that a build for a newer CPU gives the same bits too.
MEMORY_CFLAGS = -ftree-loop-vectorize -fvect-cost-model=dynamic -ffp-contract=off
lib/memory.o lib/memory.pic.o: ALLCFLAGS += $(MEMORY_CFLAGS)

lib/libsa.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

# The shared library, of position-independent objects: for make install.
lib/%.pic.o: lib/%.c lib/sa.h $(wildcard lib/*_impl.h)
	$(CC) $(ALLCFLAGS) -fPIC -c -o $@ $<

lib/libsa.so: $(LIB_PIC)
	$(CC) $(ALLCFLAGS) -shared -Wl,-soname,libsa.so.$(SOMAJOR) -o $@ $(LIB_PIC) \
	    $(LDFLAGS) $(LDLIBS)

# pkg-config's description of the installed library (bin/.datadir changes
# with PREFIX).
lib/sa.pc: lib/sa.h bin/.datadir
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	    'Name: sa' \
	    'Description: StreamAdapter: demonstrations into weight deltas of a language model' \
	    'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lsa' \
	    'Libs.private: $(LDLIBS)' > $@

# DATADIR as the tools were built with: a new PREFIX rebuilds them.
bin/.datadir: FORCE
	@echo '$(DATADIR)' | cmp -s - $@ || echo '$(DATADIR)' > $@

bin/sa-%: bin/sa-%.c bin/tool.h bin/.datadir lib/libsa.a
	$(CC) $(ALLCFLAGS) -o $@ $< lib/libsa.a $(LDFLAGS) $(LDLIBS)

tests/unit/test_%: tests/unit/test_%.c tests/unit/t.h lib/libsa.a
	$(CC) $(ALLCFLAGS) -Itests/unit -o $@ $< lib/libsa.a $(LDFLAGS) $(LDLIBS)

tests/helpers/%: tests/helpers/%.c lib/libsa.a
	$(CC) $(ALLCFLAGS) -o $@ $< lib/libsa.a $(LDFLAGS) $(LDLIBS)

# fuzz-replay includes every harness
tests/helpers/fuzz-replay: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

# Every test: bats counts the C unit programs as tests too (tests/unit.bats).
check: deps
	$(MAKE) $(TOOLS) $(UNIT) $(HELPERS)
	bats --tap --print-output-on-failure tests/

# The main job on the shipped model (or a toy one when none is shipped);
# it needs only what the build needs.
demo:
	@sh scripts/deps.sh build
	$(MAKE) $(TOOLS) tests/helpers/mkmodel
	sh scripts/demo.sh

deps:
	@sh scripts/deps.sh

lint-man:
	mandoc -Tlint -W warning man/*.[0-9]

MAN1 = $(sort $(wildcard man/*.1))
MAN3 = $(sort $(wildcard man/*.3))
MAN5 = $(sort $(wildcard man/*.5))

install: all lib/libsa.so lib/sa.pc
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man3 $(DESTDIR)$(PREFIX)/share/man/man5 \
	    $(DESTDIR)$(DATADIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	cp $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	cp $(MAN1) $(DESTDIR)$(PREFIX)/share/man/man1/
	cp $(MAN3) $(DESTDIR)$(PREFIX)/share/man/man3/
	cp $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/
	cp $(DATA) $(DESTDIR)$(DATADIR)/
	cp lib/libsa.a $(DESTDIR)$(LIBDIR)/
	cp lib/libsa.so $(DESTDIR)$(LIBDIR)/libsa.so.$(VERSION)
	ln -sf libsa.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libsa.so.$(SOMAJOR)
	ln -sf libsa.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libsa.so
	cp lib/sa.h $(DESTDIR)$(INCLUDEDIR)/
	cp lib/sa.pc $(DESTDIR)$(LIBDIR)/pkgconfig/

# Exactly what install put in place; directories only when left empty.
uninstall:
	rm -f $(patsubst bin/%,$(DESTDIR)$(PREFIX)/bin/%,$(TOOLS)) \
	    $(patsubst man/%,$(DESTDIR)$(PREFIX)/share/man/man1/%,$(MAN1)) \
	    $(patsubst man/%,$(DESTDIR)$(PREFIX)/share/man/man3/%,$(MAN3)) \
	    $(patsubst man/%,$(DESTDIR)$(PREFIX)/share/man/man5/%,$(MAN5)) \
	    $(patsubst data/%,$(DESTDIR)$(DATADIR)/%,$(DATA)) \
	    $(DESTDIR)$(LIBDIR)/libsa.a $(DESTDIR)$(LIBDIR)/libsa.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/libsa.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libsa.so \
	    $(DESTDIR)$(INCLUDEDIR)/sa.h $(DESTDIR)$(LIBDIR)/pkgconfig/sa.pc
	rmdir $(DESTDIR)$(DATADIR) 2>/dev/null || true

clean:
	rm -f lib/*.o lib/libsa.a lib/libsa.so lib/sa.pc $(TOOLS) $(UNIT) $(HELPERS) bin/.datadir

FORCE:

.PHONY: all bench-train check clean demo deps install lint-man uninstall FORCE

# Hardening (doc/hardening.md).
#   make fuzz        libFuzzer harnesses build-fuzz/fuzz_<name> from
#                    tests/fuzz/fuzz_<name>.c (clang); see tests/fuzz/README
#   make check-asan  every test against a build with AddressSanitizer and
#                    UBSan, made in build-asan/ (a copy of the sources)
#   make check-kernels  every test once per kernel path
FUZZ_CC    = clang
FUZZ_FLAGS = -std=c11 -D_GNU_SOURCE -pthread -Ilib -O1 -g -fno-omit-frame-pointer \
             -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ       = $(patsubst tests/fuzz/%.c,build-fuzz/%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_OBJ   = $(patsubst lib/%.c,build-fuzz/lib/%.o,$(LIB_SRC))

fuzz: $(FUZZ)

build-fuzz/lib/%.o: lib/%.c lib/sa.h $(wildcard lib/*_impl.h)
	@mkdir -p build-fuzz/lib
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)

check-asan:
	sh scripts/check-asan.sh

# Every test once per kernel path (SA_KERNELS and OPENBLAS_CORETYPE: the
# paths a CI machine's CPU may take); KERNELS='generic:Prescott avx2:'
# picks them.  See doc/hardening.md.
check-kernels: deps
	$(MAKE) $(TOOLS) $(UNIT) $(HELPERS)
	sh scripts/check-kernels.sh $(KERNELS)

.PHONY: fuzz check-asan check-kernels

# Speed of the forward pass (not a test): models made on the fly by mkmodel,
# prefill and decode tokens/s, and decode's share of the copy bandwidth.
bench: tests/helpers/bench tests/helpers/mkmodel
	tests/helpers/bench

.PHONY: bench

# Training speed against the machine's sgemm rate (see sa-train(1)).
bench-train: $(TOOLS) tests/helpers/bench-sgemm
	sh scripts/bench-train.sh

# Speed against llama.cpp, and ICL against deltas as k grows (doc/speed.md):
# scripts that anyone can run again; BENCH_ARGS passes options, e.g.
#   make bench-compare BENCH_ARGS='-t 1 -s f16'
#   make bench-icl BENCH_ARGS='-s default bench-out'
bench-compare: tests/helpers/bench tests/helpers/mkmodel bin/sa-info
	sh scripts/bench-compare.sh $(BENCH_ARGS)

bench-icl: tests/helpers/bench-icl tests/helpers/mkmodel
	sh scripts/bench-icl.sh $(BENCH_ARGS)

# Many deltas served from one process, requests decoded together
# (scripts/bench-serve.sh; sa-run(1) --parallel).
bench-serve: $(TOOLS) tests/helpers/mkmodel tests/helpers/mkdelta
	sh scripts/bench-serve.sh $(BENCH_ARGS)

.PHONY: bench-compare bench-icl bench-serve

# The floor an untrained least-squares memory over a base's own keys sets
# for a trained one (data/train/README.md, "The floor"); FLOOR_ARGS adds
# options and overrides these, e.g.
#   make memory-floor FLOOR_ARGS='-t 1 -m data/model.gguf --layout text'
memory-floor: tests/helpers/memory-floor
	tests/helpers/memory-floor -m data/train/base7.gguf --pool data/pools/dev \
	    --pairs 1,4,16,64 --episodes 8 $(FLOOR_ARGS)

.PHONY: memory-floor
