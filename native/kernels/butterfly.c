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

/* Qs(r) of spec §6.2, 0 <= r <= 16384 */
static int32_t quarter_sin(uint32_t r)
{
    uint32_t idx = r >> 6;
    int32_t frac = (int32_t)(r & 63u);
    int32_t lo = bvit_sin_q14[idx];
    if (frac == 0) {
        return lo;
    }
    return lo + (((bvit_sin_q14[idx + 1u] - lo) * frac + 32) >> 6);
}

void bvit_sincos_q14(uint16_t phase, int16_t *cos_out, int16_t *sin_out)
{
    uint32_t q = (uint32_t)phase >> 14;
    uint32_t r = (uint32_t)phase & 0x3FFFu;
    int32_t a = quarter_sin(r);
    int32_t b = quarter_sin(16384u - r);
    int32_t c, s;
    switch (q) {
        case 0:
            c = b;
            s = a;
            break;
        case 1:
            c = -a;
            s = b;
            break;
        case 2:
            c = -b;
            s = -a;
            break;
        default:
            c = a;
            s = -b;
            break;
    }
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

void bvit_butterfly_phase(int16_t *v, size_t n_pad, unsigned n_stages, const uint16_t *phase)
{
    unsigned l;
    for (l = 0; l < n_stages; l++) {
        size_t h = (size_t)1 << l;
        size_t blk, j;
        for (blk = 0; blk < n_pad; blk += 2u * h) {
            int16_t *p1 = v + blk, *p2 = v + blk + h;
            for (j = 0; j < h; j++) {
                int16_t cc, ss;
                int32_t c, s, x1 = p1[j], x2 = p2[j], y1, y2;
                bvit_sincos_q14(*phase++, &cc, &ss);
                c = cc;
                s = ss;
                ROTATE(c, s, x1, x2, y1, y2);
                p1[j] = (int16_t)y1;
                p2[j] = (int16_t)y2;
            }
        }
    }
}
