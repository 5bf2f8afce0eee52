/*
 * bvit_kernels.h - the integer kernels of butterflyvit in plain C99.
 *
 * Every function computes exactly the integers of the numpy reference
 * (host/butterflyvit/intops.py) as docs/integer-spec.md defines them ("spec §N").
 * No MicroPython dependency, no allocation, no floating point, no division in an
 * inner loop: written for Cortex-M0+ (32x32->32 multiply, no divide, no FPU),
 * rv32imc and Xtensa alike.  Symbols are prefixed bvit_.
 *
 * Preconditions: these functions trust their sizes (the checked layer bvit_api.h
 * validates every argument first).  Data values never cause undefined behaviour:
 * out-of-spec data (a trit byte above 242, a cos above 16384, ...) gives a
 * deterministic but unspecified result, never an out-of-bounds access.
 *
 * Conventions: sizes are size_t; "n_pad" is a power of two; requantisation
 * parameters come as arrays M[] (int16, 0..32767) and shift[] (uint8, 1..62),
 * indexed by row when per_row is non-zero, else M[0], shift[0] for every row.
 */
#ifndef BVIT_KERNELS_H
#define BVIT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* spec §0.1: right shifts of negative values must be arithmetic. */
typedef char bvit_assert_arithmetic_shift[((-1) >> 1) == -1 ? 1 : -1];

#define BVIT_Q14_ONE 16384
#define BVIT_PROB_ONE 32768
#define BVIT_TRITS_PER_BYTE 5
/* LUT kernel: tables of a chunk of up to BVIT_LUT_GROUPS groups, interleaved (entry b
 * of group g at [b * BVIT_LUT_GROUPS + g]), BVIT_LUT_ENTRIES int32 in all (13 KiB).
 * 13 groups = 65 inputs: dim 64 in one chunk, 256 in four. */
#define BVIT_LUT_GROUPS 13
#define BVIT_LUT_ENTRIES (256 * BVIT_LUT_GROUPS)
#define BVIT_SOFTMAX_T_MAX 3840 /* 15 * 256 (spec §9.2) */

extern const int16_t bvit_sin_q14[257];   /* spec §0.2 */
extern const uint32_t bvit_sin_w[257];    /* sin | (next sin - sin) << 16, see bvit_tables.c */
extern const uint16_t bvit_exp2_q14[256]; /* spec §0.2 */
/* bvit_trit5[b][k] = trit k of byte b (-1, 0, +1); bytes 243..255 decode as zeros */
extern const int8_t bvit_trit5[256][5];

/* ---------------------------------------------------------------- §1-2 */

/* (x + 2^(s-1)) >> s, 1 <= s <= 31 (spec §1); computed without overflow. */
static inline int32_t bvit_rshift_round(int32_t x, int32_t s)
{
    return ((x >> (s - 1)) + 1) >> 1;
}

/*
 * clamp(rshift_round(x * M, shift), lo, hi), exactly, for any int32 x,
 * 0 <= M < 2^15, 1 <= shift <= 62, -32768 <= lo <= hi <= 32767.
 * 32-bit arithmetic only, except for one case that spec-conforming parameters
 * never reach (shift <= 15 with 0 < M < 2^14 and |x| >= 2^16: int64).
 * The spec §2.1 requant (sat8/sat16) and the softmax exponent (§9.2) use it.
 */
int32_t bvit_mul_shift_sat(int32_t x, int32_t M, int32_t shift, int32_t lo, int32_t hi);

/* The same, inline (see requant.c for the derivation). */
static inline int32_t bvit_mul_shift_sat_inline(int32_t x, int32_t M, int32_t shift,
                                                int32_t lo, int32_t hi)
{
    int32_t r;
    if (shift >= 16) {
        int32_t y = (x >> 15) * M + (int32_t)((((uint32_t)x & 0x7FFFu) * (uint32_t)M) >> 15);
        int32_t k1 = shift - 16;
        r = ((y >> (k1 > 31 ? 31 : k1)) + 1) >> 1;
    } else {
        return bvit_mul_shift_sat(x, M, shift, lo, hi);
    }
    return r < lo ? lo : (r > hi ? hi : r);
}

/* requant of a vector of accumulators (spec §2.1) to int8 or int16. */
void bvit_requant_i8(const int32_t *acc, size_t n, const int16_t *M, const uint8_t *shift,
                     int per_row, int8_t *out);
void bvit_requant_i16(const int32_t *acc, size_t n, const int16_t *M, const uint8_t *shift,
                      int per_row, int16_t *out);

/* ---------------------------------------------------------------- §4 trits */

/* Bytes per packed row of n trits: ceil(n / 5), for n <= 81915 (the checked layer keeps
 * n <= 65535): floor(m / 5) = (m * 52429) >> 18 for every m < 81920 (checked exhaustively;
 * the product stays below 2^32), so no division (a library call on Cortex-M0+). */
static inline size_t bvit_packed_row_bytes(size_t n)
{
    return (size_t)((((uint32_t)n + 4u) * 52429u) >> 18);
}

/*
 * Validate a packed matrix (spec §4): every byte <= 242 and every padding trit
 * (positions >= n in a row's last byte) zero.  Returns -1 if valid, else the index
 * of the first offending byte.
 */
long bvit_check_trits(const uint8_t *packed, size_t rows, size_t n);

/* Unpack to rows*n int8 trits, row-major.  Same return value as bvit_check_trits;
 * on error the output is partially written. */
long bvit_unpack_trits(const uint8_t *packed, size_t rows, size_t n, int8_t *out);

/* ---------------------------------------------------------------- §5 ternary */

/* acc[r] = sum_i t_ri x_i, the plain form (spec §5.1), straight from packed trits,
 * one row at a time, each trit applied as it is decoded (the "naive" loop of the
 * benchmark).  n <= 65535. */
void bvit_ternary_matvec_i8(const uint8_t *packed, size_t rows, size_t n, const int8_t *x,
                            int32_t *acc);
void bvit_ternary_matvec_i16(const uint8_t *packed, size_t rows, size_t n, const int16_t *x,
                             int32_t *acc);

/*
 * The lookup-table form (spec §5.2): per group g of 5 inputs a table of the 243
 * partial sums, then one lookup per packed byte.  `tables` is caller scratch of
 * BVIT_LUT_ENTRIES int32; the groups are processed in chunks of BVIT_LUT_GROUPS.
 * Equal to the plain form for all inputs.
 */
void bvit_ternary_matvec_lut_i8(const uint8_t *packed, size_t rows, size_t n, const int8_t *x,
                                int32_t *acc, int32_t *tables);
void bvit_ternary_matvec_lut_i16(const uint8_t *packed, size_t rows, size_t n,
                                 const int16_t *x, int32_t *acc, int32_t *tables);

/* Build the tables of groups [g0, g0 + count) of x (zero past n; count <=
 * BVIT_LUT_GROUPS): digit sums T_g[b] = sum_k d_k x_{5g+k} (d = trit + 1), group 0's
 * minus the sum of the chunk's inputs, so that a row's lookups add up to its part of
 * sum_i t_i x_i directly. */
void bvit_lut_build_i16(const int16_t *x, size_t n, size_t g0, size_t count, int32_t *tables);
void bvit_lut_build_i8(const int8_t *x, size_t n, size_t g0, size_t count, int32_t *tables);
void bvit_lut_build_i32(const int32_t *x, size_t n, size_t g0, size_t count, int32_t *tables);
/* One group's column (p = tables + g): s0 + digit sums, from x0 and the steps
 * {x1, x2 - 2x1, x3 - 3x2 (after the d2 steps), x4 - 3x3} (lut.c); returns x0 + .. + x4. */
int32_t bvit_lut_group(int32_t *p, int32_t s0, int32_t x0, const int32_t *steps);
/* acc[r] (+)= sum_{g < count} tables[q[r * stride + g] * BVIT_LUT_GROUPS + g], r < rows,
 * 1 <= count <= BVIT_LUT_GROUPS: "=" for the first chunk, "+=" with accumulate. */
void bvit_lut_rows(const uint8_t *q, size_t stride, size_t count, size_t rows,
                   const int32_t *tables, int accumulate, int32_t *acc);
/* h_r = requant16(acc_r, M_r, shift_r) in place (int16 values in int32); returns a
 * bound of max|h| (at most max|h| + 1). */
int32_t bvit_requant_q16_inplace(int32_t *acc, size_t rows, const int16_t *M,
                                 const uint8_t *shift, int per_row);
/* BVIT_LUT_GROUPS * 4 and 2^13, as variables (see ternary.c, expert.c) */
extern const uint32_t bvit_lut_row_bytes;
extern const int32_t bvit_q13_round;

/*
 * Ternary linear (spec §5.3): y_r = requant(acc_r + bias_r, M_r, shift_r) to int8 or
 * int16 (out_bits 8 or 16, out points to int8_t or int16_t).  bias may be NULL.
 * x int8 (x_bits 8) or int16 (16).  With tables (BVIT_LUT_ENTRIES int32 of scratch)
 * the LUT form is used, else (NULL) the plain form; acc (rows int32 of scratch, needed
 * by the LUT form when ceil(n/5) > BVIT_LUT_GROUPS, else may be NULL).  acc + bias wraps
 * modulo 2^32 where the reference would raise OverflowError.
 */
void bvit_ternary_linear(const uint8_t *packed, size_t rows, size_t n, const void *x,
                         int x_bits, const int32_t *bias, const int16_t *M,
                         const uint8_t *shift, int per_row, void *out, int out_bits,
                         int32_t *tables, int32_t *acc);

/* ---------------------------------------------------------------- §6 butterfly */

/* (cos, sin) Q14 of a uint16 phase (spec §6.2). */
void bvit_sincos_q14(uint16_t phase, int16_t *cos_out, int16_t *sin_out);
/* The same for count phases. */
void bvit_sincos_q14_vec(const uint16_t *phase, size_t count, int16_t *cos_out,
                         int16_t *sin_out);

/* Stage l of the Q14 butterfly (spec §6.3), in place on v[0..n_pad); cos/sin point
 * at the stage's n_pad/2 values. */
void bvit_butterfly_stage(int16_t *v, size_t n_pad, unsigned l, const int16_t *cos_q14,
                          const int16_t *sin_q14);

/* Stages 0..n_stages-1 in order; cos/sin stage-major (stage l at l * n_pad/2). */
void bvit_butterfly(int16_t *v, size_t n_pad, unsigned n_stages, const int16_t *cos_q14,
                    const int16_t *sin_q14);

/* The same with cos/sin computed from uint16 phases per rotation (no table). */
void bvit_butterfly_phase(int16_t *v, size_t n_pad, unsigned n_stages,
                          const uint16_t *phase);

/* The same with the phases read little-endian from raw bytes (as in a model file). */
void bvit_butterfly_phase_raw(int16_t *v, size_t n_pad, unsigned n_stages, const uint8_t *raw);

/* ---------------------------------------------------------------- attention products, board backend (attn.c) */

/* out[j] = sum_c q[c] k[j * stride + c], j < n, c < hd (int8) */
void bvit_attn_scores(const int8_t *q, const int8_t *k, size_t stride, size_t n, size_t hd,
                      int32_t *out);
/* out[c] = sum_j p[j] v[j * stride + c], c < hd (p Q15 in int32, v int8) */
void bvit_attn_pv(const int32_t *p, size_t n, const int8_t *v, size_t stride, size_t hd,
                  int32_t *out);

/* ---------------------------------------------------------------- §7 int8 linear */

/* acc[o] = sum_i w[o*n + i] x[i] + bias[o] (bias may be NULL), int32 (spec §7).
 * n <= 65535; the bias add wraps modulo 2^32 where the reference raises. */
void bvit_linear_acc(const int8_t *x, size_t n, const int8_t *w, size_t out_n,
                     const int32_t *bias, int32_t *acc);

/* y[o] = requant(acc[o], M_o, shift_o) to int8 (out_bits 8) or int16 (16). */
void bvit_linear(const int8_t *x, size_t n, const int8_t *w, size_t out_n, const int32_t *bias,
                 const int16_t *M, const uint8_t *shift, int per_row, void *out, int out_bits);

/* ---------------------------------------------------------------- §8 LayerNorm */

/* floor(sqrt(u)), the digit-by-digit algorithm of spec §8.2. */
uint32_t bvit_isqrt32(uint32_t u);

/* One token: int8 (x_bits 8) or int16 (16) x of d <= 1024 elements -> int8 y.
 * G int32 (|G| < 2^15), B int32 (|B| < 2^30), 1 <= shift <= 30, 0 <= E < 2^40. */
void bvit_layernorm(const void *x, int x_bits, size_t d, const int32_t *G, const int32_t *B,
                    int32_t shift, int64_t E, int8_t *y);

/* ---------------------------------------------------------------- §9 softmax */

/* Q15 probabilities of n int32 logits (|L| < 2^30, 1 <= n <= 16384) (spec §9). */
void bvit_softmax(const int32_t *L, size_t n, int32_t M, int32_t shift, uint16_t *p);

/* ---------------------------------------------------------------- §10-13 */

void bvit_relu_i8(int8_t *v, size_t n);
void bvit_relu_i16(int16_t *v, size_t n);
void bvit_relu_i32(int32_t *v, size_t n);

/* z = sat(rshift_round(a Ma + b Mb, shift)) (spec §10.2); a, b int8 or int16
 * (in_bits), z int8 or int16 (out_bits); 0 <= Ma, Mb < 2^15, 1 <= shift <= 62. */
void bvit_residual_add(const void *a, const void *b, int in_bits, size_t n, int32_t Ma,
                       int32_t Mb, int32_t shift, void *z, int out_bits);

/* idx[0..k) = indices of the k largest L, largest first, ties to the lower index
 * (spec §11.1).  1 <= k <= n. */
void bvit_topk(const int32_t *L, size_t n, size_t k, uint16_t *idx);

/*
 * Attention core (spec §12) on a (N, 3*dim) int8 qkv buffer (q, k, v of each token
 * side by side): out (N, dim) int8.  Per head h: score multiplier (sM[h], sshift[h]),
 * output requant (oM[h], oshift[h]) (per_head 0: index 0 for every head).  Scratch:
 * scores N int32, probs N uint16.  hd = dim / heads, hd * 2^14 < 2^30, N <= 16384.
 */
void bvit_attention(const int8_t *qkv, size_t N, size_t dim, size_t heads, const int16_t *sM,
                    const uint8_t *sshift, const int16_t *oM, const uint8_t *oshift,
                    int per_head, int8_t *out, int32_t *scores, uint16_t *probs);

/* y_i = requant(sum_t x_ti, M, shift) over N tokens of d values (spec §13). */
void bvit_mean_pool(const void *x, int x_bits, size_t N, size_t d, int32_t M, int32_t shift,
                    void *y, int out_bits);

/* out_i = sat16(rshift_round(sum_j g_j h[j * f + i], 15)), j < k (spec §15 step 4);
 * sum_j g_j <= 32768 + k. */
void bvit_mix(const int16_t *h, size_t k, size_t f, const uint16_t *g, int16_t *out);

/* ---------------------------------------------------------------- §15 expert */

/* Rotation tables: rot[2i] = cos, rot[2i + 1] = sin (Q14, int32) of phase[i]. */
void bvit_rot_expand(const uint16_t *phase, size_t count, int32_t *rot);
/* The same with the phases read little-endian from raw bytes at any address. */
void bvit_rot_expand_raw(const uint8_t *raw, size_t count, int32_t *rot);

/*
 * The Q14 butterfly on int32 storage holding int16 values (identical results to
 * bvit_butterfly), rotation tables from bvit_rot_expand, stage-major (stage l at
 * rot + l * n_pad).  bound: an upper bound of max|v| on entry (32768 if unknown);
 * it only selects loops without saturation checks where none can saturate.
 */
void bvit_butterfly32(int32_t *v, size_t n_pad, unsigned n_stages, const int32_t *rot,
                      int32_t bound);

/*
 * One butterfly expert on one token (spec §15 step 4): u = x * 2^P zero-padded to
 * n_pad_in; u = B(phi) u; acc = T_in u[0..dim) (LUT form); h_r = requant16(acc_r,
 * M_r, shift_r) zero-padded to n_pad_out; out = relu(B(theta) h)[0..ffn).
 * phi_rot: n_stages * n_pad_in int32, theta_rot: n_stages * n_pad_out int32 (from
 * bvit_rot_expand of the n_stages * n_pad/2 phases).  Scratch: work_in n_pad_in
 * int32, work_out n_pad_out int32, tables BVIT_LUT_ENTRIES int32.
 * 128 * 2^P <= 16384 (P <= 7).
 */
typedef struct {
    size_t dim, ffn, n_pad_in, n_pad_out;
    unsigned n_stages, P;
    const int32_t *phi_rot, *theta_rot;
    const uint8_t *packed; /* ffn x dim trits */
    const int16_t *M;
    const uint8_t *shift;
    int per_row;
} bvit_expert_t;

void bvit_expert_forward(const bvit_expert_t *e, const int8_t *x, int16_t *out,
                         int32_t *work_in, int32_t *work_out, int32_t *tables);

/* ---------------------------------------------------------------- whole layers (layers.c)
 *
 * The steps of docs/integer-model.md for every token at once, as the board's native
 * backend runs them.  Weight pointers (w, bias, phases, trit rows) may point into the
 * model file's bytes at any address. */

/* y[t] = LayerNorm(x[t]) (spec §8) of n tokens of d int16 values; G int16, B int32;
 * G32: d int32 of scratch. */
void bvit_layernorm_tokens(const int16_t *x, size_t n, size_t d, const int16_t *G,
                           const int32_t *B, int32_t shift, int64_t E, int32_t *G32, int8_t *y);

enum { BVIT_OUT_I8 = 8, BVIT_OUT_I16 = 16, BVIT_OUT_RESIDUAL16 = 17, BVIT_OUT_I32 = 32 };

/* acc = W x_t (+ bias) for every token t of an int8 linear layer (spec §7), W rows x d_in
 * int8 at any address; bias NULL or int32 little-endian bytes, token t's at bias +
 * 4 * t * bias_stride (bias_stride 0: one bias for all).  mode: BVIT_OUT_I32 the
 * accumulators; BVIT_OUT_I8 / _I16 requant(acc, M_r, shift_r) to int8 / int16;
 * BVIT_OUT_RESIDUAL16 z = sat16(rshift_round(z Ma + requant16(acc) Mb, res_shift))
 * (spec §10.2) in place.  Token t's outputs at out[o0 + t * out_stride + r].
 * Scratch: y rows int16 (residual mode), acc rows int32. */
typedef struct {
    size_t n, d_in, rows, o0, out_stride, bias_stride;
    const int8_t *w;
    const uint8_t *bias;
    const int16_t *M;
    const uint8_t *shift;
    int mode;
    int32_t Ma, Mb, res_shift;
} bvit_linear_tokens_t;

void bvit_linear_tokens(const bvit_linear_tokens_t *p, const int8_t *x, void *out,
                        int16_t *y, int32_t *acc);

#define BVIT_ROUTE_MAX_K 16

/* Routing (spec §11) of the grid x grid tokens of a (n x d int8): router logits (W, E x d
 * int8, no bias), summed over the 4-neighbours when smooth, top-k experts into idx
 * (n x k) and their Q15 gates into gates (n x k); gate multiplier i for sums of 1, 3, 4,
 * 5 logits.  ring: (smooth ? 3 : 1) * grid * E int32 of scratch (logits one grid row
 * ahead); srow: E int32.  k <= BVIT_ROUTE_MAX_K. */
typedef struct {
    size_t grid, d, E, k;
    int smooth;
    const int8_t *w;
    int32_t gate_M[4], gate_shift[4];
} bvit_route_t;

void bvit_route_tokens(const bvit_route_t *p, const int8_t *a, int32_t *ring, int32_t *srow,
                       uint16_t *idx, int32_t *gates);

/* The butterfly expert layer (spec §15 steps 10-16) of n tokens: each token's k experts
 * (bvit_expert_forward), their gated mixture (bvit_mix), the shared ternary W_out with
 * bias and requantisation to int16, and the residual add into x (n x d int16).
 * phi / theta: every expert's phases, little-endian uint16 (expert e's n_stages *
 * n_pad / 2 at byte 2 e n_stages n_pad / 2); w_in f x ceil(d/5), w_out d x ceil(f/5)
 * trit rows (§4).  k <= BVIT_ROUTE_MAX_K. */
typedef struct {
    size_t n, d, f, n_pad_in, n_pad_out, k;
    unsigned n_stages, P;
    const uint8_t *phi, *theta, *w_in, *w_out;
    const int16_t *in_M, *out_M;
    const uint8_t *in_shift, *out_shift;
    const int32_t *out_B;
    int32_t Ma, Mb, res_shift;
} bvit_ffn_t;

/* Scratch of bvit_ffn_tokens.  rot: `slots` experts' rotation tables, n_stages *
 * (n_pad_in + n_pad_out) int32 each: an expert's phases are expanded when no slot holds
 * them, the tokens are run sorted by their experts and a token's cached experts first,
 * so that few phases are expanded twice; more slots, fewer expansions. */
typedef struct {
    int32_t *tables;             /* BVIT_LUT_ENTRIES */
    int32_t *work_in, *work_out; /* n_pad_in, n_pad_out */
    int32_t *acc;                /* d */
    int32_t *rot;                /* slots * n_stages * (n_pad_in + n_pad_out) */
    size_t slots;                /* >= 1 */
    int32_t *slot_expert;        /* slots */
    uint32_t *slot_used;         /* slots */
    int16_t *h, *m, *y;          /* k * f, f, d */
    uint16_t *order;             /* n: the order the tokens are run in */
} bvit_ffn_scratch_t;

void bvit_ffn_tokens(const bvit_ffn_t *p, const int8_t *a, const uint16_t *idx,
                     const int32_t *gates, int16_t *x, bvit_ffn_scratch_t *s);

#ifdef __cplusplus
}
#endif

#endif /* BVIT_KERNELS_H */
