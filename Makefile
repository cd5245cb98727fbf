# mailroute - thin wrapper around CMake. See README.md.
#   make run    install what is missing, build, start the daemon on conf.d/
#   make check  install what is missing, build normal + ASan/UBSan, run every test
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)
PYTEST = /usr/bin/python3 -m pytest
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps test-deps build asan run check unit integration fuzz fuzz-smoke bench docs clean

all: build

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMR_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

run: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS) --target mailrouted
	@mkdir -p run/mail
	@echo "mailrouted: LMTP on 127.0.0.1:2424 (see conf.d/). Send a test message with:"
	@echo "  swaks --protocol LMTP --server 127.0.0.1:2424 --to demo-local@example.com"
	@echo "  (demo-local is delivered to run/mail/example.com/demo-local/new/)"
	$(BUILD)/src/daemon/mailrouted -c conf.d/mailroute.conf

unit: build asan
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ctest --output-on-failure

integration: build asan test-deps
	MAILROUTED=$(CURDIR)/$(BUILD)/src/daemon/mailrouted $(PYTEST) -q t/integration
	MAILROUTED=$(CURDIR)/$(ASAN_BUILD)/src/daemon/mailrouted $(PYTEST) -q t/integration

check: test-deps build asan unit fuzz-smoke integration

fuzz: test-deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMR_FUZZ=ON -DMR_TESTS=OFF
	cmake --build $(FUZZ_BUILD) -j$(JOBS)

# A short run of every fuzz target on its seed corpus (a few seconds each).
fuzz-smoke: fuzz
	@for f in $(FUZZ_BUILD)/t/fuzz/fuzz-*; do \
	  name=$$(basename $$f); corpus=t/fuzz/corpus/$$name; [ -d $$corpus ] || corpus=; \
	  mkdir -p /tmp/mailroute-fuzz/$$name; \
	  echo "fuzz: $$name"; \
	  $$f -max_total_time=10 -timeout=5 /tmp/mailroute-fuzz/$$name $$corpus >/tmp/mailroute-fuzz/$$name.log 2>&1 \
	    || { tail -40 /tmp/mailroute-fuzz/$$name.log; exit 1; }; \
	done

# Benchmarks (bench/README.md, docs/performance.md; as root): `make bench` runs the
# LMTP one (direct vs Dovecot's proxy vs mailroute, about 5 min), then the IMAP one
# (logins/s, CPU per login, memory per idle session, TLS handshakes; about 8 min);
# `make bench-imap` runs the IMAP one alone. BENCH_REPS=5 for more repetitions,
# BENCH_QUICK=1 for a smoke run; BENCH_ARGS="--keep --out FILE" and the like go to
# bench/lmtp_bench.py, BENCH_IMAP_ARGS="--skip backend --idle 5000" to bench/imap_bench.py.
.PHONY: bench-imap bench-build
BENCH_RUN_ARGS = --mailrouted $(BUILD)/src/daemon/mailrouted --reps $(or $(BENCH_REPS),3) \
	$(if $(BENCH_QUICK),--quick)

bench: bench-build
	/usr/bin/python3 -B bench/lmtp_bench.py $(BENCH_RUN_ARGS) $(BENCH_ARGS)
	/usr/bin/python3 -B bench/imap_bench.py $(BENCH_RUN_ARGS) --tools $(BUILD)/bench $(BENCH_IMAP_ARGS)

bench-imap: bench-build
	/usr/bin/python3 -B bench/imap_bench.py $(BENCH_RUN_ARGS) --tools $(BUILD)/bench $(BENCH_IMAP_ARGS)

bench-build: test-deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DMR_BENCH=ON >/dev/null
	cmake --build $(BUILD) -j$(JOBS) --target mailrouted imap-load imap-mini

# Markdown in docs/ -> HTML (build/docs/*.html) and man pages, with cmark.
docs: deps
	@mkdir -p $(BUILD)/docs
	@for f in docs/*.md; do \
	  b=$$(basename $$f .md); \
	  cmark --to html $$f > $(BUILD)/docs/$$b.html; \
	done
	{ echo '.TH MAILROUTED 8 "" "mailroute" "System Manager'"'"'s Manual"'; \
	  cmark --to man docs/mailrouted.8.md; } > $(BUILD)/docs/mailrouted.8
	@echo "docs: $(BUILD)/docs/"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) run
