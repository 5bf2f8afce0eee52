/*
 * norm.c - the integer LayerNorm (spec §8).
 *
 * Per token: S1, S2, V = d S2 - S1^2 + E (int64), U = V normalised to [2^28, 2^30) by an
 * even shift 2a, q = isqrt(U), one unsigned 32-bit division R = (2^29 + q/2) / q, then
 * per element n_i = rshift_round(c_i R, 19 - a), c_i = d x_i - S1, and
 * y_i = sat8(rshift_round(n_i G_i + B_i, shift)).
 *
 * c_i R without int64: sum_i c_i^2 = d (V - E) <= d V and V < 2^(30 - 2a), so
 * |c_i| < 2^(20 - a) for d <= 1024.  For a >= 5 (k = 19 - a <= 14) |c_i R| < 2^30:
 * int32 directly.  For a <= 4 (k >= 15) the split of requant.c: c = h 2^15 + l,
 * Y = floor(c R / 2^15) = h R + floor(l R / 2^15) (|c| < 2^26, so |h R| < 2^26), and
 * rshift_round(c R, k) = ((Y >> (k - 16)) + 1) >> 1 for k >= 16,
 *                      = h R + ((l R + 2^14) >> 15) for k = 15.
 * |n_i| <= 2^10 sqrt(d - 1) (plus rounding) < 2^15 and |G| < 2^15, |B| < 2^30, so
 * n_i G_i + B_i fits int32; its rounding shift is formed without overflow.
 */
#include "bvit_kernels.h"

uint32_t bvit_isqrt32(uint32_t u)
{
    uint32_t r = 0, bit = (uint32_t)1 << 30;
    while (bit > u) {
        bit >>= 2;
    }
    while (bit) {
        if (u >= r + bit) {
            u -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

static int bitlen64(uint64_t v)
{
    int b = 0;
    if (v >> 32) {
        v >>= 32;
        b = 32;
    }
    {
        uint32_t w = (uint32_t)v;
        if (w >> 16) { w >>= 16; b += 16; }
        if (w >> 8) { w >>= 8; b += 8; }
        if (w >> 4) { w >>= 4; b += 4; }
        if (w >> 2) { w >>= 2; b += 2; }
        if (w >> 1) { w >>= 1; b += 1; }
        return b + (int)w;
    }
}

void bvit_layernorm(const void *x, int x_bits, size_t d, const int32_t *G, const int32_t *B,
                    int32_t shift, int64_t E, int8_t *y)
{
    const int8_t *x8 = (const int8_t *)x;
    const int16_t *x16 = (const int16_t *)x;
    int32_t S1 = 0;
    int64_t S2;
    uint64_t V;
    uint32_t U, q, R = 0;
    int32_t a = 0, k = 0;
    int zero;
    size_t i;
    if (x_bits == 8) {
        int32_t s2 = 0; /* <= 1024 * 2^14 */
        for (i = 0; i < d; i++) {
            int32_t v = x8[i];
            S1 += v;
            s2 += v * v;
        }
        S2 = s2;
    } else {
        uint32_t lo = 0; /* sum of squares in chunks that cannot overflow 32 bits */
        S2 = 0;
        for (i = 0; i < d; i++) {
            int32_t v = x16[i];
            uint32_t sq = (uint32_t)(v * v); /* <= 2^30 */
            S1 += v;
            if (lo > 0xFFFFFFFFu - sq) {
                S2 += lo;
                lo = 0;
            }
            lo += sq;
        }
        S2 += lo;
    }
    V = (uint64_t)((int64_t)d * S2 - (int64_t)S1 * S1 + E);
    zero = V == 0;
    if (!zero) {
        int e = bitlen64(V);
        a = (30 - e) >> 1;
        U = a >= 0 ? (uint32_t)(V << (2 * a)) : (uint32_t)(V >> (-2 * a));
        q = bvit_isqrt32(U);
        R = (((uint32_t)1 << 29) + (q >> 1)) / q; /* the one division per token */
        k = 19 - a;
    }
    for (i = 0; i < d; i++) {
        int32_t n = 0, t;
        if (!zero) {
            int32_t c = (int32_t)d * (x_bits == 8 ? (int32_t)x8[i] : (int32_t)x16[i]) - S1;
            if (k <= 14) {
                n = (c * (int32_t)R + ((int32_t)1 << (k - 1))) >> k;
            } else {
                int32_t h = (c >> 15) * (int32_t)R;
                uint32_t lr = ((uint32_t)c & 0x7FFFu) * R;
                if (k == 15) {
                    n = h + (int32_t)((lr + 16384u) >> 15);
                } else {
                    n = (((h + (int32_t)(lr >> 15)) >> (k - 16)) + 1) >> 1;
                }
            }
        }
        t = n * G[i] + B[i];
        t = bvit_rshift_round(t, shift);
        y[i] = (int8_t)(t < -128 ? -128 : (t > 127 ? 127 : t));
    }
}
