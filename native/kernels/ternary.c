/*
 * ternary.c - the ternary matvec straight from packed trits (spec §5).
 *
 * Plain form (§5.1): one row at a time, each byte decoded through bvit_trit5 and its
 * five trits applied to the inputs.  On Cortex-M0+ a 1-cycle MULS by -1/0/+1 is the
 * cheapest branch-free add/subtract/skip, so the plain loop multiplies by the trit.
 *
 * Lookup-table form (§5.2): for each group g of 5 inputs a table of the 243 partial
 * sums, then one lookup per packed byte.  The table holds digit sums
 *     T_g[b] = sum_k d_k(b) x_{5g+k}       (d = trit + 1 in {0, 1, 2})
 * and a row subtracts S = sum_i x_i once: sum_g T_g[b_rg] - S = sum_i t_ri x_i, the
 * same integer regrouped (|T| <= 10 * 2^15; every partial sum is bounded like the
 * total, so nothing overflows); S is folded into the first group's table.  The tables of
 * up to BVIT_LUT_GROUPS = 13 groups are interleaved, entry b of group g at [13 b + g],
 * 256 rows: the entries of the invalid
 * bytes 243..255 hold T[121] (five zero trits), so an invalid byte reads inside the
 * scratch and counts as zeros, as in the plain form.
 *
 * Building a table: running sums (lut.c).  A lookup: a byte load, a multiply by 52,
 * an add of the base, a load at the constant offset 4g and an add (bvit_lut_rows): no
 * pointer stepping, so nothing for the compiler to strength-reduce into spills.
 */
#include "bvit_kernels.h"

/* ---------------------------------------------------------------- plain form */

#define PLAIN_BODY(XT)                                                                \
    size_t nb = bvit_packed_row_bytes(n);                                             \
    size_t full = n / 5u, tail = n - 5u * full;                                       \
    size_t r, g, k;                                                                   \
    for (r = 0; r < rows; r++) {                                                      \
        const uint8_t *p = packed + r * nb;                                           \
        const XT *xp = x;                                                             \
        int32_t a = 0;                                                                \
        for (g = 0; g < full; g++) {                                                  \
            const int8_t *t = bvit_trit5[p[g]];                                       \
            a += t[0] * (int32_t)xp[0] + t[1] * (int32_t)xp[1] + t[2] * (int32_t)xp[2] \
                 + t[3] * (int32_t)xp[3] + t[4] * (int32_t)xp[4];                     \
            xp += 5;                                                                  \
        }                                                                             \
        if (tail) {                                                                   \
            const int8_t *t = bvit_trit5[p[full]];                                    \
            for (k = 0; k < tail; k++) {                                              \
                a += t[k] * (int32_t)xp[k];                                           \
            }                                                                         \
        }                                                                             \
        acc[r] = a;                                                                   \
    }

void bvit_ternary_matvec_i8(const uint8_t *packed, size_t rows, size_t n, const int8_t *x,
                            int32_t *acc)
{
    PLAIN_BODY(int8_t)
}

void bvit_ternary_matvec_i16(const uint8_t *packed, size_t rows, size_t n, const int16_t *x,
                             int32_t *acc)
{
    PLAIN_BODY(int16_t)
}

/* ---------------------------------------------------------------- LUT form */

/* One group's column (lut.c) from its 5 inputs, plus s0; returns the inputs' sum */
static int32_t group(int32_t *p, int32_t s0, int32_t x0, int32_t x1, int32_t x2, int32_t x3,
                     int32_t x4)
{
    int32_t steps[4];
    steps[0] = x1;                   /* next d1 */
    steps[1] = x2 - x1 - x1;         /* d1 = 2 -> next d2 */
    steps[2] = x3 - x2 - x2 - x2;    /* after the third d2 (its step included): next d3 */
    steps[3] = x4 - x3 - x3 - x3;    /* after the third d3 (its step included): next d4 */
    return bvit_lut_group(p, s0, x0, steps);
}

#define GROUP_INPUTS(c, v)                                                            \
    do {                                                                              \
        size_t i_ = 5u * (g0 + (c)), k_;                                              \
        for (k_ = 0; k_ < 5u; k_++) {                                                 \
            v[k_] = i_ + k_ < n ? (int32_t)x[i_ + k_] : 0;                            \
        }                                                                             \
    } while (0)
#define BUILD_BODY(XT)                                                                \
    int32_t sum = 0, v[5];                                                            \
    size_t c;                                                                         \
    for (c = 1; c < count; c++) {                                                     \
        size_t i = 5u * (g0 + c);                                                     \
        if (i + 5u <= n) {                                                            \
            sum += group(tables + c, 0, x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4]); \
        } else {                                                                      \
            GROUP_INPUTS(c, v);                                                       \
            sum += group(tables + c, 0, v[0], v[1], v[2], v[3], v[4]);                \
        }                                                                             \
    }                                                                                 \
    GROUP_INPUTS(0, v);                                                               \
    sum += v[0] + v[1] + v[2] + v[3] + v[4];                                          \
    (void)group(tables, -sum, v[0], v[1], v[2], v[3], v[4]);

void bvit_lut_build_i16(const int16_t *x, size_t n, size_t g0, size_t count, int32_t *tables)
{
    BUILD_BODY(int16_t)
}

void bvit_lut_build_i8(const int8_t *x, size_t n, size_t g0, size_t count, int32_t *tables)
{
    BUILD_BODY(int8_t)
}

void bvit_lut_build_i32(const int32_t *x, size_t n, size_t g0, size_t count, int32_t *tables)
{
    BUILD_BODY(int32_t)
}

/*
 * acc[r] (+)= sum_{g < count} T_g[q_r[g]], row r's bytes at q + r * stride.  One loop
 * per count (a switch outside the loop), fully unrolled, for "=" and for "+=": the
 * loops keep only q, the table base, the row size, the sum, a temporary, acc, its end
 * and the stride live, which fits the 8 low registers of Thumb-1.  The bytes per table
 * row (52) come from a variable defined in another file so that the compiler keeps
 * them in a register for the multiply.
 */
#define LK(g) a += *(const int32_t *)(const void *)(tb + (uint32_t)q[g] * rb + 4u * (g))
#define L2(g) LK(g); LK(g + 1)
#define L4(g) L2(g); L2(g + 2)
#define L8(g) L4(g); L4(g + 4)
#define ROW_LOOP(INIT, BODY)                                                          \
    for (; acc != end; acc++, q += stride) {                                          \
        int32_t a = INIT;                                                             \
        BODY;                                                                         \
        *acc = a;                                                                     \
    }                                                                                 \
    break
#define ROW_SWITCH(INIT)                                                              \
    switch (count) {                                                                  \
        case 1: ROW_LOOP(INIT, LK(0));                                                \
        case 2: ROW_LOOP(INIT, L2(0));                                                \
        case 3: ROW_LOOP(INIT, L2(0); LK(2));                                         \
        case 4: ROW_LOOP(INIT, L4(0));                                                \
        case 5: ROW_LOOP(INIT, L4(0); LK(4));                                         \
        case 6: ROW_LOOP(INIT, L4(0); L2(4));                                         \
        case 7: ROW_LOOP(INIT, L4(0); L2(4); LK(6));                                  \
        case 8: ROW_LOOP(INIT, L8(0));                                                \
        case 9: ROW_LOOP(INIT, L8(0); LK(8));                                         \
        case 10: ROW_LOOP(INIT, L8(0); L2(8));                                        \
        case 11: ROW_LOOP(INIT, L8(0); L2(8); LK(10));                                \
        case 12: ROW_LOOP(INIT, L8(0); L4(8));                                        \
        default: ROW_LOOP(INIT, L8(0); L4(8); LK(12));                                \
    }

void bvit_lut_rows(const uint8_t *q, size_t stride, size_t count, size_t rows,
                   const int32_t *tables, int accumulate, int32_t *acc)
{
    const uint8_t *tb = (const uint8_t *)tables;
    const uint32_t rb = bvit_lut_row_bytes;
    int32_t *end = acc + rows;
    if (accumulate) {
        ROW_SWITCH(*acc)
    } else {
        ROW_SWITCH(0)
    }
}
#undef LK
#undef L2
#undef L4
#undef L8
#undef ROW_LOOP
#undef ROW_SWITCH

#define LUT_BODY(BUILD)                                                               \
    size_t nb = bvit_packed_row_bytes(n);                                             \
    size_t g0 = 0;                                                                    \
    while (g0 < nb) {                                                                 \
        size_t count = nb - g0 < BVIT_LUT_GROUPS ? nb - g0 : BVIT_LUT_GROUPS;         \
        BUILD(x, n, g0, count, tables);                                               \
        bvit_lut_rows(packed + g0, nb, count, rows, tables, g0 != 0, acc);            \
        g0 += count;                                                                  \
    }

void bvit_ternary_matvec_lut_i8(const uint8_t *packed, size_t rows, size_t n, const int8_t *x,
                                int32_t *acc, int32_t *tables)
{
    LUT_BODY(bvit_lut_build_i8)
}

void bvit_ternary_matvec_lut_i16(const uint8_t *packed, size_t rows, size_t n,
                                 const int16_t *x, int32_t *acc, int32_t *tables)
{
    LUT_BODY(bvit_lut_build_i16)
}

/*
 * Requantise int32 accumulators to int16 values kept in int32 (a butterfly expert's
 * h): h_r = requant16(acc_r, M_r, shift_r), in place.  Returns a bound B >= max|h_r|
 * (the largest |h| or |h| - 1, plus 1), which lets the next butterfly skip saturation
 * checks (butterfly.c).  requant.c's 32-bit split, inline; the per-row loop has
 * constant pointer steps.
 */
#define RQ16_BODY(MSTEP)                                                              \
    for (; acc != end; acc++, M += (MSTEP), shift += (MSTEP)) {                       \
        int32_t a = *acc, m = *(const uint16_t *)M, h;                                \
        uint32_t k = (uint32_t)*shift - 16u, u;                                       \
        if (k <= 15u) { /* shift 16..31, the usual case */                            \
            int32_t y = (a >> 15) * m + (int32_t)((((uint32_t)a & 0x7FFFu) * (uint32_t)m) >> 15); \
            h = ((y >> k) + 1) >> 1;                                                  \
            if ((int16_t)h != h) {                                                    \
                h = h < 0 ? -32768 : 32767;                                           \
            }                                                                         \
        } else {                                                                      \
            h = bvit_mul_shift_sat(a, m, *shift, -32768, 32767);                      \
        }                                                                             \
        *acc = h;                                                                     \
        u = (uint32_t)(h ^ (h >> 31));                                                \
        if (u > mx) {                                                                 \
            mx = u;                                                                   \
        }                                                                             \
    }

int32_t bvit_requant_q16_inplace(int32_t *acc, size_t rows, const int16_t *M,
                                 const uint8_t *shift, int per_row)
{
    uint32_t mx = 0;
    int32_t *end = acc + rows;
    if (per_row) {
        RQ16_BODY(1)
    } else {
        RQ16_BODY(0)
    }
    return (int32_t)mx + 1;
}
#undef RQ16_BODY

/* ---------------------------------------------------------------- ternary linear */

void bvit_ternary_linear(const uint8_t *packed, size_t rows, size_t n, const void *x,
                         int x_bits, const int32_t *bias, const int16_t *M,
                         const uint8_t *shift, int per_row, void *out, int out_bits,
                         int32_t *tables, int32_t *acc)
{
    size_t nb = bvit_packed_row_bytes(n);
    size_t r;
    size_t step = per_row ? 1u : 0u;
    int32_t lo = out_bits == 8 ? -128 : -32768;
    int32_t hi = out_bits == 8 ? 127 : 32767;
    int one_chunk = tables != NULL && nb <= BVIT_LUT_GROUPS;
    if (tables != NULL && !one_chunk) {
        /* all accumulators first, chunk by chunk */
        if (x_bits == 8) {
            bvit_ternary_matvec_lut_i8(packed, rows, n, (const int8_t *)x, acc, tables);
        } else {
            bvit_ternary_matvec_lut_i16(packed, rows, n, (const int16_t *)x, acc, tables);
        }
    } else if (one_chunk) {
        if (x_bits == 8) {
            bvit_lut_build_i8((const int8_t *)x, n, 0, nb, tables);
        } else {
            bvit_lut_build_i16((const int16_t *)x, n, 0, nb, tables);
        }
    }
    for (r = 0; r < rows; r++) {
        int32_t a;
        if (one_chunk) {
            bvit_lut_rows(packed + r * nb, nb, nb, 1, tables, 0, &a);
        } else if (tables != NULL) {
            a = acc[r];
        } else if (x_bits == 8) {
            bvit_ternary_matvec_i8(packed + r * nb, 1, n, (const int8_t *)x, &a);
        } else {
            bvit_ternary_matvec_i16(packed + r * nb, 1, n, (const int16_t *)x, &a);
        }
        if (bias) {
            a = (int32_t)((uint32_t)a + (uint32_t)bias[r]);
        }
        a = bvit_mul_shift_sat_inline(a, M[r * step], shift[r * step], lo, hi);
        if (out_bits == 8) {
            ((int8_t *)out)[r] = (int8_t)a;
        } else {
            ((int16_t *)out)[r] = (int16_t)a;
        }
    }
}
