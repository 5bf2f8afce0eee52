#include "dot.h"

int32_t dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
    int32_t acc = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        acc += (int32_t)a[i] * (int32_t)b[i];
    }
    return acc;
}

int32_t dot_i8_fixed(const int8_t *a, const int8_t *b)
{
    int32_t acc = 0;
    int i;
    for (i = 0; i < DOT_FIXED_N; i++) {
        acc += (int32_t)a[i] * (int32_t)b[i];
    }
    return acc;
}

__attribute__((noinline)) uint32_t mix32(uint32_t x, uint32_t y)
{
    uint32_t h = x ^ (y << 7);
    h += (h >> 3) ^ y;
    h ^= h << 11;
    return h + (x >> 5);
}

uint32_t mix32_twice(uint32_t x)
{
    return mix32(mix32(x, 1u), 2u);
}
