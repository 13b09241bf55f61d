# Finds the dependencies (all Debian packages, header-only) and names the package
# to install when one is missing. Defines the INTERFACE target flamingo_deps.
include_guard(GLOBAL)

function(_flamingo_missing what package)
  message(FATAL_ERROR "flamingo: ${what} not found. On Debian/Ubuntu: apt-get install ${package}")
endfunction()

find_package(Threads REQUIRED)

# xsimd by header: Debian's xsimd CMake target drags in an xtl link we do not need.
find_path(FLAMINGO_XSIMD_INCLUDE_DIR xsimd/xsimd.hpp)
if(NOT FLAMINGO_XSIMD_INCLUDE_DIR)
  _flamingo_missing("xsimd" libxsimd-dev)
endif()
file(STRINGS ${FLAMINGO_XSIMD_INCLUDE_DIR}/xsimd/config/xsimd_config.hpp _xsimd_major REGEX "define XSIMD_VERSION_MAJOR")
if(NOT _xsimd_major MATCHES " 8$")
  message(WARNING "flamingo: written for xsimd 8.x; found: ${_xsimd_major}")
endif()

find_package(nlohmann_json 3 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  _flamingo_missing("nlohmann-json" nlohmann-json3-dev)
endif()

if(NOT _FLAMINGO_FROM_PACKAGE)
  # Only for building the library: stb_image is compiled into it, and no public header includes it.
  find_path(FLAMINGO_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb)  # included as <stb_image.h>
  if(NOT FLAMINGO_STB_INCLUDE_DIR)
    _flamingo_missing("stb_image.h" libstb-dev)
  endif()
endif()

if(NOT _FLAMINGO_FROM_PACKAGE AND NOT TARGET flamingo_deps)
  add_library(flamingo_deps INTERFACE)
  target_link_libraries(flamingo_deps INTERFACE nlohmann_json::nlohmann_json Threads::Threads)
  target_include_directories(flamingo_deps INTERFACE ${FLAMINGO_XSIMD_INCLUDE_DIR})
endif()
