# Everything ovseg builds against (Debian bookworm's packages: tools/debian-packages.txt), the
# libstdc++ ABI torch dictates, and the overlay's fonts.
find_package(Torch REQUIRED)
# libstdc++ ABI: TORCH_CXX_FLAGS carries torch's -D_GLIBCXX_USE_CXX11_ABI=0|1 (0 in pytorch.org's
# "pre-cxx11 ABI" libtorch). torch puts it on its own imported target only, i.e. on the pipeline;
# but std::string crosses every interface between ovseg's parts and its public API, so EVERY
# target (object libraries, the library, the CLI, tests, benchmarks) gets the same value, and so
# do programs that link ovseg::ovseg (exported below). tests/cmake/check_torch_abi.py checks it.
string(REGEX MATCH "-D_GLIBCXX_USE_CXX11_ABI=([01])" _ovseg_abi "${TORCH_CXX_FLAGS}")
if(_ovseg_abi)
  set(OVSEG_GLIBCXX_USE_CXX11_ABI "${CMAKE_MATCH_1}")
  add_compile_definitions(_GLIBCXX_USE_CXX11_ABI=${OVSEG_GLIBCXX_USE_CXX11_ABI})
  message(STATUS "ovseg: _GLIBCXX_USE_CXX11_ABI=${OVSEG_GLIBCXX_USE_CXX11_ABI} (from torch) for every target")
  if(OVSEG_GLIBCXX_USE_CXX11_ABI STREQUAL "0")
    message(WARNING "This libtorch uses the pre-C++11 libstdc++ ABI (_GLIBCXX_USE_CXX11_ABI=0). ovseg is "
                    "compiled with it throughout, but C++ libraries built with the default ABI (the distribution's "
                    "OpenCV, spdlog, GoogleTest, Google Benchmark) will not link with it. Use the "
                    "\"cxx11 ABI\" libtorch from pytorch.org instead (README: Building with CUDA). SentencePiece "
                    "tokenizers are disabled in such a build (the system libsentencepiece uses the C++11 ABI).")
  endif()
endif()
# Installed binaries find libraries outside the system paths (a libtorch unpacked in /opt, a
# CUDA toolkit): the directories of everything they link go into their install RPATH.
set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)
find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs)
find_package(spdlog REQUIRED)
# Overlay text (tools/ovseg/overlay.cpp): TrueType through OpenCV's freetype module (Debian
# libopencv-contrib-dev) where it is installed, so that class names that are not ASCII are drawn;
# OpenCV's Hershey font in ASCII otherwise, and at run time when the font file is missing.
set(OVSEG_OVERLAY_FONT "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" CACHE FILEPATH
    "TrueType font of overlay text (Debian fonts-dejavu-core); the environment variable of the same name overrides it")
set(OVSEG_OVERLAY_CJK_FONT "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf" CACHE FILEPATH
    "TrueType font of CJK overlay text (Debian fonts-droid-fallback); the environment variable of the same name overrides it")
set(OVSEG_OVERLAY_DEFINITIONS OVSEG_OVERLAY_FONT="${OVSEG_OVERLAY_FONT}" OVSEG_OVERLAY_CJK_FONT="${OVSEG_OVERLAY_CJK_FONT}")
set(OVSEG_OVERLAY_LIBS "")
if(TARGET opencv_freetype)
  find_path(OVSEG_OPENCV_FREETYPE_INCLUDE opencv2/freetype.hpp HINTS ${OpenCV_INCLUDE_DIRS})
endif()
if(TARGET opencv_freetype AND OVSEG_OPENCV_FREETYPE_INCLUDE)
  list(APPEND OVSEG_OVERLAY_DEFINITIONS OVSEG_HAVE_FREETYPE=1)
  set(OVSEG_OVERLAY_LIBS opencv_freetype)
  message(STATUS "ovseg: overlays draw TrueType text (OpenCV freetype module; ${OVSEG_OVERLAY_FONT})")
else()
  message(STATUS "ovseg: no OpenCV freetype module (Debian libopencv-contrib-dev): overlays draw ASCII text")
endif()
find_package(nlohmann_json 3 REQUIRED)
find_package(ZLIB REQUIRED)
find_package(SentencePiece REQUIRED)
find_package(Utf8proc REQUIRED)
find_package(Threads REQUIRED)

