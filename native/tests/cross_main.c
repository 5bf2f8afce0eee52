/*
 * cross_main.c - the kernels on a target (host, Cortex-M0+, rv32imc), checked there.
 *
 * The inputs and the expected outputs are the golden vectors of the numpy reference
 * (tests/golden.py), in a generated header (vectors.h, see tests/test_native_cross.py): per
 * op a table of cases, `struct <op>_case` below.  Each case runs a kernel (in each of its
 * forms) into RAM buffers, compares every element with the reference, and prints
 * "op case form ok" or "op case form FAIL i got want".  The exit status is the number of
 * failures.  BVIT_SMALL (the micro:bit's 16 KiB of RAM) leaves out the LUT forms, the
 * expert and attention; the header then holds only the cases whose buffers fit.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

#include "bvit_kernels.h"

struct requant_case {
    int id;
    size_t n;
    const int32_t *acc;
    const int16_t *M;
    const uint8_t *shift;
    int bits;
    const int32_t *want;
};
struct relu_case {
    int id;
    size_t n;
    const int16_t *v, *want;
};
struct mix_case {
    int id;
    size_t k, f;
    const int16_t *h;
    const uint16_t *g;
    const int16_t *want;
};
struct ternary_matvec_case {
    int id;
    size_t rows, n;
    const uint8_t *packed;
    int bits;
    const void *x;
    const int8_t *trits;
    const int32_t *want;
};
struct ternary_linear_case {
    int id;
    size_t rows, n;
    const uint8_t *packed;
    const int16_t *x;
    const int32_t *bias;
    const int16_t *M;
    const uint8_t *shift;
    int per_row, bits;
    const int16_t *want;
};
struct ternary_rows_case {
    int id;
    size_t rows, n, p0;
    const uint8_t *packed;
    const int16_t *x;
    const int32_t *want;
};
struct sincos_case {
    int id;
    size_t n;
    const uint16_t *phases;
    const int16_t *cos, *sin;
};
struct butterfly_case {
    int id;
    size_t n_pad;
    unsigned n_stages;
    const int16_t *v, *cos, *sin;
    const uint16_t *phases;
    const uint8_t *raw;
    const int16_t *want;
};
struct expert_case {
    int id;
    size_t dim, ffn, n_pad_in, n_pad_out;
    unsigned n_stages, P;
    const uint16_t *ph_in, *ph_out;
    const uint8_t *packed;
    const int16_t *M;
    const uint8_t *shift;
    const int8_t *x;
    const int16_t *want;
};
struct matvec8_case {
    int id;
    size_t rows, n;
    const int8_t *x, *w;
    const int32_t *want;
};
struct linear_case {
    int id;
    size_t rows, n;
    const int8_t *x, *w;
    const int32_t *bias;
    const int16_t *M;
    const uint8_t *shift;
    int bits;
    const int16_t *want;
};
struct layernorm_case {
    int id;
    size_t rows, d;
    int bits;
    const void *x;
    const int32_t *G, *B;
    int32_t shift;
    int64_t E;
    const int8_t *want;
};
struct softmax_case {
    int id;
    size_t rows, n;
    const int32_t *L;
    int32_t M, shift;
    const uint16_t *want;
};
struct residual_add_case {
    int id;
    size_t n;
    int bits;
    const void *a, *b;
    int32_t Ma, Mb, shift;
    const int16_t *want;
};
struct topk_case {
    int id;
    size_t rows, n, k;
    const int32_t *L;
    const uint16_t *want;
};
struct attention_case {
    int id;
    size_t n, dim, heads;
    int16_t sM;
    uint8_t ss;
    int16_t oM;
    uint8_t os;
    const int8_t *qkv, *want;
};
struct mean_pool_case {
    int id;
    size_t n, d;
    int32_t M, shift;
    int bits;
    const int16_t *x, *want;
};

#include "vectors.h"

static int fails;

/* RAM buffers, shared by the cases (sizes from vectors.h: the largest case) */
static int32_t acc[MAX_ACC];
static int8_t out8[MAX_OUT8];
static int16_t out16[MAX_OUT16];
static uint16_t outu[MAX_OUTU];
#ifndef BVIT_SMALL
static int32_t tables[BVIT_LUT_ENTRIES];
static int32_t rot_in[MAX_ROT_IN], rot_out[MAX_ROT_OUT];
static int32_t work_in[MAX_WORK_IN], work_out[MAX_WORK_OUT];
#endif

static int32_t get(const void *p, size_t i, int type)
{
    switch (type) {
        case 'b':
            return ((const int8_t *)p)[i];
        case 'h':
            return ((const int16_t *)p)[i];
        case 'H':
            return ((const uint16_t *)p)[i];
        default:
            return ((const int32_t *)p)[i];
    }
}

/* Compares n elements from element `at` of got with want[at..]; quiet on success. */
static int same(const char *op, int id, const char *form, const void *got, const void *want,
                size_t at, size_t n, int type)
{
    size_t i;
    for (i = at; i < at + n; i++) {
        int32_t g = get(got, i - at, type), w = get(want, i, type);
        if (g != w) {
            printf("%s %d %s FAIL %u %" PRId32 " %" PRId32 "\n", op, id, form, (unsigned)i, g, w);
            fails++;
            return 0;
        }
    }
    return 1;
}

static void ok(const char *op, int id, const char *form)
{
    if (form[0]) {
        printf("%s %d %s ok\n", op, id, form);
    } else {
        printf("%s %d ok\n", op, id);
    }
}

static void check(const char *op, int id, const char *form, const void *got, const void *want,
                  size_t n, int type)
{
    if (same(op, id, form, got, want, 0, n, type)) {
        ok(op, id, form);
    }
}

static void copy16(int16_t *dst, const int16_t *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        dst[i] = src[i];
    }
}

/* ---------------------------------------------------------------- §1-2, §10, mixture */

/* int8 results widened in place to int16 (from the end: no value is overwritten unread) */
static void widen8(int16_t *v, size_t n)
{
    while (n-- > 0) {
        v[n] = ((const int8_t *)v)[n];
    }
}

static void run_requant(void)
{
    size_t c, i;
    for (c = 0; c < REQUANT_CASES; c++) {
        const struct requant_case *k = &requant_cases[c];
        int32_t lo = k->bits == 8 ? -128 : -32768, hi = k->bits == 8 ? 127 : 32767;
        for (i = 0; i < k->n; i++) {
            acc[0] = bvit_mul_shift_sat(k->acc[i], k->M[i], k->shift[i], lo, hi);
            if (!same("requant", k->id, "", acc, k->want, i, 1, 'i')) {
                break;
            }
        }
        if (i == k->n) {
            ok("requant", k->id, "");
        }
    }
}

static void run_relu(void)
{
    size_t c;
    for (c = 0; c < RELU_CASES; c++) {
        const struct relu_case *k = &relu_cases[c];
        copy16(out16, k->v, k->n);
        bvit_relu_i16(out16, k->n);
        check("relu", k->id, "", out16, k->want, k->n, 'h');
    }
}

static void run_mix(void)
{
    size_t c;
    for (c = 0; c < MIX_CASES; c++) {
        const struct mix_case *k = &mix_cases[c];
        bvit_mix(k->h, k->k, k->f, k->g, out16);
        check("mix", k->id, "", out16, k->want, k->f, 'h');
    }
}

/* ---------------------------------------------------------------- §4-5 */

static void run_ternary_matvec(void)
{
    size_t c;
    for (c = 0; c < TERNARY_MATVEC_CASES; c++) {
        const struct ternary_matvec_case *k = &ternary_matvec_cases[c];
        if (k->bits == 8) {
            bvit_ternary_matvec_i8(k->packed, k->rows, k->n, (const int8_t *)k->x, acc);
        } else {
            bvit_ternary_matvec_i16(k->packed, k->rows, k->n, (const int16_t *)k->x, acc);
        }
        check("ternary_matvec", k->id, "plain", acc, k->want, k->rows, 'i');
#ifndef BVIT_SMALL
        if (k->bits == 8) {
            bvit_ternary_matvec_lut_i8(k->packed, k->rows, k->n, (const int8_t *)k->x, acc,
                                       tables);
        } else {
            bvit_ternary_matvec_lut_i16(k->packed, k->rows, k->n, (const int16_t *)k->x, acc,
                                        tables);
        }
        check("ternary_matvec", k->id, "lut", acc, k->want, k->rows, 'i');
#endif
        if (bvit_unpack_trits(k->packed, k->rows, k->n, out8) != -1) {
            printf("ternary_matvec %d unpack FAIL refused\n", k->id);
            fails++;
        } else {
            check("ternary_matvec", k->id, "unpack", out8, k->trits, k->rows * k->n, 'b');
        }
    }
    /* a valid matrix, and the first invalid byte of a corrupted copy (8 rows x 13 trits) */
    printf("check_trits %ld %ld\n", bvit_check_trits(good_packed, 8, 13),
           bvit_check_trits(bad_packed, 8, 13));
}

static void run_ternary_linear(void)
{
    size_t c;
    for (c = 0; c < TERNARY_LINEAR_CASES; c++) {
        const struct ternary_linear_case *k = &ternary_linear_cases[c];
        bvit_ternary_linear(k->packed, k->rows, k->n, k->x, 16, k->bias, k->M, k->shift,
                            k->per_row, out16, k->bits, NULL, NULL);
        if (k->bits == 8) {
            widen8(out16, k->rows);
        }
        check("ternary_linear", k->id, "plain", out16, k->want, k->rows, 'h');
#ifndef BVIT_SMALL
        bvit_ternary_linear(k->packed, k->rows, k->n, k->x, 16, k->bias, k->M, k->shift,
                            k->per_row, out16, k->bits, tables, acc);
        if (k->bits == 8) {
            widen8(out16, k->rows);
        }
        check("ternary_linear", k->id, "lut", out16, k->want, k->rows, 'h');
#endif
    }
}

static void run_ternary_rows(void)
{
    size_t c;
    for (c = 0; c < TERNARY_ROWS_CASES; c++) {
        const struct ternary_rows_case *k = &ternary_rows_cases[c];
        bvit_ternary_matvec_i16(k->packed + k->p0, k->rows, k->n, k->x, acc);
        check("ternary_rows", k->id, "plain", acc, k->want, k->rows, 'i');
#ifndef BVIT_SMALL
        bvit_ternary_matvec_lut_i16(k->packed + k->p0, k->rows, k->n, k->x, acc, tables);
        check("ternary_rows", k->id, "lut", acc, k->want, k->rows, 'i');
#endif
    }
}

/* ---------------------------------------------------------------- §6, §15 */

static void run_sincos(void)
{
    size_t c, i;
    for (c = 0; c < SINCOS_CASES; c++) {
        const struct sincos_case *k = &sincos_cases[c];
        for (i = 0; i < k->n; i++) {
            int16_t co, si;
            bvit_sincos_q14(k->phases[i], &co, &si);
            if (co != k->cos[i] || si != k->sin[i]) {
                printf("sincos %d FAIL %u %d %d\n", k->id, (unsigned)i, co, si);
                fails++;
                break;
            }
        }
        if (i == k->n) {
            ok("sincos", k->id, "");
        }
    }
}

static void run_butterfly(void)
{
    size_t c;
    for (c = 0; c < BUTTERFLY_CASES; c++) {
        const struct butterfly_case *k = &butterfly_cases[c];
        copy16(out16, k->v, k->n_pad);
        bvit_butterfly(out16, k->n_pad, k->n_stages, k->cos, k->sin);
        check("butterfly", k->id, "tables", out16, k->want, k->n_pad, 'h');
        copy16(out16, k->v, k->n_pad);
        bvit_butterfly_phase(out16, k->n_pad, k->n_stages, k->phases);
        check("butterfly", k->id, "phase", out16, k->want, k->n_pad, 'h');
        copy16(out16, k->v, k->n_pad);
        bvit_butterfly_phase_raw(out16, k->n_pad, k->n_stages, k->raw + 1);   /* odd address */
        check("butterfly", k->id, "raw", out16, k->want, k->n_pad, 'h');
    }
}

static void run_expert(void)
{
#ifndef BVIT_SMALL
    size_t c;
    for (c = 0; c < EXPERT_CASES; c++) {
        const struct expert_case *k = &expert_cases[c];
        bvit_expert_t e;
        bvit_rot_expand(k->ph_in, k->n_stages * k->n_pad_in / 2, rot_in);
        bvit_rot_expand(k->ph_out, k->n_stages * k->n_pad_out / 2, rot_out);
        e.dim = k->dim;
        e.ffn = k->ffn;
        e.n_pad_in = k->n_pad_in;
        e.n_pad_out = k->n_pad_out;
        e.n_stages = k->n_stages;
        e.P = k->P;
        e.phi_rot = rot_in;
        e.theta_rot = rot_out;
        e.packed = k->packed;
        e.M = k->M;
        e.shift = k->shift;
        e.per_row = 1;
        bvit_expert_forward(&e, k->x, out16, work_in, work_out, tables);
        check("expert", k->id, "", out16, k->want, k->ffn, 'h');
    }
#endif
}

/* ---------------------------------------------------------------- §7-9, §11-13 */

static void run_matvec8(void)
{
    size_t c;
    for (c = 0; c < MATVEC8_CASES; c++) {
        const struct matvec8_case *k = &matvec8_cases[c];
        bvit_linear_acc(k->x, k->n, k->w, k->rows, NULL, acc);
        check("matvec8", k->id, "", acc, k->want, k->rows, 'i');
    }
}

static void run_linear(void)
{
    size_t c;
    for (c = 0; c < LINEAR_CASES; c++) {
        const struct linear_case *k = &linear_cases[c];
        bvit_linear(k->x, k->n, k->w, k->rows, k->bias, k->M, k->shift, 1, out16, k->bits);
        if (k->bits == 8) {
            widen8(out16, k->rows);
        }
        check("linear", k->id, "", out16, k->want, k->rows, 'h');
    }
}

static void run_layernorm(void)
{
    size_t c, t;
    for (c = 0; c < LAYERNORM_CASES; c++) {
        const struct layernorm_case *k = &layernorm_cases[c];
        size_t esz = k->bits == 8 ? 1 : 2;
        for (t = 0; t < k->rows; t++) {
            bvit_layernorm((const char *)k->x + t * k->d * esz, k->bits, k->d, k->G, k->B,
                           k->shift, k->E, out8);
            if (!same("layernorm", k->id, "", out8, k->want, t * k->d, k->d, 'b')) {
                break;
            }
        }
        if (t == k->rows) {
            ok("layernorm", k->id, "");
        }
    }
}

static void run_softmax(void)
{
    size_t c, r;
    for (c = 0; c < SOFTMAX_CASES; c++) {
        const struct softmax_case *k = &softmax_cases[c];
        for (r = 0; r < k->rows; r++) {
            bvit_softmax(k->L + r * k->n, k->n, k->M, k->shift, outu);
            if (!same("softmax", k->id, "", outu, k->want, r * k->n, k->n, 'H')) {
                break;
            }
        }
        if (r == k->rows) {
            ok("softmax", k->id, "");
        }
    }
}

static void run_residual_add(void)
{
    size_t c;
    for (c = 0; c < RESIDUAL_ADD_CASES; c++) {
        const struct residual_add_case *k = &residual_add_cases[c];
        bvit_residual_add(k->a, k->b, k->bits, k->n, k->Ma, k->Mb, k->shift, out16, k->bits);
        if (k->bits == 8) {
            widen8(out16, k->n);
        }
        check("residual_add", k->id, "", out16, k->want, k->n, 'h');
    }
}

static void run_topk(void)
{
    size_t c, r;
    for (c = 0; c < TOPK_CASES; c++) {
        const struct topk_case *k = &topk_cases[c];
        for (r = 0; r < k->rows; r++) {
            bvit_topk(k->L + r * k->n, k->n, k->k, outu);
            if (!same("topk", k->id, "", outu, k->want, r * k->k, k->k, 'H')) {
                break;
            }
        }
        if (r == k->rows) {
            ok("topk", k->id, "");
        }
    }
}

static void run_attention(void)
{
#ifndef BVIT_SMALL
    size_t c;
    for (c = 0; c < ATTENTION_CASES; c++) {
        const struct attention_case *k = &attention_cases[c];
        bvit_attention(k->qkv, k->n, k->dim, k->heads, &k->sM, &k->ss, &k->oM, &k->os, 0, out8,
                       acc, outu);
        check("attention", k->id, "", out8, k->want, k->n * k->dim, 'b');
    }
#endif
}

static void run_mean_pool(void)
{
    size_t c;
    for (c = 0; c < MEAN_POOL_CASES; c++) {
        const struct mean_pool_case *k = &mean_pool_cases[c];
        bvit_mean_pool(k->x, 16, k->n, k->d, k->M, k->shift, out16, k->bits);
        if (k->bits == 8) {
            widen8(out16, k->d);
        }
        check("mean_pool", k->id, "", out16, k->want, k->d, 'h');
    }
}

int main(void)
{
    run_requant();
    run_relu();
    run_mix();
    run_ternary_matvec();
    run_ternary_linear();
    run_ternary_rows();
    run_sincos();
    run_butterfly();
    run_expert();
    run_matvec8();
    run_linear();
    run_layernorm();
    run_softmax();
    run_residual_add();
    run_topk();
    run_attention();
    run_mean_pool();
    printf("failures %d\n", fails);
    return fails;
}
