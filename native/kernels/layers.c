/*
 * layers.c - whole steps of the integer model for every token at once
 * (docs/integer-model.md steps 1-16): what the board's native backend calls once per
 * layer, so that MicroPython keeps the per-layer bookkeeping and no per-row loop.
 * Built from the kernels of the other files; the same integers as the reference
 * (host/butterflyvit/intmodel.py).
 *
 * Weights come straight from the model file's bytes (frozen, ROMFS or a buffer), which
 * may sit at any address: int8 matrices and trit rows are read as bytes, and int32
 * values held in such bytes (the embedding's per-token bias) are read little-endian.
 */
#include "bvit_kernels.h"

static int32_t le32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24));
}

/* ---------------------------------------------------------------- LayerNorm */

void bvit_layernorm_tokens(const int16_t *x, size_t n, size_t d, const int16_t *G,
                           const int32_t *B, int32_t shift, int64_t E, int32_t *G32, int8_t *y)
{
    size_t i, t;
    for (i = 0; i < d; i++) { /* the kernel takes int32 gamma */
        G32[i] = G[i];
    }
    for (t = 0; t < n; t++) {
        bvit_layernorm(x + t * d, 16, d, G32, B, shift, E, y + t * d);
    }
}

/* ---------------------------------------------------------------- int8 linear layers */

void bvit_linear_tokens(const bvit_linear_tokens_t *p, const int8_t *x, void *out,
                        int16_t *y, int32_t *acc)
{
    size_t t, r;
    int32_t lo = p->mode == BVIT_OUT_I8 ? -128 : -32768;
    int32_t hi = p->mode == BVIT_OUT_I8 ? 127 : 32767;
    for (t = 0; t < p->n; t++) {
        const uint8_t *bias = p->bias ? p->bias + 4u * t * p->bias_stride : NULL;
        size_t o = p->o0 + t * p->out_stride;
        bvit_linear_acc(x + t * p->d_in, p->d_in, p->w, p->rows, NULL, acc);
        for (r = 0; r < p->rows; r++) {
            int32_t a = acc[r];
            if (bias) { /* wraps modulo 2^32 where the reference would raise (bounded by the loader) */
                a = (int32_t)((uint32_t)a + (uint32_t)le32(bias + 4u * r));
            }
            switch (p->mode) {
                case BVIT_OUT_I32:
                    ((int32_t *)out)[o + r] = a;
                    break;
                case BVIT_OUT_I8:
                    ((int8_t *)out)[o + r] =
                        (int8_t)bvit_mul_shift_sat_inline(a, p->M[r], p->shift[r], lo, hi);
                    break;
                case BVIT_OUT_I16:
                    ((int16_t *)out)[o + r] =
                        (int16_t)bvit_mul_shift_sat_inline(a, p->M[r], p->shift[r], lo, hi);
                    break;
                default: /* BVIT_OUT_RESIDUAL16: y first, then the residual add below */
                    y[r] = (int16_t)bvit_mul_shift_sat_inline(a, p->M[r], p->shift[r], lo, hi);
                    break;
            }
        }
        if (p->mode == BVIT_OUT_RESIDUAL16) {
            int16_t *z = (int16_t *)out + o;
            bvit_residual_add(z, y, 16, p->rows, p->Ma, p->Mb, p->res_shift, z, 16);
        }
    }
}

/* ---------------------------------------------------------------- routing (spec §11) */

/* the router logits of grid row r into ring row dst */
static void router_row(const bvit_route_t *p, const int8_t *a, size_t r, size_t dst,
                       int32_t *ring)
{
    size_t col;
    for (col = 0; col < p->grid; col++) {
        size_t t = r * p->grid + col;
        bvit_linear_acc(a + t * p->d, p->d, p->w, p->E, NULL,
                        ring + (dst * p->grid + col) * p->E);
    }
}

static void add_row(int32_t *out, const int32_t *L, size_t E)
{
    size_t e;
    for (e = 0; e < E; e++) {
        out[e] += L[e];
    }
}

void bvit_route_tokens(const bvit_route_t *p, const int8_t *a, int32_t *ring, int32_t *srow,
                       uint16_t *idx, int32_t *gates)
{
    size_t g = p->grid, E = p->E, k = p->k, row = g * E;
    size_t r, col, j;
    int32_t sel[BVIT_ROUTE_MAX_K];
    uint16_t prob[BVIT_ROUTE_MAX_K];
    if (p->smooth) {
        router_row(p, a, 0, 0, ring);
    }
    for (r = 0; r < g; r++) {
        const int32_t *mid = ring, *up = NULL, *down = NULL;
        if (p->smooth) { /* logits one grid row ahead, three rows kept */
            if (r + 1 < g) {
                router_row(p, a, r + 1, (r + 1) % 3, ring);
                down = ring + ((r + 1) % 3) * row;
            }
            mid = ring + (r % 3) * row;
            if (r > 0) {
                up = ring + ((r + 2) % 3) * row;
            }
        } else {
            router_row(p, a, r, 0, ring);
        }
        for (col = 0; col < g; col++) {
            size_t t = r * g + col;
            const int32_t *src = mid + col * E;
            size_t cnt = 1, which;
            if (p->smooth) { /* the token's logits plus its existing 4-neighbours' */
                for (j = 0; j < E; j++) {
                    srow[j] = src[j];
                }
                if (up) {
                    add_row(srow, up + col * E, E);
                    cnt++;
                }
                if (down) {
                    add_row(srow, down + col * E, E);
                    cnt++;
                }
                if (col > 0) {
                    add_row(srow, src - E, E);
                    cnt++;
                }
                if (col + 1 < g) {
                    add_row(srow, src + E, E);
                    cnt++;
                }
                src = srow;
            }
            bvit_topk(src, E, k, idx + t * k);
            for (j = 0; j < k; j++) {
                sel[j] = src[idx[t * k + j]];
            }
            which = cnt > 1 ? cnt - 2 : 0; /* gate multipliers for sums of 1, 3, 4, 5 */
            bvit_softmax(sel, k, p->gate_M[which], p->gate_shift[which], prob);
            for (j = 0; j < k; j++) {
                gates[t * k + j] = prob[j];
            }
        }
    }
}

/* ---------------------------------------------------------------- the expert layer */

/* Expert e's rotation tables from the cache of `slots` experts: expanded into the least
 * recently used slot when no slot holds them. */
static const int32_t *expert_rot(const bvit_ffn_t *p, bvit_ffn_scratch_t *s, int32_t e,
                                 uint32_t now)
{
    size_t per = p->n_stages * (p->n_pad_in + p->n_pad_out);
    size_t i, best = 0;
    int32_t *rot;
    for (i = 0; i < s->slots; i++) {
        if (s->slot_expert[i] == e) {
            s->slot_used[i] = now;
            return s->rot + i * per;
        }
        if (s->slot_used[i] < s->slot_used[best]) {
            best = i;
        }
    }
    rot = s->rot + best * per;
    {
        size_t nphi = p->n_stages * p->n_pad_in / 2u, nth = p->n_stages * p->n_pad_out / 2u;
        bvit_rot_expand_raw(p->phi + 2u * nphi * (size_t)e, nphi, rot);
        bvit_rot_expand_raw(p->theta + 2u * nth * (size_t)e, nth,
                            rot + p->n_stages * p->n_pad_in);
    }
    s->slot_expert[best] = e;
    s->slot_used[best] = now;
    return rot;
}

static int cached(const bvit_ffn_scratch_t *s, int32_t e)
{
    size_t i;
    for (i = 0; i < s->slots; i++) {
        if (s->slot_expert[i] == e) {
            return 1;
        }
    }
    return 0;
}

/* a token's (smallest expert, largest expert), as one sort key */
static uint32_t pair_key(const uint16_t *idx, size_t t, size_t k)
{
    uint32_t lo = 0xFFFFu, hi = 0;
    size_t j;
    for (j = 0; j < k; j++) {
        uint32_t e = idx[t * k + j];
        lo = e < lo ? e : lo;
        hi = e > hi ? e : hi;
    }
    return lo << 16 | hi;
}

/* The order the tokens are run in: by their smallest, then largest expert, so that
 * tokens sharing an expert follow each other and its rotation tables stay in the cache.
 * (Tokens are independent in this layer: the order changes no result.)  Shell sort. */
static void token_order(const uint16_t *idx, size_t n, size_t k, uint16_t *order)
{
    size_t t, j, gap;
    for (t = 0; t < n; t++) {
        order[t] = (uint16_t)t;
    }
    for (gap = n / 2u; gap > 0; gap /= 2u) {
        for (t = gap; t < n; t++) {
            uint16_t v = order[t];
            uint32_t kv = pair_key(idx, v, k);
            for (j = t; j >= gap && pair_key(idx, order[j - gap], k) > kv; j -= gap) {
                order[j] = order[j - gap];
            }
            order[j] = v;
        }
    }
}

void bvit_ffn_tokens(const bvit_ffn_t *p, const int8_t *a, const uint16_t *idx,
                     const int32_t *gates, int16_t *x, bvit_ffn_scratch_t *s)
{
    size_t i, j, pass, tt;
    size_t k = p->k;
    uint32_t now = 0;
    uint16_t g[BVIT_ROUTE_MAX_K];
    bvit_expert_t ex;
    ex.dim = p->d;
    ex.ffn = p->f;
    ex.n_pad_in = p->n_pad_in;
    ex.n_pad_out = p->n_pad_out;
    ex.n_stages = p->n_stages;
    ex.P = p->P;
    ex.packed = p->w_in;
    ex.M = p->in_M;
    ex.shift = p->in_shift;
    ex.per_row = 1;
    for (i = 0; i < s->slots; i++) {
        s->slot_expert[i] = -1;
        s->slot_used[i] = 0;
    }
    token_order(idx, p->n, k, s->order);
    for (tt = 0; tt < p->n; tt++) {
        size_t t = s->order[tt];
        const uint16_t *mine = idx + t * k;
        int16_t *xt = x + t * p->d;
        uint32_t done = 0;
        /* 10-13: each chosen expert on the token, those in the cache first (the mixture
         * takes expert j's output from h + j f whatever the order) */
        for (pass = 0; pass < 2; pass++) {
            for (j = 0; j < k; j++) {
                const int32_t *rot;
                if ((done >> j & 1u) || (pass == 0 && !cached(s, (int32_t)mine[j]))) {
                    continue;
                }
                done |= (uint32_t)1 << j;
                rot = expert_rot(p, s, (int32_t)mine[j], ++now);
                ex.phi_rot = rot;
                ex.theta_rot = rot + p->n_stages * p->n_pad_in;
                bvit_expert_forward(&ex, a + t * p->d, s->h + j * p->f, s->work_in,
                                    s->work_out, s->tables);
            }
        }
        for (j = 0; j < k; j++) {
            g[j] = (uint16_t)gates[t * k + j];
        }
        bvit_mix(s->h, k, p->f, g, s->m); /* 14. the gated mixture, int16 */
        /* 15-16. y = requant(W_out m + b); x = x + y */
        bvit_ternary_linear(p->w_out, p->d, p->f, s->m, 16, p->out_B, p->out_M, p->out_shift,
                            1, s->y, 16, s->tables, s->acc);
        bvit_residual_add(xt, s->y, 16, p->d, p->Ma, p->Mb, p->res_shift, xt, 16);
    }
}
