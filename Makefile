PY ?= .venv/bin/python
PIP ?= .venv/bin/pip

.PHONY: build build-debug test lint format bench native-selftest clean

build:
	$(PIP) install -e '.[test]'

# ASan + UBSan: run the tests with the sanitizer runtime preloaded into the interpreter.
build-debug:
	$(PIP) install -e '.[test]' -Ccmake.build-type=Debug -Ccmake.define.LOCALMEM_SANITIZE=ON \
		-Cbuild-dir=build/debug
	@echo "run: LD_PRELOAD=\$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest"

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check localmem tui tests bench
	$(PY) -m ruff format --check localmem tui tests bench
	$(PY) -m mypy
	.venv/bin/clang-format --dry-run --Werror csrc/core/*/*.cpp csrc/core/*/*.h csrc/bindings/*.cpp csrc/bindings/*.h tests/native/*.cpp

format:
	$(PY) -m ruff format localmem tui tests bench
	$(PY) -m ruff check --fix localmem tui tests bench
	.venv/bin/clang-format -i csrc/core/*/*.cpp csrc/core/*/*.h csrc/bindings/*.cpp csrc/bindings/*.h tests/native/*.cpp

bench:
	$(PY) bench/vector_search.py --check

# Every kernel against scalar with no Python (tests/native/README.md: NEON under QEMU).
SELFTEST_SRC = tests/native/kernel_selftest.cpp csrc/core/common/cpu.cpp \
	csrc/core/common/kernel_choice.cpp csrc/core/index/kernels.cpp \
	csrc/core/index/score_matrix.cpp $(wildcard csrc/core/index/kernels_*.cpp)
native-selftest:
	mkdir -p build
	$(CXX) -O2 -std=c++17 -Wall -Icsrc/core $(SELFTEST_SRC) -o build/kernel_selftest
	build/kernel_selftest

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
