/*
 * elementwise.c - ReLU, residual add with rescale (spec §10), top-k (§11.1), mean
 * pooling (§13) and the expert mixture (§15 step 4).
 */
#include "bvit_kernels.h"

void bvit_relu_i8(int8_t *v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (v[i] < 0) {
            v[i] = 0;
        }
    }
}

void bvit_relu_i16(int16_t *v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (v[i] < 0) {
            v[i] = 0;
        }
    }
}

void bvit_relu_i32(int32_t *v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (v[i] < 0) {
            v[i] = 0;
        }
    }
}

/*
 * z = sat(rshift_round(a Ma + b Mb, shift)).  The spec (§10.2) allows int64 for int16
 * inputs; 32 bits are enough: |a|, |b| <= 2^15 and Ma, Mb <= 2^15 - 1 give
 * |a Ma + b Mb| <= 2^16 (2^15 - 1) = 2^31 - 2^16 < 2^31.  rshift_round is formed without
 * overflow for shift <= 31; for shift >= 32 it is 0 (|s| < 2^31 <= 2^(shift-1)).
 */
void bvit_residual_add(const void *a, const void *b, int in_bits, size_t n, int32_t Ma,
                       int32_t Mb, int32_t shift, void *z, int out_bits)
{
    size_t i;
    int32_t lo = out_bits == 8 ? -128 : -32768;
    int32_t hi = out_bits == 8 ? 127 : 32767;
    for (i = 0; i < n; i++) {
        int32_t s, r;
        if (in_bits == 8) {
            s = (int32_t)((const int8_t *)a)[i] * Ma + (int32_t)((const int8_t *)b)[i] * Mb;
        } else {
            s = (int32_t)((const int16_t *)a)[i] * Ma + (int32_t)((const int16_t *)b)[i] * Mb;
        }
        r = shift <= 31 ? bvit_rshift_round(s, shift) : 0;
        r = r < lo ? lo : (r > hi ? hi : r);
        if (out_bits == 8) {
            ((int8_t *)z)[i] = (int8_t)r;
        } else {
            ((int16_t *)z)[i] = (int16_t)r;
        }
    }
}

void bvit_topk(const int32_t *L, size_t n, size_t k, uint16_t *idx)
{
    size_t s, j, t;
    for (s = 0; s < k; s++) {
        size_t best = n;
        for (j = 0; j < n; j++) {
            int taken = 0;
            for (t = 0; t < s; t++) {
                if (idx[t] == j) {
                    taken = 1;
                    break;
                }
            }
            if (!taken && (best == n || L[j] > L[best])) {
                best = j;
            }
        }
        idx[s] = (uint16_t)best;
    }
}

void bvit_mean_pool(const void *x, int x_bits, size_t N, size_t d, int32_t M, int32_t shift,
                    void *y, int out_bits)
{
    size_t i, t;
    int32_t lo = out_bits == 8 ? -128 : -32768;
    int32_t hi = out_bits == 8 ? 127 : 32767;
    for (i = 0; i < d; i++) {
        int32_t s = 0;
        for (t = 0; t < N; t++) {
            s += x_bits == 8 ? (int32_t)((const int8_t *)x)[t * d + i]
                             : (int32_t)((const int16_t *)x)[t * d + i];
        }
        s = bvit_mul_shift_sat(s, M, shift, lo, hi);
        if (out_bits == 8) {
            ((int8_t *)y)[i] = (int8_t)s;
        } else {
            ((int16_t *)y)[i] = (int16_t)s;
        }
    }
}

/*
 * out_i = sat16(rshift_round(sum_j g_j h_ji, 15)) over k experts (spec §15 step 4);
 * h: k rows of f int16, g: k Q15 gates.  With sum_j g_j <= 32768 + k (what a softmax
 * gives; the checked layer enforces it) |sum| <= (32768 + k) 32768 < 2^31: int32.
 */
void bvit_mix(const int16_t *h, size_t k, size_t f, const uint16_t *g, int16_t *out)
{
    size_t i, j;
    for (i = 0; i < f; i++) {
        int32_t s = 0;
        for (j = 0; j < k; j++) {
            s += (int32_t)g[j] * h[j * f + i];
        }
        s = bvit_rshift_round(s, 15);
        out[i] = (int16_t)(s < -32768 ? -32768 : (s > 32767 ? 32767 : s));
    }
}
