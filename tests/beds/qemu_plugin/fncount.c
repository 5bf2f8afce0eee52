/*
 * fncount.c -- a QEMU TCG plugin that counts, exactly, the guest instructions
 * executed by each call of one or more functions, callees included.
 *
 *   qemu-system-arm ... -plugin ./libfncount.so,fn=0x1234,fn=0x5678,out=counts.txt
 *
 * Arguments (key=value; fn= may repeat, up to 32 functions):
 *   fn=ADDR   entry address of a function (0x-hex or decimal); for Thumb
 *             code the even address (symbol value with bit 0 clear)
 *   out=PATH  where to write results (default: QEMU's log, -D / stderr)
 *
 * Guests: 32-bit Arm in Thumb state (M-profile; calls: bl, blx; returns:
 * bx lr, pop {..., pc}, mov pc, lr), riscv32 and riscv64 (calls: jal, jalr,
 * c.jal, c.jalr writing ra or t0; returns: jalr x0 / c.jr through ra or t0).
 *
 * Method ("entry to return", with a shadow call stack).  Every executed
 * instruction runs a callback that knows its address, its size and whether
 * it is a call or a return (decoded once, at translation).  A call pushes
 * its return address (address + size) on a shadow stack.  Reaching the
 * address on top of the stack pops it; after a return instruction whose
 * target is not on top, frames are popped down to the matching one (frames
 * left by `bl` used as a far jump in big Thumb-1 functions), or the top
 * frame alone when none matches (returns to a computed address, like
 * libgcc's __gnu_thumb1_case_* switch helpers).
 *
 * When the vCPU reaches a tracked function's entry while that function is
 * not already running, the function's call is the frame then on top of the
 * stack: the frame its caller's call instruction pushed -- or, if it was
 * reached by a tail jump, the frame of the function that jumped, whose
 * caller it will return to.  The call ends when that frame is popped.  The
 * count runs from the function's first instruction (inclusive) to the first
 * instruction back in the caller (exclusive): it includes the function's
 * own return instruction and everything the function calls or tail-jumps
 * to, and excludes the caller's call instruction.  A recursive entry while
 * the function is running belongs to the outer call.
 *
 * Output lines, written as they happen (and flushed, so they survive any
 * way QEMU exits):
 *   call ADDR COUNT      one line per completed call, in order of completion
 * and when QEMU exits normally:
 *   open ADDR COUNT      a call still running at exit (it never returned)
 *   total COUNT          instructions executed by the whole run
 *
 * The plugin needs one vCPU and no interrupts inside the counted code (the
 * test-bed programs run with interrupts off); setjmp/longjmp out of a
 * counted function is not supported.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_FNS 32

enum guest { GUEST_THUMB, GUEST_RV32, GUEST_RV64 };

struct tracked {
    uint64_t entry;  /* the function's first instruction */
    uint64_t start;  /* value of `executed` when the current call began */
    size_t depth;    /* the call ends when the shadow stack drops below this */
    int active;
};

static enum guest guest;
static struct tracked fns[MAX_FNS];
static int n_fns;
static uint64_t executed; /* instructions executed so far */
static uint64_t *stack;   /* shadow call stack of return addresses */
static size_t depth, stack_cap;
static FILE *out;

static void emit(const char *line)
{
    if (out) {
        fputs(line, out);
        fflush(out);
    } else {
        qemu_plugin_outs(line);
    }
}

static void push(uint64_t ret)
{
    if (depth == stack_cap) {
        size_t cap = stack_cap ? 2 * stack_cap : 1024;
        uint64_t *s = realloc(stack, cap * sizeof *s);
        if (!s) {
            fprintf(stderr, "fncount: out of memory\n");
            abort();
        }
        stack = s;
        stack_cap = cap;
    }
    stack[depth++] = ret;
}

/* Pop the shadow stack down to `new_depth`; calls whose frame goes end. */
static void pop_to(size_t new_depth)
{
    int i;
    depth = new_depth;
    for (i = 0; i < n_fns; i++) {
        if (fns[i].active && depth < fns[i].depth) {
            char line[96];
            snprintf(line, sizeof line, "call 0x%" PRIx64 " %" PRIu64 "\n", fns[i].entry,
                     executed - fns[i].start);
            emit(line);
            fns[i].active = 0;
        }
    }
}

#define INSN_CALL 1u
#define INSN_RETURN 2u

/* userdata packs the instruction: (pc << 8) | (size << 2) | INSN_* flags */
static void on_insn(unsigned int vcpu_index, void *udata)
{
    static int after_return; /* the previous instruction was a return */
    uint64_t packed = (uint64_t)(uintptr_t)udata;
    uint64_t pc = packed >> 8;
    int i;
    (void)vcpu_index;

    if (depth > 0) {
        if (pc == stack[depth - 1]) {
            pop_to(depth - 1);
        } else if (after_return) {
            size_t k = depth;
            while (k > 0 && stack[k - 1] != pc) {
                k--;
            }
            pop_to(k > 0 ? k - 1 : depth - 1);
        }
    }
    for (i = 0; i < n_fns; i++) {
        if (!fns[i].active && pc == fns[i].entry) {
            fns[i].active = 1;
            fns[i].start = executed;
            fns[i].depth = depth;
        }
    }
    if (packed & INSN_CALL) {
        push(pc + ((packed >> 2) & 0x3f));
    }
    after_return = (packed & INSN_RETURN) != 0;
    executed++;
}

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

/* Classify an instruction: INSN_CALL (jumps and writes the link
 * register), INSN_RETURN (jumps through the link register), or 0. */
static unsigned classify(const uint8_t *b, size_t size)
{
    if (guest == GUEST_THUMB) {
        uint32_t hw = le16(b);
        if (size == 2) {
            if ((hw & 0xff87u) == 0x4780u) {
                return INSN_CALL; /* blx Rm */
            }
            if (hw == 0x4770u || (hw & 0xff00u) == 0xbd00u || hw == 0x46f7u) {
                return INSN_RETURN; /* bx lr, pop {..., pc}, mov pc, lr */
            }
            return 0;
        }
        if (size == 4 && (hw & 0xf800u) == 0xf000u && (le16(b + 2) & 0xd000u) == 0xd000u) {
            return INSN_CALL; /* bl <label> */
        }
        return 0;
    }
    if (size == 2) {
        uint32_t hw = le16(b);
        uint32_t rs1 = (hw >> 7) & 0x1fu;
        if (guest == GUEST_RV32 && (hw & 0xe003u) == 0x2001u) {
            return INSN_CALL; /* c.jal (RV32C only; RV64 uses the encoding for c.addiw) */
        }
        if ((hw & 0xf07fu) == 0x9002u && rs1 != 0) {
            return INSN_CALL; /* c.jalr rs1 (rs1 = 0 is c.ebreak) */
        }
        if ((hw & 0xf07fu) == 0x8002u && (rs1 == 1 || rs1 == 5)) {
            return INSN_RETURN; /* c.jr ra | t0 */
        }
        return 0;
    }
    if (size == 4) {
        uint32_t w = le16(b) | le16(b + 2) << 16;
        uint32_t opcode = w & 0x7fu, rd = (w >> 7) & 0x1fu, rs1 = (w >> 15) & 0x1fu;
        if ((opcode == 0x6fu || opcode == 0x67u) && (rd == 1 || rd == 5)) {
            return INSN_CALL; /* jal / jalr writing ra | t0 */
        }
        if (opcode == 0x67u && rd == 0 && (rs1 == 1 || rs1 == 5)) {
            return INSN_RETURN; /* jalr x0, ra | t0 */
        }
    }
    return 0;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;

    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        size_t size = qemu_plugin_insn_size(insn);
        uint64_t kind = classify(qemu_plugin_insn_data(insn), size);
        uintptr_t packed = (uintptr_t)((pc << 8) | ((uint64_t)(size & 0x3f) << 2) | kind);
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, QEMU_PLUGIN_CB_NO_REGS,
                                               (void *)packed);
    }
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    char line[96];
    int i;
    (void)id;
    (void)udata;

    for (i = 0; i < n_fns; i++) {
        if (fns[i].active) {
            snprintf(line, sizeof line, "open 0x%" PRIx64 " %" PRIu64 "\n", fns[i].entry,
                     executed - fns[i].start);
            emit(line);
        }
    }
    snprintf(line, sizeof line, "total %" PRIu64 "\n", executed);
    emit(line);
    if (out) {
        fclose(out);
        out = NULL;
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    int i;

    if (sizeof(uintptr_t) < 8) {
        fprintf(stderr, "fncount: needs a 64-bit host\n");
        return -1;
    }
    if (strcmp(info->target_name, "arm") == 0) {
        guest = GUEST_THUMB;
    } else if (strcmp(info->target_name, "riscv32") == 0) {
        guest = GUEST_RV32;
    } else if (strcmp(info->target_name, "riscv64") == 0) {
        guest = GUEST_RV64;
    } else {
        fprintf(stderr, "fncount: unsupported guest '%s'\n", info->target_name);
        return -1;
    }
    if (!info->system_emulation || info->system.smp_vcpus != 1) {
        fprintf(stderr, "fncount: needs system emulation with exactly one vCPU\n");
        return -1;
    }
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "fn=", 3) == 0) {
            char *end;
            unsigned long long v = strtoull(a + 3, &end, 0);
            if (*end != '\0' || a[3] == '\0' || v >= (1ULL << 56)) {
                fprintf(stderr, "fncount: bad address in '%s'\n", a);
                return -1;
            }
            if (n_fns == MAX_FNS) {
                fprintf(stderr, "fncount: at most %d functions\n", MAX_FNS);
                return -1;
            }
            fns[n_fns++].entry = v;
        } else if (strncmp(a, "out=", 4) == 0) {
            out = fopen(a + 4, "w");
            if (!out) {
                fprintf(stderr, "fncount: cannot open '%s'\n", a + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "fncount: unknown argument '%s'\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
