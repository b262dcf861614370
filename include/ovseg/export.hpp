// OVSEG_API marks what libovseg exports. The library is compiled with hidden visibility: only the
// declarations of the public headers (include/ovseg/) carry OVSEG_API; everything in src/
// (ovseg::detail) stays internal to the shared object.
#pragma once

#if defined(OVSEG_STATIC_DEFINE)
#define OVSEG_API
#elif defined(_WIN32)
#if defined(OVSEG_BUILDING_LIBRARY)
#define OVSEG_API __declspec(dllexport)
#else
#define OVSEG_API __declspec(dllimport)
#endif
#else
#define OVSEG_API __attribute__((visibility("default")))
#endif
