/*
 * lut.c - one group table of the lookup-table ternary kernel (spec §5.2).
 *
 *     T[b] = s0 + sum_k d_k(b) x_k,   b = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4,  d_k in {0, 1, 2}
 *
 * The tables of a chunk of BVIT_LUT_GROUPS (13) groups are interleaved: entry b of
 * group g at tables[13 b + g], so that a lookup is "byte * 52 + base, load at the
 * constant offset 4g" (see ternary.c), and the three entries of a d0-triple are
 * 52 bytes apart (constant store offsets on Thumb-1).  This function fills one group's
 * column, p = tables + g, as running sums: within a triple d0 adds x0; between triples
 * s advances by x1, or by the differences that carry into the next d2, d3, d4.  The
 * steps are read through `steps`, which the compiler must assume may alias the table:
 * that keeps it from re-associating the running sums into many precomputed constants
 * (which on Thumb-1, with 8 low registers, spill).  For the same reason this function
 * lives in its own file.  s0 lets the caller fold a constant into one group's column.
 */
#include "bvit_kernels.h"

#define G BVIT_LUT_GROUPS

int32_t bvit_lut_group(int32_t *p, int32_t s0, int32_t x0, const int32_t *steps)
{
    int32_t s = s0;
    int32_t *T = p;
    int d4, d3;
    for (d4 = 0; d4 < 3; d4++) {
        for (d3 = 0; d3 < 3; d3++) {
            int32_t *e = p + 27 * G;
            do { /* one d2: three triples (d1 = 0, 1, 2) */
                p[0] = s;
                p[G] = s + x0;
                p[2 * G] = s + x0 + x0;
                s += steps[0];
                p[3 * G] = s;
                p[4 * G] = s + x0;
                p[5 * G] = s + x0 + x0;
                s += steps[0];
                p[6 * G] = s;
                p[7 * G] = s + x0;
                p[8 * G] = s + x0 + x0;
                s += steps[1];
                p += 9 * G;
            } while (p != e);
            s += steps[2];
        }
        s += steps[3];
    }
    /* invalid bytes 243..255 decode as byte 121 (five zero trits) */
    s = T[121 * G];
    p = T + 243 * G;
    p[0] = s;
    p[G] = s;
    p[2 * G] = s;
    p[3 * G] = s;
    p[4 * G] = s;
    p[5 * G] = s;
    p[6 * G] = s;
    p[7 * G] = s;
    p[8 * G] = s;
    p[9 * G] = s;
    p[10 * G] = s;
    p[11 * G] = s;
    p[12 * G] = s;
    return s - s0;
}
