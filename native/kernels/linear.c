/*
 * linear.c - int8 linear layers with requantisation (spec §7).
 *
 * acc_o = sum_i w_oi x_i + b_o (int32: |sum| <= n 2^14 < 2^31 for n <= 65535), then
 * y_o = requant(acc_o, M_o, shift_o).
 *
 * Fast path (the weight rows 4-byte aligned, n a multiple of 4, n <= BVIT_LINEAR_XMAX):
 * x is widened once per call into an int32 stack buffer, and each row reads its
 * weights four at a time with one word load, extracting the bytes by shifts: about
 * 5.5 instructions per multiply-accumulate on Cortex-M0+ (byte loads there need an
 * index register each).  Otherwise a plain byte loop.  Both give the same integers.
 */
#include "bvit_kernels.h"

#define BVIT_LINEAR_XMAX 256

static int32_t dot_i8(const int8_t *w, const int8_t *x, size_t n)
{
    int32_t a = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        a += (int32_t)w[i] * x[i];
    }
    return a;
}

/* w 4-byte aligned, n a multiple of 4; bytes of a little- or big-endian word alike */
static int32_t dot_w4(const int8_t *w, const int32_t *x, size_t n)
{
    const uint32_t *wp = (const uint32_t *)(const void *)w;
    const uint32_t *we = wp + (n >> 2);
    int32_t a = 0;
    while (wp != we) {
        uint32_t W = *wp++;
        int32_t b0 = (int32_t)(int8_t)(W & 0xFFu);
        int32_t b1 = (int32_t)(int8_t)((W >> 8) & 0xFFu);
        int32_t b2 = (int32_t)(int8_t)((W >> 16) & 0xFFu);
        int32_t b3 = (int32_t)(int8_t)(W >> 24);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        a += b3 * x[0] + b2 * x[1] + b1 * x[2] + b0 * x[3];
#else
        a += b0 * x[0] + b1 * x[1] + b2 * x[2] + b3 * x[3];
#endif
        x += 4;
    }
    return a;
}

static int fast_ok(const int8_t *w, size_t n)
{
    return n <= BVIT_LINEAR_XMAX && (n & 3u) == 0 && ((uintptr_t)(const void *)w & 3u) == 0;
}

void bvit_linear_acc(const int8_t *x, size_t n, const int8_t *w, size_t out_n,
                     const int32_t *bias, int32_t *acc)
{
    int32_t xs[BVIT_LINEAR_XMAX];
    int fast = fast_ok(w, n);
    size_t o, i;
    if (fast) {
        for (i = 0; i < n; i++) {
            xs[i] = x[i];
        }
    }
    for (o = 0; o < out_n; o++, w += n) {
        int32_t a = fast ? dot_w4(w, xs, n) : dot_i8(w, x, n);
        if (bias) {
            a = (int32_t)((uint32_t)a + (uint32_t)bias[o]);
        }
        acc[o] = a;
    }
}

void bvit_linear(const int8_t *x, size_t n, const int8_t *w, size_t out_n, const int32_t *bias,
                 const int16_t *M, const uint8_t *shift, int per_row, void *out, int out_bits)
{
    int32_t xs[BVIT_LINEAR_XMAX];
    int fast = fast_ok(w, n);
    size_t o, i;
    size_t step = per_row ? 1u : 0u;
    const int16_t *m = M;
    const uint8_t *s = shift;
    int32_t lo = out_bits == 8 ? -128 : -32768;
    int32_t hi = out_bits == 8 ? 127 : 32767;
    if (fast) {
        for (i = 0; i < n; i++) {
            xs[i] = x[i];
        }
    }
    for (o = 0; o < out_n; o++, w += n, m += step, s += step) {
        int32_t a = fast ? dot_w4(w, xs, n) : dot_i8(w, x, n);
        if (bias) {
            a = (int32_t)((uint32_t)a + (uint32_t)bias[o]);
        }
        a = bvit_mul_shift_sat_inline(a, *m, *s, lo, hi);
        if (out_bits == 8) {
            ((int8_t *)out)[o] = (int8_t)a;
        } else {
            ((int16_t *)out)[o] = (int16_t)a;
        }
    }
}
