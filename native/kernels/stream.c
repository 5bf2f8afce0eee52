/*
 * stream.c - the kernels of the board's backend interface (device/bvit/ops.py NAMES:
 * matvec8, ternary_stream, butterfly_ph, attn_scores, attn_pv), with the arguments and
 * results of device/bvit/kernels.py, and the re-cut of a trit stream into §4 rows.
 *
 * A trit stream (docs/integer-model.md) stores a rows x n ternary matrix as one trit5 row
 * of rows*n trits: trit r*n + c of the matrix is trit t0 + r*n + c of the stream (digit
 * i % 5 of byte i // 5), so rows need not start on a byte.  The lookup-table kernel needs
 * rows that do (§4 layout): a stream with n % 5 != 0 has 5 alignments of its rows, each
 * needing its own tables, so here the stream is multiplied in the plain form, and
 * bvit_stream_to_rows re-cuts it into §4 rows for the fast kernels.
 */
#include "bvit_kernels.h"

/* one row of a stream from trit t: acc = sum_c t_c x_c */
#define STREAM_BODY(XT)                                                               \
    size_t r;                                                                         \
    size_t t = t0;                                                                    \
    for (r = 0; r < rows; r++, t += n) {                                              \
        const uint8_t *p = packed + t / 5u;                                           \
        size_t k = t % 5u, c = 0;                                                     \
        int32_t a = 0;                                                                \
        if (k) { /* the row starts inside a byte */                                   \
            const int8_t *d = bvit_trit5[*p++];                                       \
            for (; k < 5u && c < n; k++, c++) {                                       \
                a += d[k] * (int32_t)x[c];                                            \
            }                                                                         \
        }                                                                             \
        for (; c + 5u <= n; c += 5u) {                                                \
            const int8_t *d = bvit_trit5[*p++];                                       \
            a += d[0] * (int32_t)x[c] + d[1] * (int32_t)x[c + 1] + d[2] * (int32_t)x[c + 2] \
                 + d[3] * (int32_t)x[c + 3] + d[4] * (int32_t)x[c + 4];               \
        }                                                                             \
        if (c < n) { /* the row ends inside a byte */                                 \
            const int8_t *d = bvit_trit5[*p];                                         \
            for (k = 0; c < n; k++, c++) {                                            \
                a += d[k] * (int32_t)x[c];                                            \
            }                                                                         \
        }                                                                             \
        acc[r] = a;                                                                   \
    }

void bvit_ternary_stream_i8(const uint8_t *packed, size_t t0, size_t rows, size_t n,
                            const int8_t *x, int32_t *acc)
{
    STREAM_BODY(int8_t)
}

void bvit_ternary_stream_i16(const uint8_t *packed, size_t t0, size_t rows, size_t n,
                             const int16_t *x, int32_t *acc)
{
    STREAM_BODY(int16_t)
}

void bvit_stream_to_rows(const uint8_t *packed, size_t t0, size_t rows, size_t n,
                         uint8_t *out)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    size_t r, c;
    size_t t = t0;
    for (r = 0; r < rows; r++) {
        uint32_t byte = 0;
        for (c = 0; c < n; c++, t++) {
            uint32_t digit = (uint32_t)(bvit_trit5[packed[t / 5u]][t % 5u] + 1);
            byte += digit * pow3[c % 5u];
            if (c % 5u == 4u) {
                *out++ = (uint8_t)byte;
                byte = 0;
            }
        }
        if (n % 5u) { /* pad the last byte with zero trits (digit 1) */
            for (c = n % 5u; c < 5u; c++) {
                byte += pow3[c];
            }
            *out++ = (uint8_t)byte;
        }
    }
}

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
