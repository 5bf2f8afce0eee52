/*
 * butterfly.c - integer cos/sin of phases and the Q14 butterfly (spec §6).
 *
 * Each rotation: y1 = sat16((c x1 - s x2 + 2^13) >> 14), y2 = sat16((s x1 + c x2 + 2^13)
 * >> 14), both from the old values.  With |c|, |s| <= 16384 and int16 x every product
 * is at most 2^30; the sums are formed modulo 2^32 (unsigned), so out-of-spec tables
 * (|c| + |s| > 23171) cannot cause undefined behaviour, and in-spec ones give the
 * exact int32 sums of the spec.
 */
#include "bvit_kernels.h"

/*
 * Qs(r) of spec §6.2, 0 <= r <= 16384: SIN_Q14[r >> 6] + ((slope (r & 63) + 32) >> 6) with
 * slope = SIN_Q14[(r >> 6) + 1] - SIN_Q14[r >> 6], both from one word of bvit_sin_w: the
 * spec's interpolation written without its branch (a zero fraction adds 0).
 */
static int32_t quarter_sin(uint32_t r)
{
    uint32_t w = bvit_sin_w[r >> 6];
    return (int32_t)(w & 0xFFFFu) + (int32_t)(((w >> 16) * (r & 63u) + 32u) >> 6);
}

/* (cos, sin) of a phase: the quadrant table of spec §6.2 */
static void sincos32(uint32_t phase, int32_t *cos_out, int32_t *sin_out)
{
    uint32_t r = phase & 0x3FFFu;
    int32_t a = quarter_sin(r);
    int32_t b = quarter_sin(16384u - r);
    switch (phase >> 14) {
        case 0:
            *cos_out = b;
            *sin_out = a;
            break;
        case 1:
            *cos_out = -a;
            *sin_out = b;
            break;
        case 2:
            *cos_out = -b;
            *sin_out = -a;
            break;
        default:
            *cos_out = a;
            *sin_out = -b;
            break;
    }
}

void bvit_sincos_q14(uint16_t phase, int16_t *cos_out, int16_t *sin_out)
{
    int32_t c, s;
    sincos32(phase, &c, &s);
    *cos_out = (int16_t)c;
    *sin_out = (int16_t)s;
}

void bvit_sincos_q14_vec(const uint16_t *phase, size_t count, int16_t *cos_out,
                         int16_t *sin_out)
{
    size_t i;
    for (i = 0; i < count; i++) {
        bvit_sincos_q14(phase[i], cos_out + i, sin_out + i);
    }
}

static int32_t sat16(int32_t y)
{
    if ((uint32_t)(y + 32768) > 65535u) {
        return y < 0 ? -32768 : 32767;
    }
    return y;
}

/* (c x1 - s x2 + 2^13) >> 14 and (s x1 + c x2 + 2^13) >> 14, sums modulo 2^32 */
#define ROTATE(c, s, x1, x2, y1, y2)                                                        \
    do {                                                                                    \
        y1 = sat16((int32_t)((uint32_t)((c) * (x1)) - (uint32_t)((s) * (x2)) + 8192u) >> 14); \
        y2 = sat16((int32_t)((uint32_t)((s) * (x1)) + (uint32_t)((c) * (x2)) + 8192u) >> 14); \
    } while (0)

void bvit_butterfly_stage(int16_t *v, size_t n_pad, unsigned l, const int16_t *cos_q14,
                          const int16_t *sin_q14)
{
    size_t h = (size_t)1 << l;
    size_t blk, j;
    if (h == 1u) {
        int16_t *p = v, *end = v + n_pad;
        for (; p < end; p += 2) {
            int32_t c = *cos_q14++, s = *sin_q14++;
            int32_t x1 = p[0], x2 = p[1], y1, y2;
            ROTATE(c, s, x1, x2, y1, y2);
            p[0] = (int16_t)y1;
            p[1] = (int16_t)y2;
        }
        return;
    }
    for (blk = 0; blk < n_pad; blk += 2u * h) {
        int16_t *p1 = v + blk, *p2 = v + blk + h;
        for (j = 0; j < h; j++) {
            int32_t c = *cos_q14++, s = *sin_q14++;
            int32_t x1 = p1[j], x2 = p2[j], y1, y2;
            ROTATE(c, s, x1, x2, y1, y2);
            p1[j] = (int16_t)y1;
            p2[j] = (int16_t)y2;
        }
    }
}

void bvit_butterfly(int16_t *v, size_t n_pad, unsigned n_stages, const int16_t *cos_q14,
                    const int16_t *sin_q14)
{
    unsigned l;
    size_t half = n_pad / 2u;
    for (l = 0; l < n_stages; l++) {
        bvit_butterfly_stage(v, n_pad, l, cos_q14 + l * half, sin_q14 + l * half);
    }
}

void bvit_butterfly_phase_raw(int16_t *v, size_t n_pad, unsigned n_stages, const uint8_t *raw)
{
    unsigned l;
    for (l = 0; l < n_stages; l++) {
        size_t h = (size_t)1 << l;
        size_t blk, j;
        for (blk = 0; blk < n_pad; blk += 2u * h) {
            int16_t *p1 = v + blk, *p2 = v + blk + h;
            for (j = 0; j < h; j++) {
                int32_t c, s, x1 = p1[j], x2 = p2[j], y1, y2;
                sincos32((uint32_t)raw[0] | ((uint32_t)raw[1] << 8), &c, &s);
                raw += 2;
                ROTATE(c, s, x1, x2, y1, y2);
                p1[j] = (int16_t)y1;
                p2[j] = (int16_t)y2;
            }
        }
    }
}

void bvit_butterfly_phase(int16_t *v, size_t n_pad, unsigned n_stages, const uint16_t *phase)
{
    unsigned l;
    for (l = 0; l < n_stages; l++) {
        size_t h = (size_t)1 << l;
        size_t blk, j;
        for (blk = 0; blk < n_pad; blk += 2u * h) {
            int16_t *p1 = v + blk, *p2 = v + blk + h;
            for (j = 0; j < h; j++) {
                int32_t c, s, x1 = p1[j], x2 = p2[j], y1, y2;
                sincos32(*phase++, &c, &s);
                ROTATE(c, s, x1, x2, y1, y2);
                p1[j] = (int16_t)y1;
                p2[j] = (int16_t)y2;
            }
        }
    }
}

/* ---------------------------------------------------------------- int32 storage, rotation tables
 *
 * For the expert kernel (expert.c): working vectors are int32 holding int16 values
 * (word loads and stores with constant offsets on Thumb-1), and the rotations come from "rotation tables": int32
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

/* (cos, sin) Q14 of one uint16 phase into rot[0], rot[1] */
static void rot_one(uint32_t p, int32_t *rot)
{
    uint32_t r = p & 0x3FFFu;
    int32_t a = quarter_sin(r), b = quarter_sin(16384u - r);
    switch (p >> 14) {
        case 0:
            rot[0] = b;
            rot[1] = a;
            break;
        case 1:
            rot[0] = -a;
            rot[1] = b;
            break;
        case 2:
            rot[0] = -b;
            rot[1] = -a;
            break;
        default:
            rot[0] = a;
            rot[1] = -b;
            break;
    }
}

void bvit_rot_expand(const uint16_t *phase, size_t count, int32_t *rot)
{
    const uint16_t *end = phase + count;
    for (; phase != end; phase++, rot += 2) {
        rot_one(*phase, rot);
    }
}

void bvit_rot_expand_raw(const uint8_t *raw, size_t count, int32_t *rot)
{
    const uint8_t *end = raw + 2u * count;
    for (; raw != end; raw += 2, rot += 2) {
        rot_one((uint32_t)raw[0] | ((uint32_t)raw[1] << 8), rot);
    }
}

/* bound of max|y| after a stage whose input has max|x| <= b (|c| + |s| <= 23171) */
static int32_t next_bound(int32_t b)
{
    return ((b * 23171 + 8192) >> 14) + 1;
}

/* one rotation of the pair (p[0], p[H]) by (rot[0], rot[1]); fast: no saturation check */
#define ROT1_FAST(P, H, R)                                                            \
    do {                                                                              \
        int32_t x1 = (P)[0], x2 = (P)[H];                                             \
        int32_t c = (R)[0], s = (R)[1];                                               \
        int32_t t = c * x1 - s * x2;                                                  \
        int32_t u = s * x1 + c * x2;                                                  \
        (P)[0] = (t + k) >> 14;                                                       \
        (P)[H] = (u + k) >> 14;                                                       \
    } while (0)

static int32_t sat16_32(int32_t y)
{
    return y < -32768 ? -32768 : (y > 32767 ? 32767 : y);
}

/* the same with saturation; sums modulo 2^32 */
#define ROT1_CHECKED(P, H, R)                                                         \
    do {                                                                              \
        int32_t x1 = (P)[0], x2 = (P)[H];                                             \
        int32_t c = (R)[0], s = (R)[1];                                               \
        int32_t y1 = (int32_t)((uint32_t)(c * x1) - (uint32_t)(s * x2) + (uint32_t)k) >> 14; \
        int32_t y2 = (int32_t)((uint32_t)(s * x1) + (uint32_t)(c * x2) + (uint32_t)k) >> 14; \
        if ((int16_t)y1 != y1) {                                                      \
            y1 = sat16_32(y1);                                                        \
        }                                                                             \
        if ((int16_t)y2 != y2) {                                                      \
            y2 = sat16_32(y2);                                                        \
        }                                                                             \
        (P)[0] = y1;                                                                  \
        (P)[H] = y2;                                                                  \
    } while (0)

/*
 * A stage with h = H (a constant): blocks of 2H, rotations (p[j], p[j + H]), the loops
 * unrolled by hand (2, 4 or 8 rotations a step) so that short blocks pay little loop
 * overhead per rotation.  Needs H = 1, 2, 4 or a multiple of 8.
 */
#define ROT4(ROT1, P, H, R)                                                           \
    ROT1(P, H, R);                                                                    \
    ROT1((P) + 1, H, (R) + 2);                                                        \
    ROT1((P) + 2, H, (R) + 4);                                                        \
    ROT1((P) + 3, H, (R) + 6)
#define STAGE_H(ROT1, H)                                                              \
    do {                                                                              \
        int32_t *p = v, *end = v + n_pad;                                             \
        if ((H) == 1) {                                                               \
            for (; p != end; p += 2, rot += 2) {                                      \
                ROT1(p, 1, rot);                                                      \
            }                                                                         \
        } else if ((H) == 2) {                                                        \
            for (; p != end; p += 4, rot += 4) {                                      \
                ROT1(p, 2, rot);                                                      \
                ROT1(p + 1, 2, rot + 2);                                              \
            }                                                                         \
        } else if ((H) == 4) {                                                        \
            for (; p != end; p += 8, rot += 8) {                                      \
                ROT4(ROT1, p, 4, rot);                                                \
            }                                                                         \
        } else {                                                                      \
            for (; p != end; p += (H)) {                                              \
                int32_t *be = p + (H);                                                \
                for (; p != be; p += 8, rot += 16) {                                  \
                    ROT4(ROT1, p, H, rot);                                            \
                    ROT4(ROT1, p + 4, H, rot + 8);                                    \
                }                                                                     \
            }                                                                         \
        }                                                                             \
    } while (0)

#define ROT_GENERIC(CHECK)                                                            \
    do {                                                                              \
        size_t blk, j;                                                                \
        for (blk = 0; blk < n_pad; blk += 2u * h) {                                   \
            int32_t *p1 = v + blk;                                                    \
            for (j = 0; j < h; j++, rot += 2) {                                       \
                if (CHECK) {                                                          \
                    ROT1_CHECKED(p1 + j, h, rot);                                     \
                } else {                                                              \
                    ROT1_FAST(p1 + j, h, rot);                                        \
                }                                                                     \
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
            case 0: STAGE_H(ROT1_FAST, 1); break;
            case 1: STAGE_H(ROT1_FAST, 2); break;
            case 2: STAGE_H(ROT1_FAST, 4); break;
            case 3: STAGE_H(ROT1_FAST, 8); break;
            case 4: STAGE_H(ROT1_FAST, 16); break;
            default: ROT_GENERIC(0); break;
        }
    } else {
        switch (l) {
            case 0: STAGE_H(ROT1_CHECKED, 1); break;
            case 1: STAGE_H(ROT1_CHECKED, 2); break;
            case 2: STAGE_H(ROT1_CHECKED, 4); break;
            case 3: STAGE_H(ROT1_CHECKED, 8); break;
            case 4: STAGE_H(ROT1_CHECKED, 16); break;
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

