/*
 * expert.c - one butterfly expert on one token (spec §15 step 4):
 *     u = x 2^P (zero-padded), u = B(phi) u, acc = T_in u (LUT form),
 *     h = requant16(acc) (zero-padded), out = relu(B(theta) h)[0..ffn).
 *
 * The working vectors are int32 holding int16 values (word loads and stores with
 * constant offsets on Thumb-1), and the rotations come from "rotation tables": int32
 * pairs (cos, sin) per angle, expanded once from the uint16 phases by
 * bvit_rot_expand (per expert and image, not per token).
 *
 * Saturation (spec §6.3) is exact but mostly free: a rotation from bvit_rot_expand
 * has |c| + |s| <= 23171 (checked for all 65536 phases by the tests), so a stage
 * whose input satisfies max|v| <= b gives |c x1 - s x2| <= 23171 b and
 * |y| <= (23171 b + 8192) / 16384.  With b <= 23169 no output can leave int16, and
 * the stage runs without saturation checks; otherwise it checks every value.  The
 * bound starts at 128 * 2^P for B(phi) and at a bound of max|h| gathered during the
 * requantisation for B(theta).  The result is identical either way; the bound only
 * chooses the faster loop.  (Rotation tables that did not come from bvit_rot_expand
 * may break the bound: the result is then unspecified, never out of bounds.)
 */
#include "bvit_kernels.h"

void bvit_rot_expand(const uint16_t *phase, size_t count, int32_t *rot)
{
    size_t i;
    for (i = 0; i < count; i++) {
        int16_t c, s;
        bvit_sincos_q14(phase[i], &c, &s);
        rot[2 * i] = c;
        rot[2 * i + 1] = s;
    }
}

/* bound of max|y| after a stage whose input has max|x| <= b (|c| + |s| <= 23171) */
static int32_t next_bound(int32_t b)
{
    return ((b * 23171 + 8192) >> 14) + 1;
}

#define ROT_FAST(H)                                                                   \
    do {                                                                              \
        int32_t *p = v;                                                               \
        const int32_t *re = rot + n_pad;                                              \
        while (rot != re) {                                                           \
            const int32_t *be = rot + 2 * (H);                                        \
            do {                                                                      \
                int32_t x1 = p[0], x2 = p[H];                                         \
                int32_t c = rot[0], s = rot[1];                                       \
                int32_t t = c * x1, u = s * x2;                                       \
                rot += 2;                                                             \
                t = t - u;                                                            \
                x1 = x1 * s;                                                          \
                x2 = x2 * c;                                                          \
                x2 = x2 + x1;                                                         \
                p[0] = (t + k) >> 14;                                                 \
                p[H] = (x2 + k) >> 14;                                                \
                p++;                                                                  \
            } while (rot != be);                                                      \
            p += (H);                                                                 \
        }                                                                             \
    } while (0)

static int32_t sat16(int32_t y)
{
    return y < -32768 ? -32768 : (y > 32767 ? 32767 : y);
}

#define ROT_CHECKED(H)                                                                \
    do {                                                                              \
        int32_t *p = v;                                                               \
        const int32_t *re = rot + n_pad;                                              \
        while (rot != re) {                                                           \
            const int32_t *be = rot + 2 * (H);                                        \
            do {                                                                      \
                int32_t x1 = p[0], x2 = p[H];                                         \
                int32_t c = rot[0], s = rot[1];                                       \
                int32_t y1 = (int32_t)((uint32_t)(c * x1) - (uint32_t)(s * x2) + (uint32_t)k) >> 14; \
                int32_t y2 = (int32_t)((uint32_t)(s * x1) + (uint32_t)(c * x2) + (uint32_t)k) >> 14; \
                rot += 2;                                                             \
                if ((int16_t)y1 != y1) {                                              \
                    y1 = sat16(y1);                                                   \
                }                                                                     \
                if ((int16_t)y2 != y2) {                                              \
                    y2 = sat16(y2);                                                   \
                }                                                                     \
                p[0] = y1;                                                            \
                p[H] = y2;                                                            \
                p++;                                                                  \
            } while (rot != be);                                                      \
            p += (H);                                                                 \
        }                                                                             \
    } while (0)

#define ROT_GENERIC(CHECK)                                                            \
    do {                                                                              \
        size_t blk, j;                                                                \
        for (blk = 0; blk < n_pad; blk += 2u * h) {                                   \
            int32_t *p1 = v + blk, *p2 = v + blk + h;                                 \
            for (j = 0; j < h; j++) {                                                 \
                int32_t x1 = p1[j], x2 = p2[j];                                       \
                int32_t c = rot[0], s = rot[1];                                       \
                int32_t y1 = (int32_t)((uint32_t)(c * x1) - (uint32_t)(s * x2) + (uint32_t)k) >> 14; \
                int32_t y2 = (int32_t)((uint32_t)(s * x1) + (uint32_t)(c * x2) + (uint32_t)k) >> 14; \
                rot += 2;                                                             \
                if (CHECK) {                                                          \
                    y1 = sat16(y1);                                                   \
                    y2 = sat16(y2);                                                   \
                }                                                                     \
                p1[j] = y1;                                                           \
                p2[j] = y2;                                                           \
            }                                                                         \
        }                                                                             \
    } while (0)

/* One stage on int32 storage; fast: no saturation checks (the caller's bound holds). */
static void stage32(int32_t *v, size_t n_pad, unsigned l, const int32_t *rot, int fast)
{
    const int32_t k = bvit_q13_round;
    size_t h = (size_t)1 << l;
    if (fast) {
        switch (l) {
            case 0: ROT_FAST(1); break;
            case 1: ROT_FAST(2); break;
            case 2: ROT_FAST(4); break;
            case 3: ROT_FAST(8); break;
            case 4: ROT_FAST(16); break;
            default: ROT_GENERIC(0); break;
        }
    } else {
        switch (l) {
            case 0: ROT_CHECKED(1); break;
            case 1: ROT_CHECKED(2); break;
            case 2: ROT_CHECKED(4); break;
            case 3: ROT_CHECKED(8); break;
            case 4: ROT_CHECKED(16); break;
            default: ROT_GENERIC(1); break;
        }
    }
}

void bvit_butterfly32(int32_t *v, size_t n_pad, unsigned n_stages, const int32_t *rot,
                      int32_t bound)
{
    unsigned l;
    for (l = 0; l < n_stages; l++) {
        int fast = bound <= 23169;
        stage32(v, n_pad, l, rot, fast);
        bound = fast ? next_bound(bound) : 32768;
        rot += n_pad; /* n_pad / 2 pairs of int32 */
    }
}

void bvit_expert_forward(const bvit_expert_t *e, const int8_t *x, int16_t *out,
                         int32_t *work_in, int32_t *work_out, int32_t *tables)
{
    size_t i, r, g0;
    size_t nb = bvit_packed_row_bytes(e->dim);
    int32_t scale = (int32_t)1 << e->P;
    uint32_t orbits;

    for (i = 0; i < e->dim; i++) {
        work_in[i] = x[i] * scale;
    }
    for (; i < e->n_pad_in; i++) {
        work_in[i] = 0;
    }
    bvit_butterfly32(work_in, e->n_pad_in, e->n_stages, e->phi_rot, 128 * scale);
    /* acc = T_in u in work_out, chunk by chunk, then requant16 in place */
    for (g0 = 0; g0 < nb; g0 += BVIT_LUT_GROUPS) {
        size_t count = nb - g0 < BVIT_LUT_GROUPS ? nb - g0 : BVIT_LUT_GROUPS;
        bvit_lut_build_i32(work_in, e->dim, g0, count, tables);
        bvit_lut_rows(e->packed + g0, nb, count, e->ffn, tables, g0 != 0, work_out);
    }
    orbits = bvit_requant_q16_inplace(work_out, e->ffn, e->M, e->shift, e->per_row);
    r = e->ffn;
    for (; r < e->n_pad_out; r++) {
        work_out[r] = 0;
    }
    /* max|h| <= OR of (|h| or |h| - 1) + 1 */
    bvit_butterfly32(work_out, e->n_pad_out, e->n_stages, e->theta_rot,
                     (int32_t)orbits + 1);
    for (i = 0; i < e->ffn; i++) {
        int32_t v = work_out[i];
        out[i] = (int16_t)(v < 0 ? 0 : v);
    }
}
