/*
 * cross_main.c - the kernels on a target (host, Cortex-M0+, rv32imc), checked there.
 *
 * The inputs and the expected outputs come from the numpy reference through a generated
 * header (vectors.h, see tests/test_native_cross.py).  Each case runs a kernel into RAM
 * buffers, compares every element with the reference, and prints "name ok" or
 * "name FAIL i got want".  The exit status is the number of failing cases.
 * BVIT_SMALL leaves out the cases whose scratch does not fit a 16 KiB RAM (the LUT
 * tables, the expert), for the micro:bit's real ARMv6-M core.
 */
#include <inttypes.h>
#include <stdio.h>

#include "bvit_kernels.h"
#include "vectors.h"

static int fails;

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

static void check(const char *name, const void *got, const void *want, size_t n, int type)
{
    size_t i;
    for (i = 0; i < n; i++) {
        int32_t g = get(got, i, type), w = get(want, i, type);
        if (g != w) {
            printf("%s FAIL %u %" PRId32 " %" PRId32 "\n", name, (unsigned)i, g, w);
            fails++;
            return;
        }
    }
    printf("%s ok\n", name);
}

/* RAM buffers, shared by the cases */
static int32_t acc[256];
static int8_t out8[64 * 64];
static int16_t out16[256];
static uint16_t outu[64];
#ifndef BVIT_SMALL
static int32_t tables[BVIT_LUT_ENTRIES];
static int32_t work_in[64], work_out[256];
static int32_t rot_in[4 * 64], rot_out[4 * 256];
static int32_t scores[49];
static uint16_t probs[49];
static int8_t att_out[49 * 64];
#endif

static void ternary_case(const char *name, const uint8_t *packed, size_t n, const int8_t *x8,
                         const int16_t *x16, const int32_t *w8, const int32_t *w16)
{
    char buf[40];
    bvit_ternary_matvec_i8(packed, TM_ROWS, n, x8, acc);
    snprintf(buf, sizeof buf, "%s_plain_i8", name);
    check(buf, acc, w8, TM_ROWS, 'i');
    bvit_ternary_matvec_i16(packed, TM_ROWS, n, x16, acc);
    snprintf(buf, sizeof buf, "%s_plain_i16", name);
    check(buf, acc, w16, TM_ROWS, 'i');
#ifndef BVIT_SMALL
    bvit_ternary_matvec_lut_i8(packed, TM_ROWS, n, x8, acc, tables);
    snprintf(buf, sizeof buf, "%s_lut_i8", name);
    check(buf, acc, w8, TM_ROWS, 'i');
    bvit_ternary_matvec_lut_i16(packed, TM_ROWS, n, x16, acc, tables);
    snprintf(buf, sizeof buf, "%s_lut_i16", name);
    check(buf, acc, w16, TM_ROWS, 'i');
#endif
}

int main(void)
{
    size_t i;

    /* §4 trits */
    if (bvit_unpack_trits(up_packed, UP_ROWS, UP_N, out8) != -1) {
        fails++;
    }
    check("unpack", out8, up_want, UP_ROWS * UP_N, 'b');
    printf("check_trits %ld %ld\n", bvit_check_trits(up_packed, UP_ROWS, UP_N),
           bvit_check_trits(up_bad, UP_ROWS, UP_N));

    /* §5 ternary */
    ternary_case("tm13", tm13_packed, 13, tm13_x8, tm13_x16, tm13_w8, tm13_w16);
    ternary_case("tm64", tm64_packed, 64, tm64_x8, tm64_x16, tm64_w8, tm64_w16);
    ternary_case("tm66", tm66_packed, 66, tm66_x8, tm66_x16, tm66_w8, tm66_w16);
    bvit_ternary_linear(tl_packed, TL_ROWS, TL_N, tl_x, 16, tl_bias, tl_m, tl_s, 1, out16, 16,
                        NULL, NULL);
    check("ternary_linear_plain", out16, tl_want, TL_ROWS, 'h');
#ifndef BVIT_SMALL
    bvit_ternary_linear(tl_packed, TL_ROWS, TL_N, tl_x, 16, tl_bias, tl_m, tl_s, 1, out16, 16,
                        tables, acc);
    check("ternary_linear_lut", out16, tl_want, TL_ROWS, 'h');
#endif

    /* trit streams (docs/integer-model.md) */
    bvit_ternary_stream_i16(st_packed, 3, 9, 64, st_x, acc);
    check("ternary_stream", acc, st_want, 9, 'i');
    bvit_stream_to_rows(st_packed, 3, 9, 64, (uint8_t *)out8);
    check("stream_to_rows", out8, st_rows, 9 * 13, 'b');

    /* §1-2 requantisation */
    for (i = 0; i < RQ_ACC_LEN; i++) {
        acc[i % 256] = bvit_mul_shift_sat(rq_acc[i], rq_m[i], rq_s[i], -128, 127) - rq_w8[i];
        acc[i % 256] |= bvit_mul_shift_sat(rq_acc[i], rq_m[i], rq_s[i], -32768, 32767) - rq_w16[i];
        if (acc[i % 256]) {
            printf("requant FAIL %u\n", (unsigned)i);
            fails++;
            break;
        }
    }
    if (i == RQ_ACC_LEN) {
        printf("requant ok\n");
    }

    /* §6 sincos and the butterfly */
    for (i = 0; i < SC_PH_LEN; i++) {
        int16_t c, s;
        bvit_sincos_q14(sc_ph[i], &c, &s);
        if (c != sc_cos[i] || s != sc_sin[i]) {
            printf("sincos FAIL %u\n", (unsigned)i);
            fails++;
            break;
        }
    }
    if (i == SC_PH_LEN) {
        printf("sincos ok\n");
    }
    for (i = 0; i < 256; i++) {
        out16[i] = bf_x[i];
    }
    bvit_butterfly(out16, 256, 4, bf_cos, bf_sin);
    check("butterfly", out16, bf_want, 256, 'h');
    for (i = 0; i < 256; i++) {
        out16[i] = bf_x[i];
    }
    bvit_butterfly_phase(out16, 256, 4, bf_ph);
    check("butterfly_phase", out16, bf_want, 256, 'h');
    for (i = 0; i < 256; i++) {
        out16[i] = bf_x[i];
    }
    bvit_butterfly_phase_raw(out16, 256, 4, bf_raw + 1);
    check("butterfly_phase_raw", out16, bf_want, 256, 'h');

#ifndef BVIT_SMALL
    /* §15 one expert, the shipped shape */
    {
        bvit_expert_t e;
        bvit_rot_expand(ex_phin, 4 * 32, rot_in);
        bvit_rot_expand(ex_phout, 4 * 128, rot_out);
        e.dim = 64;
        e.ffn = 256;
        e.n_pad_in = 64;
        e.n_pad_out = 256;
        e.n_stages = 4;
        e.P = 5;
        e.phi_rot = rot_in;
        e.theta_rot = rot_out;
        e.packed = ex_packed;
        e.M = ex_m;
        e.shift = ex_s;
        e.per_row = 1;
        bvit_expert_forward(&e, ex_x, out16, work_in, work_out, tables);
        check("expert", out16, ex_want, 256, 'h');
    }
#endif

    /* §7 linear */
    bvit_linear(li_x, 64, li_w, 64, li_bias, li_m, li_s, 1, out8, 8);
    check("linear", out8, li_want, 64, 'b');
    bvit_linear_acc(li_x, 64, li_w, 64, NULL, acc);
    check("linear_acc", acc, li_acc, 64, 'i');
    bvit_linear(li_x + 1, 63, li_w, 64, NULL, li_m, li_s, 1, out16, 16);
    check("linear_odd", out16, li_odd, 64, 'h');

    /* §8 LayerNorm */
    bvit_layernorm(ln_x, 16, 64, ln_g, ln_b, LN_SHIFT, ln_e[0], out8);
    check("layernorm_i16", out8, ln_want, 64, 'b');
    bvit_layernorm(ln_x8, 8, 64, ln_g, ln_b, LN_SHIFT, ln_e[0], out8);
    check("layernorm_i8", out8, ln_want8, 64, 'b');

    /* §9 softmax, §12 attention */
    bvit_softmax(sm_l, SM_L_LEN, SM_M, SM_S, outu);
    check("softmax", outu, sm_want, SM_L_LEN, 'H');
#ifndef BVIT_SMALL
    {
        int16_t sm = AT_SM, om = AT_OM;
        uint8_t ss = AT_SS, os = AT_OS;
        bvit_attention(at_qkv, 49, 64, 4, &sm, &ss, &om, &os, 0, att_out, scores, probs);
        check("attention", att_out, at_want, 49 * 64, 'b');
    }
#endif

    /* §10, §11.1, §13, §15 mixture */
    bvit_residual_add(ra_a, ra_b, 16, 64, RA_MA, RA_MB, RA_SH, out16, 16);
    check("residual_add", out16, ra_want, 64, 'h');
    bvit_mean_pool(po_x, 16, 49, 64, PO_M, PO_SH, out16, 16);
    check("mean_pool", out16, po_want, 64, 'h');
    bvit_mix(mx_h, 2, 256, mx_g, out16);
    check("mix", out16, mx_want, 256, 'h');
    bvit_topk(tk_l, 64, 2, outu);
    check("topk", outu, tk_want, 2, 'H');

    printf("failures %d\n", fails);
    return fails;
}
