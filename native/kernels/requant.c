/*
 * requant.c - requantisation (spec §1-2) in 32-bit arithmetic.
 *
 * rshift_round(x * M, shift) needs a 46-bit product, which on a Cortex-M0+ is a
 * libgcc call (__aeabi_lmul) and a 64-bit shift.  We use the split of spec §2.3,
 * extended to every int32 x:
 *
 *   x = h 2^15 + l, h = x >> 15 in [-2^16, 2^16), l = x & 0x7FFF in [0, 2^15)
 *   Y = floor(x M / 2^15) = h M + floor(l M / 2^15)          (|Y| < 2^31: int32)
 *   shift >= 16, k = shift - 15:
 *     rshift_round(x M, shift) = floor((Y + 2^(k-1)) / 2^k) = ((Y >> (k-1)) + 1) >> 1
 *
 * The first equality is spec §2.3's proof; the second because floor((floor(a) + 1)/2)
 * = floor((a + 1)/2) for real a = Y / 2^(k-1).  It never overflows: |h M| <=
 * 2^16 (2^15 - 1) < 2^31 and Y + 1 <= 2^31 - 2^15.  For k - 1 >= 31 (shift >= 47)
 * Y >> (k-1) is Y >> 31 (0 or -1) and the result 0, as |x M| < 2^46 demands.
 *
 * shift <= 15: |x| < 2^16 gives |x M + 2^(shift-1)| < 2^31 (int32 directly); else, with
 * M >= 2^14 (every M the host makes), |x M / 2^shift| >= 2^15 saturates any int16 range
 * (spec §2.3); a smaller non-zero M there takes the exact int64 path.
 */
#include "bvit_kernels.h"

static int32_t clamp32(int32_t r, int32_t lo, int32_t hi)
{
    return r < lo ? lo : (r > hi ? hi : r);
}

int32_t bvit_mul_shift_sat(int32_t x, int32_t M, int32_t shift, int32_t lo, int32_t hi)
{
    int32_t r;
    if (shift >= 16) {
        int32_t y = (x >> 15) * M + (int32_t)((((uint32_t)x & 0x7FFFu) * (uint32_t)M) >> 15);
        int32_t k1 = shift - 16;
        if (k1 > 31) {
            k1 = 31;
        }
        r = ((y >> k1) + 1) >> 1;
    } else if (x < 65536 && x > -65536) {
        r = (x * M + ((int32_t)1 << (shift - 1))) >> shift;
    } else if (M >= 16384) {
        return x > 0 ? hi : lo;
    } else {
        int64_t p = ((int64_t)x * M + ((int64_t)1 << (shift - 1))) >> shift;
        return p < lo ? lo : (p > hi ? hi : (int32_t)p);
    }
    return clamp32(r, lo, hi);
}

void bvit_requant_i8(const int32_t *acc, size_t n, const int16_t *M, const uint8_t *shift,
                     int per_row, int8_t *out)
{
    size_t i;
    size_t step = per_row ? 1u : 0u;
    const int16_t *m = M;
    const uint8_t *s = shift;
    for (i = 0; i < n; i++) {
        out[i] = (int8_t)bvit_mul_shift_sat(acc[i], *m, *s, -128, 127);
        m += step;
        s += step;
    }
}

void bvit_requant_i16(const int32_t *acc, size_t n, const int16_t *M, const uint8_t *shift,
                      int per_row, int16_t *out)
{
    size_t i;
    size_t step = per_row ? 1u : 0u;
    const int16_t *m = M;
    const uint8_t *s = shift;
    for (i = 0; i < n; i++) {
        out[i] = (int16_t)bvit_mul_shift_sat(acc[i], *m, *s, -32768, 32767);
        m += step;
        s += step;
    }
}
