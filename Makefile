# uflow - plain Makefile.
#   make              build build/uflow and build/libuflow.a
#   make test         build and run every test (ends with "N passed, N failed"), then make valgrind
#                     (also the installed library's C/C++ examples and the Python package)
#   make DEBUG=1      -O0 -g
#   make SANITIZE=1   AddressSanitizer + UndefinedBehaviorSanitizer (separate build dir)
#   make NATIVE=0     portable x86-64 build (no -march=native)
#   make valgrind     memcheck on a short train + predict (build/valgrind, no AVX-512)
#   make bench-quality [DATA="dir1 dir2"] [EPOCHS=10] [THREADS=N] [OUT=bench-quality-out]
#                     train + test + kNN diagnostic per data set, one table (bench/quality/README.md)
#   make deps         install the Debian packages uflow needs (as root)
#   make fuzz         build the libFuzzer targets (clang, build/fuzz/) and run each for FUZZ_SECONDS
#   make fuzz-build   only build them
#   make install PREFIX=DIR   include/uflow.h, lib/libuflow.so*, lib/pkgconfig/uflow.pc, bin/uflow and
#                     share/uflow/ (the shipped weights) under DIR (default /usr/local)

CC       ?= gcc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
NATIVE   ?= 1

BUILD    := build
OPT      := -O3
ifeq ($(DEBUG),1)
  BUILD  := build/debug
  OPT    := -O0 -g
endif
ifeq ($(SANITIZE),1)
  BUILD  := build/sanitize
  OPT    := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(VALGRIND),1)
  BUILD  := build/valgrind
  OPT    := -O1 -g
  NATIVE := 0
endif
ifeq ($(NATIVE),1)
  OPT    += -march=native
endif

CPPFLAGS := -Iinclude -Isrc -Ibench -I/usr/include/stb -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L \
            -DUF_MULTIARCH='"$(MULTIARCH)"'
# -fPIC: the same objects make build/libuflow.a and build/libuflow.so.
CFLAGS   := -std=c11 -Wall -Wextra -fopenmp -fPIC $(OPT) -MMD -MP
LDFLAGS  := -fopenmp $(filter -fsanitize=%,$(OPT))
LDLIBS   := -ldnnl -lcjson -lstb -lpng -lturbojpeg -lisal -lz -ltiff -lnettle -ldl -lpthread -lm

LIB_SRC  := $(sort $(wildcard src/core/*.c src/io/*.c src/backbone/*.c src/flow/*.c src/detect/*.c src/eval/*.c \
                              src/model/*.c src/api/*.c))
# src/serve (uflow serve) sits above the public API, in the program only: libuflow does not link libmicrohttpd.
CLI_SRC  := $(sort $(wildcard src/cli/*.c src/serve/*.c bench/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
HARNESS  := $(BUILD)/obj/tests/harness.o

LIB      := $(BUILD)/libuflow.a
PROG     := $(BUILD)/uflow
VERSION  := $(shell sed -n 's/^\#define UFLOW_VERSION "\(.*\)"/\1/p' src/core/version.h)
SONAME   := libuflow.so.$(firstword $(subst ., ,$(VERSION)))
SHLIB    := $(BUILD)/libuflow.so.$(VERSION)
PREFIX   ?= /usr/local

.PHONY: all test run-tests valgrind demo check-report deps clean fuzz fuzz-build fuzz-seeds bench-compare bench-quality \
        install
all: $(PROG) $(LIB) $(BUILD)/libuflow.so
.SECONDARY:

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

# The shared library exports the public API (uflow_*) only: src/api/libuflow.map.
$(SHLIB): $(LIB_OBJ) src/api/libuflow.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=src/api/libuflow.map -Wl,--no-undefined \
	    $(LDFLAGS) -o $@ $(LIB_OBJ) $(LDLIBS)

$(BUILD)/libuflow.so: $(SHLIB)
	ln -sf $(notdir $(SHLIB)) $(BUILD)/$(SONAME)
	ln -sf $(notdir $(SHLIB)) $@

install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/share/uflow
	install -m 644 include/uflow.h $(DESTDIR)$(PREFIX)/include/uflow.h
	install -m 755 $(SHLIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(PREFIX)/lib/libuflow.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' src/api/uflow.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/uflow.pc
	install -m 755 $(PROG) $(DESTDIR)$(PREFIX)/bin/uflow
	install -m 644 models/*.safetensors $(DESTDIR)$(PREFIX)/share/uflow/

$(PROG): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) -lmicrohttpd $(LDLIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(HARNESS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(HARNESS) $(LIB) $(LDLIBS)

# The README's two commands: both install missing Debian packages first.
# Tests run from the repository root (they read tests/data/).
test: deps
	@sh tools/install_deps.sh test
	@$(MAKE) --no-print-directory run-tests
	@$(MAKE) --no-print-directory valgrind

# valgrind 3.19 cannot run AVX-512 code: its own portable build.
valgrind:
	@sh tools/install_deps.sh test
	@$(MAKE) --no-print-directory VALGRIND=1 build/valgrind/uflow
	@sh tests/valgrind.sh build/valgrind/uflow

# The installed library with the C and C++ examples, and the Python package with its Dask
# runner (scripts that print RESULT lines like the test binaries; default build only).
SCRIPT_TESTS := $(if $(filter build,$(BUILD)),tests/test_embed.sh tests/test_python.sh tests/test_serve.sh tests/test_watch.sh \
                tests/test_serve_page.sh)

run-tests: $(TEST_BIN) $(PROG) $(BUILD)/libuflow.so
	@sh tests/run_all.sh $(TEST_BIN) $(SCRIPT_TESTS)

demo: deps
	@$(MAKE) --no-print-directory all
	$(PROG) demo

# The HTML report of `uflow test -o DIR`, rendered in headless Chromium and checked (installs chromium).
check-report: deps
	@$(MAKE) --no-print-directory all
	@sh tools/check_report.sh
	@sh tools/check_serve_page.sh

# uflow against a PyTorch baseline on this CPU (bench/compare/README.md); about 5-10 minutes on 2 cores.
bench-compare: deps
	@sh tools/install_deps.sh bench
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 bench/compare/run.py

# U-Flow's quality with the product defaults (epochs capped by EPOCHS, default 10) on each data set of
# DATA (default: ../shared/data/mtd and bsd when present, and the demo set), with a kNN diagnostic row
# (uflow bench knn); the table goes to OUT/quality.md (default OUT: bench-quality-out). bench/quality/README.md.
BENCH_QUALITY_DEMO := $(BUILD)/bench/quality_demo_data

$(BENCH_QUALITY_DEMO): $(BUILD)/obj/bench/quality/demo_data.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

bench-quality: deps
	@$(MAKE) --no-print-directory all $(BENCH_QUALITY_DEMO)
	UFLOW=$(PROG) DEMO_DATA=$(BENCH_QUALITY_DEMO) bash bench/quality/run.sh $(DATA)

deps:
	@sh tools/install_deps.sh

clean:
	rm -rf build

# ---- fuzzing (fuzz/README.md) ----------------------------------------------
# The library is rebuilt with clang, ASan + UBSan and libFuzzer's coverage
# instrumentation in build/fuzz/, with stb_image compiled in (instrumented,
# without comparison tracing, which dominated the time of its pixel loops) instead of libstb. OpenMP comes from clang's libomp (libomp-dev).
FUZZ_CC      := clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_TARGETS := safetensors image dataset model
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -Wall -Wextra -fopenmp -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP
FUZZ_LDLIBS  := $(filter-out -lstb,$(LDLIBS))
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o) $(FUZZ_DIR)/obj/fuzz/stb_image_impl.o
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

# stb_image 2.27 shifts past the word width in stbi__grow_buffer_unsafe once a marker ends a
# JPEG's entropy-coded data early and a Huffman code is then not found (code_bits goes
# negative). The value shifted is then always 0 (no more bytes are read), so the result is 0
# on every target: benign, fixed in stb 2.28. Only that check is off for stb, so the fuzzers
# keep finding everything else in it.
$(FUZZ_DIR)/obj/fuzz/stb_image_impl.o: fuzz/stb_image_impl.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fno-sanitize=shift-exponent -fno-sanitize-coverage=trace-cmp -w -c -o $@ $<

$(FUZZ_DIR)/libuflow.a: $(FUZZ_LIB_OBJ)
	$(AR) rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/fuzz/fuzz_%.o $(FUZZ_DIR)/libuflow.a
	$(FUZZ_CC) -fopenmp $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_DIR)/libuflow.a $(FUZZ_LDLIBS)

$(FUZZ_DIR)/gen_seeds: $(FUZZ_DIR)/obj/fuzz/gen_seeds.o $(FUZZ_DIR)/libuflow.a
	$(FUZZ_CC) -fopenmp $(FUZZ_SAN) -o $@ $< $(FUZZ_DIR)/libuflow.a $(FUZZ_LDLIBS)

fuzz-build: $(FUZZ_BIN)

# Regenerates the generated seeds in fuzz/corpus/ (committed; see fuzz/gen_seeds.c).
fuzz-seeds: $(FUZZ_DIR)/gen_seeds
	OMP_NUM_THREADS=1 $(FUZZ_DIR)/gen_seeds fuzz/corpus

# Installs clang and libFuzzer when missing, builds, runs every target for
# FUZZ_SECONDS from a scratch copy of its seeds; fails if any target fails.
fuzz:
	@sh tools/install_deps.sh fuzz
	@$(MAKE) --no-print-directory fuzz-build
	@sh fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
