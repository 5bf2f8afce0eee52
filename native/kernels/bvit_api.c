/*
 * bvit_api.c - argument checks in front of the kernels (see bvit_api.h).
 *
 * The rule: before a kernel runs, every buffer it reads or writes has been checked
 * for its element type, its alignment and its exact (or minimum) length, every size
 * and count for its range, and every parameter the arithmetic relies on (multipliers,
 * shifts, logit ranges) for the range the spec gives it.  Checks cost O(size of the
 * parameters), never O(the work).
 */
#include "bvit_api.h"

#define TRY(expr)                                                                     \
    do {                                                                              \
        const char *e_ = (expr);                                                      \
        if (e_) {                                                                     \
            return e_;                                                                \
        }                                                                             \
    } while (0)

static size_t esize(int type)
{
    switch (type) {
        case 'b':
        case 'B':
            return 1;
        case 'h':
        case 'H':
            return 2;
        case 'i':
            return 4;
        default:
            return 0;
    }
}

static int type_in(int type, const char *types)
{
    for (; *types; types++) {
        if (*types == type) {
            return 1;
        }
    }
    return 0;
}

/* element count of a checked buffer */
static size_t count(const bvit_buf_t *b)
{
    return b->len / esize(b->type);
}

/* the buffer exists, has one of the types, whole elements, and is aligned */
static const char *check_buf(const bvit_buf_t *b, const char *types, const char *type_msg)
{
    size_t es;
    if (b == NULL || b->type == 0 || !type_in(b->type, types)) {
        return type_msg;
    }
    es = esize(b->type);
    if (b->len % es) {
        return "Vbuffer length is not a whole number of elements";
    }
    if (b->len && b->buf == NULL) {
        return "Vbuffer has no data";
    }
    if (((uintptr_t)b->buf) % es) {
        return "Vbuffer is not aligned to its element size";
    }
    return NULL;
}

static int is_none(const bvit_buf_t *b)
{
    return b == NULL || b->type == 0;
}

static size_t packed_bytes(long rows, long n)
{
    return (size_t)rows * bvit_packed_row_bytes((size_t)n);
}

static const char *check_rows_n(long rows, long n)
{
    if (n < 1 || n > BVIT_API_MAX_N) {
        return "Vn must be in 1..65535";
    }
    if (rows < 1 || rows > BVIT_API_MAX_ROWS) {
        return "Vrows must be in 1..1048576";
    }
    return NULL;
}

static const char *check_packed(const bvit_buf_t *packed, long rows, long n)
{
    TRY(check_buf(packed, "B", "Tpacked trits must be bytes, bytearray or memoryview"));
    if (packed->len != packed_bytes(rows, n)) {
        return "Vpacked trits must have rows * ceil(n / 5) bytes";
    }
    return NULL;
}

/* ---------------------------------------------------------------- multipliers */

typedef struct {
    const int16_t *M;
    const uint8_t *shift;
    int per_row;
    int16_t m1;
    uint8_t s1;
} mult_view_t;

static const char *check_m_shift(long M, long shift)
{
    if (M < 0 || M > 32767) {
        return "Vmultiplier M must be in 0..32767";
    }
    if (shift < 1 || shift > 62) {
        return "Vshift must be in 1..62";
    }
    return NULL;
}

static const char *mult_view(const bvit_mult_t *m, size_t rows, mult_view_t *v)
{
    size_t i;
    if (m == NULL) {
        return "TM and shift are required";
    }
    if (!m->is_buffer) {
        TRY(check_m_shift(m->M, m->shift));
        v->m1 = (int16_t)m->M;
        v->s1 = (uint8_t)m->shift;
        v->M = &v->m1;
        v->shift = &v->s1;
        v->per_row = 0;
        return NULL;
    }
    TRY(check_buf(&m->Mb, "h", "TM must be an int or an array('h')"));
    TRY(check_buf(&m->shiftb, "Bb", "Tshift must be an int or an array('B')/bytes"));
    if (count(&m->Mb) != rows || count(&m->shiftb) != rows) {
        return "VM and shift arrays must have one value per row";
    }
    v->M = (const int16_t *)m->Mb.buf;
    v->shift = (const uint8_t *)m->shiftb.buf;
    v->per_row = 1;
    for (i = 0; i < rows; i++) {
        if (v->M[i] < 0) {
            return "Vmultiplier M must be in 0..32767";
        }
        if (v->shift[i] < 1 || v->shift[i] > 62) {
            return "Vshift must be in 1..62";
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- trits */

/* The messages of device/bvit/kernels.py; *where is the byte's index (the binding puts
 * its value into "byte value B"). */
#define MSG_BAD_BYTE "Vpacked trits: byte value is not valid (0..242)"
#define MSG_PADDING "Vpacked trits: padding trits must be zero"

static const char *trit_error(const bvit_buf_t *packed, long w, long *where)
{
    if (where) {
        *where = w;
    }
    if (w < 0) {
        return NULL;
    }
    return ((const uint8_t *)packed->buf)[w] > 242u ? MSG_BAD_BYTE : MSG_PADDING;
}

const char *bvit_api_check_trits(const bvit_buf_t *packed, long rows, long n, long *where)
{
    long w;
    TRY(check_rows_n(rows, n));
    TRY(check_packed(packed, rows, n));
    w = bvit_check_trits((const uint8_t *)packed->buf, (size_t)rows, (size_t)n);
    return trit_error(packed, w, where);
}

const char *bvit_api_unpack_trits(const bvit_buf_t *packed, long rows, long n,
                                  const bvit_buf_t *out, long *where)
{
    long w;
    TRY(check_rows_n(rows, n));
    TRY(check_packed(packed, rows, n));
    TRY(check_buf(out, "b", "Tout must be an array('b')"));
    if (count(out) != (size_t)rows * (size_t)n) {
        return "Vout must have rows * n elements";
    }
    w = bvit_unpack_trits((const uint8_t *)packed->buf, (size_t)rows, (size_t)n,
                          (int8_t *)out->buf);
    return trit_error(packed, w, where);
}

/* ---------------------------------------------------------------- ternary */

static const char *check_x(const bvit_buf_t *x, long n)
{
    TRY(check_buf(x, "bh", "Tx must be an array('b') or array('h')"));
    if (count(x) != (size_t)n) {
        return "Vx must have n elements";
    }
    return NULL;
}

static const char *check_table(const bvit_buf_t *table)
{
    TRY(check_buf(table, "i", "Ttable must be an array('i') of scratch"));
    if (count(table) < BVIT_LUT_ENTRIES) {
        return "Vtable must have at least 3328 int32 elements (256 x 13)";
    }
    return NULL;
}

const char *bvit_api_ternary_matvec(const bvit_buf_t *packed, long rows, long n,
                                    const bvit_buf_t *x, const bvit_buf_t *out)
{
    TRY(check_rows_n(rows, n));
    TRY(check_packed(packed, rows, n));
    TRY(check_x(x, n));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    if (count(out) != (size_t)rows) {
        return "Vout must have rows elements";
    }
    if (x->type == 'b') {
        bvit_ternary_matvec_i8((const uint8_t *)packed->buf, (size_t)rows, (size_t)n,
                               (const int8_t *)x->buf, (int32_t *)out->buf);
    } else {
        bvit_ternary_matvec_i16((const uint8_t *)packed->buf, (size_t)rows, (size_t)n,
                                (const int16_t *)x->buf, (int32_t *)out->buf);
    }
    return NULL;
}

const char *bvit_api_ternary_matvec_lut(const bvit_buf_t *packed, long rows, long n,
                                        const bvit_buf_t *x, const bvit_buf_t *out,
                                        const bvit_buf_t *table)
{
    TRY(check_rows_n(rows, n));
    TRY(check_packed(packed, rows, n));
    TRY(check_x(x, n));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    if (count(out) != (size_t)rows) {
        return "Vout must have rows elements";
    }
    TRY(check_table(table));
    if (x->type == 'b') {
        bvit_ternary_matvec_lut_i8((const uint8_t *)packed->buf, (size_t)rows, (size_t)n,
                                   (const int8_t *)x->buf, (int32_t *)out->buf,
                                   (int32_t *)table->buf);
    } else {
        bvit_ternary_matvec_lut_i16((const uint8_t *)packed->buf, (size_t)rows, (size_t)n,
                                    (const int16_t *)x->buf, (int32_t *)out->buf,
                                    (int32_t *)table->buf);
    }
    return NULL;
}

static const char *check_bias(const bvit_buf_t *bias, size_t rows)
{
    if (is_none(bias)) {
        return NULL;
    }
    TRY(check_buf(bias, "i", "Tbias must be None or an array('i')"));
    if (count(bias) != rows) {
        return "Vbias must have one value per output";
    }
    return NULL;
}

const char *bvit_api_ternary_linear(const bvit_buf_t *packed, long rows, long n,
                                    const bvit_buf_t *x, const bvit_mult_t *mult,
                                    const bvit_buf_t *bias, const bvit_buf_t *out,
                                    const bvit_buf_t *table, const bvit_buf_t *acc)
{
    mult_view_t mv;
    int32_t *tb = NULL, *ab = NULL;
    TRY(check_rows_n(rows, n));
    TRY(check_packed(packed, rows, n));
    TRY(check_x(x, n));
    TRY(check_buf(out, "bh", "Tout must be an array('b') or array('h')"));
    if (count(out) != (size_t)rows) {
        return "Vout must have rows elements";
    }
    TRY(check_bias(bias, (size_t)rows));
    TRY(mult_view(mult, (size_t)rows, &mv));
    if (!is_none(table)) {
        TRY(check_table(table));
        tb = (int32_t *)table->buf;
        if (bvit_packed_row_bytes((size_t)n) > BVIT_LUT_GROUPS) {
            TRY(check_buf(acc, "i", "Tacc (array('i') of rows) is needed with a table when n > 65"));
            if (count(acc) < (size_t)rows) {
                return "Vacc must have at least rows elements";
            }
            ab = (int32_t *)acc->buf;
        }
    }
    bvit_ternary_linear((const uint8_t *)packed->buf, (size_t)rows, (size_t)n, x->buf,
                        x->type == 'b' ? 8 : 16,
                        is_none(bias) ? NULL : (const int32_t *)bias->buf, mv.M, mv.shift,
                        mv.per_row, out->buf, out->type == 'b' ? 8 : 16, tb, ab);
    return NULL;
}

/* ---------------------------------------------------------------- requant */

const char *bvit_api_rshift_round(long x, long s, long *result)
{
    if (x < INT32_MIN || x > INT32_MAX) {
        return "Vx must be an int32";
    }
    if (s < 1 || s > 31) {
        return "Vs must be in 1..31";
    }
    *result = bvit_rshift_round((int32_t)x, (int32_t)s);
    return NULL;
}

const char *bvit_api_requant(long acc, long M, long shift, long lo, long hi, long *result)
{
    if (acc < INT32_MIN || acc > INT32_MAX) {
        return "Vacc must be an int32";
    }
    TRY(check_m_shift(M, shift));
    if (lo < -32768 || hi > 32767 || lo > hi) {
        return "Vlo..hi must lie within -32768..32767";
    }
    *result = bvit_mul_shift_sat((int32_t)acc, (int32_t)M, (int32_t)shift, (int32_t)lo,
                                 (int32_t)hi);
    return NULL;
}

const char *bvit_api_requant_vec(const bvit_buf_t *acc, const bvit_mult_t *mult,
                                 const bvit_buf_t *out)
{
    mult_view_t mv;
    size_t n;
    TRY(check_buf(acc, "i", "Tacc must be an array('i')"));
    TRY(check_buf(out, "bh", "Tout must be an array('b') or array('h')"));
    n = count(acc);
    if (count(out) != n) {
        return "Vout must have as many elements as acc";
    }
    TRY(mult_view(mult, n, &mv));
    if (out->type == 'b') {
        bvit_requant_i8((const int32_t *)acc->buf, n, mv.M, mv.shift, mv.per_row,
                        (int8_t *)out->buf);
    } else {
        bvit_requant_i16((const int32_t *)acc->buf, n, mv.M, mv.shift, mv.per_row,
                         (int16_t *)out->buf);
    }
    return NULL;
}

/* ---------------------------------------------------------------- butterfly */

static const char *check_sincos_out(const bvit_buf_t *c, const bvit_buf_t *s, size_t need)
{
    TRY(check_buf(c, "h", "Tcos must be an array('h')"));
    TRY(check_buf(s, "h", "Tsin must be an array('h')"));
    if (count(c) < need || count(s) < need) {
        return "Vcos and sin must have n_stages * n_pad / 2 elements";
    }
    return NULL;
}

const char *bvit_api_sincos(const bvit_buf_t *phase, const bvit_buf_t *cos_out,
                            const bvit_buf_t *sin_out)
{
    size_t n;
    TRY(check_buf(phase, "H", "Tphases must be an array('H')"));
    n = count(phase);
    TRY(check_buf(cos_out, "h", "Tcos must be an array('h')"));
    TRY(check_buf(sin_out, "h", "Tsin must be an array('h')"));
    if (count(cos_out) != n || count(sin_out) != n) {
        return "Vcos and sin must have one element per phase";
    }
    bvit_sincos_q14_vec((const uint16_t *)phase->buf, n, (int16_t *)cos_out->buf,
                        (int16_t *)sin_out->buf);
    return NULL;
}

static unsigned log2_pow2(long n_pad)
{
    unsigned k = 0;
    while (((long)1 << k) < n_pad) {
        k++;
    }
    return k;
}

static const char *check_pad_stages(const bvit_buf_t *v, long n_pad, long stages, int is_stage)
{
    TRY(check_buf(v, "h", "Tv must be an array('h')"));
    if (n_pad < 2 || n_pad > 65536 || (n_pad & (n_pad - 1))) {
        return "Vn_pad must be a power of two in 2..65536";
    }
    if (count(v) < (size_t)n_pad) {
        return "Vv must have at least n_pad elements";
    }
    if (is_stage) {
        if (stages < 0 || stages >= (long)log2_pow2(n_pad)) {
            return "Vstage l must be in 0..log2(n_pad)-1";
        }
    } else if (stages < 0 || stages > (long)log2_pow2(n_pad)) {
        return "Vn_stages must be in 0..log2(n_pad)";
    }
    return NULL;
}

const char *bvit_api_butterfly(const bvit_buf_t *v, const bvit_buf_t *cos_q14,
                               const bvit_buf_t *sin_q14, long n_stages, long n_pad)
{
    TRY(check_pad_stages(v, n_pad, n_stages, 0));
    TRY(check_sincos_out(cos_q14, sin_q14, (size_t)n_stages * (size_t)(n_pad / 2)));
    bvit_butterfly((int16_t *)v->buf, (size_t)n_pad, (unsigned)n_stages,
                   (const int16_t *)cos_q14->buf, (const int16_t *)sin_q14->buf);
    return NULL;
}

const char *bvit_api_butterfly_stage(const bvit_buf_t *v, const bvit_buf_t *cos_q14,
                                     const bvit_buf_t *sin_q14, long l, long n_pad)
{
    size_t half = (size_t)(n_pad / 2);
    TRY(check_pad_stages(v, n_pad, l, 1));
    TRY(check_sincos_out(cos_q14, sin_q14, (size_t)(l + 1) * half));
    bvit_butterfly_stage((int16_t *)v->buf, (size_t)n_pad, (unsigned)l,
                         (const int16_t *)cos_q14->buf + (size_t)l * half,
                         (const int16_t *)sin_q14->buf + (size_t)l * half);
    return NULL;
}

const char *bvit_api_butterfly_phase(const bvit_buf_t *v, const bvit_buf_t *phase,
                                     long n_stages, long n_pad)
{
    TRY(check_pad_stages(v, n_pad, n_stages, 0));
    TRY(check_buf(phase, "H", "Tphases must be an array('H')"));
    if (count(phase) < (size_t)n_stages * (size_t)(n_pad / 2)) {
        return "Vphases must have n_stages * n_pad / 2 elements";
    }
    bvit_butterfly_phase((int16_t *)v->buf, (size_t)n_pad, (unsigned)n_stages,
                         (const uint16_t *)phase->buf);
    return NULL;
}

const char *bvit_api_rot_expand(const bvit_buf_t *phase, const bvit_buf_t *rot)
{
    size_t n;
    TRY(check_buf(phase, "H", "Tphases must be an array('H')"));
    TRY(check_buf(rot, "i", "Trot must be an array('i')"));
    n = count(phase);
    if (count(rot) != 2u * n) {
        return "Vrot must have two elements (cos, sin) per phase";
    }
    bvit_rot_expand((const uint16_t *)phase->buf, n, (int32_t *)rot->buf);
    return NULL;
}

static size_t next_pow2(size_t n)
{
    size_t p = 1;
    while (p < n) {
        p <<= 1;
    }
    return p;
}

const char *bvit_api_expert(const bvit_buf_t *x, long P, const bvit_buf_t *phi_rot,
                            const bvit_buf_t *theta_rot, long n_stages,
                            const bvit_buf_t *packed, const bvit_mult_t *mult,
                            const bvit_buf_t *out, const bvit_buf_t *work,
                            const bvit_buf_t *table)
{
    bvit_expert_t e;
    mult_view_t mv;
    size_t dim, ffn, pin, pout;
    TRY(check_buf(x, "b", "Tx must be an array('b')"));
    TRY(check_buf(out, "h", "Tout must be an array('h')"));
    dim = count(x);
    ffn = count(out);
    if (dim < 2 || dim > 4096 || ffn < 2 || ffn > 4096) {
        return "Vx and out must have 2..4096 elements";
    }
    if (P < 0 || P > 7) {
        return "VP must be in 0..7";
    }
    pin = next_pow2(dim);
    pout = next_pow2(ffn);
    if (n_stages < 1 || n_stages > (long)log2_pow2((long)(pin < pout ? pin : pout))) {
        return "Vn_stages must be in 1..log2(padded size)";
    }
    TRY(check_buf(phi_rot, "i", "Tphi_rot must be an array('i') from rot_expand"));
    TRY(check_buf(theta_rot, "i", "Ttheta_rot must be an array('i') from rot_expand"));
    if (count(phi_rot) != (size_t)n_stages * pin || count(theta_rot) != (size_t)n_stages * pout) {
        return "Vphi_rot / theta_rot must have n_stages * n_pad elements (from rot_expand)";
    }
    TRY(check_rows_n((long)ffn, (long)dim));
    TRY(check_packed(packed, (long)ffn, (long)dim));
    TRY(mult_view(mult, ffn, &mv));
    TRY(check_buf(work, "i", "Twork must be an array('i') of scratch"));
    if (count(work) < pin + pout) {
        return "Vwork must have at least n_pad_in + n_pad_out elements";
    }
    TRY(check_table(table));
    e.dim = dim;
    e.ffn = ffn;
    e.n_pad_in = pin;
    e.n_pad_out = pout;
    e.n_stages = (unsigned)n_stages;
    e.P = (unsigned)P;
    e.phi_rot = (const int32_t *)phi_rot->buf;
    e.theta_rot = (const int32_t *)theta_rot->buf;
    e.packed = (const uint8_t *)packed->buf;
    e.M = mv.M;
    e.shift = mv.shift;
    e.per_row = mv.per_row;
    bvit_expert_forward(&e, (const int8_t *)x->buf, (int16_t *)out->buf, (int32_t *)work->buf,
                        (int32_t *)work->buf + pin, (int32_t *)table->buf);
    return NULL;
}

/* ---------------------------------------------------------------- linear */

static const char *check_linear(const bvit_buf_t *x, const bvit_buf_t *w,
                                const bvit_buf_t *bias, size_t out_n)
{
    size_t n;
    TRY(check_buf(x, "b", "Tx must be an array('b')"));
    TRY(check_buf(w, "b", "Tw must be an array('b')"));
    n = count(x);
    if (n < 1 || n > (size_t)BVIT_API_MAX_N) {
        return "Vx must have 1..65535 elements";
    }
    if (out_n < 1 || out_n > (size_t)BVIT_API_MAX_ROWS) {
        return "Vout must have 1..1048576 elements";
    }
    if ((unsigned long long)count(w) != (unsigned long long)n * out_n) {
        return "Vw must have len(out) * len(x) elements";
    }
    return check_bias(bias, out_n);
}

const char *bvit_api_linear(const bvit_buf_t *x, const bvit_buf_t *w, const bvit_buf_t *bias,
                            const bvit_mult_t *mult, const bvit_buf_t *out)
{
    mult_view_t mv;
    TRY(check_buf(out, "bh", "Tout must be an array('b') or array('h')"));
    TRY(check_linear(x, w, bias, count(out)));
    TRY(mult_view(mult, count(out), &mv));
    bvit_linear((const int8_t *)x->buf, count(x), (const int8_t *)w->buf, count(out),
                is_none(bias) ? NULL : (const int32_t *)bias->buf, mv.M, mv.shift, mv.per_row,
                out->buf, out->type == 'b' ? 8 : 16);
    return NULL;
}

const char *bvit_api_linear_acc(const bvit_buf_t *x, const bvit_buf_t *w,
                                const bvit_buf_t *bias, const bvit_buf_t *out)
{
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    TRY(check_linear(x, w, bias, count(out)));
    bvit_linear_acc((const int8_t *)x->buf, count(x), (const int8_t *)w->buf, count(out),
                    is_none(bias) ? NULL : (const int32_t *)bias->buf, (int32_t *)out->buf);
    return NULL;
}

/* ---------------------------------------------------------------- LayerNorm, softmax */

const char *bvit_api_layernorm(const bvit_buf_t *x, const bvit_buf_t *G, const bvit_buf_t *B,
                               long shift, int64_t E, const bvit_buf_t *out)
{
    size_t d, i;
    const int32_t *g, *b;
    TRY(check_buf(x, "bh", "Tx must be an array('b') or array('h')"));
    d = count(x);
    if (d < 1 || d > 1024) {
        return "Vx must have 1..1024 elements";
    }
    TRY(check_buf(G, "i", "TG must be an array('i')"));
    TRY(check_buf(B, "i", "TB must be an array('i')"));
    TRY(check_buf(out, "b", "Tout must be an array('b')"));
    if (count(G) != d || count(B) != d || count(out) != d) {
        return "VG, B and out must have as many elements as x";
    }
    if (shift < 1 || shift > 30) {
        return "Vshift must be in 1..30";
    }
    if (E < 0 || E >= ((int64_t)1 << 40)) {
        return "VE must be in 0..2^40-1";
    }
    g = (const int32_t *)G->buf;
    b = (const int32_t *)B->buf;
    for (i = 0; i < d; i++) {
        if (g[i] <= -32768 || g[i] >= 32768) {
            return "VG values must satisfy |G| < 2^15";
        }
        if (b[i] <= -(1L << 30) || b[i] >= (1L << 30)) {
            return "VB values must satisfy |B| < 2^30";
        }
    }
    bvit_layernorm(x->buf, x->type == 'b' ? 8 : 16, d, g, b, (int32_t)shift, E,
                   (int8_t *)out->buf);
    return NULL;
}

static const char *check_logits(const int32_t *L, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (L[i] < -(1L << 30) || L[i] >= (1L << 30)) {
            return "Vlogits must lie in -2^30..2^30-1";
        }
    }
    return NULL;
}

const char *bvit_api_softmax(const bvit_buf_t *L, long M, long shift, const bvit_buf_t *out)
{
    size_t n;
    TRY(check_buf(L, "i", "Tlogits must be an array('i')"));
    TRY(check_buf(out, "H", "Tout must be an array('H')"));
    n = count(L);
    if (n < 1 || n > 16384) {
        return "Vlogits must have 1..16384 elements";
    }
    if (count(out) != n) {
        return "Vout must have as many elements as the logits";
    }
    TRY(check_m_shift(M, shift));
    TRY(check_logits((const int32_t *)L->buf, n));
    bvit_softmax((const int32_t *)L->buf, n, (int32_t)M, (int32_t)shift, (uint16_t *)out->buf);
    return NULL;
}

const char *bvit_api_attention(const bvit_buf_t *qkv, long n_tokens, long heads,
                               const bvit_mult_t *score, const bvit_mult_t *outm,
                               const bvit_buf_t *out, const bvit_buf_t *work)
{
    size_t total, dim, hd, N;
    mult_view_t sv, ov;
    int32_t *scores;
    TRY(check_buf(qkv, "b", "Tqkv must be an array('b')"));
    TRY(check_buf(out, "b", "Tout must be an array('b')"));
    if (n_tokens < 1 || n_tokens > 16384) {
        return "Vn_tokens must be in 1..16384";
    }
    N = (size_t)n_tokens;
    total = count(qkv);
    if (total == 0 || total % (3u * N)) {
        return "Vqkv must have n_tokens * 3 * dim elements";
    }
    dim = total / (3u * N);
    if (heads < 1 || dim % (size_t)heads) {
        return "Vheads must divide dim";
    }
    hd = dim / (size_t)heads;
    if (hd > 65535u) {
        return "Vhead dimension too large";
    }
    if (count(out) != N * dim) {
        return "Vout must have n_tokens * dim elements";
    }
    TRY(mult_view(score, (size_t)heads, &sv));
    TRY(mult_view(outm, (size_t)heads, &ov));
    if (sv.per_row != ov.per_row) {
        return "Tscore and output multipliers must both be ints or both arrays";
    }
    TRY(check_buf(work, "i", "Twork must be an array('i') of scratch"));
    if (count(work) < N + (N + 1u) / 2u) {
        return "Vwork must have at least n_tokens + (n_tokens + 1) // 2 elements";
    }
    scores = (int32_t *)work->buf;
    bvit_attention((const int8_t *)qkv->buf, N, dim, (size_t)heads, sv.M, sv.shift, ov.M,
                   ov.shift, sv.per_row, (int8_t *)out->buf, scores, (uint16_t *)(scores + N));
    return NULL;
}

/* ---------------------------------------------------------------- elementwise */

const char *bvit_api_relu(const bvit_buf_t *v)
{
    TRY(check_buf(v, "bhi", "Tv must be an array('b'), array('h') or array('i')"));
    switch (v->type) {
        case 'b':
            bvit_relu_i8((int8_t *)v->buf, count(v));
            break;
        case 'h':
            bvit_relu_i16((int16_t *)v->buf, count(v));
            break;
        default:
            bvit_relu_i32((int32_t *)v->buf, count(v));
            break;
    }
    return NULL;
}

const char *bvit_api_residual_add(const bvit_buf_t *a, const bvit_buf_t *b, long Ma, long Mb,
                                  long shift, const bvit_buf_t *out)
{
    TRY(check_buf(a, "bh", "Ta must be an array('b') or array('h')"));
    TRY(check_buf(b, "bh", "Tb must be an array('b') or array('h')"));
    TRY(check_buf(out, "bh", "Tout must be an array('b') or array('h')"));
    if (a->type != b->type) {
        return "Ta and b must have the same type";
    }
    if (count(b) != count(a) || count(out) != count(a)) {
        return "Va, b and out must have the same length";
    }
    TRY(check_m_shift(Ma, shift));
    TRY(check_m_shift(Mb, shift));
    bvit_residual_add(a->buf, b->buf, a->type == 'b' ? 8 : 16, count(a), (int32_t)Ma,
                      (int32_t)Mb, (int32_t)shift, out->buf, out->type == 'b' ? 8 : 16);
    return NULL;
}

const char *bvit_api_mean_pool(const bvit_buf_t *x, long n_tokens, long M, long shift,
                               const bvit_buf_t *out)
{
    size_t d;
    TRY(check_buf(x, "bh", "Tx must be an array('b') or array('h')"));
    TRY(check_buf(out, "bh", "Tout must be an array('b') or array('h')"));
    if (n_tokens < 1 || n_tokens > 65535) {
        return "Vn_tokens must be in 1..65535";
    }
    d = count(out);
    if (d < 1 || (unsigned long long)count(x) != (unsigned long long)d * (size_t)n_tokens) {
        return "Vx must have n_tokens * len(out) elements";
    }
    TRY(check_m_shift(M, shift));
    bvit_mean_pool(x->buf, x->type == 'b' ? 8 : 16, (size_t)n_tokens, d, (int32_t)M,
                   (int32_t)shift, out->buf, out->type == 'b' ? 8 : 16);
    return NULL;
}

const char *bvit_api_topk(const bvit_buf_t *L, long k, const bvit_buf_t *out)
{
    size_t n;
    TRY(check_buf(L, "i", "Tlogits must be an array('i')"));
    TRY(check_buf(out, "H", "Tout must be an array('H')"));
    n = count(L);
    if (n < 1 || n > 65535) {
        return "Vlogits must have 1..65535 elements";
    }
    if (k < 1 || (size_t)k > n) {
        return "Vk must be in 1..len(logits)";
    }
    if (count(out) != (size_t)k) {
        return "Vout must have k elements";
    }
    bvit_topk((const int32_t *)L->buf, n, (size_t)k, (uint16_t *)out->buf);
    return NULL;
}

const char *bvit_api_mix(const bvit_buf_t *h, const bvit_buf_t *gates, const bvit_buf_t *out)
{
    size_t k, f, j;
    unsigned long gsum = 0;
    const uint16_t *g;
    TRY(check_buf(h, "h", "Th must be an array('h')"));
    TRY(check_buf(gates, "H", "Tgates must be an array('H')"));
    TRY(check_buf(out, "h", "Tout must be an array('h')"));
    k = count(gates);
    f = count(out);
    if (k < 1 || k > 64 || f < 1) {
        return "Vgates must have 1..64 elements and out at least one";
    }
    if ((unsigned long long)count(h) != (unsigned long long)k * f) {
        return "Vh must have len(gates) * len(out) elements";
    }
    g = (const uint16_t *)gates->buf;
    for (j = 0; j < k; j++) {
        gsum += g[j];
    }
    if (gsum > 32768u + k) {
        return "Vgates must sum to at most 32768 + len(gates) (Q15 softmax outputs)";
    }
    bvit_mix((const int16_t *)h->buf, k, f, g, (int16_t *)out->buf);
    return NULL;
}

/* ---------------------------------------------------------------- board backend */

static const char *check_offset(long off, long len, size_t count, const char *msg)
{
    if (off < 0 || len < 0 || (unsigned long long)off + (unsigned long long)len > count) {
        return msg;
    }
    return NULL;
}

const char *bvit_api_matvec8(const bvit_buf_t *x, long x0, long n, const bvit_buf_t *w,
                             long rows, const bvit_buf_t *out)
{
    TRY(check_buf(x, "b", "Tx must be an array('b')"));
    TRY(check_buf(w, "b", "Tw must be an array('b')"));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    if (n < 0 || n > BVIT_API_MAX_N || rows < 0 || rows > BVIT_API_MAX_ROWS) {
        return "Vn must be in 0..65535 and rows in 0..1048576";
    }
    TRY(check_offset(x0, n, count(x), "Vx[x0:x0+n] is out of range"));
    if ((unsigned long long)count(w) < (unsigned long long)rows * (unsigned long long)n) {
        return "Vw must have at least rows * n elements";
    }
    if (count(out) < (size_t)rows) {
        return "Vout must have at least rows elements";
    }
    bvit_linear_acc((const int8_t *)x->buf + x0, (size_t)n, (const int8_t *)w->buf,
                    (size_t)rows, NULL, (int32_t *)out->buf);
    return NULL;
}

/* the stream's bytes [t0/5, ceil((t0 + rows n)/5)) exist and are valid trit5 bytes */
static const char *check_stream(const bvit_buf_t *packed, long t0, long rows, long n,
                                long *where)
{
    unsigned long long end, i;
    const uint8_t *p;
    TRY(check_buf(packed, "Bb", "Tpacked trits must be bytes, bytearray, memoryview or array('b')"));
    if (t0 < 0 || n < 0 || n > BVIT_API_MAX_N || rows < 0 || rows > BVIT_API_MAX_ROWS) {
        return "Vt0 must be >= 0, n in 0..65535, rows in 0..1048576";
    }
    end = ((unsigned long long)t0 + (unsigned long long)rows * (unsigned long long)n + 4u) / 5u;
    if (end > packed->len) {
        return "Vpacked trits: expected more bytes (t0 + rows * n trits)";
    }
    p = (const uint8_t *)packed->buf;
    for (i = (unsigned long long)t0 / 5u; i < end && rows > 0 && n > 0; i++) {
        if (p[i] > 242u) {
            if (where) {
                *where = (long)i;
            }
            return MSG_BAD_BYTE;
        }
    }
    return NULL;
}

const char *bvit_api_ternary_stream(const bvit_buf_t *packed, long t0, long rows, long n,
                                    const bvit_buf_t *x, const bvit_buf_t *out, long *where)
{
    TRY(check_stream(packed, t0, rows, n, where));
    TRY(check_buf(x, "bh", "Tx must be an array('b') or array('h')"));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    if (count(x) < (size_t)n) {
        return "Vx must have at least n elements";
    }
    if (count(out) < (size_t)rows) {
        return "Vout must have at least rows elements";
    }
    if (x->type == 'b') {
        bvit_ternary_stream_i8((const uint8_t *)packed->buf, (size_t)t0, (size_t)rows, (size_t)n,
                               (const int8_t *)x->buf, (int32_t *)out->buf);
    } else {
        bvit_ternary_stream_i16((const uint8_t *)packed->buf, (size_t)t0, (size_t)rows,
                                (size_t)n, (const int16_t *)x->buf, (int32_t *)out->buf);
    }
    return NULL;
}

const char *bvit_api_stream_to_rows(const bvit_buf_t *packed, long t0, long rows, long n,
                                    const bvit_buf_t *out, long *where)
{
    TRY(check_stream(packed, t0, rows, n, where));
    TRY(check_buf(out, "B", "Tout must be a bytearray (or a writable memoryview of one)"));
    if (n < 1 || rows < 1) {
        return "Vrows and n must be at least 1";
    }
    if (out->len != packed_bytes(rows, n)) {
        return "Vout must have rows * ceil(n / 5) bytes";
    }
    bvit_stream_to_rows((const uint8_t *)packed->buf, (size_t)t0, (size_t)rows, (size_t)n,
                        (uint8_t *)out->buf);
    return NULL;
}

const char *bvit_api_butterfly_ph(const bvit_buf_t *v, const bvit_buf_t *raw, long b0,
                                  long n_stages, long n_pad)
{
    TRY(check_pad_stages(v, n_pad, n_stages, 0));
    TRY(check_buf(raw, "Bb", "Traw must be bytes, bytearray, memoryview or array('b')"));
    TRY(check_offset(b0, n_stages * n_pad, raw->len,
                     "Vraw[b0:] must hold n_stages * n_pad / 2 phases (2 bytes each)"));
    bvit_butterfly_phase_raw((int16_t *)v->buf, (size_t)n_pad, (unsigned)n_stages,
                             (const uint8_t *)raw->buf + b0);
    return NULL;
}

static const char *check_rows_at(long k0, long stride, long n, long hd, size_t len)
{
    if (k0 < 0 || stride < 0 || n < 0 || hd < 1 || hd > 65535 || n > 1048576) {
        return "Voffsets and stride must be >= 0, hd in 1..65535";
    }
    if (n > 0 && (unsigned long long)k0 + (unsigned long long)(n - 1) * (unsigned long long)stride
                 + (unsigned long long)hd > len) {
        return "Vqkv[k0 + (n-1) * stride + hd] is out of range";
    }
    return NULL;
}

const char *bvit_api_attn_scores(const bvit_buf_t *qkv, long q0, long k0, long stride, long n,
                                 long hd, const bvit_buf_t *out)
{
    TRY(check_buf(qkv, "b", "Tqkv must be an array('b')"));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    TRY(check_rows_at(k0, stride, n, hd, count(qkv)));
    TRY(check_offset(q0, hd, count(qkv), "Vqkv[q0:q0+hd] is out of range"));
    if (count(out) < (size_t)n) {
        return "Vout must have at least n elements";
    }
    bvit_attn_scores((const int8_t *)qkv->buf + q0, (const int8_t *)qkv->buf + k0, (size_t)stride,
                     (size_t)n, (size_t)hd, (int32_t *)out->buf);
    return NULL;
}

const char *bvit_api_attn_pv(const bvit_buf_t *p, long n, const bvit_buf_t *qkv, long v0,
                             long stride, long hd, const bvit_buf_t *out)
{
    const int32_t *pp;
    unsigned long long sum = 0;
    long j;
    TRY(check_buf(p, "i", "Tp must be an array('i')"));
    TRY(check_buf(qkv, "b", "Tqkv must be an array('b')"));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    TRY(check_rows_at(v0, stride, n, hd, count(qkv)));
    if (count(p) < (size_t)n || count(out) < (size_t)hd) {
        return "Vp must have at least n elements and out at least hd";
    }
    pp = (const int32_t *)p->buf;
    for (j = 0; j < n; j++) {
        if (pp[j] < 0) {
            return "Vprobabilities must be >= 0";
        }
        sum += (unsigned long long)pp[j];
    }
    if (sum > (1ull << 24)) {
        return "Vprobabilities must sum to at most 2^24 (Q15 softmax rows sum to about 32768)";
    }
    bvit_attn_pv(pp, (size_t)n, (const int8_t *)qkv->buf + v0, (size_t)stride, (size_t)hd,
                 (int32_t *)out->buf);
    return NULL;
}
