/*
 * softmax.c - integer softmax (spec §9) and the attention core (spec §12).
 */
#include "bvit_kernels.h"

static int bitlen32(uint32_t w)
{
    int b = 0;
    if (w >> 16) { w >>= 16; b += 16; }
    if (w >> 8) { w >>= 8; b += 8; }
    if (w >> 4) { w >>= 4; b += 4; }
    if (w >> 2) { w >>= 2; b += 2; }
    if (w >> 1) { w >>= 1; b += 1; }
    return b + (int)w;
}

/*
 * e_j = EXP2_Q14[t & 255] >> (t >> 8) for t = rshift_round((max - L_j) M, shift) < 3840,
 * else 0 (§9.2; the product through bvit_mul_shift_sat, clamped at 3840); then
 * S = sum e, b = bitlen(S), S' = S >> (b - 15), R = (2^29 + S'/2) / S' (the one division
 * per row), p_j = (e_j R + 2^(b-2)) >> (b - 1) (§9.3).  e_j is kept in p between the
 * passes (e <= 16384).
 */
void bvit_softmax(const int32_t *L, size_t n, int32_t M, int32_t shift, uint16_t *p)
{
    int32_t m = L[0];
    uint32_t S = 0, Sp, R;
    int b;
    size_t j;
    for (j = 1; j < n; j++) {
        if (L[j] > m) {
            m = L[j];
        }
    }
    for (j = 0; j < n; j++) {
        int32_t t = bvit_mul_shift_sat(m - L[j], M, shift, 0, BVIT_SOFTMAX_T_MAX);
        uint32_t e = t >= BVIT_SOFTMAX_T_MAX ? 0u : (uint32_t)bvit_exp2_q14[t & 255] >> (t >> 8);
        p[j] = (uint16_t)e;
        S += e;
    }
    b = bitlen32(S);
    Sp = S >> (b - 15);
    R = (((uint32_t)1 << 29) + (Sp >> 1)) / Sp;
    for (j = 0; j < n; j++) {
        p[j] = (uint16_t)(((uint32_t)p[j] * R + ((uint32_t)1 << (b - 2))) >> (b - 1));
    }
}

void bvit_attention(const int8_t *qkv, size_t N, size_t dim, size_t heads, const int16_t *sM,
                    const uint8_t *sshift, const int16_t *oM, const uint8_t *oshift,
                    int per_head, int8_t *out, int32_t *scores, uint16_t *probs)
{
    size_t hd = dim / heads;
    size_t row = 3u * dim;
    size_t h, i, j, c;
    for (h = 0; h < heads; h++) {
        size_t ph = per_head ? h : 0u;
        const int8_t *kb = qkv + dim + h * hd;
        const int8_t *vb = qkv + 2u * dim + h * hd;
        for (i = 0; i < N; i++) {
            const int8_t *q = qkv + i * row + h * hd;
            for (j = 0; j < N; j++) {
                const int8_t *k = kb + j * row;
                int32_t s = 0;
                for (c = 0; c < hd; c++) {
                    s += (int32_t)q[c] * k[c];
                }
                scores[j] = s;
            }
            bvit_softmax(scores, N, sM[ph], sshift[ph], probs);
            for (c = 0; c < hd; c++) {
                const int8_t *v = vb + c;
                int32_t o = 0;
                for (j = 0; j < N; j++, v += row) {
                    o += (int32_t)probs[j] * *v;
                }
                out[i * dim + h * hd + c] =
                    (int8_t)bvit_mul_shift_sat(o, oM[ph], oshift[ph], -128, 127);
            }
        }
    }
}
