/*
 * native_bench_main.c - what benchmarks/native_bench.py counts, instruction by instruction,
 * on a Cortex-M0+ (and rv32imc) under QEMU.  The shapes are the shipped "pico" model's:
 * 49 tokens of 16 pixels, dim 64, ffn 256, depth 4, 4 heads, 64 experts, top-2, 4 butterfly
 * stages.  Weights and inputs come from bench_data.h (random, in the ranges the model's
 * quantiser produces).  Every counted function is called from here, not inlined.
 *
 *   one expert, one token:
 *     bvit_expert_forward   the butterfly expert (B(phi), ternary from packed trits by LUT,
 *                           requant16, B(theta), ReLU), rotation tables already expanded
 *     bvit_rot_expand       expanding one expert's 4 x (32 + 128) phases to cos/sin
 *     naive_expert          the same expert with the plain ternary loop (and the int16
 *                           butterflies of the public API)
 *     dense_expert          a dense int8 expert of the same shape: linear 64 -> 256 int8
 *                           weights, requant16, ReLU
 *     dense_expert_full     a standard MoE expert: 64 -> 256 (ReLU) -> 64, int8 weights
 *   one token's feed-forward block (top-2):
 *     butterfly_ffn_token   2 experts + mixture + shared ternary W_out 256 -> 64 (+ bias)
 *     dense_ffn_token       2 dense experts (64 -> 256 -> 64 each, ReLU between) + mixture
 *   one image:
 *     model_forward         the whole integer model (docs/integer-model.md steps 1-19),
 *                           experts run grouped by expert, each used expert's phases
 *                           expanded once per layer
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bvit_kernels.h"
#include "bench_data.h"

#define N 49
#define D 64
#define F 256
#define E 64
#define K 2
#define HEADS 4
#define NL 4
#define DEPTH 4
#define PD 16
#define C 10
#define NB_IN 13  /* ceil(64 / 5) */
#define NB_OUT 52 /* ceil(256 / 5) */

#define NOINLINE __attribute__((noinline))

static int32_t tables[BVIT_LUT_ENTRIES];
static int32_t work_in[64], work_out[256], acc[256];
static int32_t rot_in[NL * 64], rot_out[NL * 256];
static int16_t h16[F], h16b[F], u16[64], m16[F], y16[D];
static int8_t h8[F];

static bvit_expert_t expert_of(int e)
{
    bvit_expert_t ex;
    (void)e;
    ex.dim = D;
    ex.ffn = F;
    ex.n_pad_in = 64;
    ex.n_pad_out = 256;
    ex.n_stages = NL;
    ex.P = 5;
    ex.phi_rot = rot_in;
    ex.theta_rot = rot_out;
    ex.packed = w_in_packed;
    ex.M = w_in_m;
    ex.shift = w_in_s;
    ex.per_row = 1;
    return ex;
}

/* cos/sin tables of one expert (int16, for the naive path) */
static int16_t cin[NL * 32], sin_in[NL * 32], cout[NL * 128], sout[NL * 128];

NOINLINE void naive_expert(const int8_t *x, int16_t *out)
{
    size_t i;
    for (i = 0; i < D; i++) {
        u16[i] = (int16_t)(x[i] * 32);
    }
    bvit_butterfly(u16, 64, NL, cin, sin_in);
    bvit_ternary_matvec_i16(w_in_packed, F, D, u16, acc);
    bvit_requant_i16(acc, F, w_in_m, w_in_s, 1, out);
    bvit_butterfly(out, 256, NL, cout, sout);
    bvit_relu_i16(out, F);
}

NOINLINE void dense_expert(const int8_t *x, int16_t *out)
{
    bvit_linear(x, D, dense_w1, F, NULL, w_in_m, w_in_s, 1, out, 16);
    bvit_relu_i16(out, F);
}

NOINLINE void butterfly_ffn_token(const int8_t *x, const uint16_t *g, int16_t *y)
{
    bvit_expert_t ex = expert_of(0);
    static int16_t hh[K * F];
    bvit_expert_forward(&ex, x, hh, work_in, work_out, tables);
    bvit_expert_forward(&ex, x, hh + F, work_in, work_out, tables);
    bvit_mix(hh, K, F, g, m16);
    bvit_ternary_linear(w_out_packed, D, F, m16, 16, w_out_bias, w_out_m, w_out_s, 1, y, 16,
                        tables, acc);
}

NOINLINE void dense_expert_full(const int8_t *x, int16_t *y)
{
    bvit_linear(x, D, dense_w1, F, NULL, w_in_m, w_in_s, 1, h8, 8);
    bvit_relu_i8(h8, F);
    bvit_linear(h8, F, dense_w2, D, w_out_bias, w_out_m, w_out_s, 1, y, 16);
}

NOINLINE void dense_ffn_token(const int8_t *x, const uint16_t *g, int16_t *y)
{
    static int16_t yy[K * D];
    int j;
    for (j = 0; j < K; j++) {
        bvit_linear(x, D, dense_w1, F, NULL, w_in_m, w_in_s, 1, h8, 8);
        bvit_relu_i8(h8, F);
        bvit_linear(h8, F, dense_w2, D, w_out_bias, w_out_m, w_out_s, 1, yy + j * D, 16);
    }
    bvit_mix(yy, K, D, g, y);
}

/* ---------------------------------------------------------------- the whole model */

static int16_t x[N * D], br[N * D];
static int8_t a[N * D], qkv[N * 3 * D], att[N * D];
static int32_t logits[N * E], scores[N];
static uint16_t probs[N], idx[N * K], gates[N * K];
static int16_t hbuf[N * K * F];
static int16_t pooled[D];
static int8_t z[D];
static int32_t out_logits[C];
static int used_experts;

/* the stages of one layer, each counted on its own */
NOINLINE void stage_embed(void)
{
    int t;
    for (t = 0; t < N; t++) {
        bvit_linear(tokens + t * PD, PD, embed_w, D, embed_b, lin_m, lin_s, 1, x + t * D, 16);
    }
}

NOINLINE void stage_attention(void)
{
    int t;
    int16_t sM = SCORE_M, oM = ATT_OUT_M;
    uint8_t sS = SCORE_S, oS = ATT_OUT_S;
    for (t = 0; t < N; t++) {
        bvit_layernorm(x + t * D, 16, D, ln_g, ln_b, LN_SHIFT, LN_E, a + t * D);
        bvit_linear(a + t * D, D, qkv_w, 3 * D, qkv_b, qkv_m, qkv_s, 1, qkv + t * 3 * D, 8);
    }
    bvit_attention(qkv, N, D, HEADS, &sM, &sS, &oM, &oS, 0, att, scores, probs);
    for (t = 0; t < N; t++) {
        bvit_linear(att + t * D, D, proj_w, D, proj_b, lin_m, lin_s, 1, br + t * D, 16);
    }
    bvit_residual_add(x, br, 16, N * D, RES_MA, RES_MB, RES_SH, x, 16);
}

NOINLINE void stage_router(void)
{
    int t, j;
    for (t = 0; t < N; t++) {
        int32_t sel[K];
        bvit_layernorm(x + t * D, 16, D, ln_g, ln_b, LN_SHIFT, LN_E, a + t * D);
        bvit_linear_acc(a + t * D, D, router_w, E, NULL, logits + t * E);
        bvit_topk(logits + t * E, E, K, idx + t * K);
        for (j = 0; j < K; j++) {
            sel[j] = logits[t * E + idx[t * K + j]];
        }
        bvit_softmax(sel, K, GATE_M, GATE_S, gates + t * K);
    }
}

/* the experts, grouped: each used expert's phases expanded once per layer */
NOINLINE void stage_experts(void)
{
    int t, e;
    for (e = 0; e < E; e++) {
        int any = 0;
        bvit_expert_t ex = expert_of(e);
        for (t = 0; t < N * K; t++) {
            if (idx[t] != e) {
                continue;
            }
            if (!any) {
                bvit_rot_expand(phi_ph + e * (NL * 32), NL * 32, rot_in);
                bvit_rot_expand(theta_ph + e * (NL * 128), NL * 128, rot_out);
                any = 1;
                used_experts++;
            }
            bvit_expert_forward(&ex, a + (t / K) * D, hbuf + t * F, work_in, work_out, tables);
        }
    }
}

NOINLINE void stage_mix_out(void)
{
    int t;
    for (t = 0; t < N; t++) {
        bvit_mix(hbuf + t * K * F, K, F, gates + t * K, m16);
        bvit_ternary_linear(w_out_packed, D, F, m16, 16, w_out_bias, w_out_m, w_out_s, 1,
                            br + t * D, 16, tables, acc);
    }
    bvit_residual_add(x, br, 16, N * D, RES_MA, RES_MB, RES_SH, x, 16);
}

NOINLINE void stage_head(void)
{
    bvit_mean_pool(x, 16, N, D, POOL_M, POOL_S, pooled, 16);
    bvit_layernorm(pooled, 16, D, ln_g, ln_b, LN_SHIFT, LN_E, z);
    bvit_linear_acc(z, D, head_w, C, head_b, out_logits);
}

NOINLINE void model_forward(void)
{
    int l;
    stage_embed();
    for (l = 0; l < DEPTH; l++) {
        stage_attention();
        stage_router();
        stage_experts();
        stage_mix_out();
    }
    stage_head();
}

int main(void)
{
    int i;
    bvit_expert_t ex = expert_of(0);
    uint16_t g[K] = {20000, 12768};
#ifdef BENCH_MODEL_ONLY
    model_forward();
    printf("used_experts %d\n", used_experts);
    return 0;
#endif
#ifdef BENCH_CPI
    /* a short run whose exec trace gives the instruction mix of the two experts */
    bvit_rot_expand(phi_ph, NL * 32, rot_in);
    bvit_rot_expand(theta_ph, NL * 128, rot_out);
    bvit_expert_forward(&ex, bench_x, h16, work_in, work_out, tables);
    dense_expert(bench_x, h16b);
    return 0;
#endif

    /* one expert, one token */
    bvit_rot_expand(phi_ph, NL * 32, rot_in);
    bvit_rot_expand(theta_ph, NL * 128, rot_out);
    bvit_expert_forward(&ex, bench_x, h16, work_in, work_out, tables);
    printf("expert");
    for (i = 0; i < F; i++) {
        printf(" %d", h16[i]);
    }
    printf("\n");
    bvit_sincos_q14_vec(phi_ph, NL * 32, cin, sin_in);
    bvit_sincos_q14_vec(theta_ph, NL * 128, cout, sout);
    naive_expert(bench_x, h16b);
    printf("naive_equal %d\n", memcmp(h16, h16b, sizeof h16) == 0);
    dense_expert(bench_x, h16b);
    dense_expert_full(bench_x, y16);
    /* the ternary product alone, both forms */
    for (i = 0; i < D; i++) {
        u16[i] = (int16_t)(bench_x[i] * 32);
    }
    bvit_ternary_matvec_lut_i16(w_in_packed, F, D, u16, acc, tables);
    bvit_ternary_matvec_i16(w_in_packed, F, D, u16, acc);
    /* one token's feed-forward block */
    butterfly_ffn_token(bench_x, g, y16);
    dense_ffn_token(bench_x, g, y16);
    /* one image */
    model_forward();
    printf("used_experts %d\n", used_experts);
    printf("logits");
    for (i = 0; i < C; i++) {
        printf(" %" PRId32, out_logits[i]);
    }
    printf("\n");
    return 0;
}
