# The two commands a new user needs:
#   make run   set up, build, and run the bundled default model
#   make test  set up, build, and run every test
.PHONY: all deps build run test test-asan bench clean

JOBS ?= $(shell nproc)
BRAID := build/release/braid
DEFAULT_MODEL := build/default-model

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build build/release -j $(JOBS)

$(DEFAULT_MODEL)/config.json: models/default/spec.json | build
	@$(BRAID) init --spec models/default/spec.json --out $(DEFAULT_MODEL) --seed 1 --byte-tokenizer

run: build $(DEFAULT_MODEL)/config.json
	@$(BRAID) inspect --model $(DEFAULT_MODEL)
	@echo "--- generating from the bundled default model (untrained: random weights, so the text is noise) ---"
	@$(BRAID) run --model $(DEFAULT_MODEL) --prompt "Once upon a time" -n 48 --temperature 0.8 --seed 1

test: build
	@cd build/release && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build build/asan -j $(JOBS)
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf build
