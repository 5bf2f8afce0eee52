# bvitnative: butterflyvit's kernels as a MicroPython user C module (make-based ports:
# unix, esp8266, stm32, ...).  Build with
#     make USER_C_MODULES=/path/to/butterflyvit/native
# (MicroPython releases before 1.25 look one level down: pass the repository root instead).
BVITNATIVE_DIR := $(USERMOD_DIR)

# the binding: scanned for qstrs
SRC_USERMOD_C += $(BVITNATIVE_DIR)/bvitnative.c

# the plain C99 kernels (no MicroPython dependency)
SRC_USERMOD_LIB_C += $(addprefix $(BVITNATIVE_DIR)/kernels/,\
	bvit_api.c bvit_tables.c butterfly.c elementwise.c expert.c linear.c lut.c \
	norm.c requant.c softmax.c stream.c ternary.c trits.c)

CFLAGS_USERMOD += -I$(BVITNATIVE_DIR)
