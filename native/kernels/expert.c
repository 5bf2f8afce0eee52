/*
 * expert.c - one butterfly expert on one token (spec §15 step 4):
 *     u = x 2^P (zero-padded), u = B(phi) u, acc = T_in u (LUT form),
 *     h = requant16(acc) (zero-padded), out = relu(B(theta) h)[0..ffn).
 *
 * The working vectors are int32 holding int16 values and the rotations come from int32
 * (cos, sin) tables expanded once per expert and image (bvit_rot_expand, bvit_butterfly32
 * in butterfly.c, which explains why most stages need no saturation checks).
 */
#include "bvit_kernels.h"

void bvit_expert_forward(const bvit_expert_t *e, const int8_t *x, int16_t *out,
                         int32_t *work_in, int32_t *work_out, int32_t *tables)
{
    size_t i, r, g0;
    size_t nb = bvit_packed_row_bytes(e->dim);
    int32_t scale = (int32_t)1 << e->P;
    int32_t bound;

    for (i = 0; i < e->dim; i++) {
        work_in[i] = x[i] * scale;
    }
    for (; i < e->n_pad_in; i++) {
        work_in[i] = 0;
    }
    bvit_butterfly32(work_in, e->n_pad_in, e->n_stages, e->phi_rot, 128 * scale);
    /* acc = T_in u in work_out, chunk by chunk, then requant16 in place */
    for (g0 = 0; g0 < nb; g0 += BVIT_LUT_GROUPS) {
        size_t count = nb - g0 < BVIT_LUT_GROUPS ? nb - g0 : BVIT_LUT_GROUPS;
        bvit_lut_build_i32(work_in, e->dim, g0, count, tables);
        bvit_lut_rows(e->packed + g0, nb, count, e->ffn, tables, g0 != 0, work_out);
    }
    bound = bvit_requant_q16_inplace(work_out, e->ffn, e->M, e->shift, e->per_row);
    r = e->ffn;
    for (; r < e->n_pad_out; r++) {
        work_out[r] = 0;
    }
    bvit_butterfly32(work_out, e->n_pad_out, e->n_stages, e->theta_rot, bound);
    for (i = 0; i + 2u <= e->ffn; i += 2) { /* ReLU, int16 out */
        int32_t v0 = work_out[i], v1 = work_out[i + 1];
        out[i] = (int16_t)(v0 < 0 ? 0 : v0);
        out[i + 1] = (int16_t)(v1 < 0 ? 0 : v1);
    }
    if (i < e->ffn) {
        int32_t v0 = work_out[i];
        out[i] = (int16_t)(v0 < 0 ? 0 : v0);
    }
}
