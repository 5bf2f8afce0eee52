/* Example kernels for the cross-compilation test bed (tests/test_bed_cross.py). */
#ifndef BEDS_EXAMPLE_DOT_H
#define BEDS_EXAMPLE_DOT_H

#include <stddef.h>
#include <stdint.h>

/* sum of a[i] * b[i], int8 x int8 -> int32 */
int32_t dot_i8(const int8_t *a, const int8_t *b, size_t n);

/* the same over exactly DOT_FIXED_N elements: a loop with a fixed trip count */
#define DOT_FIXED_N 16
int32_t dot_i8_fixed(const int8_t *a, const int8_t *b);

/* straight-line code, no branches: a few shifts, adds and xors */
uint32_t mix32(uint32_t x, uint32_t y);

/* calls mix32 twice (the second may be a tail call): counts include callees */
uint32_t mix32_twice(uint32_t x);

#endif
