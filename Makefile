# The two commands a new user needs:
#   make run   set up, build, and run the bundled default model
#   make test  set up, build, and run every test
.PHONY: all deps build run test test-asan fuzz bench clean

JOBS ?= $(shell nproc)
BRAID := build/release/braid
DEFAULT_MODEL := models/default

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build build/release -j $(JOBS)

# The bundled default: a 4.6M-parameter Gated DeltaNet / attention hybrid trained by braid
# on the King James Bible (docs/training.md says how to reproduce it).
run: build
	@$(BRAID) inspect --model $(DEFAULT_MODEL)
	@echo "--- a continuation from the bundled default model ---"
	@$(BRAID) run --model $(DEFAULT_MODEL) --prompt "And God said unto Noah," -n 64 --temperature 0.7 --top-p 0.9 --seed 1

test: build
	@./scripts/install-npm-deps.sh
	@cd build/release && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@./scripts/install-npm-deps.sh
	@cmake --preset asan >/dev/null
	@cmake --build build/asan -j $(JOBS)
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS)

# libFuzzer targets for the parsers of untrusted input: FUZZ_RUNS inputs each from seed 1
# (reproducible), or FUZZ_SECONDS each from a random seed.
fuzz: deps
	@./scripts/fuzz.sh

clean:
	rm -rf build
