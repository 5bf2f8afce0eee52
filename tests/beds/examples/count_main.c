/*
 * Test main for instruction counting: calls dot_i8_fixed, mix32 and
 * mix32_twice three times each, on different data (and from another
 * translation unit, so no call can be folded into another).
 */
#include <inttypes.h>
#include <stdio.h>

#include "dot.h"

static int8_t a[3 * DOT_FIXED_N];
static int8_t b[3 * DOT_FIXED_N];

int main(void)
{
    int32_t sum = 0;
    uint32_t h = 1;
    int i;
    for (i = 0; i < 3 * DOT_FIXED_N; i++) {
        a[i] = (int8_t)(i * 37 - 128);
        b[i] = (int8_t)(127 - i * 11);
    }
    for (i = 0; i < 3; i++) {
        sum += dot_i8_fixed(a + i * DOT_FIXED_N, b + i * DOT_FIXED_N);
        h = mix32(h, (uint32_t)i);
        h = mix32_twice(h);
    }
    printf("%" PRId32 " %" PRIu32 "\n", sum, h);
    return 0;
}
