# The build's options (README: Building with CUDA, Sanitizers and fuzzing), and where the tests'
# reference material and the exporters' Python are.
option(OVSEG_BUILD_TOOLS "Build the ovseg command-line tool" ON)
option(OVSEG_BUILD_BENCHMARKS "Build the Google Benchmark programs" ON)
# AddressSanitizer + UndefinedBehaviorSanitizer for everything built here (see README, "Sanitizers
# and fuzzing"). UBSan's vptr check is left out of the one file that calls the dlopen()ed
# libsentencepiece (its typeinfo is not linked), and ASan refuses dlopen(RTLD_DEEPBIND), so that
# build loads libsentencepiece with RTLD_LOCAL only.
option(OVSEG_SANITIZE "Build with -fsanitize=address,undefined" OFF)
option(OVSEG_BUILD_FUZZERS "Build the fuzz targets (tests/fuzz)" OFF)
# Coverage-guided fuzzing with clang's libFuzzer (CMAKE_CXX_COMPILER=clang++): every file is
# instrumented for coverage, the fuzz targets link libFuzzer instead of tests/fuzz/driver.cpp.
option(OVSEG_FUZZ_LIBFUZZER "Fuzz targets with libFuzzer (clang) instead of the in-process driver" OFF)
if(OVSEG_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
  add_compile_definitions(OVSEG_SANITIZE=1)
endif()
if(OVSEG_FUZZ_LIBFUZZER)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
set(OVSEG_SHARED_DIR "${PROJECT_SOURCE_DIR}/../shared/ovseg" CACHE PATH
    "Reference material (SPEC, fixtures, golden files) used by the tests")
set(OVSEG_PYTHON "/usr/bin/python3" CACHE FILEPATH "Python interpreter with torch (Debian python3-torch)")
# The Python module (python/): on by default where pybind11 is found (Debian pybind11-dev).
if(NOT DEFINED PYTHON_EXECUTABLE)
  set(PYTHON_EXECUTABLE "${OVSEG_PYTHON}")
endif()
find_package(pybind11 2.6 CONFIG QUIET)
option(OVSEG_BUILD_PYTHON "Build the Python module ovseg (needs pybind11)" ${pybind11_FOUND})

