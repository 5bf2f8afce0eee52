/*
 * trits.c - trit validation and unpacking (spec §4).
 */
#include "bvit_kernels.h"

/* number of real trits in the last byte of a row of n trits (1..5) */
static size_t tail_trits(size_t n)
{
    size_t t = n % 5u;
    return t ? t : 5u;
}

long bvit_check_trits(const uint8_t *packed, size_t rows, size_t n)
{
    size_t nb = bvit_packed_row_bytes(n);
    size_t tail = tail_trits(n);
    size_t r, g, k;
    for (r = 0; r < rows; r++) {
        const uint8_t *p = packed + r * nb;
        for (g = 0; g < nb; g++) {
            if (p[g] > 242u) {
                return (long)(r * nb + g);
            }
        }
        for (k = tail; k < 5u; k++) {
            if (bvit_trit5[p[nb - 1]][k] != 0) {
                return (long)(r * nb + nb - 1);
            }
        }
    }
    return -1;
}

long bvit_unpack_trits(const uint8_t *packed, size_t rows, size_t n, int8_t *out)
{
    size_t nb = bvit_packed_row_bytes(n);
    size_t tail = tail_trits(n);
    size_t r, g, k;
    for (r = 0; r < rows; r++) {
        const uint8_t *p = packed + r * nb;
        for (g = 0; g < nb; g++) {
            const int8_t *t = bvit_trit5[p[g]];
            size_t m = g + 1u < nb ? 5u : tail;
            if (p[g] > 242u) {
                return (long)(r * nb + g);
            }
            for (k = 0; k < m; k++) {
                *out++ = t[k];
            }
            for (; k < 5u; k++) {
                if (t[k] != 0) {
                    return (long)(r * nb + g);
                }
            }
        }
    }
    return -1;
}
