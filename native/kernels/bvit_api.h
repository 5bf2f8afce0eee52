/*
 * bvit_api.h - the checked layer between a language binding and the kernels.
 *
 * Every function takes buffers as (pointer, length in bytes, element type) and checks
 * types, lengths, shapes, alignment and parameter ranges before it calls a kernel, so
 * that no call can read or write out of bounds, whatever it is given.  It returns NULL
 * on success, else a static message whose first character says the Python exception:
 * 'T' TypeError, 'V' ValueError (the message proper starts at msg + 1).  The
 * MicroPython binding (../bvitnative.c) is a thin map from objects to these calls;
 * the host tests drive this layer directly (ctypes) under AddressSanitizer.
 *
 * Element types are the Python array typecodes: 'b' int8, 'B' uint8 (bytes,
 * bytearray), 'h' int16, 'H' uint16, 'i' int32.  A buffer with buf == NULL and
 * type 0 is "None".
 */
#ifndef BVIT_API_H
#define BVIT_API_H

#include "bvit_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    void *buf;
    size_t len; /* bytes */
    int type;   /* 'b', 'B', 'h', 'H', 'i', or 0 for None */
} bvit_buf_t;

/* A requantisation multiplier: scalars (M, shift), or per-row buffers M ('h') and
 * shift ('B' or 'b'), both given (is_buffer != 0). */
typedef struct {
    int is_buffer;
    long M, shift;
    bvit_buf_t Mb, shiftb;
} bvit_mult_t;

#define BVIT_API_MAX_N 65535L      /* inputs of a matvec or linear layer */
#define BVIT_API_MAX_ROWS 1048576L /* rows of a matvec or linear layer */

const char *bvit_api_check_trits(const bvit_buf_t *packed, long rows, long n, long *where);
const char *bvit_api_unpack_trits(const bvit_buf_t *packed, long rows, long n,
                                  const bvit_buf_t *out, long *where);
const char *bvit_api_ternary_matvec(const bvit_buf_t *packed, long rows, long n,
                                    const bvit_buf_t *x, const bvit_buf_t *out);
const char *bvit_api_ternary_matvec_lut(const bvit_buf_t *packed, long rows, long n,
                                        const bvit_buf_t *x, const bvit_buf_t *out,
                                        const bvit_buf_t *table);
const char *bvit_api_ternary_linear(const bvit_buf_t *packed, long rows, long n,
                                    const bvit_buf_t *x, const bvit_mult_t *mult,
                                    const bvit_buf_t *bias, const bvit_buf_t *out,
                                    const bvit_buf_t *table, const bvit_buf_t *acc);

const char *bvit_api_rshift_round(long x, long s, long *result);
const char *bvit_api_requant(long acc, long M, long shift, long lo, long hi, long *result);
const char *bvit_api_requant_vec(const bvit_buf_t *acc, const bvit_mult_t *mult,
                                 const bvit_buf_t *out);

const char *bvit_api_sincos(const bvit_buf_t *phase, const bvit_buf_t *cos_out,
                            const bvit_buf_t *sin_out);
const char *bvit_api_butterfly(const bvit_buf_t *v, const bvit_buf_t *cos_q14,
                               const bvit_buf_t *sin_q14, long n_stages, long n_pad);
const char *bvit_api_butterfly_stage(const bvit_buf_t *v, const bvit_buf_t *cos_q14,
                                     const bvit_buf_t *sin_q14, long l, long n_pad);
const char *bvit_api_butterfly_phase(const bvit_buf_t *v, const bvit_buf_t *phase,
                                     long n_stages, long n_pad);
const char *bvit_api_rot_expand(const bvit_buf_t *phase, const bvit_buf_t *rot);
const char *bvit_api_expert(const bvit_buf_t *x, long P, const bvit_buf_t *phi_rot,
                            const bvit_buf_t *theta_rot, long n_stages,
                            const bvit_buf_t *packed, const bvit_mult_t *mult,
                            const bvit_buf_t *out, const bvit_buf_t *work,
                            const bvit_buf_t *table);

const char *bvit_api_linear(const bvit_buf_t *x, const bvit_buf_t *w, const bvit_buf_t *bias,
                            const bvit_mult_t *mult, const bvit_buf_t *out);
const char *bvit_api_linear_acc(const bvit_buf_t *x, const bvit_buf_t *w,
                                const bvit_buf_t *bias, const bvit_buf_t *out);

const char *bvit_api_layernorm(const bvit_buf_t *x, const bvit_buf_t *G, const bvit_buf_t *B,
                               long shift, int64_t E, const bvit_buf_t *out);
const char *bvit_api_softmax(const bvit_buf_t *L, long M, long shift, const bvit_buf_t *out);
const char *bvit_api_attention(const bvit_buf_t *qkv, long n_tokens, long heads,
                               const bvit_mult_t *score, const bvit_mult_t *outm,
                               const bvit_buf_t *out, const bvit_buf_t *work);

const char *bvit_api_relu(const bvit_buf_t *v);
const char *bvit_api_residual_add(const bvit_buf_t *a, const bvit_buf_t *b, long Ma, long Mb,
                                  long shift, const bvit_buf_t *out);
const char *bvit_api_mean_pool(const bvit_buf_t *x, long n_tokens, long M, long shift,
                               const bvit_buf_t *out);
const char *bvit_api_mix(const bvit_buf_t *h, const bvit_buf_t *gates, const bvit_buf_t *out);
const char *bvit_api_topk(const bvit_buf_t *L, long k, const bvit_buf_t *out);

/* the board backend's functions (device/bvit/kernels.py signatures) */
const char *bvit_api_matvec8(const bvit_buf_t *x, long x0, long n, const bvit_buf_t *w,
                             long rows, const bvit_buf_t *out);
/* acc[r] = sum_c T[r,c] x[c], T in spec §4 rows from byte p0 (plain form) */
const char *bvit_api_ternary_rows(const bvit_buf_t *packed, long p0, long rows, long n,
                                  const bvit_buf_t *x, const bvit_buf_t *out, long *where);
const char *bvit_api_butterfly_ph(const bvit_buf_t *v, const bvit_buf_t *raw, long b0,
                                  long n_stages, long n_pad);
const char *bvit_api_attn_scores(const bvit_buf_t *qkv, long q0, long k0, long stride, long n,
                                 long hd, const bvit_buf_t *out);
const char *bvit_api_attn_pv(const bvit_buf_t *p, long n, const bvit_buf_t *qkv, long v0,
                             long stride, long hd, const bvit_buf_t *out);

/* whole layers (layers.c); integer parameters as an array p of np values, in the order
 * docs/native.md gives for the module's function of the same name */
const char *bvit_api_ln_tokens(const bvit_buf_t *x, long n, const bvit_buf_t *G,
                               const bvit_buf_t *B, long shift, int64_t E,
                               const bvit_buf_t *out, const bvit_buf_t *work);
/* p: n, d_in, rows, w0, b0, bias_stride, o0, out_stride, mode, Ma, Mb, res_shift */
const char *bvit_api_linear_tokens(const bvit_buf_t *x, const bvit_buf_t *w,
                                   const bvit_buf_t *bias, const bvit_buf_t *M,
                                   const bvit_buf_t *shift, const bvit_buf_t *out,
                                   const bvit_buf_t *work, const long *p, size_t np);
/* p: grid, d, E, k, smooth, w0, then (M, shift) of the gates for sums of 1, 3, 4, 5 */
const char *bvit_api_route(const bvit_buf_t *a, const bvit_buf_t *w, const bvit_buf_t *idx,
                           const bvit_buf_t *gates, const bvit_buf_t *work, const long *p,
                           size_t np);
/* p: n, d, f, k, n_stages, P, E, phi0, theta0, win0, wout0, Ma, Mb, res_shift */
const char *bvit_api_ffn(const bvit_buf_t *a, const bvit_buf_t *x, const bvit_buf_t *idx,
                         const bvit_buf_t *gates, const bvit_buf_t *phases,
                         const bvit_buf_t *trits, const bvit_buf_t *inM,
                         const bvit_buf_t *inS, const bvit_buf_t *outM, const bvit_buf_t *outS,
                         const bvit_buf_t *outB, const bvit_buf_t *work, const long *p,
                         size_t np);
/* int32 elements of ffn's work buffer with `slots` experts' rotation tables (-1: bad) */
long bvit_api_ffn_work_size(long n, long d, long f, long k, long n_stages, long slots);

#ifdef __cplusplus
}
#endif

#endif /* BVIT_API_H */
