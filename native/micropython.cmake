# bvitnative: butterflyvit's kernels as a MicroPython user C module (CMake-based ports:
# rp2, esp32).  scripts/build_firmware.py builds it; by hand:
#     make USER_C_MODULES=/path/to/butterflyvit/native/micropython.cmake
# (the file itself, not its folder), or include() this file from your own top-level
# user-modules .cmake file (that is how to add a camera driver's module beside it).
add_library(usermod_bvitnative INTERFACE)

set(BVITNATIVE_KERNELS
    ${CMAKE_CURRENT_LIST_DIR}/kernels/attn.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/bvit_api.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/bvit_tables.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/butterfly.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/elementwise.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/expert.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/linear.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/lut.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/layers.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/norm.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/requant.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/softmax.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/ternary.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/trits.c
)

target_sources(usermod_bvitnative INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/bvitnative.c
    ${BVITNATIVE_KERNELS}
)

target_include_directories(usermod_bvitnative INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

# The kernels' instruction counts (benchmarks/results/native.md) are for -O2; rp2 builds
# MinSizeRel (-Os) by default.  Only these files get -O2.
set_source_files_properties(${BVITNATIVE_KERNELS} PROPERTIES COMPILE_OPTIONS "-O2")

target_link_libraries(usermod INTERFACE usermod_bvitnative)
