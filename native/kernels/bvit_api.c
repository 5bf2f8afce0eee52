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

/* int32 elements of a scratch buffer: an array('i'), or a bytearray (4-byte aligned, as a
 * heap block is), which a board can allocate zeroed without a temporary; -1 if neither */
static long work_ints(const bvit_buf_t *w)
{
    if (w == NULL || (w->type != 'i' && w->type != 'B') || w->len % 4u ||
        ((uintptr_t)w->buf & 3u) || (w->len && w->buf == NULL)) {
        return -1;
    }
    return (long)(w->len / 4u);
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

/* LayerNorm's other parameters, one set of rules for a row (layernorm) and for tokens
   (ln_tokens): shift 1..30, E 0..2^40-1, |B| < 2^30 (the gains' rule depends on their type). */
static const char *check_ln_params(const int32_t *b, size_t d, long shift, int64_t E)
{
    size_t i;
    if (shift < 1 || shift > 30) {
        return "Vshift must be in 1..30";
    }
    if (E < 0 || E >= ((int64_t)1 << 40)) {
        return "VE must be in 0..2^40-1";
    }
    for (i = 0; i < d; i++) {
        if (b[i] <= -(1L << 30) || b[i] >= (1L << 30)) {
            return "VB values must satisfy |B| < 2^30";
        }
    }
    return NULL;
}

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
    g = (const int32_t *)G->buf;
    b = (const int32_t *)B->buf;
    for (i = 0; i < d; i++) {
        if (g[i] <= -32768 || g[i] >= 32768) {
            return "VG values must satisfy |G| < 2^15";
        }
    }
    TRY(check_ln_params(b, d, shift, E));
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
    if (work_ints(work) < (long)(N + (N + 1u) / 2u)) {
        return "Vwork must be an array('i') or bytearray of n_tokens + (n_tokens + 1) // 2 int32";
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

/* ---------------------------------------------------------------- whole layers (layers.c) */

/* per-row multipliers: M 'h' and shift 'b'/'B' with at least rows values, all in range */
static const char *check_row_mult(const bvit_buf_t *M, const bvit_buf_t *shift, size_t rows)
{
    size_t i;
    const int16_t *m;
    const uint8_t *s;
    TRY(check_buf(M, "h", "TM must be an array('h')"));
    TRY(check_buf(shift, "Bb", "Tshift must be an array('b') or bytes"));
    if (count(M) < rows || count(shift) < rows) {
        return "VM and shift must have a value per row";
    }
    m = (const int16_t *)M->buf;
    s = (const uint8_t *)shift->buf;
    for (i = 0; i < rows; i++) {
        if (m[i] < 0) {
            return "Vmultiplier M must be in 0..32767";
        }
        if (s[i] < 1 || s[i] > 62) {
            return "Vshift must be in 1..62";
        }
    }
    return NULL;
}

/* the right number of integer parameters */
static const char *check_params(const long *p, size_t np, size_t want)
{
    if (p == NULL || np != want) {
        return "Vwrong number of parameters";
    }
    return NULL;
}

static const char *check_residual(long Ma, long Mb, long shift)
{
    if (Ma < 0 || Ma > 32767 || Mb < 0 || Mb > 32767) {
        return "Vresidual multipliers must be in 0..32767";
    }
    if (shift < 1 || shift > 62) {
        return "Vresidual shift must be in 1..62";
    }
    return NULL;
}

/* a weight block of len bytes at byte off of a bytes-like buffer (any alignment) */
static const char *check_weights(const bvit_buf_t *w, long off, unsigned long long len,
                                 const char *msg)
{
    if (w == NULL || w->type != 'i') {
        TRY(check_buf(w, "Bb", "Tweights must be bytes, bytearray, memoryview or array('b')"));
    }
    if (off < 0 || (unsigned long long)off + len > w->len) {
        return msg;
    }
    return NULL;
}

const char *bvit_api_ln_tokens(const bvit_buf_t *x, long n, const bvit_buf_t *G,
                               const bvit_buf_t *B, long shift, int64_t E,
                               const bvit_buf_t *out, const bvit_buf_t *work)
{
    size_t d, i;
    const int16_t *g;
    const int32_t *b;
    TRY(check_buf(x, "h", "Tx must be an array('h')"));
    TRY(check_buf(G, "h", "TG must be an array('h')"));
    TRY(check_buf(B, "i", "TB must be an array('i')"));
    TRY(check_buf(out, "b", "Tout must be an array('b')"));
    d = count(G);
    if (d < 1 || d > 1024 || count(B) != d) {
        return "VG and B must have the same length, 1..1024";
    }
    if (n < 1 || n > 16384 || count(x) < (size_t)n * d || count(out) < (size_t)n * d) {
        return "Vx and out must hold n tokens of len(G) values, n in 1..16384";
    }
    if (work_ints(work) < (long)d) {
        return "Vwork must be an array('i') or bytearray of at least len(G) int32";
    }
    g = (const int16_t *)G->buf;
    b = (const int32_t *)B->buf;
    for (i = 0; i < d; i++) {
        if (g[i] == -32768) {
            return "VG values must satisfy |G| < 2^15";
        }
    }
    TRY(check_ln_params(b, d, shift, E));
    bvit_layernorm_tokens((const int16_t *)x->buf, (size_t)n, d, g, b, (int32_t)shift, E,
                          (int32_t *)work->buf, (int8_t *)out->buf);
    return NULL;
}

const char *bvit_api_linear_tokens(const bvit_buf_t *x, const bvit_buf_t *w,
                                   const bvit_buf_t *bias, const bvit_buf_t *M,
                                   const bvit_buf_t *shift, const bvit_buf_t *out,
                                   const bvit_buf_t *work, const long *p, size_t np)
{
    bvit_linear_tokens_t L;
    long n, d_in, rows, w0, b0, bstride, o0, ostride, mode;
    unsigned long long last;
    const char *out_types;
    TRY(check_params(p, np, 12));
    n = p[0], d_in = p[1], rows = p[2], w0 = p[3], b0 = p[4], bstride = p[5], o0 = p[6],
    ostride = p[7], mode = p[8];
    if (n < 1 || n > 16384 || d_in < 1 || d_in > 65535 || rows < 1 || rows > 65535) {
        return "Vn must be in 1..16384, d_in and rows in 1..65535";
    }
    if (mode != BVIT_OUT_I8 && mode != BVIT_OUT_I16 && mode != BVIT_OUT_RESIDUAL16 &&
        mode != BVIT_OUT_I32) {
        return "Vmode must be 8, 16, 17 (residual) or 32";
    }
    TRY(check_buf(x, "b", "Tx must be an array('b')"));
    if (count(x) < (size_t)n * (size_t)d_in) {
        return "Vx must hold n tokens of d_in values";
    }
    TRY(check_weights(w, w0, (unsigned long long)rows * (unsigned long long)d_in,
                      "Vweights: rows x d_in bytes from w0 are out of range"));
    L.bias = NULL;
    if (!is_none(bias)) {
        if (bstride < 0 || bstride > 1048576) {
            return "Vbias_stride must be in 0..1048576";
        }
        TRY(check_buf(bias, "Bbi", "Tbias must be None, an array('i') or bytes"));
        TRY(check_weights(bias, b0,
                          4ull * ((unsigned long long)bstride * (unsigned long long)(n - 1) +
                                  (unsigned long long)rows),
                          "Vbias: the tokens' int32 rows from b0 are out of range"));
        L.bias = (const uint8_t *)bias->buf + b0;
    }
    L.M = NULL;
    L.shift = NULL;
    if (mode != BVIT_OUT_I32) {
        TRY(check_row_mult(M, shift, (size_t)rows));
        L.M = (const int16_t *)M->buf;
        L.shift = (const uint8_t *)shift->buf;
    }
    out_types = mode == BVIT_OUT_I8 ? "b" : mode == BVIT_OUT_I32 ? "i" : "h";
    TRY(check_buf(out, out_types, mode == BVIT_OUT_I8 ? "Tout must be an array('b') (mode 8)"
                                  : mode == BVIT_OUT_I32 ? "Tout must be an array('i') (mode 32)"
                                                         : "Tout must be an array('h') (mode 16, 17)"));
    if (o0 < 0 || ostride < 0) {
        return "Vo0 and out_stride must be >= 0";
    }
    last = (unsigned long long)o0 + (unsigned long long)ostride * (unsigned long long)(n - 1) +
           (unsigned long long)rows;
    if (last > count(out)) {
        return "Vout is too short for n tokens at o0 + t * out_stride";
    }
    if (mode == BVIT_OUT_RESIDUAL16) {
        TRY(check_residual(p[9], p[10], p[11]));
    }
    if (work_ints(work) < rows + (rows + 1) / 2) {
        return "Vwork must be an array('i') or bytearray of at least rows + (rows + 1) // 2 int32";
    }
    L.n = (size_t)n;
    L.d_in = (size_t)d_in;
    L.rows = (size_t)rows;
    L.o0 = (size_t)o0;
    L.out_stride = (size_t)ostride;
    L.bias_stride = (size_t)bstride;
    L.w = (const int8_t *)w->buf + w0;
    L.mode = (int)mode;
    L.Ma = (int32_t)p[9];
    L.Mb = (int32_t)p[10];
    L.res_shift = (int32_t)p[11];
    bvit_linear_tokens(&L, (const int8_t *)x->buf, out->buf,
                       (int16_t *)((int32_t *)work->buf + rows), (int32_t *)work->buf);
    return NULL;
}

static const char *check_gate(long M, long s)
{
    if (M < 0 || M > 32767 || s < 1 || s > 62) {
        return "Vgate multipliers must be M in 0..32767, shift in 1..62";
    }
    return NULL;
}

const char *bvit_api_route(const bvit_buf_t *a, const bvit_buf_t *w, const bvit_buf_t *idx,
                           const bvit_buf_t *gates, const bvit_buf_t *work, const long *p,
                           size_t np)
{
    bvit_route_t R;
    long grid, d, E, k, smooth, w0;
    size_t n, ring, i;
    TRY(check_params(p, np, 14));
    grid = p[0], d = p[1], E = p[2], k = p[3], smooth = p[4], w0 = p[5];
    if (grid < 1 || grid > 128 || d < 1 || d > 65535 || E < 1 || E > 65535) {
        return "Vgrid must be in 1..128, d and E in 1..65535";
    }
    if (k < 1 || k > E || k > BVIT_ROUTE_MAX_K) {
        return "Vk must be in 1..min(E, 16)";
    }
    n = (size_t)grid * (size_t)grid;
    TRY(check_buf(a, "b", "Ta must be an array('b')"));
    if (count(a) < n * (size_t)d) {
        return "Va must hold grid * grid tokens of d values";
    }
    TRY(check_weights(w, w0, (unsigned long long)E * (unsigned long long)d,
                      "Vweights: E x d bytes from w0 are out of range"));
    TRY(check_buf(idx, "H", "Tidx must be an array('H')"));
    TRY(check_buf(gates, "i", "Tgates must be an array('i')"));
    if (count(idx) < n * (size_t)k || count(gates) < n * (size_t)k) {
        return "Vidx and gates must hold k values per token";
    }
    for (i = 0; i < 4; i++) {
        TRY(check_gate(p[6 + 2 * i], p[7 + 2 * i]));
        R.gate_M[i] = (int32_t)p[6 + 2 * i];
        R.gate_shift[i] = (int32_t)p[7 + 2 * i];
    }
    ring = (smooth ? 3u : 1u) * (size_t)grid * (size_t)E;
    if (work_ints(work) < (long)(ring + (size_t)E)) {
        return "Vwork must be an array('i') or bytearray of (3 if smooth else 1) * grid * E + E int32";
    }
    /* |logit| <= d * 128 * 128 and five of them summed stay inside the softmax's 2^30 */
    if ((unsigned long long)d * 16384ull * 5ull >= (1ull << 30)) {
        return "Vd is too large for int32 router logits";
    }
    R.grid = (size_t)grid;
    R.d = (size_t)d;
    R.E = (size_t)E;
    R.k = (size_t)k;
    R.smooth = smooth != 0;
    R.w = (const int8_t *)w->buf + w0;
    bvit_route_tokens(&R, (const int8_t *)a->buf, (int32_t *)work->buf,
                      (int32_t *)work->buf + ring, (uint16_t *)idx->buf, (int32_t *)gates->buf);
    return NULL;
}

/* bytes of bvit_ffn_tokens' fixed scratch, in int32 units; rot tables per slot after it */
static size_t ffn_fixed(size_t n, size_t d, size_t f, size_t pin, size_t pout, size_t k)
{
    size_t halves = k * f + f + d + n; /* h, m, y (int16), the token order (uint16) */
    return BVIT_LUT_ENTRIES + pin + pout + d + (halves + 1u) / 2u;
}

const char *bvit_api_ffn(const bvit_buf_t *a, const bvit_buf_t *x, const bvit_buf_t *idx,
                         const bvit_buf_t *gates, const bvit_buf_t *phases,
                         const bvit_buf_t *trits, const bvit_buf_t *inM,
                         const bvit_buf_t *inS, const bvit_buf_t *outM, const bvit_buf_t *outS,
                         const bvit_buf_t *outB, const bvit_buf_t *work, const long *p,
                         size_t np)
{
    bvit_ffn_t F;
    bvit_ffn_scratch_t S;
    long n, d, f, k, nl, P, E, phi0, theta0, win0, wout0;
    size_t pin, pout, per, fixed, slots, i, total, halves;
    const uint16_t *ix;
    const int32_t *gt;
    int32_t *w32;
    TRY(check_params(p, np, 14));
    n = p[0], d = p[1], f = p[2], k = p[3], nl = p[4], P = p[5], E = p[6];
    phi0 = p[7], theta0 = p[8], win0 = p[9], wout0 = p[10];
    if (n < 1 || n > 16384 || d < 2 || d > 4096 || f < 2 || f > 4096 || E < 1 || E > 65535) {
        return "Vn must be in 1..16384, d and f in 2..4096, E in 1..65535";
    }
    if (k < 1 || k > E || k > BVIT_ROUTE_MAX_K) {
        return "Vk must be in 1..min(E, 16)";
    }
    if (P < 0 || P > 7) {
        return "VP must be in 0..7";
    }
    pin = next_pow2((size_t)d);
    pout = next_pow2((size_t)f);
    if (nl < 1 || nl > (long)log2_pow2((long)(pin < pout ? pin : pout))) {
        return "Vn_stages must be in 1..log2(padded size)";
    }
    TRY(check_residual(p[11], p[12], p[13]));
    TRY(check_buf(a, "b", "Ta must be an array('b')"));
    TRY(check_buf(x, "h", "Tx must be an array('h')"));
    if (count(a) < (size_t)n * (size_t)d || count(x) < (size_t)n * (size_t)d) {
        return "Va and x must hold n tokens of d values";
    }
    TRY(check_buf(idx, "H", "Tidx must be an array('H')"));
    TRY(check_buf(gates, "i", "Tgates must be an array('i')"));
    if (count(idx) < (size_t)n * (size_t)k || count(gates) < (size_t)n * (size_t)k) {
        return "Vidx and gates must hold k values per token";
    }
    ix = (const uint16_t *)idx->buf;
    gt = (const int32_t *)gates->buf;
    for (i = 0; i < (size_t)n * (size_t)k; i++) {
        if (ix[i] >= E) {
            return "Vidx holds an expert >= E";
        }
        if (gt[i] < 0 || gt[i] > 32768) {
            return "Vgates must be in 0..32768";
        }
    }
    TRY(check_weights(phases, phi0,
                      (unsigned long long)E * (unsigned long long)nl * (unsigned long long)pin,
                      "Vphases: phi of every expert from phi0 are out of range"));
    TRY(check_weights(phases, theta0,
                      (unsigned long long)E * (unsigned long long)nl * (unsigned long long)pout,
                      "Vphases: theta of every expert from theta0 are out of range"));
    TRY(check_weights(trits, win0,
                      (unsigned long long)f * bvit_packed_row_bytes((size_t)d),
                      "Vtrits: w_in (f rows of ceil(d/5) bytes) from win0 is out of range"));
    TRY(check_weights(trits, wout0,
                      (unsigned long long)d * bvit_packed_row_bytes((size_t)f),
                      "Vtrits: w_out (d rows of ceil(f/5) bytes) from wout0 is out of range"));
    TRY(check_row_mult(inM, inS, (size_t)f));
    TRY(check_row_mult(outM, outS, (size_t)d));
    TRY(check_buf(outB, "i", "TB must be an array('i')"));
    if (count(outB) < (size_t)d) {
        return "VB must have d values";
    }
    per = (size_t)nl * (pin + pout);
    fixed = ffn_fixed((size_t)n, (size_t)d, (size_t)f, pin, pout, (size_t)k);
    if (work_ints(work) < 0) {
        return "Twork must be an array('i') or bytearray of scratch";
    }
    total = (size_t)work_ints(work);
    if (total < fixed + per + 2u) {
        return "Vwork is too small (ffn_work_size gives the least)";
    }
    slots = (total - fixed) / (per + 2u);
    if (slots > (size_t)E) {
        slots = (size_t)E;
    }
    w32 = (int32_t *)work->buf;
    S.tables = w32;
    S.work_in = S.tables + BVIT_LUT_ENTRIES;
    S.work_out = S.work_in + pin;
    S.acc = S.work_out + pout;
    halves = (size_t)k * (size_t)f + (size_t)f + (size_t)d + (size_t)n;
    S.h = (int16_t *)(S.acc + d);
    S.m = S.h + (size_t)k * (size_t)f;
    S.y = S.m + f;
    S.order = (uint16_t *)(S.y + d);
    S.slot_expert = S.acc + d + (halves + 1u) / 2u;
    S.slot_used = (uint32_t *)(S.slot_expert + slots);
    S.rot = (int32_t *)(S.slot_used + slots);
    S.slots = slots;
    F.n = (size_t)n;
    F.d = (size_t)d;
    F.f = (size_t)f;
    F.n_pad_in = pin;
    F.n_pad_out = pout;
    F.k = (size_t)k;
    F.n_stages = (unsigned)nl;
    F.P = (unsigned)P;
    F.phi = (const uint8_t *)phases->buf + phi0;
    F.theta = (const uint8_t *)phases->buf + theta0;
    F.w_in = (const uint8_t *)trits->buf + win0;
    F.w_out = (const uint8_t *)trits->buf + wout0;
    F.in_M = (const int16_t *)inM->buf;
    F.in_shift = (const uint8_t *)inS->buf;
    F.out_M = (const int16_t *)outM->buf;
    F.out_shift = (const uint8_t *)outS->buf;
    F.out_B = (const int32_t *)outB->buf;
    F.Ma = (int32_t)p[11];
    F.Mb = (int32_t)p[12];
    F.res_shift = (int32_t)p[13];
    bvit_ffn_tokens(&F, (const int8_t *)a->buf, ix, gt, (int16_t *)x->buf, &S);
    return NULL;
}

long bvit_api_ffn_work_size(long n, long d, long f, long k, long n_stages, long slots)
{
    size_t pin, pout;
    if (n < 1 || n > 16384 || d < 2 || d > 4096 || f < 2 || f > 4096 || k < 1 ||
        k > BVIT_ROUTE_MAX_K || n_stages < 1 || n_stages > 12 || slots < 1 || slots > 65535) {
        return -1;
    }
    pin = next_pow2((size_t)d);
    pout = next_pow2((size_t)f);
    return (long)(ffn_fixed((size_t)n, (size_t)d, (size_t)f, pin, pout, (size_t)k) +
                  (size_t)slots * ((size_t)n_stages * (pin + pout) + 2u));
}

const char *bvit_api_ternary_rows(const bvit_buf_t *packed, long p0, long rows, long n,
                                  const bvit_buf_t *x, const bvit_buf_t *out, long *where)
{
    const uint8_t *base;
    long bad;
    TRY(check_rows_n(rows, n));
    TRY(check_buf(packed, "Bb", "Tpacked trits must be bytes, bytearray, memoryview or array('b')"));
    if (p0 < 0 || (unsigned long long)p0 + (unsigned long long)packed_bytes(rows, n) > packed->len) {
        return "Vpacked trits: expected more bytes";
    }
    TRY(check_buf(x, "bh", "Tx must be an array('b') or array('h')"));
    TRY(check_buf(out, "i", "Tout must be an array('i')"));
    if (count(x) < (size_t)n) {
        return "Vx must have at least n elements";
    }
    if (count(out) < (size_t)rows) {
        return "Vout must have at least rows elements";
    }
    base = (const uint8_t *)packed->buf + p0;
    for (bad = 0; bad < (long)packed_bytes(rows, n); bad++) { /* as the Python backends: */
        if (base[bad] > 242) {                                /* bytes, not padding */
            *where = p0 + bad;
            return MSG_BAD_BYTE;
        }
    }
    if (x->type == 'b') {
        bvit_ternary_matvec_i8(base, (size_t)rows, (size_t)n, (const int8_t *)x->buf,
                               (int32_t *)out->buf);
    } else {
        bvit_ternary_matvec_i16(base, (size_t)rows, (size_t)n, (const int16_t *)x->buf,
                                (int32_t *)out->buf);
    }
    return NULL;
}
