/* Forming the ButterflyViT expert matrices for training, forward and backward.
 *
 * For every expert e:  W_e^T = B(phi_e)^T (B(theta_e) Q)^T          (dpad x fpad)
 * with Q the shared ternary substrate (fpad x dpad, zero-padded to powers of two) and B
 * a butterfly of n_l Givens stages (host/butterflyvit/butterfly.py defines the pairing and
 * the angle layout: stage l pairs i with i + 2**l inside blocks of 2**(l+1)).
 *
 * Both sides are rotations of whole rows of a matrix held in cache: B(theta) combines rows
 * of Q (runs of dpad floats), and after one transpose B(phi)^T combines rows of the
 * result (runs of fpad floats). PyTorch's eager ops make a 4 MB pass over memory for every
 * stage or block product at the pico shape (E 64, 64 x 256); here each expert's matrix
 * stays in cache through all 2 n_l stages and goes to memory once.
 *
 * Backward starts from each expert's W_e^T (the forward's output, kept by the caller) and
 * walks the stages back. A stage is a rotation, so its input is its output rotated back:
 * no stage's state is stored, and an expert's work stays two matrices in cache. For a
 * rotation of rows (u, v) to (u', v') = (c u - s v, s u + c v), s = sin(a) (s = -sin(a)
 * for B^T), dL/da = +-sum(g_v' u' - g_u' v'), and both (u, v) and the gradients of (u, v)
 * are the transposed rotation of (u', v') and (g_u', g_v'). The rebuilt states carry a few
 * float roundings (rotations are orthogonal: errors do not grow); tests compare the
 * gradients with PyTorch's autograd of the same function in float64.
 *
 * Plain C99 and POSIX threads; experts are split into contiguous chunks, one per thread,
 * and each thread sums its own part of dL/dQ, added up in thread order afterwards, so
 * results depend on the thread count but not on scheduling. Sums over a row run in sixteen
 * fixed lanes, so every build (SSE2, AVX2, AVX-512 clones) gives the same floats; built
 * with -ffp-contract=off for the same reason (no fused multiply-adds in one clone only).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* GCC on x86-64 builds the row loops for three vector widths and picks one at load time.
 * BVIT_FORMING_NO_CLONES builds the baseline only (tests compare the two builds' floats). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(BVIT_FORMING_NO_CLONES)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

typedef struct {
    int experts, fpad, dpad, stages;
    const float *q;                    /* (fpad, dpad) */
    const float *cos_phi, *sin_phi;    /* (E, stages, dpad / 2) */
    const float *cos_theta, *sin_theta;/* (E, stages, fpad / 2) */
    float *const *wt;                  /* forward out: E matrices of dpad x fpad */
    const float *const *wt_in;         /* backward in: the forward's output */
    const float *const *grad_wt;       /* backward in: dL/d(each of them) */
    float *grad_q;                     /* backward out, one (fpad, dpad) per thread */
    float *grad_phi, *grad_theta;      /* backward out, as the angles */
    float *scratch;                    /* per thread, see scratch_floats() */
    int first, last;                   /* this thread's experts */
} job_t;

/* Rows (su, sv) of length n rotated into (du, dv), which may be the same rows:
 * (c u - s v, s u + c v); a negative s rotates by the transpose. */
VECTOR_CLONES
static void rotate_rows(float *du, float *dv, const float *su, const float *sv, int n,
                        float c, float s)
{
    for (int k = 0; k < n; k++) {
        float a = su[k], b = sv[k];
        du[k] = c * a - s * b;
        dv[k] = s * a + c * b;
    }
}

/* The backward of rotate_rows by (c, s) in one pass, in place: (gu, gv) holds dL/d(output)
 * and becomes dL/d(input); (u, v) holds the output and becomes the input; both turn by the
 * transposed rotation. Returns sum(gv u - gu v) over the outputs, summed in sixteen fixed
 * lanes so that every vector width gives the same float. */
VECTOR_CLONES
static float rotate_rows_back(float *restrict gu, float *restrict gv, float *restrict u,
                              float *restrict v, int n, float c, float s)
{
    enum { LANES = 16 };
    float lane[LANES] = {0};
#define BACK(i, t) do { float a = gu[i], b = gv[i], x = u[i], y = v[i];   \
                        lane[t] += b * x - a * y;                          \
                        gu[i] = c * a + s * b; gv[i] = c * b - s * a;      \
                        u[i] = c * x + s * y; v[i] = c * y - s * x; } while (0)
    if (n >= LANES) {   /* n is a power of two */
        for (int k = 0; k < n; k += LANES)
            for (int t = 0; t < LANES; t++)
                BACK(k + t, t);
    } else {
        for (int t = 0; t < n; t++)
            BACK(t, t);
    }
#undef BACK
    for (int w = LANES / 2; w > 0; w /= 2)   /* a fixed pairwise tree */
        for (int t = 0; t < w; t++)
            lane[t] += lane[t + w];
    return lane[0];
}

/* One stage on the rows of src (n rows of `width` floats) into dst (may be src): pairs
 * (i, i + h) inside blocks of 2h, angle index block * h + j; sign -1: by the transpose. */
static void stage_rows(float *dst, const float *src, int n, int width, int stage,
                       const float *cs, const float *sn, float sign)
{
    int h = 1 << stage;
    for (int a = 0; a < n / 2; a++) {
        size_t u = (size_t)((a / h) * 2 * h + a % h) * width, v = u + (size_t)h * width;
        rotate_rows(dst + u, dst + v, src + u, src + v, width, cs[a], sign * sn[a]);
    }
}

/* The stage's backward, in place: g holds dL/d(output) and becomes dL/d(input); m holds
 * the stage's output and becomes its input; grad[a] gets dL/d(angle a). */
static void stage_rows_backward(float *g, float *m, int n, int width, int stage,
                                const float *cs, const float *sn, float sign, float *grad)
{
    int h = 1 << stage;
    for (int a = 0; a < n / 2; a++) {
        size_t u = (size_t)((a / h) * 2 * h + a % h) * width, v = u + (size_t)h * width;
        grad[a] = sign * rotate_rows_back(g + u, g + v, m + u, m + v, width, cs[a],
                                          sign * sn[a]);
    }
}

/* dst (cols x rows) = src (rows x cols) transposed, through 8 x 8 tiles that stay in
 * registers (sizes are powers of two; smaller ones go element by element). */
static void transpose(const float *restrict src, float *restrict dst, int rows, int cols)
{
    if (rows < 8 || cols < 8) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += 8)
        for (int c0 = 0; c0 < cols; c0 += 8) {
            float tile[8][8];
            for (int r = 0; r < 8; r++)
                for (int c = 0; c < 8; c++)
                    tile[c][r] = src[(size_t)(r0 + r) * cols + c0 + c];
            for (int c = 0; c < 8; c++)
                for (int r = 0; r < 8; r++)
                    dst[(size_t)(c0 + c) * rows + r0 + r] = tile[c][r];
        }
}

/* Expert e's forward, W_e^T into out (dpad x fpad); work: fpad x dpad floats. */
static void form_expert(const job_t *j, int e, float *out, float *work)
{
    int f = j->fpad, d = j->dpad, n_l = j->stages;
    const float *ct = j->cos_theta + (size_t)e * n_l * (f / 2);
    const float *st = j->sin_theta + (size_t)e * n_l * (f / 2);
    const float *cp = j->cos_phi + (size_t)e * n_l * (d / 2);
    const float *sp = j->sin_phi + (size_t)e * n_l * (d / 2);
    const float *src = j->q;
    for (int l = 0; l < n_l; l++) {   /* B(theta) Q: stage 0 first, out of Q into work */
        stage_rows(work, src, f, d, l, ct + (size_t)l * (f / 2), st + (size_t)l * (f / 2), 1.0f);
        src = work;
    }
    transpose(src, out, f, d);
    for (int l = n_l - 1; l >= 0; l--)   /* B(phi)^T: the stages in reverse, transposed */
        stage_rows(out, out, d, f, l, cp + (size_t)l * (d / 2), sp + (size_t)l * (d / 2), -1.0f);
}

static void *forward_worker(void *arg)
{
    job_t *j = arg;
    for (int e = j->first; e < j->last; e++)
        form_expert(j, e, j->wt[e], j->scratch);
    return NULL;
}

static void *backward_worker(void *arg)
{
    job_t *j = arg;
    int f = j->fpad, d = j->dpad, n_l = j->stages;
    size_t size = (size_t)f * d;
    float *m = j->scratch, *g = m + size, *mt = g + size, *gt = mt + size;
    memset(j->grad_q, 0, size * sizeof(float));
    for (int e = j->first; e < j->last; e++) {
        const float *ct = j->cos_theta + (size_t)e * n_l * (f / 2);
        const float *st = j->sin_theta + (size_t)e * n_l * (f / 2);
        const float *cp = j->cos_phi + (size_t)e * n_l * (d / 2);
        const float *sp = j->sin_phi + (size_t)e * n_l * (d / 2);
        float *grad_theta = j->grad_theta + (size_t)e * n_l * (f / 2);
        float *grad_phi = j->grad_phi + (size_t)e * n_l * (d / 2);
        memcpy(m, j->wt_in[e], size * sizeof(float));
        memcpy(g, j->grad_wt[e], size * sizeof(float));
        /* phi stages ran n_l-1 .. 0; walk back 0 .. n_l-1 */
        for (int l = 0; l < n_l; l++)
            stage_rows_backward(g, m, d, f, l, cp + (size_t)l * (d / 2),
                                sp + (size_t)l * (d / 2), -1.0f, grad_phi + (size_t)l * (d / 2));
        transpose(m, mt, d, f);
        transpose(g, gt, d, f);
        /* theta stages ran 0 .. n_l-1; walk back n_l-1 .. 0 */
        for (int l = n_l - 1; l >= 0; l--)
            stage_rows_backward(gt, mt, f, d, l, ct + (size_t)l * (f / 2),
                                st + (size_t)l * (f / 2), 1.0f, grad_theta + (size_t)l * (f / 2));
        for (size_t k = 0; k < size; k++)
            j->grad_q[k] += gt[k];
    }
    return NULL;
}

/* Floats of scratch each thread needs (the caller allocates threads * this). */
long bvit_forming_scratch_floats(int fpad, int dpad, int stages)
{
    (void)stages;
    return (long)fpad * dpad * 4;
}

/* Run worker over the experts in `threads` contiguous chunks; thread 0 is the caller. */
static int run_chunks(job_t *base, int threads, void *(*worker)(void *), size_t scratch,
                      size_t grad_q_stride)
{
    enum { MAX_THREADS = 64 };
    job_t jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > base->experts)
        threads = base->experts > 0 ? base->experts : 1;
    for (int t = 0; t < threads; t++) {
        jobs[t] = *base;
        jobs[t].first = (int)((long)base->experts * t / threads);
        jobs[t].last = (int)((long)base->experts * (t + 1) / threads);
        jobs[t].scratch = base->scratch + t * scratch;
        if (base->grad_q)
            jobs[t].grad_q = base->grad_q + t * grad_q_stride;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, worker, &jobs[t]) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t])   /* no thread to be had: do its share here */
            worker(&jobs[t]);
    worker(&jobs[0]);
    for (int t = 1; t < threads; t++)
        if (started[t])
            pthread_join(ids[t], NULL);
    return threads;
}

/* W_e^T of every expert e into wt[e] (dpad x fpad, contiguous); scratch: threads *
 * scratch_floats. The matrices are separate buffers, not one (E, dpad, fpad) tensor: the
 * caller's autograd hands back each expert's gradient as its own tensor, and a single
 * tensor would cost a 4 MB gather (and a fresh 4 MB allocation) every step. */
void bvit_forming_forward(int experts, int fpad, int dpad, int stages, const float *q,
                          const float *cos_phi, const float *sin_phi,
                          const float *cos_theta, const float *sin_theta, float *const *wt,
                          float *scratch, int threads)
{
    job_t base = {experts, fpad, dpad, stages, q, cos_phi, sin_phi, cos_theta, sin_theta,
                  wt, NULL, NULL, NULL, NULL, NULL, scratch, 0, 0};
    run_chunks(&base, threads, forward_worker,
               (size_t)bvit_forming_scratch_floats(fpad, dpad, stages), 0);
}

/* Gradients from wt[e], the forward's W_e^T, and grad_wt[e], dL/dW_e^T (dpad x fpad each):
 * grad_q (fpad, dpad) and the angles' (their
 * layout). grad_q_parts: threads * fpad * dpad floats, summed into grad_q in thread order.
 * Every output is overwritten. */
void bvit_forming_backward(int experts, int fpad, int dpad, int stages,
                           const float *cos_phi, const float *sin_phi,
                           const float *cos_theta, const float *sin_theta,
                           const float *const *wt, const float *const *grad_wt,
                           float *grad_q, float *grad_q_parts,
                           float *grad_phi, float *grad_theta, float *scratch, int threads)
{
    size_t size = (size_t)fpad * dpad;
    job_t base = {experts, fpad, dpad, stages, NULL, cos_phi, sin_phi, cos_theta, sin_theta,
                  NULL, wt, grad_wt, grad_q_parts, grad_phi, grad_theta, scratch, 0, 0};
    int used = run_chunks(&base, threads, backward_worker,
                          (size_t)bvit_forming_scratch_floats(fpad, dpad, stages), size);
    memcpy(grad_q, grad_q_parts, size * sizeof(float));
    for (int t = 1; t < used; t++)
        for (size_t k = 0; k < size; k++)
            grad_q[k] += grad_q_parts[t * size + k];
}
