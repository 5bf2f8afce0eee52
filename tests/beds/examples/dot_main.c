/*
 * Test main for dot.c: the vectors come from a header the test generates
 * (dot_data.h: int8 arrays dot_a, dot_b of DOT_A_LEN elements, edge values
 * included).  Prints the dot product of several prefixes and of the whole
 * arrays, and exits with a status computed from them.
 */
#include <inttypes.h>
#include <stdio.h>

#include "dot.h"
#include "dot_data.h"

int main(void)
{
    static const size_t lens[] = {0, 1, 2, 3, 7, 16, 100, DOT_A_LEN};
    uint32_t check = 0;
    size_t k;
    for (k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        int32_t d = dot_i8(dot_a, dot_b, lens[k]);
        printf("dot[%u] = %" PRId32 "\n", (unsigned)lens[k], d);
        check = check * 31u + (uint32_t)d;
    }
    printf("fixed = %" PRId32 "\n", dot_i8_fixed(dot_a, dot_b));
    printf("mix32 = %" PRIu32 "\n", mix32(0xdeadbeefu, 12345u));
    printf("check = %" PRIu32 "\n", check);
    return (int)(check % 200u) + 1; /* 1..200: a non-zero exit status to check */
}
