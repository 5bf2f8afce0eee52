/*
 * bvitnative.c - the MicroPython binding of the butterflyvit kernels: module `bvitnative`.
 *
 * A thin map from MicroPython objects to the checked C layer (kernels/bvit_api.h): buffers
 * come through the buffer protocol (bytes, bytearray, array.array, memoryview), ints
 * through mp_obj_get_int, and every check (types, lengths, shapes, ranges) is made in
 * bvit_api.c, whose message becomes a TypeError or ValueError here.  Outputs are
 * caller-provided buffers, written in place and returned; nothing is allocated except
 * the tuple of sincos_q14 and the exceptions.  The Python API is documented in
 * docs/native.md; names and argument order follow device/bvit/kernels.py.
 *
 * Documented MicroPython C API only: mp_get_buffer_raise, mp_obj_get_int,
 * MP_DEFINE_CONST_FUN_OBJ_*, MP_REGISTER_MODULE.
 */
#include <string.h>

#include "py/runtime.h"
#include "py/binary.h"
#include "py/objtuple.h"

#include "kernels/bvit_api.h"

/* ---------------------------------------------------------------- argument helpers */

/* bytearray's buffer reports typecode BYTEARRAY_TYPECODE (1); 'l'/'L' are int32 where long
 * has 4 bytes; any other typecode passes through for bvit_api.c to refuse. */
static int map_typecode(int tc)
{
    if (tc == BYTEARRAY_TYPECODE) {
        return 'B';
    }
    if ((tc == 'l' || tc == 'L') && mp_binary_get_size('@', tc, NULL) == 4) {
        return tc == 'l' ? 'i' : 'I';
    }
    return tc;
}

static void get_buf(mp_obj_t o, bvit_buf_t *b, bool write)
{
    mp_buffer_info_t info;
    if (o == mp_const_none) {
        b->buf = NULL;
        b->len = 0;
        b->type = 0;
        return;
    }
    mp_get_buffer_raise(o, &info, write ? MP_BUFFER_RW : MP_BUFFER_READ);
    b->buf = info.buf;
    b->len = info.len;
    b->type = map_typecode(info.typecode);
}

static void get_mult(mp_obj_t M, mp_obj_t shift, bvit_mult_t *m)
{
    if (mp_obj_is_int(M) && mp_obj_is_int(shift)) {
        m->is_buffer = 0;
        m->M = mp_obj_get_int(M);
        m->shift = mp_obj_get_int(shift);
        return;
    }
    if (mp_obj_is_int(M) || mp_obj_is_int(shift)) {
        mp_raise_TypeError(MP_ERROR_TEXT("M and shift must both be ints or both arrays"));
    }
    m->is_buffer = 1;
    get_buf(M, &m->Mb, false);
    get_buf(shift, &m->shiftb, false);
}

static long get_long(mp_obj_t o)
{
    return (long)mp_obj_get_int(o);
}

static void check(const char *msg)
{
    if (msg != NULL) {
        mp_raise_msg_varg(msg[0] == 'T' ? &mp_type_TypeError : &mp_type_ValueError,
                          MP_ERROR_TEXT("%s"), msg + 1);
    }
}

/* trit errors worded as device/bvit/kernels.py: the offending byte's value */
static void check_at(const char *msg, long where, const bvit_buf_t *packed)
{
    if (msg != NULL && where >= 0 && msg[0] == 'V' && strstr(msg, "byte value") != NULL) {
        mp_raise_msg_varg(&mp_type_ValueError,
                          MP_ERROR_TEXT("packed trits: byte value %d is not valid (0..242)"),
                          (int)((const uint8_t *)packed->buf)[where]);
    }
    check(msg);
}

/* ---------------------------------------------------------------- trits, ternary */

// check_trits(packed, rows, n)
static mp_obj_t mod_check_trits(mp_obj_t packed_in, mp_obj_t rows_in, mp_obj_t n_in)
{
    bvit_buf_t p;
    long where = -1;
    const char *msg;
    get_buf(packed_in, &p, false);
    msg = bvit_api_check_trits(&p, get_long(rows_in), get_long(n_in), &where);
    check_at(msg, where, &p);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(check_trits_obj, mod_check_trits);

// unpack_trits(packed, rows, n, out)
static mp_obj_t mod_unpack_trits(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, out;
    long where = -1;
    const char *msg;
    (void)n_args;
    get_buf(args[0], &p, false);
    get_buf(args[3], &out, true);
    msg = bvit_api_unpack_trits(&p, get_long(args[1]), get_long(args[2]), &out, &where);
    check_at(msg, where, &p);
    return args[3];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(unpack_trits_obj, 4, 4, mod_unpack_trits);

// ternary_matvec(packed, rows, n, x, out)
static mp_obj_t mod_ternary_matvec(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, x, out;
    (void)n_args;
    get_buf(args[0], &p, false);
    get_buf(args[3], &x, false);
    get_buf(args[4], &out, true);
    check(bvit_api_ternary_matvec(&p, get_long(args[1]), get_long(args[2]), &x, &out));
    return args[4];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ternary_matvec_obj, 5, 5, mod_ternary_matvec);

// ternary_matvec_lut(packed, rows, n, x, out, table)
static mp_obj_t mod_ternary_matvec_lut(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, x, out, table;
    (void)n_args;
    get_buf(args[0], &p, false);
    get_buf(args[3], &x, false);
    get_buf(args[4], &out, true);
    get_buf(args[5], &table, true);
    check(bvit_api_ternary_matvec_lut(&p, get_long(args[1]), get_long(args[2]), &x, &out,
                                      &table));
    return args[4];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ternary_matvec_lut_obj, 6, 6, mod_ternary_matvec_lut);

// ternary_linear(packed, rows, n, x, M, shift, bias, out, table=None, acc=None)
static mp_obj_t mod_ternary_linear(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, x, bias, out, table, acc;
    bvit_mult_t m;
    get_buf(args[0], &p, false);
    get_buf(args[3], &x, false);
    get_mult(args[4], args[5], &m);
    get_buf(args[6], &bias, false);
    get_buf(args[7], &out, true);
    get_buf(n_args > 8 ? args[8] : mp_const_none, &table, true);
    get_buf(n_args > 9 ? args[9] : mp_const_none, &acc, true);
    check(bvit_api_ternary_linear(&p, get_long(args[1]), get_long(args[2]), &x, &m, &bias, &out,
                                  &table, &acc));
    return args[7];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ternary_linear_obj, 8, 10, mod_ternary_linear);

/* ---------------------------------------------------------------- requantisation */

// rshift_round(x, s)
static mp_obj_t mod_rshift_round(mp_obj_t x_in, mp_obj_t s_in)
{
    long r = 0;
    check(bvit_api_rshift_round(get_long(x_in), get_long(s_in), &r));
    return mp_obj_new_int((mp_int_t)r);
}
static MP_DEFINE_CONST_FUN_OBJ_2(rshift_round_obj, mod_rshift_round);

// requant(acc, M, shift, lo=-128, hi=127)
static mp_obj_t mod_requant(size_t n_args, const mp_obj_t *args)
{
    long r = 0;
    long lo = n_args > 3 ? get_long(args[3]) : -128;
    long hi = n_args > 4 ? get_long(args[4]) : 127;
    check(bvit_api_requant(get_long(args[0]), get_long(args[1]), get_long(args[2]), lo, hi, &r));
    return mp_obj_new_int((mp_int_t)r);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(requant_obj, 3, 5, mod_requant);

// requant_into(acc, M, shift, out)
static mp_obj_t mod_requant_into(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t acc, out;
    bvit_mult_t m;
    (void)n_args;
    get_buf(args[0], &acc, false);
    get_mult(args[1], args[2], &m);
    get_buf(args[3], &out, true);
    check(bvit_api_requant_vec(&acc, &m, &out));
    return args[3];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(requant_into_obj, 4, 4, mod_requant_into);

/* ---------------------------------------------------------------- butterfly */

// sincos_q14(phase) -> (cos, sin)
static mp_obj_t mod_sincos_q14(mp_obj_t phase_in)
{
    mp_int_t ph = mp_obj_get_int(phase_in);
    int16_t c, s;
    mp_obj_t items[2];
    if (ph < 0 || ph > 65535) {
        mp_raise_ValueError(MP_ERROR_TEXT("phase must be in 0..65535"));
    }
    bvit_sincos_q14((uint16_t)ph, &c, &s);
    items[0] = MP_OBJ_NEW_SMALL_INT(c);
    items[1] = MP_OBJ_NEW_SMALL_INT(s);
    return mp_obj_new_tuple(2, items);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sincos_q14_obj, mod_sincos_q14);

// sincos(phases, cos, sin)
static mp_obj_t mod_sincos(mp_obj_t ph_in, mp_obj_t cos_in, mp_obj_t sin_in)
{
    bvit_buf_t ph, c, s;
    get_buf(ph_in, &ph, false);
    get_buf(cos_in, &c, true);
    get_buf(sin_in, &s, true);
    check(bvit_api_sincos(&ph, &c, &s));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(sincos_obj, mod_sincos);

// butterfly_stage(v, cos, sin, l, n_pad)
static mp_obj_t mod_butterfly_stage(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t v, c, s;
    (void)n_args;
    get_buf(args[0], &v, true);
    get_buf(args[1], &c, false);
    get_buf(args[2], &s, false);
    check(bvit_api_butterfly_stage(&v, &c, &s, get_long(args[3]), get_long(args[4])));
    return args[0];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(butterfly_stage_obj, 5, 5, mod_butterfly_stage);

// butterfly(v, cos, sin, n_stages, n_pad)
static mp_obj_t mod_butterfly(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t v, c, s;
    (void)n_args;
    get_buf(args[0], &v, true);
    get_buf(args[1], &c, false);
    get_buf(args[2], &s, false);
    check(bvit_api_butterfly(&v, &c, &s, get_long(args[3]), get_long(args[4])));
    return args[0];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(butterfly_obj, 5, 5, mod_butterfly);

// butterfly_phase(v, phases, n_stages, n_pad)
static mp_obj_t mod_butterfly_phase(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t v, ph;
    (void)n_args;
    get_buf(args[0], &v, true);
    get_buf(args[1], &ph, false);
    check(bvit_api_butterfly_phase(&v, &ph, get_long(args[2]), get_long(args[3])));
    return args[0];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(butterfly_phase_obj, 4, 4, mod_butterfly_phase);

// rot_expand(phases, rot)
static mp_obj_t mod_rot_expand(mp_obj_t ph_in, mp_obj_t rot_in)
{
    bvit_buf_t ph, rot;
    get_buf(ph_in, &ph, false);
    get_buf(rot_in, &rot, true);
    check(bvit_api_rot_expand(&ph, &rot));
    return rot_in;
}
static MP_DEFINE_CONST_FUN_OBJ_2(rot_expand_obj, mod_rot_expand);

// expert(x, P, phi_rot, theta_rot, n_stages, packed, M, shift, out, work, table)
static mp_obj_t mod_expert(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, phi, theta, p, out, work, table;
    bvit_mult_t m;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[2], &phi, false);
    get_buf(args[3], &theta, false);
    get_buf(args[5], &p, false);
    get_mult(args[6], args[7], &m);
    get_buf(args[8], &out, true);
    get_buf(args[9], &work, true);
    get_buf(args[10], &table, true);
    check(bvit_api_expert(&x, get_long(args[1]), &phi, &theta, get_long(args[4]), &p, &m, &out,
                          &work, &table));
    return args[8];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(expert_obj, 11, 11, mod_expert);

/* ---------------------------------------------------------------- linear */

// linear(x, w, bias, M, shift, out)
static mp_obj_t mod_linear(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, w, bias, out;
    bvit_mult_t m;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[1], &w, false);
    get_buf(args[2], &bias, false);
    get_mult(args[3], args[4], &m);
    get_buf(args[5], &out, true);
    check(bvit_api_linear(&x, &w, &bias, &m, &out));
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(linear_obj, 6, 6, mod_linear);

// linear_acc(x, w, bias, out)
static mp_obj_t mod_linear_acc(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, w, bias, out;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[1], &w, false);
    get_buf(args[2], &bias, false);
    get_buf(args[3], &out, true);
    check(bvit_api_linear_acc(&x, &w, &bias, &out));
    return args[3];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(linear_acc_obj, 4, 4, mod_linear_acc);

/* ---------------------------------------------------------------- LayerNorm, softmax */

// layernorm(x, G, B, shift, E, out)
static mp_obj_t mod_layernorm(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, G, B, out;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[1], &G, false);
    get_buf(args[2], &B, false);
    get_buf(args[5], &out, true);
    check(bvit_api_layernorm(&x, &G, &B, get_long(args[3]), (int64_t)mp_obj_get_int(args[4]),
                             &out));
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(layernorm_obj, 6, 6, mod_layernorm);

// softmax(logits, M, shift, out)
static mp_obj_t mod_softmax(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t L, out;
    (void)n_args;
    get_buf(args[0], &L, false);
    get_buf(args[3], &out, true);
    check(bvit_api_softmax(&L, get_long(args[1]), get_long(args[2]), &out));
    return args[3];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(softmax_obj, 4, 4, mod_softmax);

// attention(qkv, n_tokens, heads, score_M, score_shift, out_M, out_shift, out, work)
static mp_obj_t mod_attention(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t qkv, out, work;
    bvit_mult_t sm, om;
    (void)n_args;
    get_buf(args[0], &qkv, false);
    get_mult(args[3], args[4], &sm);
    get_mult(args[5], args[6], &om);
    get_buf(args[7], &out, true);
    get_buf(args[8], &work, true);
    check(bvit_api_attention(&qkv, get_long(args[1]), get_long(args[2]), &sm, &om, &out, &work));
    return args[7];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(attention_obj, 9, 9, mod_attention);

/* ---------------------------------------------------------------- elementwise */

// relu(v)
static mp_obj_t mod_relu(mp_obj_t v_in)
{
    bvit_buf_t v;
    get_buf(v_in, &v, true);
    check(bvit_api_relu(&v));
    return v_in;
}
static MP_DEFINE_CONST_FUN_OBJ_1(relu_obj, mod_relu);

// residual_add(a, b, Ma, Mb, shift, out)
static mp_obj_t mod_residual_add(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t a, b, out;
    (void)n_args;
    get_buf(args[0], &a, false);
    get_buf(args[1], &b, false);
    get_buf(args[5], &out, true);
    check(bvit_api_residual_add(&a, &b, get_long(args[2]), get_long(args[3]), get_long(args[4]),
                                &out));
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(residual_add_obj, 6, 6, mod_residual_add);

// mean_pool(x, n_tokens, M, shift, out)
static mp_obj_t mod_mean_pool(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, out;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[4], &out, true);
    check(bvit_api_mean_pool(&x, get_long(args[1]), get_long(args[2]), get_long(args[3]), &out));
    return args[4];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mean_pool_obj, 5, 5, mod_mean_pool);

// topk(logits, k, out)
static mp_obj_t mod_topk(mp_obj_t L_in, mp_obj_t k_in, mp_obj_t out_in)
{
    bvit_buf_t L, out;
    get_buf(L_in, &L, false);
    get_buf(out_in, &out, true);
    check(bvit_api_topk(&L, get_long(k_in), &out));
    return out_in;
}
static MP_DEFINE_CONST_FUN_OBJ_3(topk_obj, mod_topk);

// mix(h, gates, out)
static mp_obj_t mod_mix(mp_obj_t h_in, mp_obj_t g_in, mp_obj_t out_in)
{
    bvit_buf_t h, g, out;
    get_buf(h_in, &h, false);
    get_buf(g_in, &g, false);
    get_buf(out_in, &out, true);
    check(bvit_api_mix(&h, &g, &out));
    return out_in;
}
static MP_DEFINE_CONST_FUN_OBJ_3(mix_obj, mod_mix);

/* ---------------------------------------------------------------- the board backend
 * (device/bvit/ops.py NAMES, with device/bvit/kernels.py's arguments and results) */

// matvec8(x, x0, n, w, rows, out)
static mp_obj_t mod_matvec8(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, w, out;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[3], &w, false);
    get_buf(args[5], &out, true);
    check(bvit_api_matvec8(&x, get_long(args[1]), get_long(args[2]), &w, get_long(args[4]), &out));
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(matvec8_obj, 6, 6, mod_matvec8);

// ternary_rows(packed, p0, rows, n, x, out)
static mp_obj_t mod_ternary_rows(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, x, out;
    long where = -1, p0 = get_long(args[1]), rows = get_long(args[2]), n = get_long(args[3]);
    const char *msg;
    (void)n_args;
    get_buf(args[0], &p, false);
    get_buf(args[4], &x, false);
    get_buf(args[5], &out, true);
    msg = bvit_api_ternary_rows(&p, p0, rows, n, &x, &out, &where);
    if (msg != NULL && strstr(msg, "expected more bytes") != NULL) { /* worded as kernels.py */
        unsigned long long need = (unsigned long long)p0 +
                                  (unsigned long long)rows * (((unsigned long long)n + 4u) / 5u);
        mp_raise_msg_varg(&mp_type_ValueError,
                          MP_ERROR_TEXT("packed trits: expected %d bytes, got %d"),
                          (int)(need > 0x7FFFFFFFu ? 0x7FFFFFFFu : need), (int)p.len);
    }
    check_at(msg, where, &p);
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ternary_rows_obj, 6, 6, mod_ternary_rows);

// butterfly_ph(v, raw, b0, n_stages, n_pad)
static mp_obj_t mod_butterfly_ph(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t v, raw;
    (void)n_args;
    get_buf(args[0], &v, true);
    get_buf(args[1], &raw, false);
    check(bvit_api_butterfly_ph(&v, &raw, get_long(args[2]), get_long(args[3]), get_long(args[4])));
    return args[0];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(butterfly_ph_obj, 5, 5, mod_butterfly_ph);

// attn_scores(qkv, q0, k0, stride, n, hd, out)
static mp_obj_t mod_attn_scores(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t qkv, out;
    (void)n_args;
    get_buf(args[0], &qkv, false);
    get_buf(args[6], &out, true);
    check(bvit_api_attn_scores(&qkv, get_long(args[1]), get_long(args[2]), get_long(args[3]),
                               get_long(args[4]), get_long(args[5]), &out));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(attn_scores_obj, 7, 7, mod_attn_scores);

// attn_pv(p, n, qkv, v0, stride, hd, out)
static mp_obj_t mod_attn_pv(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t p, qkv, out;
    (void)n_args;
    get_buf(args[0], &p, false);
    get_buf(args[2], &qkv, false);
    get_buf(args[6], &out, true);
    check(bvit_api_attn_pv(&p, get_long(args[1]), &qkv, get_long(args[3]), get_long(args[4]),
                           get_long(args[5]), &out));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(attn_pv_obj, 7, 7, mod_attn_pv);

/* ---------------------------------------------------------------- whole layers */

#define MAX_PARAMS 16

/* a tuple or list of ints -> p[0..n) */
static size_t get_params(mp_obj_t o, long *p)
{
    size_t n, i;
    mp_obj_t *items;
    mp_obj_get_array(o, &n, &items);
    if (n > MAX_PARAMS) {
        mp_raise_ValueError(MP_ERROR_TEXT("too many parameters"));
    }
    for (i = 0; i < n; i++) {
        p[i] = get_long(items[i]);
    }
    return n;
}

// ln_tokens(x, n, G, B, shift, E, out, work)
static mp_obj_t mod_ln_tokens(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, G, B, out, work;
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[2], &G, false);
    get_buf(args[3], &B, false);
    get_buf(args[6], &out, true);
    get_buf(args[7], &work, true);
    check(bvit_api_ln_tokens(&x, get_long(args[1]), &G, &B, get_long(args[4]),
                             (int64_t)mp_obj_get_ll(args[5]), &out, &work));
    return args[6];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ln_tokens_obj, 8, 8, mod_ln_tokens);

// linear_tokens(x, w, bias, M, shift, out, work, params)
static mp_obj_t mod_linear_tokens(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t x, w, bias, M, shift, out, work;
    long p[MAX_PARAMS];
    size_t np = get_params(args[7], p);
    (void)n_args;
    get_buf(args[0], &x, false);
    get_buf(args[1], &w, false);
    get_buf(args[2], &bias, false);
    get_buf(args[3], &M, false);
    get_buf(args[4], &shift, false);
    get_buf(args[5], &out, true);
    get_buf(args[6], &work, true);
    check(bvit_api_linear_tokens(&x, &w, &bias, &M, &shift, &out, &work, p, np));
    return args[5];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(linear_tokens_obj, 8, 8, mod_linear_tokens);

// route(a, w, idx, gates, work, params)
static mp_obj_t mod_route(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t a, w, idx, gates, work;
    long p[MAX_PARAMS];
    size_t np = get_params(args[5], p);
    (void)n_args;
    get_buf(args[0], &a, false);
    get_buf(args[1], &w, false);
    get_buf(args[2], &idx, true);
    get_buf(args[3], &gates, true);
    get_buf(args[4], &work, true);
    check(bvit_api_route(&a, &w, &idx, &gates, &work, p, np));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(route_obj, 6, 6, mod_route);

// ffn(a, x, idx, gates, phases, trits, in_M, in_shift, out_M, out_shift, out_B, work, params)
static mp_obj_t mod_ffn(size_t n_args, const mp_obj_t *args)
{
    bvit_buf_t b[12];
    long p[MAX_PARAMS];
    size_t i, np = get_params(args[12], p);
    (void)n_args;
    for (i = 0; i < 12; i++) {
        get_buf(args[i], &b[i], i == 1 || i == 11); /* x and work are written */
    }
    check(bvit_api_ffn(&b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7], &b[8], &b[9],
                       &b[10], &b[11], p, np));
    return args[1];
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ffn_obj, 13, 13, mod_ffn);

// ffn_work_size(n, d, f, k, n_stages, slots) -> int32 elements of ffn's work buffer
static mp_obj_t mod_ffn_work_size(size_t n_args, const mp_obj_t *args)
{
    long n = bvit_api_ffn_work_size(get_long(args[0]), get_long(args[1]), get_long(args[2]),
                                    get_long(args[3]), get_long(args[4]), get_long(args[5]));
    (void)n_args;
    if (n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("ffn_work_size: sizes out of range"));
    }
    return mp_obj_new_int(n);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ffn_work_size_obj, 6, 6, mod_ffn_work_size);

/* ---------------------------------------------------------------- the module */

static const mp_rom_map_elem_t bvitnative_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_bvitnative) },
    { MP_ROM_QSTR(MP_QSTR_VERSION), MP_ROM_INT(2) },
    { MP_ROM_QSTR(MP_QSTR_LUT_ENTRIES), MP_ROM_INT(BVIT_LUT_ENTRIES) },
    { MP_ROM_QSTR(MP_QSTR_check_trits), MP_ROM_PTR(&check_trits_obj) },
    { MP_ROM_QSTR(MP_QSTR_unpack_trits), MP_ROM_PTR(&unpack_trits_obj) },
    { MP_ROM_QSTR(MP_QSTR_ternary_matvec), MP_ROM_PTR(&ternary_matvec_obj) },
    { MP_ROM_QSTR(MP_QSTR_ternary_matvec_lut), MP_ROM_PTR(&ternary_matvec_lut_obj) },
    { MP_ROM_QSTR(MP_QSTR_ternary_linear), MP_ROM_PTR(&ternary_linear_obj) },
    { MP_ROM_QSTR(MP_QSTR_rshift_round), MP_ROM_PTR(&rshift_round_obj) },
    { MP_ROM_QSTR(MP_QSTR_requant), MP_ROM_PTR(&requant_obj) },
    { MP_ROM_QSTR(MP_QSTR_requant_into), MP_ROM_PTR(&requant_into_obj) },
    { MP_ROM_QSTR(MP_QSTR_sincos_q14), MP_ROM_PTR(&sincos_q14_obj) },
    { MP_ROM_QSTR(MP_QSTR_sincos), MP_ROM_PTR(&sincos_obj) },
    { MP_ROM_QSTR(MP_QSTR_butterfly_stage), MP_ROM_PTR(&butterfly_stage_obj) },
    { MP_ROM_QSTR(MP_QSTR_butterfly), MP_ROM_PTR(&butterfly_obj) },
    { MP_ROM_QSTR(MP_QSTR_butterfly_phase), MP_ROM_PTR(&butterfly_phase_obj) },
    { MP_ROM_QSTR(MP_QSTR_rot_expand), MP_ROM_PTR(&rot_expand_obj) },
    { MP_ROM_QSTR(MP_QSTR_expert), MP_ROM_PTR(&expert_obj) },
    { MP_ROM_QSTR(MP_QSTR_linear), MP_ROM_PTR(&linear_obj) },
    { MP_ROM_QSTR(MP_QSTR_linear_acc), MP_ROM_PTR(&linear_acc_obj) },
    { MP_ROM_QSTR(MP_QSTR_layernorm), MP_ROM_PTR(&layernorm_obj) },
    { MP_ROM_QSTR(MP_QSTR_softmax), MP_ROM_PTR(&softmax_obj) },
    { MP_ROM_QSTR(MP_QSTR_attention), MP_ROM_PTR(&attention_obj) },
    { MP_ROM_QSTR(MP_QSTR_relu), MP_ROM_PTR(&relu_obj) },
    { MP_ROM_QSTR(MP_QSTR_residual_add), MP_ROM_PTR(&residual_add_obj) },
    { MP_ROM_QSTR(MP_QSTR_mean_pool), MP_ROM_PTR(&mean_pool_obj) },
    { MP_ROM_QSTR(MP_QSTR_topk), MP_ROM_PTR(&topk_obj) },
    { MP_ROM_QSTR(MP_QSTR_mix), MP_ROM_PTR(&mix_obj) },
    { MP_ROM_QSTR(MP_QSTR_NAME), MP_ROM_QSTR(MP_QSTR_native) },
    { MP_ROM_QSTR(MP_QSTR_matvec8), MP_ROM_PTR(&matvec8_obj) },
    { MP_ROM_QSTR(MP_QSTR_ternary_rows), MP_ROM_PTR(&ternary_rows_obj) },
    { MP_ROM_QSTR(MP_QSTR_ln_tokens), MP_ROM_PTR(&ln_tokens_obj) },
    { MP_ROM_QSTR(MP_QSTR_linear_tokens), MP_ROM_PTR(&linear_tokens_obj) },
    { MP_ROM_QSTR(MP_QSTR_route), MP_ROM_PTR(&route_obj) },
    { MP_ROM_QSTR(MP_QSTR_ffn), MP_ROM_PTR(&ffn_obj) },
    { MP_ROM_QSTR(MP_QSTR_ffn_work_size), MP_ROM_PTR(&ffn_work_size_obj) },
    { MP_ROM_QSTR(MP_QSTR_butterfly_ph), MP_ROM_PTR(&butterfly_ph_obj) },
    { MP_ROM_QSTR(MP_QSTR_attn_scores), MP_ROM_PTR(&attn_scores_obj) },
    { MP_ROM_QSTR(MP_QSTR_attn_pv), MP_ROM_PTR(&attn_pv_obj) },
};
static MP_DEFINE_CONST_DICT(bvitnative_globals, bvitnative_globals_table);

const mp_obj_module_t bvitnative_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&bvitnative_globals,
};

MP_REGISTER_MODULE(MP_QSTR_bvitnative, bvitnative_user_cmodule);
