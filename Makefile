# Makefile: the tfork build. Hand-written; ./configure only writes config.mk
# (included below) and config.h. If config.mk is missing, any target first
# runs `autoreconf -i` (when ./configure is missing) and ./configure.
#
#   make            libtfork.so/.a, tfork-serve, examples
#   make check      build and run the Check suites (tests/check_*.c)
#   make check-valgrind  the client-side suites under valgrind memcheck
#                   (check-valgrind-all: every suite, fault, rpc and pool too)
#   make demo       run examples/demo.sh, else the programs in $(DEMOS)
#   make bench      run bench/run.sh (BENCH_QUICK=1: a short run)
#   make fuzz       run each libFuzzer harness (tests/fuzz/fuzz_*.c) for
#                   FUZZ_TIME seconds (default 45); needs clang's libFuzzer
#   make fuzz-seeds rewrite the seed corpora tests/fuzz/<harness>/seed-*
#   make soak       tests/soak/soak: 100000 spawn cycles, then 1000 children
#                   alive at once; fds, children and memory must stay flat
#                   (minutes; SOAK_CYCLES=n for fewer; not in make check)
#   make bench-peers  install what the spawn benchmark compares with (apt-get)
#   make install    DESTDIR and PREFIX aware; also uninstall
#   make installcheck  install into a temporary prefix, build every example
#                   there with pkg-config alone, run them
#   make dist       tfork-VERSION.tar.gz; make distcheck builds and tests it
#   make clean / distclean / maintainer-clean
#   V=1             show full compiler command lines
#   TESTS=...       `make check TESTS=tests/check_proto` runs only those

.DEFAULT_GOAL := all
.SUFFIXES:
.DELETE_ON_ERROR:
.SECONDARY:

# The clean targets must work on a tree that was never configured.
CLEAN_GOALS := clean distclean maintainer-clean
ifneq ($(if $(MAKECMDGOALS),$(filter-out $(CLEAN_GOALS),$(MAKECMDGOALS)),all),)
include config.mk
endif
# Until config.mk exists (make remakes it first, then restarts) or for the
# clean targets: a placeholder that keeps the rules below well-formed.
VERSION ?= 0.0.0-unconfigured

# `make install PREFIX=/opt/tfork` installs under another prefix than
# ./configure's; the library is rebuilt to find tfork-serve there.
ifdef PREFIX
prefix := $(PREFIX)
exec_prefix := $(PREFIX)
endif

# ---------------------------------------------------------------- flags
WARN_CFLAGS   = -Wall -Wextra -Wstrict-prototypes -Wwrite-strings $(WERROR)
# Where the library looks for tfork-serve: libexecdir as make sees it.
BASE_CPPFLAGS = -D_GNU_SOURCE -Iinclude -Isrc -I. -include config.h \
                -DTFORK_LIBEXECDIR='"$(libexecdir)"'
ALL_CPPFLAGS  = $(BASE_CPPFLAGS) $(EV_CFLAGS) $(CPPFLAGS)
DEPFLAGS      = -MMD -MP
# Library objects: one set serves libtfork.so, libtfork.a and tfork-serve.
# Only TFORK_EXTERN (default-visibility) symbols leave the .so, or are
# exported from tfork-serve by -rdynamic.
LIB_CFLAGS    = -std=gnu11 -fPIC -fvisibility=hidden $(WARN_CFLAGS) $(CFLAGS)
# Programs and test modules are built the way a user would build them:
# default visibility, so -rdynamic and dlsym() see their functions.
PROG_CFLAGS   = -std=gnu11 $(WARN_CFLAGS) $(CFLAGS)

# Environment for everything that runs from the build tree.
RUN_ENV  = TFORK_SERVE=$(CURDIR)/tfork-serve
TEST_ENV = $(RUN_ENV) TFORK_TESTDIR=$(CURDIR)/tests CK_DEFAULT_TIMEOUT=30

V ?= 0
ifeq ($(V),0)
Q   = @
msg = @printf '  %-6s %s\n' '$(1)' '$(2)';
else
Q   =
msg =
endif

# ---------------------------------------------------------------- sources
LIB_SRCS   = $(wildcard src/*.c) $(filter-out serve/main.c serve/tfork-task.c,\
               $(wildcard serve/*.c))
SERVE_SRCS = serve/main.c $(LIB_SRCS)
TASK_SRCS  = serve/tfork-task.c $(LIB_SRCS)
LIB_OBJS   = $(LIB_SRCS:.c=.o)
SERVE_OBJS = $(SERVE_SRCS:.c=.o)
TASK_OBJS  = $(TASK_SRCS:.c=.o)
ALL_OBJS   = $(sort $(LIB_OBJS) $(SERVE_OBJS) $(TASK_OBJS))

SOMAJOR = $(firstword $(subst ., ,$(VERSION)))
SOLIB   = libtfork.so.$(VERSION)
SONAME  = libtfork.so.$(SOMAJOR)
LIBS_OUT = $(SOLIB) $(SONAME) libtfork.so libtfork.a

EXAMPLES = $(patsubst %.c,%,$(wildcard examples/*.c))
DEMOS   ?= prefork-server exec big-parent
BENCHES  = $(patsubst %.c,%,$(wildcard bench/*.c))

CHECK_SRCS = $(wildcard tests/check_*.c)
CHECK_BINS = $(CHECK_SRCS:.c=)
PROG_BINS  = $(patsubst %.c,%,$(wildcard tests/prog_*.c))
MOD_LIBS   = $(patsubst %.c,%.so,$(wildcard tests/mod_*.c))
# Any other tests/*.c is a shared helper linked into check_* and prog_*.
TEST_HELPER_OBJS = $(patsubst %.c,%.o,$(filter-out tests/check_%.c \
                     tests/prog_%.c tests/mod_%.c,$(wildcard tests/*.c)))
TESTS ?= $(CHECK_BINS)

# Objects and programs are rebuilt when the compiler or flags change
# (make CC=clang after a gcc build), not only when sources do.
BUILD_FLAGS = $(CC) | $(ALL_CPPFLAGS) | $(LIB_CFLAGS) | $(PROG_CFLAGS) | \
              $(LDFLAGS) | $(EV_LIBS) | $(CHECK_CFLAGS) $(CHECK_LIBS) | $(LIBS)

# ---------------------------------------------------------------- build
.PHONY: all check check-man check-valgrind check-valgrind-all demo bench \
        soak install installcheck uninstall dist distcheck clean distclean \
        maintainer-clean FORCE

all: $(LIBS_OUT) tfork-serve tfork-task $(EXAMPLES)

src/%.o: src/%.c .build-flags | config.h
	$(call msg,CC,$@)$(CC) $(ALL_CPPFLAGS) $(LIB_CFLAGS) $(DEPFLAGS) -c -o $@ $<
serve/%.o: serve/%.c .build-flags | config.h
	$(call msg,CC,$@)$(CC) $(ALL_CPPFLAGS) $(LIB_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(SOLIB): $(LIB_OBJS)
	$(call msg,LD,$@)$(CC) -shared -Wl,-soname,$(SONAME) $(LIB_CFLAGS) \
	  $(LDFLAGS) -o $@ $(LIB_OBJS) $(EV_LIBS) -ldl $(LIBS)
$(SONAME): $(SOLIB)
	$(Q)ln -sf $(SOLIB) $@
libtfork.so: $(SONAME)
	$(Q)ln -sf $(SONAME) $@
libtfork.a: $(LIB_OBJS)
	$(call msg,AR,$@)rm -f $@ && $(AR) rcs $@ $(LIB_OBJS)

# tfork-serve is libtfork plus a main(): its template loop never touches
# libev, but an async RPC child forked from it runs a libev loop.
# -rdynamic so modules it loads can call the child-side API (the
# TFORK_EXTERN symbols) without linking libtfork themselves.
tfork-serve: $(SERVE_OBJS)
	$(call msg,LD,$@)$(CC) $(LIB_CFLAGS) $(LDFLAGS) -rdynamic -o $@ \
	  $(SERVE_OBJS) $(EV_LIBS) -ldl $(LIBS)
# tfork-task (tfork_task(3) from the command line) carries libtfork the same
# way, so it runs from the build tree and needs no installed library.
tfork-task: $(TASK_OBJS)
	$(call msg,LD,$@)$(CC) $(LIB_CFLAGS) $(LDFLAGS) -o $@ \
	  $(TASK_OBJS) $(EV_LIBS) -ldl $(LIBS)

# Examples and benchmarks link the build tree's libtfork.so and find it at
# run time through $ORIGIN, so they run in place without LD_LIBRARY_PATH.
examples/%: examples/%.c $(SOLIB) $(SONAME) libtfork.so .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) $(DEPFLAGS) \
	  -MF $@.d -MT $@ $(LDFLAGS) -o $@ $< -L. -ltfork \
	  -Wl,-rpath,'$$ORIGIN/..' $(EV_LIBS) $(LIBS)
bench/%: bench/%.c $(SOLIB) $(SONAME) libtfork.so .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) $(DEPFLAGS) \
	  -MF $@.d -MT $@ $(LDFLAGS) -o $@ $< -L. -ltfork \
	  -Wl,-rpath,'$$ORIGIN/..' $(EV_LIBS) $(LIBS)
# The program the spawn benchmark execs: static, so an exec of it costs
# no dynamic loading (Debian: libc.a is in libc6-dev).
bench/tiny: bench/tiny.c .build-flags
	$(call msg,CCLD,$@)$(CC) $(PROG_CFLAGS) $(DEPFLAGS) -MF $@.d -MT $@ \
	  $(LDFLAGS) -static -o $@ $<

# ---------------------------------------------------------------- tests
# Test programs take all of libtfork.a (--whole-archive) and export it
# (-rdynamic), so modules loaded into their templates find the whole API.
TEST_LINK = -Wl,--whole-archive libtfork.a -Wl,--no-whole-archive

tests/%.o: tests/%.c .build-flags | config.h
	$(call msg,CC,$@)$(CC) $(ALL_CPPFLAGS) $(CHECK_CFLAGS) $(PROG_CFLAGS) \
	  $(DEPFLAGS) -c -o $@ $<
# Test modules are dlopen()ed by templates; they do NOT link libtfork
# (tfork-serve exports its API) but may use libev.
tests/mod_%.so: tests/mod_%.c .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) -fPIC -shared \
	  $(DEPFLAGS) -MF $@.d -MT $@ $(LDFLAGS) -o $@ $< $(EV_LIBS)
tests/check_%: tests/check_%.c libtfork.a $(TEST_HELPER_OBJS) .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(CHECK_CFLAGS) $(PROG_CFLAGS) \
	  $(DEPFLAGS) -MF $@.d -MT $@ $(LDFLAGS) -rdynamic -o $@ $< \
	  $(TEST_HELPER_OBJS) $(TEST_LINK) $(EV_LIBS) $(CHECK_LIBS) -ldl $(LIBS)
tests/prog_%: tests/prog_%.c libtfork.a $(TEST_HELPER_OBJS) .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) \
	  $(DEPFLAGS) -MF $@.d -MT $@ $(LDFLAGS) -rdynamic -o $@ $< \
	  $(TEST_HELPER_OBJS) $(TEST_LINK) $(EV_LIBS) $(CHECK_LIBS) -ldl $(LIBS)

ifneq ($(HAVE_CHECK),yes)
check:
	@echo "make check: the Check unit-test library was not found by ./configure." >&2
	@echo "  Install the package check (Debian: apt-get install check libsubunit-dev)," >&2
	@echo "  then re-run ./configure." >&2
	@exit 1
else ifeq ($(strip $(CHECK_SRCS)),)
check:
	@echo "make check: there are no tests yet (no tests/check_*.c)." >&2
	@exit 1
else
# Runs every suite even when one fails; each suite's output goes to
# tests/check_X.log and is shown; the last line sums Check's summaries.
# Each suite runs under $(CHECK_WRAPPER) if set; a suite whose log has a
# line matching $(CHECK_FAIL_RE) fails (one more failure), whatever its
# exit status: a wrapper's reports from a forked child reach the log but
# not the suite's status (see check-valgrind).
check: check-man $(LIBS_OUT) tfork-serve tfork-task $(MOD_LIBS) $(PROG_BINS) $(TESTS)
	@passed=0; failed=0; badsuites=; \
	for t in $(TESTS); do \
	  case $$t in /*) cmd=$$t ;; *) cmd=./$$t ;; esac; \
	  echo "== $$t"; \
	  $(TEST_ENV) $(CHECK_WRAPPER) $$cmd </dev/null >$$t.log 2>&1; rc=$$?; \
	  cat $$t.log; \
	  sum=$$(awk '/^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ \
	    { gsub(/,/, ""); n++; c += $$3; f += $$5 + $$7 } \
	    END { if (n) print c - f, f }' $$t.log); \
	  if [ -n "$$sum" ]; then \
	    set -- $$sum; passed=$$((passed + $$1)); failed=$$((failed + $$2)); \
	    if [ $$rc -ne 0 ] && [ $$2 -eq 0 ]; then \
	      echo "$$t: exited with status $$rc after its checks passed"; \
	      failed=$$((failed + 1)); \
	    fi; \
	  else \
	    echo "$$t: no Check summary line (exit status $$rc): counted as 1 failure"; \
	    failed=$$((failed + 1)); \
	  fi; \
	  if [ -n '$(CHECK_FAIL_RE)' ] && \
	     n=$$(grep -cE '$(CHECK_FAIL_RE)' $$t.log); then \
	    echo "$$t: $$n lines of $(CHECK_FAIL_WHAT) reports (above): counted as 1 failure"; \
	    failed=$$((failed + 1)); rc=1; \
	  fi; \
	  [ $$rc -eq 0 ] || badsuites="$$badsuites $$t"; \
	done; \
	echo; \
	[ -z "$$badsuites" ] || echo "failed suites:$$badsuites (logs: tests/*.log)"; \
	echo "$$passed passed, $$failed failed"; \
	[ -z "$$badsuites" ] && [ $$failed -eq 0 ]
endif

# make check-valgrind: the client-side suites (below: core, faults and
# the task client; TESTS=... for others) under valgrind memcheck.  Any
# error in any process fails: in the suite itself through its exit
# status (99), in a process it forked (Check's per-test fork,
# tfork_template copies, their children) or exec'd (tfork-serve, tests/prog_*) through the report in the log, as
# -q makes memcheck's reports the only "==PID== " lines.  Valgrind's own
# "--PID--" notes (valgrind 3.19 does not know pidfd_open: the library
# falls back to a timer) are not errors.  check-valgrind-all runs every
# suite, rpc and pool too.
VALGRIND       ?= valgrind
VALGRIND_TESTS  = tests/check_proto tests/check_core tests/check_exec \
                  tests/check_life tests/check_fault tests/check_task \
                  tests/check_task_docs
# Memory errors and definite leaks count (and only those are shown, so
# that every "==PID== " line is an error); forked children report too
# (--child-silent-after-fork=no, the default, said for the reader).
# Exec'd children are traced, so tfork-serve and the templates and
# children it forks are checked as well, but not the system programs
# the exec tests run (sh, env, echo, true). --vgdb=no: no gdbserver
# FIFOs in /tmp, which killed processes would leave behind.
VALGRIND_FLAGS ?= -q --error-exitcode=99 --leak-check=full \
                  --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                  --child-silent-after-fork=no --trace-children=yes \
                  --trace-children-skip='/bin/*,/sbin/*,/usr/bin/*,/usr/sbin/*,/usr/local/bin/*,/usr/local/sbin/*' \
                  --vgdb=no
# Check's timeouts (per TCase) stretched for valgrind's slowdown.
VALGRIND_CK_TIMEOUT_MULTIPLIER ?= 4
ifeq ($(CHECK_VALGRIND),yes)
CHECK_WRAPPER = env CK_TIMEOUT_MULTIPLIER=$(VALGRIND_CK_TIMEOUT_MULTIPLIER) \
                $(VALGRIND) $(VALGRIND_FLAGS)
CHECK_FAIL_RE = ^==[0-9]+==[ ]
CHECK_FAIL_WHAT = valgrind
endif
check-valgrind check-valgrind-all:
	@command -v $(VALGRIND) >/dev/null 2>&1 || { echo "make $@: $(VALGRIND)" \
	  "is not installed (Debian: apt-get install valgrind)" >&2; exit 1; }
	@$(MAKE) --no-print-directory check CHECK_VALGRIND=yes TESTS='$(strip \
	  $(if $(filter check-valgrind-all,$@),$(CHECK_BINS), \
	  $(if $(filter-out file,$(origin TESTS)),$(TESTS),$(VALGRIND_TESTS))))'

# The man pages: each page lints clean (mandoc -T lint, else groff -ww);
# each .so stub names a page that exists; every symbol libtfork exports
# has a page under its own name; tfork(3) and tfork-serve(1) exist.
MAN_PAGES = $(wildcard man/*.[1-9])
check-man: $(SOLIB)
	@bad=0; n=0; \
	if command -v mandoc >/dev/null 2>&1; then lint='mandoc -T lint -W warning'; \
	elif command -v groff >/dev/null 2>&1; then lint='groff -man -ww -z'; \
	else echo "make check: neither mandoc nor groff is installed to lint the man" \
	  "pages (Debian: apt-get install mandoc)" >&2; exit 1; fi; \
	for f in $(MAN_PAGES); do \
	  n=$$((n + 1)); first=$$(head -n 1 "$$f"); \
	  case $$first in \
	  .so\ *) t=man/$${first##*/}; \
	    [ -f "$$t" ] || { echo "$$f: .so names $$t, which does not exist"; bad=1; } ;; \
	  *) out=$$($$lint "$$f" 2>&1) || true; \
	    [ -z "$$out" ] || { echo "$$out"; bad=1; } ;; \
	  esac; \
	done; \
	for sym in $$(nm -D --defined-only $(SOLIB) | awk '$$2 ~ /^[TDBRW]$$/ { print $$3 }'); do \
	  [ -f "man/$$sym.3" ] || { echo "man/$$sym.3: missing (exported by libtfork)"; bad=1; }; \
	done; \
	for f in man/tfork.3 man/tfork-serve.1; do \
	  [ -f "$$f" ] || { echo "$$f: missing"; bad=1; }; done; \
	api=$$(sed -n 's/^TFORK_EXTERN[^(]*[ *]\([a-z_][a-z0-9_]*\)(.*/\1/p' \
	  include/tfork.h include/tfork/*.h | sort); \
	exp=$$(nm -D --defined-only $(SOLIB) | awk '$$2 ~ /^[TDBRW]$$/ { print $$3 }' | sort); \
	[ "$$api" = "$$exp" ] || { echo "libtfork exports other symbols than the" \
	  "headers declare TFORK_EXTERN: declared:" $$api "exported:" $$exp; bad=1; }; \
	[ $$bad -eq 0 ] || { echo "make check: the man pages need fixing (above)" >&2; exit 1; }; \
	echo "== man pages: $$n linted or resolved; the $$(echo "$$exp" | wc -l)" \
	  "exported symbols are the API, each with a page"

# The soak program lives in its own directory: any tests/*.c is linked
# into every suite as a helper.  Linked like tests/prog_*, without Check.
tests/soak/soak: tests/soak/soak.c libtfork.a .build-flags | config.h
	$(call msg,CCLD,$@)$(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) \
	  $(DEPFLAGS) -MF $@.d -MT $@ $(LDFLAGS) -rdynamic -o $@ $< \
	  $(TEST_LINK) $(EV_LIBS) -ldl $(LIBS)

# ---------------------------------------------------------------- run
demo: all
	@if [ -f examples/demo.sh ]; then \
	  echo "== examples/demo.sh"; \
	  $(RUN_ENV) bash examples/demo.sh; \
	else \
	  for d in $(DEMOS); do \
	    if [ ! -x examples/$$d ]; then \
	      echo "make demo: examples/$$d does not exist (no examples/$$d.c yet?)" >&2; \
	      exit 1; \
	    fi; \
	    echo "== examples/$$d"; \
	    $(RUN_ENV) ./examples/$$d || { \
	      echo "make demo: examples/$$d failed (exit status $$?)" >&2; exit 1; }; \
	  done; \
	fi

bench: all $(BENCHES)
	@if [ -f bench/run.sh ]; then \
	  $(RUN_ENV) BENCH_CC='$(CC)' BENCH_CFLAGS='$(CFLAGS)' bash bench/run.sh; \
	else \
	  echo "make bench: the benchmarks are not written yet (no bench/run.sh)." >&2; \
	  exit 1; \
	fi

# Long, so not part of make check.  Its exec cycles run bench/tiny, or
# /bin/true where that cannot be built (-static is refused with ASan).
# SOAK_CYCLES and SOAK_HOLD (environment or make variables) shorten it.
soak: tfork-serve tests/soak/soak
	@tiny=$(CURDIR)/bench/tiny; \
	if ! $(MAKE) --no-print-directory bench/tiny >/dev/null 2>&1; then \
	  tiny=/bin/true; \
	  echo "make soak: bench/tiny does not build with these flags:" \
	    "exec cycles run /bin/true"; \
	fi; \
	echo "$(RUN_ENV) ./tests/soak/soak $$tiny"; \
	$(RUN_ENV) ./tests/soak/soak $$tiny

# What the spawn benchmark compares tfork with, and its plot (Debian
# packages): make bench uses them when installed and says so when not.
BENCH_PEER_PKGS = libanyevent-fork-perl libev-perl python3 gnuplot-nox
.PHONY: bench-peers
bench-peers:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make bench-peers: needs root; run: apt-get install -y $(BENCH_PEER_PKGS)" >&2; \
	  exit 1; \
	fi; \
	echo "apt-get install -y $(BENCH_PEER_PKGS)"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y $(BENCH_PEER_PKGS) || { \
	  echo "apt-get update"; apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y $(BENCH_PEER_PKGS); }

# ---------------------------------------------------------------- fuzz
# libFuzzer harnesses: tests/fuzz/fuzz_NAME.c, each with its corpus in
# tests/fuzz/NAME/ (seed-* from tests/fuzz/gen_seeds.c, and every crash-,
# timeout-, leak- or oom- input a run finds: libFuzzer writes them there,
# and tests/check_fuzz replays them all in `make check`).  The library
# is built again for them with clang, ASan, UBSan and coverage, under
# fuzz-build/; what a run learns (its growing corpus) stays there too.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 45
FUZZ_FLAGS ?=
FUZZ_DIR    = fuzz-build
FUZZ_NAMES  = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS   = $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_SAN    = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=gnu11 -g -O1 $(WARN_CFLAGS) $(FUZZ_SAN)
FUZZ_LIB_OBJS = $(LIB_SRCS:%.c=$(FUZZ_DIR)/%.o)
# fuzz_serve's template runs in child processes: every one of them folds
# its coverage into the harness's on the way out through _exit
FUZZ_LDFLAGS_serve = -Wl,--wrap=_exit

.PHONY: fuzz fuzz-seeds fuzz-toolchain
fuzz-toolchain:
	@mkdir -p $(FUZZ_DIR); \
	printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
	  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
	  '{ (void)d; (void)n; return 0; }' > $(FUZZ_DIR)/probe.c; \
	if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	  echo "make fuzz: $(FUZZ_CC) is not installed (Debian 12: apt-get install" \
	    "clang libclang-rt-14-dev)" >&2; exit 1; fi; \
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $(FUZZ_DIR)/probe \
	  $(FUZZ_DIR)/probe.c >$(FUZZ_DIR)/probe.log 2>&1 || { \
	  cat $(FUZZ_DIR)/probe.log >&2; \
	  echo "make fuzz: $(FUZZ_CC) cannot link libFuzzer (-fsanitize=fuzzer):" \
	    "a clang without its runtime (Debian 12: apt-get install" \
	    "libclang-rt-14-dev; clang N: libclang-rt-N-dev), or not clang" \
	    "(FUZZ_CC=clang)" >&2; exit 1; }

# rebuilt when the fuzz compiler or flags change, as .build-flags does
FUZZ_BUILD_FLAGS = $(FUZZ_CC) | $(ALL_CPPFLAGS) | $(FUZZ_CFLAGS) | $(EV_LIBS) $(LIBS)
$(FUZZ_DIR)/.flags: FORCE
	@mkdir -p $(FUZZ_DIR); flags='$(subst ','\'',$(FUZZ_BUILD_FLAGS))'; \
	printf '%s\n' "$$flags" | cmp -s - $@ || printf '%s\n' "$$flags" > $@

$(FUZZ_DIR)/%.o: %.c $(FUZZ_DIR)/.flags | config.h fuzz-toolchain
	@mkdir -p $(@D)
	$(call msg,FUZZCC,$@)$(FUZZ_CC) $(ALL_CPPFLAGS) $(FUZZ_CFLAGS) \
	  -fsanitize=fuzzer-no-link $(DEPFLAGS) -c -o $@ $<
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJS) $(FUZZ_DIR)/.flags | config.h
	$(call msg,FUZZLD,$@)$(FUZZ_CC) $(ALL_CPPFLAGS) -Itests $(FUZZ_CFLAGS) \
	  -fsanitize=fuzzer -DTFORK_FUZZ_MAIN $(DEPFLAGS) -MF $@.d -MT $@ \
	  -o $@ $< $(FUZZ_LIB_OBJS) $(FUZZ_LDFLAGS_$*) $(EV_LIBS) -ldl $(LIBS)

# Each harness runs FUZZ_TIME seconds (libFuzzer stops at its first
# crash, hang or leak); the table says how many inputs each ran and what
# it found.  FUZZ_FLAGS go to every libFuzzer run (e.g. -jobs=2).
fuzz: fuzz-toolchain $(FUZZ_BINS)
	@found=0; table=; \
	for h in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$h tests/fuzz/$$h; \
	  before=$$(ls tests/fuzz/$$h | grep -Ec '^(crash|timeout|leak|oom)-'); \
	  echo "== fuzz_$$h: $(FUZZ_TIME) s (log: $(FUZZ_DIR)/fuzz_$$h.log)"; \
	  ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(RUN_ENV) ./$(FUZZ_DIR)/fuzz_$$h -max_total_time=$(FUZZ_TIME) \
	    -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
	    -artifact_prefix=tests/fuzz/$$h/ $(FUZZ_FLAGS) \
	    $(FUZZ_DIR)/corpus/$$h tests/fuzz/$$h >$(FUZZ_DIR)/fuzz_$$h.log 2>&1; \
	  rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' \
	    $(FUZZ_DIR)/fuzz_$$h.log | tail -n 1); \
	  after=$$(ls tests/fuzz/$$h | grep -Ec '^(crash|timeout|leak|oom)-'); \
	  new=$$((after - before)); \
	  if [ $$rc -ne 0 ] || [ $$new -ne 0 ]; then \
	    found=1; tail -n 40 $(FUZZ_DIR)/fuzz_$$h.log; \
	    ls -t tests/fuzz/$$h | grep -E '^(crash|timeout|leak|oom)-' | head -n 1 | \
	      sed "s|^|  new regression input: tests/fuzz/$$h/|"; \
	  fi; \
	  table="$$table$$(printf '%-8s %12s execs  %d crash(es)/hang(s)  (exit %d)' \
	    $$h "$${execs:-?}" $$new $$rc)\n"; \
	done; \
	echo; printf "$$table"; \
	[ $$found -eq 0 ] || { echo "make fuzz: found bugs; make check replays" \
	  "them (tests/check_fuzz)" >&2; exit 1; }

fuzz-seeds: libtfork.a
	$(call msg,CCLD,$(FUZZ_DIR)/gen_seeds)mkdir -p $(FUZZ_DIR) && \
	  $(CC) $(ALL_CPPFLAGS) $(PROG_CFLAGS) -o $(FUZZ_DIR)/gen_seeds \
	  tests/fuzz/gen_seeds.c libtfork.a $(EV_LIBS) -ldl $(LIBS)
	rm -f tests/fuzz/*/seed-*
	./$(FUZZ_DIR)/gen_seeds tests/fuzz

# ---------------------------------------------------------------- install
# libev has no .pc file: its flags go into ours, as every program using
# tfork runs a libev loop.
tfork.pc: config.mk .build-flags
	$(Q)printf '%s\n' \
	  'prefix=$(prefix)' 'exec_prefix=$(exec_prefix)' \
	  'libdir=$(libdir)' 'includedir=$(includedir)' \
	  'libexecdir=$(libexecdir)' '' \
	  'Name: tfork' \
	  'Description: spawn pre-initialised processes from a small template' \
	  'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -ltfork $(EV_LIBS)' \
	  'Libs.private: -ldl' \
	  'Cflags: -I$${includedir} $(EV_CFLAGS)' > $@

install: all tfork.pc
	install -d $(DESTDIR)$(includedir) $(DESTDIR)$(libdir)/pkgconfig \
	  $(DESTDIR)$(libexecdir) $(DESTDIR)$(bindir)
	install -m 644 include/tfork.h $(DESTDIR)$(includedir)/
	if [ -d include/tfork ]; then \
	  install -d $(DESTDIR)$(includedir)/tfork && \
	  install -m 644 include/tfork/*.h $(DESTDIR)$(includedir)/tfork/; fi
	install -m 755 $(SOLIB) $(DESTDIR)$(libdir)/
	ln -sf $(SOLIB) $(DESTDIR)$(libdir)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(libdir)/libtfork.so
	install -m 644 libtfork.a $(DESTDIR)$(libdir)/
	install -m 644 tfork.pc $(DESTDIR)$(libdir)/pkgconfig/
	install -m 755 tfork-serve $(DESTDIR)$(libexecdir)/
	install -m 755 tfork-task $(DESTDIR)$(bindir)/
	for f in $(wildcard man/*.[1-9]); do \
	  s=$${f##*.}; install -d $(DESTDIR)$(mandir)/man$$s && \
	  install -m 644 $$f $(DESTDIR)$(mandir)/man$$s/ || exit 1; done

# Installs into a temporary prefix, builds every example there with only
# `pkg-config --cflags --libs tfork`, runs them (examples/demo.sh) with no
# TFORK_SERVE set, then uninstalls and checks that nothing is left.
installcheck:
	@set -e; tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/tfork-installcheck.XXXXXX"); \
	trap 'rm -rf "$$tmp"' EXIT; pre=$$tmp/prefix; \
	echo "== make install PREFIX=$$pre"; \
	$(MAKE) --no-print-directory install PREFIX="$$pre" >"$$tmp/log" 2>&1 \
	  || { cat "$$tmp/log"; exit 1; }; \
	export PKG_CONFIG_PATH="$$pre/lib/pkgconfig"; \
	flags=$$(pkg-config --cflags --libs tfork); \
	echo "== pkg-config --cflags --libs tfork: $$flags"; \
	test "$$(pkg-config --modversion tfork)" = "$(VERSION)"; \
	test -x "$$pre/libexec/tfork-serve"; \
	test "$$(readlink "$$pre/lib/$(SONAME)")" = "$(SOLIB)"; \
	mkdir "$$tmp/examples"; \
	for src in examples/*.c; do \
	  n=$${src##*/}; n=$${n%.c}; echo "== cc $$src"; \
	  $(CC) $(CFLAGS) -o "$$tmp/examples/$$n" "$$src" $$flags; \
	done; \
	env -u TFORK_SERVE LD_LIBRARY_PATH="$$pre/lib" \
	  TFORK_DEMO_BIN="$$tmp/examples" bash examples/demo.sh; \
	echo "== make uninstall PREFIX=$$pre"; \
	$(MAKE) --no-print-directory uninstall PREFIX="$$pre" >"$$tmp/log" 2>&1 \
	  || { cat "$$tmp/log"; exit 1; }; \
	left=$$(find "$$pre" -type f -o -type l); \
	if [ -n "$$left" ]; then echo "left after uninstall:"; echo "$$left"; exit 1; fi; \
	echo "installcheck: installed, built with pkg-config, ran, uninstalled"

uninstall:
	rm -f $(DESTDIR)$(includedir)/tfork.h $(DESTDIR)$(libdir)/$(SOLIB) \
	  $(DESTDIR)$(libdir)/$(SONAME) $(DESTDIR)$(libdir)/libtfork.so \
	  $(DESTDIR)$(libdir)/libtfork.a $(DESTDIR)$(libdir)/pkgconfig/tfork.pc \
	  $(DESTDIR)$(libexecdir)/tfork-serve $(DESTDIR)$(bindir)/tfork-task
	rm -rf $(DESTDIR)$(includedir)/tfork
	for f in $(wildcard man/*.[1-9]); do \
	  rm -f $(DESTDIR)$(mandir)/man$${f##*.}/$${f##*/}; done

# ---------------------------------------------------------------- dist
# The tarball holds the files git tracks (as they are in the work tree)
# plus configure and config.h.in, so building it needs no autoconf.
DIST_NAME = tfork-$(VERSION)
dist: configure
	@set -e; test -d .git || { echo "make dist: needs a git checkout" >&2; exit 1; }; \
	rm -rf $(DIST_NAME) $(DIST_NAME).tar.gz; mkdir $(DIST_NAME); \
	git ls-files -z | xargs -0 cp -p --parents -t $(DIST_NAME); \
	cp -p configure config.h.in $(DIST_NAME)/; \
	tar -czf $(DIST_NAME).tar.gz $(DIST_NAME); rm -rf $(DIST_NAME); \
	echo "$(DIST_NAME).tar.gz: $$(tar -tzf $(DIST_NAME).tar.gz | grep -vc '/$$') files"

# Unpacks the tarball elsewhere and runs configure, make, make check there.
distcheck: dist
	@set -e; tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/tfork-distcheck.XXXXXX"); \
	trap 'rm -rf "$$tmp"' EXIT; \
	tar -xzf $(DIST_NAME).tar.gz -C "$$tmp"; cd "$$tmp/$(DIST_NAME)"; \
	echo "== ./configure"; ./configure >"$$tmp/log" 2>&1 || { cat "$$tmp/log"; exit 1; }; \
	echo "== make"; $(MAKE) --no-print-directory -j2 >"$$tmp/log" 2>&1 || { cat "$$tmp/log"; exit 1; }; \
	echo "== make check"; $(MAKE) --no-print-directory check >"$$tmp/log" 2>&1 \
	  || { cat "$$tmp/log"; exit 1; }; tail -n 1 "$$tmp/log"; \
	echo "distcheck: $(DIST_NAME).tar.gz builds and passes make check"

# ---------------------------------------------------------------- configure
# config.mk (and config.h with it) comes from configure; make remakes it
# before anything else and restarts. A CC given to make goes to configure.
CONFIGURE_ARGS = $(if $(filter command line,$(origin CC)),CC='$(CC)')
configure: configure.ac aclocal.m4
	autoreconf -i
	@touch configure
config.mk: config.mk.in configure.ac aclocal.m4 $(wildcard configure)
	@if [ ! -x configure ] || [ configure.ac -nt configure ] || \
	    [ aclocal.m4 -nt configure ]; then \
	  echo "autoreconf -i"; autoreconf -i || exit 1; \
	fi; \
	if [ -f config.status ] && [ config.status -nt configure ]; then \
	  echo "./config.status"; ./config.status || exit 1; \
	elif [ -f config.status ]; then \
	  echo "./config.status --recheck"; \
	  ./config.status --recheck && ./config.status || exit 1; \
	else \
	  echo "./configure $(CONFIGURE_ARGS)"; ./configure $(CONFIGURE_ARGS) || exit 1; \
	fi; \
	touch $@
config.h:
	./config.status config.h

.build-flags: FORCE
	@flags='$(subst ','\'',$(BUILD_FLAGS))'; \
	printf '%s\n' "$$flags" | cmp -s - $@ || printf '%s\n' "$$flags" > $@
FORCE:

# ---------------------------------------------------------------- clean
clean:
	rm -f src/*.o serve/*.o tests/*.o src/*.d serve/*.d tests/*.d \
	  examples/*.d bench/*.d libtfork.so libtfork.so.* libtfork.a \
	  tfork-serve tfork-task tfork.pc .build-flags tests/*.so tests/*.log \
	  tests/soak/soak tests/soak/*.d \
	  $(patsubst %.c,%,$(wildcard examples/*.c bench/*.c tests/check_*.c tests/prog_*.c))
	rm -rf $(FUZZ_DIR)
distclean: clean
	rm -f config.mk config.h config.log config.status
maintainer-clean: distclean
	rm -rf configure configure~ config.h.in config.h.in~ autom4te.cache
	rm -rf bench/results tfork-*.tar.gz

-include $(wildcard src/*.d serve/*.d tests/*.d tests/soak/*.d examples/*.d \
  bench/*.d)
-include $(wildcard $(FUZZ_DIR)/*.d $(FUZZ_DIR)/src/*.d $(FUZZ_DIR)/serve/*.d)
