# bvitnative: butterflyvit's kernels as a MicroPython user C module (make-based ports:
# unix, qemu, stm32, ...).  scripts/build_firmware.py builds it; by hand:
#     make USER_C_MODULES=/path/to/butterflyvit
# USER_C_MODULES is the folder *above* this one: every release up to and including v1.28.0
# includes only $(USER_C_MODULES)/*/micropython.mk, so pointing it at native/ itself builds a
# firmware without the module and no error (only MicroPython after v1.28.0 also accepts the
# module's own folder).  The repository root works because native/ is its only folder with a
# micropython.mk.  CMake ports (rp2, esp32) take micropython.cmake instead.
BVITNATIVE_DIR := $(USERMOD_DIR)

# the binding: scanned for qstrs
SRC_USERMOD_C += $(BVITNATIVE_DIR)/bvitnative.c

# the plain C99 kernels (no MicroPython dependency)
SRC_USERMOD_LIB_C += $(addprefix $(BVITNATIVE_DIR)/kernels/,\
	attn.c bvit_api.c bvit_tables.c butterfly.c elementwise.c expert.c linear.c lut.c \
	layers.c norm.c requant.c softmax.c ternary.c trits.c)

CFLAGS_USERMOD += -I$(BVITNATIVE_DIR)

# -O2 for the kernels, as micropython.cmake gives them on rp2 and esp32 (the instruction
# counts of benchmarks/results/ are for -O2; make-based ports build -Os): target-specific
# flags of the kernels' objects, after the port's own, so the last -O wins.
$(addprefix $(BUILD)/,$(patsubst $(USER_C_MODULES)/%.c,%.o,\
	$(filter $(BVITNATIVE_DIR)/kernels/%,$(SRC_USERMOD_LIB_C)))): CFLAGS += -O2
