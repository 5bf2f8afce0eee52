/* ButterflyViT's training kernels, forward and backward (host/butterflyvit/train_kernels.py
 * loads them). Two ways to apply an expert's butterflies (B: n_l Givens stages;
 * host/butterflyvit/butterfly.py defines the pairing and the angle layout: stage l pairs i
 * with i + 2**l inside blocks of 2**(l+1)):
 *
 * 1. Forming: W_e^T = B(phi_e)^T (B(theta_e) Q)^T (dpad x fpad) for every expert e, with Q
 *    the shared ternary substrate (fpad x dpad, zero-padded to powers of two). Both sides
 *    are rotations of whole rows of a matrix held in cache: B(theta) combines rows of Q
 *    (runs of dpad floats), and after one transpose B(phi)^T combines rows of the result.
 *    PyTorch's eager ops make a 4 MB pass over memory for every stage or block product at
 *    the pico shape (E 64, 64 x 256); here each expert's matrix stays in cache.
 *
 * 2. Rows: y = B(angles_e) x for rows x sorted by expert (segment e: its expert's rows).
 *    With n_l stages B is block diagonal (blocks of bs = 2**n_l), so each row is bs x bs
 *    products with its expert's blocks, which stay in cache through the expert's segment;
 *    the rows are read and written once, in place in their sorted order.
 *
 * The forming's backward starts from its output (kept by the caller) and walks the stages
 * back. A stage is a rotation, so its input is its output rotated back: no stage's state
 * is stored. For a rotation of rows (u, v) to (u', v') = (c u - s v, s u + c v), s = sin(a)
 * (s = -sin(a) for B^T), dL/da = +-sum(g_v' u' - g_u' v'), and both (u, v) and the
 * gradients of (u, v) are the transposed rotation of (u', v') and (g_u', g_v'). The rebuilt
 * states carry a few float roundings (rotations are orthogonal: errors do not grow); tests
 * compare the gradients with PyTorch's autograd of the same function in float64.
 *
 * Plain C99 and POSIX threads. Work is split by expert, each expert wholly one thread's, so
 * every per-expert sum (an angle's or a block's gradient) is the same float at any thread
 * count; the
 * forming's dL/dQ adds the threads' parts in thread order (same bits at a given count).
 * Sums over a row run in sixteen fixed lanes, so every build (SSE2, AVX2, AVX-512 clones)
 * gives the same floats; built with -ffp-contract=off for the same reason (no fused
 * multiply-adds in one clone only).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* GCC on x86-64 builds the row loops for three vector widths and picks one at load time.
 * BVIT_TRAIN_KERNELS_NO_CLONES builds the baseline only (tests compare the builds' floats). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
    && !defined(BVIT_TRAIN_KERNELS_NO_CLONES)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Loops over one 16-float block are vectorised whole (basic-block SLP); loop vectorisation
 * would pick the loop across blocks instead, with strided gathers (4x slower here). */
#if defined(__GNUC__) && !defined(__clang__)
#define TILE_LOOPS __attribute__((optimize("no-tree-loop-vectorize")))
#else
#define TILE_LOOPS
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
    for (int b = 0; b < n; b += 2 * h)         /* blocks of 2h; angle index b/2 + j */
        for (int j = 0; j < h; j++) {
            size_t u = (size_t)(b + j) * width, v = u + (size_t)h * width;
            rotate_rows(dst + u, dst + v, src + u, src + v, width, cs[b / 2 + j],
                        sign * sn[b / 2 + j]);
        }
}

/* The stage's backward, in place: g holds dL/d(output) and becomes dL/d(input); m holds
 * the stage's output and becomes its input; dL/d(angle a) is added to grad[a]. */
static void stage_rows_backward(float *g, float *m, int n, int width, int stage,
                                const float *cs, const float *sn, float sign, float *grad)
{
    int h = 1 << stage;
    for (int b = 0; b < n; b += 2 * h)
        for (int j = 0; j < h; j++) {
            size_t u = (size_t)(b + j) * width, v = u + (size_t)h * width;
            int a = b / 2 + j;
            grad[a] += sign * rotate_rows_back(g + u, g + v, m + u, m + v, width, cs[a],
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
        memset(grad_theta, 0, (size_t)n_l * (f / 2) * sizeof(float));
        memset(grad_phi, 0, (size_t)n_l * (d / 2) * sizeof(float));
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

/* Floats of scratch each thread of the forming needs (the caller allocates threads * this). */
long bvit_forming_scratch_floats(int fpad, int dpad, int stages)
{
    (void)stages;
    return (long)fpad * dpad * 4;
}

enum { MAX_THREADS = 64 };

static int clamp_threads(int threads, int experts)
{
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > experts)
        threads = experts;
    return threads < 1 ? 1 : threads;
}

/* worker(jobs + t * job_size) for t < threads, each on its own thread (thread 0 is the
 * caller's; a thread that cannot be started does its share on the caller's). */
static void run_threads(void *jobs, size_t job_size, int threads, void *(*worker)(void *))
{
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    char *job = jobs;
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, worker, job + t * job_size) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t])
            worker(job + t * job_size);
    worker(job);
    for (int t = 1; t < threads; t++)
        if (started[t])
            pthread_join(ids[t], NULL);
}

/* Thread t of `threads` takes experts [first, last): equal numbers of experts. */
static int run_forming(const job_t *base, int threads, void *(*worker)(void *),
                       size_t grad_q_stride)
{
    job_t jobs[MAX_THREADS];
    size_t scratch = (size_t)bvit_forming_scratch_floats(base->fpad, base->dpad, base->stages);
    threads = clamp_threads(threads, base->experts);
    for (int t = 0; t < threads; t++) {
        jobs[t] = *base;
        jobs[t].first = (int)((long)base->experts * t / threads);
        jobs[t].last = (int)((long)base->experts * (t + 1) / threads);
        jobs[t].scratch = base->scratch + t * scratch;
        if (base->grad_q)
            jobs[t].grad_q = base->grad_q + t * grad_q_stride;
    }
    run_threads(jobs, sizeof(job_t), threads, worker);
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
    run_forming(&base, threads, forward_worker, 0);
}

/* Gradients from wt[e], the forward's W_e^T, and grad_wt[e], dL/dW_e^T (dpad x fpad each):
 * grad_q (fpad, dpad) and the angles' (their layout). grad_q_parts: threads * fpad * dpad
 * floats, summed into grad_q in thread order. Every output is overwritten. */
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
    int used = run_forming(&base, threads, backward_worker, size);
    memcpy(grad_q, grad_q_parts, size * sizeof(float));
    for (int t = 1; t < used; t++)
        for (size_t k = 0; k < size; k++)
            grad_q[k] += grad_q_parts[t * size + k];
}


/* ---------------------------------------------------------------- 2. rows, by segment */

typedef struct {
    int n, bs;
    const int64_t *starts;             /* segment e is rows starts[e] .. starts[e+1]-1 */
    const float *blocks;               /* (E, n / bs, bs, bs): P[e][b][k][i] */
    const float *x;                    /* the forward's input */
    const float *grad_y;               /* backward in */
    float *y;                          /* forward out, or backward: dL/dx */
    float *grad_blocks;                /* backward out, as blocks */
    float *scratch;                    /* per thread: one expert's blocks transposed */
    int first, last;                   /* this thread's experts */
} rows_job_t;

/* A segment's rows times its expert's blocks: y[r][b][k] = sum_i pt[b][i][k] x[r][b][i],
 * i in order (so every vector width adds alike). The common block size, 16, has its own
 * loop with the block's 16 outputs as one vector; GCC is kept from vectorising the other
 * loops (it would gather across blocks instead). */
VECTOR_CLONES TILE_LOOPS
static void segment_times16(float *restrict y, const float *restrict pt,
                            const float *restrict x, int64_t rows, int n)
{
    for (int64_t r = 0; r < rows; r++)
        for (int b = 0; b < n; b += 16) {
            const float *restrict xb = x + (size_t)r * n + b;
            const float *restrict pb = pt + (size_t)b * 16;
            float acc[16] = {0};
            for (int i = 0; i < 16; i++)
                for (int k = 0; k < 16; k++)
                    acc[k] += pb[i * 16 + k] * xb[i];
            for (int k = 0; k < 16; k++)
                y[(size_t)r * n + b + k] = acc[k];
        }
}

VECTOR_CLONES
static void segment_times(float *restrict y, const float *restrict pt,
                          const float *restrict x, int64_t rows, int n, int bs)
{
    for (int64_t r = 0; r < rows; r++)
        for (int b = 0; b < n; b += bs) {
            float *restrict out = y + (size_t)r * n + b;
            for (int k = 0; k < bs; k++)
                out[k] = 0.0f;
            for (int i = 0; i < bs; i++) {
                float xi = x[(size_t)r * n + b + i];
                const float *restrict col = pt + (size_t)b * bs + (size_t)i * bs;
                for (int k = 0; k < bs; k++)
                    out[k] += col[k] * xi;
            }
        }
}

/* The segment's backward: gx[r][b] = P_b^T g[r][b] (rows k of P in order; the loop of
 * segment_times16 with P for its transpose, written out here: calling it measured the
 * whole backward 1.6x slower), then
 * gp[b] = sum over the rows r, in order, of g[r][b] x[r][b]^T, one row of the block at a
 * time (its 16 sums in one vector while the rows go by, packed 128 at a time). */
VECTOR_CLONES TILE_LOOPS
static void segment_backward16(float *restrict gx, float *restrict gp, const float *restrict p,
                               const float *restrict g, const float *restrict x,
                               int64_t rows, int n)
{
    for (int64_t r = 0; r < rows; r++)
        for (int b = 0; b < n; b += 16) {
            const float *restrict gb = g + (size_t)r * n + b;
            const float *restrict pb = p + (size_t)b * 16;
            float acc[16] = {0};
            for (int k = 0; k < 16; k++)
                for (int i = 0; i < 16; i++)
                    acc[i] += pb[k * 16 + i] * gb[k];
            for (int i = 0; i < 16; i++)
                gx[(size_t)r * n + b + i] = acc[i];
        }
    enum { CHUNK = 128 };
    float xc[CHUNK * 16], gc[CHUNK * 16];
    for (int b = 0; b < n; b += 16) {
        float *restrict gpb = gp + (size_t)b * 16;
        memset(gpb, 0, 256 * sizeof(float));
        for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
            int m = rows - r0 < CHUNK ? (int)(rows - r0) : CHUNK;
            for (int r = 0; r < m; r++) {   /* the block's columns of these rows, packed */
                memcpy(xc + r * 16, x + (size_t)(r0 + r) * n + b, 16 * sizeof(float));
                memcpy(gc + r * 16, g + (size_t)(r0 + r) * n + b, 16 * sizeof(float));
            }
            for (int k = 0; k < 16; k++) {
                float acc[16];
                memcpy(acc, gpb + k * 16, sizeof(acc));
                for (int r = 0; r < m; r++)
                    for (int i = 0; i < 16; i++)
                        acc[i] += gc[r * 16 + k] * xc[r * 16 + i];
                memcpy(gpb + k * 16, acc, sizeof(acc));
            }
        }
    }
}

VECTOR_CLONES
static void segment_backward(float *restrict gx, float *restrict gp, const float *restrict p,
                             const float *restrict g, const float *restrict x, int64_t rows,
                             int n, int bs)
{
    for (int64_t r = 0; r < rows; r++)
        for (int b = 0; b < n; b += bs) {
            float *restrict out = gx + (size_t)r * n + b;
            for (int i = 0; i < bs; i++)
                out[i] = 0.0f;
            for (int k = 0; k < bs; k++) {
                float gk = g[(size_t)r * n + b + k];
                const float *restrict row = p + (size_t)b * bs + (size_t)k * bs;
                float *restrict grow = gp + (size_t)b * bs + (size_t)k * bs;
                const float *restrict xb = x + (size_t)r * n + b;
                for (int i = 0; i < bs; i++) {
                    out[i] += row[i] * gk;
                    grow[i] += gk * xb[i];
                }
            }
        }
}

static void *rows_forward_worker(void *arg)
{
    rows_job_t *j = arg;
    int n = j->n, bs = j->bs, nb = n / bs;
    size_t per_expert = (size_t)nb * bs * bs;
    float *pt = j->scratch;
    for (int e = j->first; e < j->last; e++) {
        int64_t r0 = j->starts[e], rows = j->starts[e + 1] - r0;
        if (!rows)
            continue;
        const float *p = j->blocks + (size_t)e * per_expert;
        for (int b = 0; b < nb; b++)   /* the blocks' columns contiguous: pt[b][i][k] */
            transpose(p + (size_t)b * bs * bs, pt + (size_t)b * bs * bs, bs, bs);
        if (bs == 16)
            segment_times16(j->y + (size_t)r0 * n, pt, j->x + (size_t)r0 * n, rows, n);
        else
            segment_times(j->y + (size_t)r0 * n, pt, j->x + (size_t)r0 * n, rows, n, bs);
    }
    return NULL;
}

static void *rows_backward_worker(void *arg)
{
    rows_job_t *j = arg;
    int n = j->n, bs = j->bs;
    size_t per_expert = (size_t)n * bs;
    for (int e = j->first; e < j->last; e++) {
        int64_t r0 = j->starts[e], rows = j->starts[e + 1] - r0;
        const float *p = j->blocks + (size_t)e * per_expert;
        float *gp = j->grad_blocks + (size_t)e * per_expert;
        size_t at = (size_t)r0 * n;
        if (bs == 16) {   /* writes every block's gradient */
            segment_backward16(j->y + at, gp, p, j->grad_y + at, j->x + at, rows, n);
        } else {
            memset(gp, 0, per_expert * sizeof(float));
            segment_backward(j->y + at, gp, p, j->grad_y + at, j->x + at, rows, n, bs);
        }
    }
    return NULL;
}

/* Floats of scratch each thread of the rows kernels needs. */
long bvit_rows_scratch_floats(int n, int bs)
{
    return (long)n * bs;
}

/* Thread t takes the experts whose segments start in its share of the rows. */
static void run_rows(const rows_job_t *base, int experts, int threads, void *(*worker)(void *))
{
    rows_job_t jobs[MAX_THREADS];
    int64_t rows = base->starts[experts];
    threads = clamp_threads(threads, experts);
    int e = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = *base;
        jobs[t].first = e;
        while (e < experts && (t == threads - 1 || base->starts[e] * threads < rows * (t + 1)))
            e++;
        jobs[t].last = e;
        if (base->scratch)
            jobs[t].scratch = base->scratch + (size_t)t * bvit_rows_scratch_floats(base->n,
                                                                                   base->bs);
    }
    run_threads(jobs, sizeof(rows_job_t), threads, worker);
}

/* y = diag(P_e) x row by row, for rows x (rows x n) sorted by expert: starts (experts + 1
 * entries) bounds each expert's segment, blocks (E, n / bs, bs, bs) are the diagonal
 * blocks of each expert's B (butterfly.butterfly_blocks). scratch: threads *
 * bvit_rows_scratch_floats(n, bs). */
void bvit_rows_forward(int experts, int n, int bs, const int64_t *starts, const float *blocks,
                       const float *x, float *y, float *scratch, int threads)
{
    rows_job_t base = {n, bs, starts, blocks, x, NULL, y, NULL, scratch, 0, 0};
    run_rows(&base, experts, threads, rows_forward_worker);
}

/* From the forward's input x and dL/dy: dL/dx into grad_x and dL/d(blocks) into
 * grad_blocks (every expert's; zeros for an expert without rows). Each expert's sums run
 * over its rows in order, on one thread: the same floats at any thread count. */
void bvit_rows_backward(int experts, int n, int bs, const int64_t *starts,
                        const float *blocks, const float *x, const float *grad_y,
                        float *grad_x, float *grad_blocks, int threads)
{
    rows_job_t base = {n, bs, starts, blocks, x, grad_y, grad_x, grad_blocks, NULL, 0, 0};
    run_rows(&base, experts, threads, rows_backward_worker);
}
