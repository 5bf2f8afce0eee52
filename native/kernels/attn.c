/*
 * attn.c - the int8 products of one attention query (spec §12), with the arguments and
 * results of device/bvit/kernels.py: the board backend's attn_scores and attn_pv
 * (device/bvit/ops.py NAMES) when it runs row by row.
 */
#include "bvit_kernels.h"

void bvit_attn_scores(const int8_t *q, const int8_t *k, size_t stride, size_t n, size_t hd,
                      int32_t *out)
{
    size_t j, c;
    for (j = 0; j < n; j++, k += stride) {
        int32_t s = 0;
        for (c = 0; c < hd; c++) {
            s += (int32_t)q[c] * k[c];
        }
        out[j] = s;
    }
}

/* out[c] = sum_j p[j] v[j * stride + c]; sums formed modulo 2^32 (the checked layer keeps
 * p in 0..32768; for probabilities of one softmax row the sum stays below 2^23) */
void bvit_attn_pv(const int32_t *p, size_t n, const int8_t *v, size_t stride, size_t hd,
                  int32_t *out)
{
    size_t j, c;
    for (c = 0; c < hd; c++) {
        out[c] = 0;
    }
    for (j = 0; j < n; j++, v += stride) {
        uint32_t pj = (uint32_t)p[j];
        if (pj) {
            for (c = 0; c < hd; c++) {
                out[c] = (int32_t)((uint32_t)out[c] + pj * (uint32_t)(int32_t)v[c]);
            }
        }
    }
}
