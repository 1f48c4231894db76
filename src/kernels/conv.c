/* Convolution kernels for the VAE: conv2d as chunked im2col + sf_sgemm,
 * GroupNorm (+ fused SiLU), nearest 2x upsampling, layout changes.
 *
 * Layout: activations are NHWC, x (B, H, W, C), i.e. a (B*H*W, C) row-major
 * matrix of pixels. Why not torch's NCHW:
 * - A 1x1 convolution, and the mid-block attention's q/k/v/out projections,
 *   are then plain GEMMs on the activation matrix (no transposes).
 * - im2col for a 3x3 kernel copies, per output pixel and kernel row, one run
 *   of 3 * C contiguous floats (the three horizontal taps are neighbouring
 *   pixels), instead of scattering single floats (NCHW im2col gathers one
 *   float per (channel, tap) and strides through memory). The copy is a
 *   modest share of the conv: measured here (AMD EPYC, 2 threads, oneDNN,
 *   machine shared, load 3-6), im2col took 13-18% of the thread time of a
 *   3x3 conv 128 -> 128 at 256 x 256 and 5% of one 512 -> 512 at 64 x 64
 *   (the share falls as 1/cout: copy 9 cin floats, multiply 9 cin cout);
 *   SAEFLOW_CONV_PROFILE=1 tests/kernels/test_conv_kernels prints it.
 * - The GEMM's output rows land directly in the NHWC output: no col2im.
 * The im2col matrix is built one chunk of output pixels at a time (a few MB
 * per thread) so memory does not grow with 9 x the activation.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

/* Bytes of im2col scratch per chunk, ~8 MB: at least 256 rows even for
 * K = 9 * 512 (the GEMM re-packs the weights on every call, so short
 * chunks pay that again and again), 1024 rows for K = 9 * 128. */
#define SF_CONV_CHUNK_BYTES (8u << 20)

int64_t sf_conv2d_out_size(int64_t n, int64_t k, int64_t stride, int64_t pad0, int64_t pad1) {
    int64_t span = n + pad0 + pad1 - k;
    return span < 0 ? 0 : span / stride + 1;
}

/* Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016) for the stride-1 3x3 convs that are nearly all of
 * the VAE's work: each 2x2 block of outputs comes from a 4x4 input tile d as
 *     Y = A^T [ (G g G^T) .* (B^T d B) ] A
 * so a tile costs 16 multiplies per (cin, cout) pair instead of 4 x 9 = 36.
 * In GEMM form: the 16 entries e of the transformed tiles are 16 matrices
 * V_e (tiles, cin), the transformed kernel 16 matrices U_e (cout, cin), and
 * M_e = V_e U_e^T are 16 GEMMs with 2.25x fewer flops than im2col's one.
 * The transforms use only +, - and halving (exact in binary), so the result
 * differs from the direct sum by F32 rounding only (the kernel test holds it
 * to the same 2e-6 of the largest output as im2col). F(4x4, 3x3) would save
 * 4x but its transform constants (1/4, 1/6, 1/24) lose ~3 more bits.
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *     G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *     A^T = [1 1 1 0; 0 1 -1 -1]                                              */
static int conv_wino_enabled(void) {
    const char *e = getenv("SAEFLOW_CONV_WINOGRAD");
    return !(e && e[0] == '0');
}

// g (3, 3) -> u (4, 4) = G g G^T, in double, rounded once
static void wino_kernel(const float *g, float *u) {
    double t[4][3]; /* G g */
    for (int j = 0; j < 3; j++) {
        double g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
        t[0][j] = g0, t[1][j] = (g0 + g1 + g2) / 2, t[2][j] = (g0 - g1 + g2) / 2, t[3][j] = g2;
    }
    for (int i = 0; i < 4; i++) { /* (G g) G^T */
        double a = t[i][0], b = t[i][1], c = t[i][2];
        u[i * 4 + 0] = (float)a, u[i * 4 + 1] = (float)((a + b + c) / 2);
        u[i * 4 + 2] = (float)((a - b + c) / 2), u[i * 4 + 3] = (float)c;
    }
}

int sf_conv2d_pack(sf_conv2d_w *cw, const sf_weight *w, int64_t cout, int64_t cin, int64_t k,
                   int64_t stride, const float *bias) {
    memset(cw, 0, sizeof *cw);
    if (cout <= 0 || cin <= 0 || k <= 0 || stride <= 0)
        return sf_error("conv2d: bad shape (%lld, %lld, %lld, %lld) or stride %lld",
                        (long long)cout, (long long)cin, (long long)k, (long long)k,
                        (long long)stride);
    if (sf_weight_numel(w) != cout * cin * k * k)
        return sf_error("conv2d: weight has %lld elements, expected %lld x %lld x %lld x %lld",
                        (long long)sf_weight_numel(w), (long long)cout, (long long)cin,
                        (long long)k, (long long)k);
    const int64_t K = k * k * cin;
    const int wino = k == 3 && stride == 1 && conv_wino_enabled();
    sf_weight row = *w; /* the same buffer seen as (cout, cin*k*k) */
    row.ndim = 2;
    row.shape[0] = cout;
    row.shape[1] = cin * k * k;
    float *dst = sf_malloc_aligned((size_t)(cout * (wino ? 16 * cin : K)) * sizeof(float));
    float *tmp = sf_malloc((size_t)K * sizeof(float));
    for (int64_t o = 0; o < cout; o++) {
        sf_weight_rows_f32(&row, o, 1, tmp);
        if (wino) { // (cout, cin, 3, 3) -> 16 x (cout, cin): U_e[o, c] = (G g_oc G^T)[e]
            float u[16];
            for (int64_t c = 0; c < cin; c++) {
                wino_kernel(tmp + c * 9, u);
                for (int e = 0; e < 16; e++)
                    dst[(e * cout + o) * cin + c] = u[e];
            }
            continue;
        }
        // torch (cout, cin, ky, kx) -> (cout, ky, kx, cin): the im2col column order
        for (int64_t c = 0; c < cin; c++)
            for (int64_t t = 0; t < k * k; t++)
                dst[o * K + t * cin + c] = tmp[c * k * k + t];
    }
    free(tmp);
    cw->cout = cout, cw->cin = cin, cw->k = k, cw->stride = stride, cw->wino = wino;
    cw->w = dst;
    cw->bias = bias;
    return 0;
}

void sf_conv2d_free(sf_conv2d_w *cw) {
    sf_free_aligned(cw->w);
    memset(cw, 0, sizeof *cw);
}

// cols (n, K): rows of output pixels p0 .. p0+n of the flattened (B, Ho, Wo) grid
static void im2col_chunk(const float *x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride,
                         int64_t pt, int64_t pl, int64_t Ho, int64_t Wo, int64_t p0, int64_t n,
                         float *cols) {
    const int64_t K = k * k * C;
    for (int64_t i = 0; i < n; i++) {
        int64_t p = p0 + i, b = p / (Ho * Wo), r = p % (Ho * Wo), oy = r / Wo, ox = r % Wo;
        float *col = cols + i * K;
        const float *xb = x + b * H * W * C;
        for (int64_t ky = 0; ky < k; ky++) {
            int64_t iy = oy * stride - pt + ky;
            float *dst = col + ky * k * C;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, (size_t)(k * C) * sizeof(float));
                continue;
            }
            int64_t ix0 = ox * stride - pl;
            if (ix0 >= 0 && ix0 + k <= W) { /* all k taps inside: one contiguous run */
                memcpy(dst, xb + (iy * W + ix0) * C, (size_t)(k * C) * sizeof(float));
                continue;
            }
            for (int64_t kx = 0; kx < k; kx++) {
                int64_t ix = ix0 + kx;
                if (ix < 0 || ix >= W)
                    memset(dst + kx * C, 0, (size_t)C * sizeof(float));
                else
                    memcpy(dst + kx * C, xb + (iy * W + ix) * C, (size_t)C * sizeof(float));
            }
        }
    }
}

double sf_conv_prof_im2col_s, sf_conv_prof_gemm_s;
static int conv_prof = -1;

/* Splits P rows into chunks of at most mc (clamped to [lo, hi]); returns the
 * count and sets *mc to the (equal) chunk size. A multiple of 4 chunks of
 * equal size keeps 2 or 4 threads evenly busy (3 chunks of a 32 x 32 latent
 * on 2 threads idle one a third of the time). It depends on the shape only,
 * never on the thread count, so outputs do not either. */
static int64_t conv_chunks(int64_t P, int64_t *mc, int64_t lo, int64_t hi) {
    int64_t m = *mc < lo ? lo : (*mc > hi ? hi : *mc);
    int64_t n = (P + m - 1) / m;
    if (n > 1) {
        n = (n + 3) / 4 * 4;
        m = (P + n - 1) / n;
        n = (P + m - 1) / m;
    }
    *mc = m;
    return n;
}

// V_e (n, C), e = 4 i + j: (B^T d B)[i, j] of the 4x4 input tiles at tiles t0 .. t0+n
static void wino_input(const float *x, int64_t H, int64_t W, int64_t C, int64_t pt, int64_t pl,
                       int64_t th, int64_t tw, int64_t t0, int64_t n, const float *zero, float *V,
                       int64_t vstride) {
    for (int64_t i = 0; i < n; i++) {
        int64_t t = t0 + i, b = t / (th * tw), r = t % (th * tw);
        int64_t iy0 = r / tw * 2 - pt, ix0 = r % tw * 2 - pl;
        const float *d[16]; /* the 16 input pixels (C channels each); zero outside */
        for (int u = 0; u < 4; u++)
            for (int v = 0; v < 4; v++) {
                int64_t iy = iy0 + u, ix = ix0 + v;
                d[u * 4 + v] =
                    iy < 0 || iy >= H || ix < 0 || ix >= W ? zero : x + ((b * H + iy) * W + ix) * C;
            }
        float *o = V + i * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float t[16]; /* B^T d: rows */
            for (int v = 0; v < 4; v++) {
                float d0 = d[v][c], d1 = d[4 + v][c], d2 = d[8 + v][c], d3 = d[12 + v][c];
                t[v] = d0 - d2, t[4 + v] = d1 + d2, t[8 + v] = d2 - d1, t[12 + v] = d1 - d3;
            }
            for (int u = 0; u < 4; u++) { /* (B^T d) B: columns */
                float a0 = t[u * 4], a1 = t[u * 4 + 1], a2 = t[u * 4 + 2], a3 = t[u * 4 + 3];
                o[(u * 4 + 0) * vstride + c] = a0 - a2;
                o[(u * 4 + 1) * vstride + c] = a1 + a2;
                o[(u * 4 + 2) * vstride + c] = a2 - a1;
                o[(u * 4 + 3) * vstride + c] = a1 - a3;
            }
        }
    }
}

// y's 2x2 output blocks of tiles t0 .. t0+n (+)= A^T M A + bias; M_e (n, N)
static void wino_output(const float *M, int64_t mstride, int64_t N, const float *bias, int64_t Ho,
                        int64_t Wo, int64_t th, int64_t tw, int64_t t0, int64_t n, float *y,
                        int accumulate) {
    for (int64_t i = 0; i < n; i++) {
        int64_t t = t0 + i, b = t / (th * tw), r = t % (th * tw);
        int64_t oy = r / tw * 2, ox = r % tw * 2;
        float *out[4]; /* (oy, ox), (oy, ox+1), (oy+1, ox), (oy+1, ox+1); NULL: off the edge */
        for (int q = 0; q < 4; q++) {
            int64_t yy = oy + q / 2, xx = ox + q % 2;
            out[q] = yy < Ho && xx < Wo ? y + ((b * Ho + yy) * Wo + xx) * N : NULL;
        }
        const float *m = M + i * N;
        for (int64_t o = 0; o < N; o++) {
            float s[8]; /* A^T M: rows */
            for (int v = 0; v < 4; v++) {
                float m0 = m[v * mstride + o], m1 = m[(4 + v) * mstride + o];
                float m2 = m[(8 + v) * mstride + o], m3 = m[(12 + v) * mstride + o];
                s[v] = m0 + m1 + m2, s[4 + v] = m1 - m2 - m3;
            }
            float bo = bias ? bias[o] : 0.0f;
            for (int u = 0; u < 2; u++) { /* (A^T M) A: columns */
                float v0 = s[u * 4] + s[u * 4 + 1] + s[u * 4 + 2];
                float v1 = s[u * 4 + 1] - s[u * 4 + 2] - s[u * 4 + 3];
                float *p0 = out[u * 2], *p1 = out[u * 2 + 1];
                if (p0) p0[o] = (accumulate ? p0[o] + bo : bo) + v0;
                if (p1) p1[o] = (accumulate ? p1[o] + bo : bo) + v1;
            }
        }
    }
}

// x (B, H, W, C) -> y (B, Ho, Wo, N), stride 1, 3x3, through Winograd F(2x2, 3x3)
static void conv_wino(const float *x, int64_t B, int64_t H, int64_t W, const sf_conv2d_w *cw,
                      int64_t pt, int64_t pl, int64_t Ho, int64_t Wo, float *y, int accumulate) {
    const int64_t C = cw->cin, N = cw->cout, th = (Ho + 1) / 2, tw = (Wo + 1) / 2;
    const int64_t T = B * th * tw;
    /* Tiles per chunk: V and M together ~16 MB per thread (the GEMM re-packs
     * U_e on every call, so chunks of at least 128 tiles). */
    int64_t nt = (int64_t)((2 * SF_CONV_CHUNK_BYTES) / (16 * sizeof(float))) / (C + N);
    int64_t nchunks = conv_chunks(T, &nt, 128, 1024);
    const double work = 16.0 * (double)T * (double)N * (double)C;
#pragma omp parallel if (nchunks > 1 && work > 1e6)
    {
        float *V = sf_thread_scratch(SF_SCRATCH_CONV_A, (size_t)(16 * nt * C));
        float *M = sf_thread_scratch(SF_SCRATCH_CONV_B, (size_t)(16 * nt * N));
        float *zero = sf_calloc((size_t)C, sizeof(float));
        double t_col = 0, t_gemm = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t t0 = ch * nt, n = T - t0 < nt ? T - t0 : nt;
            double c0 = conv_prof ? omp_get_wtime() : 0;
            wino_input(x, H, W, C, pt, pl, th, tw, t0, n, zero, V, nt * C);
            double c1 = conv_prof ? omp_get_wtime() : 0;
            for (int e = 0; e < 16; e++) // M_e (n, N) = V_e (n, C) @ U_e (N, C)^T
                sf_sgemm(0, 1, n, N, C, 1.0f, V + e * nt * C, C, cw->w + e * N * C, C, 0.0f,
                         M + e * nt * N, N);
            double c2 = conv_prof ? omp_get_wtime() : 0;
            wino_output(M, nt * N, N, cw->bias, Ho, Wo, th, tw, t0, n, y, accumulate);
            if (conv_prof) t_col += c1 - c0 + omp_get_wtime() - c2, t_gemm += c2 - c1;
        }
        if (conv_prof) {
#pragma omp critical
            {
                sf_conv_prof_im2col_s += t_col;
                sf_conv_prof_gemm_s += t_gemm;
            }
        }
        free(zero);
    }
}

void sf_conv2d(const float *x, int64_t B, int64_t H, int64_t W, const sf_conv2d_w *cw,
               const int64_t pad[4], float *y, int accumulate) {
    // x (B, H, W, cin) -> y (B, Ho, Wo, cout) (+)= conv(x) + bias
    const int64_t C = cw->cin, N = cw->cout, k = cw->k, K = k * k * C, stride = cw->stride;
    const int64_t pt = pad ? pad[0] : 0, pl = pad ? pad[1] : 0, pb = pad ? pad[2] : 0,
                  pr = pad ? pad[3] : 0;
    const int64_t Ho = sf_conv2d_out_size(H, k, stride, pt, pb);
    const int64_t Wo = sf_conv2d_out_size(W, k, stride, pl, pr);
    const int64_t P = B * Ho * Wo;
    if (P <= 0 || N <= 0) return;
    if (conv_prof < 0) conv_prof = getenv("SAEFLOW_CONV_PROFILE") != NULL;
    sf_blas_single_threaded();
    if (cw->wino) {
        conv_wino(x, B, H, W, cw, pt, pl, Ho, Wo, y, accumulate);
        return;
    }
    /* A 1x1 stride-1 unpadded conv reads the activation matrix as it is. */
    const int direct = k == 1 && stride == 1 && !pt && !pl && !pb && !pr;
    int64_t mc = (int64_t)(SF_CONV_CHUNK_BYTES / sizeof(float)) / K;
    int64_t nchunks = conv_chunks(P, &mc, 256, 1024);
    double work = (double)P * (double)N * (double)K;
    /* Chunks of output pixels go to threads; each runs its own
     * single-threaded GEMM (one thread pool, as in linear.c). */
#pragma omp parallel if (nchunks > 1 && work > 1e6)
    {
        float *cols = direct ? NULL : sf_thread_scratch(SF_SCRATCH_CONV_A, (size_t)(mc * K));
        double t_col = 0, t_gemm = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t p0 = ch * mc, n = P - p0 < mc ? P - p0 : mc;
            double t0 = conv_prof ? omp_get_wtime() : 0;
            const float *A = x + p0 * C;
            if (!direct) {
                im2col_chunk(x, H, W, C, k, stride, pt, pl, Ho, Wo, p0, n, cols);
                A = cols;
            }
            double t1 = conv_prof ? omp_get_wtime() : 0;
            float *yc = y + p0 * N;
            float beta = accumulate ? 1.0f : 0.0f;
            if (cw->bias) { /* bias first, then the GEMM adds onto it (beta = 1) */
                for (int64_t i = 0; i < n; i++) {
                    float *row = yc + i * N;
                    if (accumulate)
                        for (int64_t o = 0; o < N; o++)
                            row[o] += cw->bias[o];
                    else
                        memcpy(row, cw->bias, (size_t)N * sizeof(float));
                }
                beta = 1.0f;
            }
            // y (n, N) = A (n, K) @ Wp (N, K)^T
            sf_sgemm(0, 1, n, N, K, 1.0f, A, K, cw->w, K, beta, yc, N);
            if (conv_prof) {
                double t2 = omp_get_wtime();
                t_col += t1 - t0, t_gemm += t2 - t1;
            }
        }
        if (conv_prof) {
#pragma omp critical
            {
                sf_conv_prof_im2col_s += t_col;
                sf_conv_prof_gemm_s += t_gemm;
            }
        }
    }
}

/* Pixels per statistics chunk: fixed, so the per-chunk partial sums, and the
 * order they are added in, do not depend on the thread count. */
#define SF_GN_CHUNK 256

void sf_groupnorm(const float *x, float *y, int64_t B, int64_t HW, int64_t C, int64_t G,
                  const float *gamma, const float *beta, float eps, int silu) {
    // x, y (B, HW, C); groups of C/G neighbouring channels; y == x allowed
    if (B <= 0 || HW <= 0 || C <= 0) return;
    const int64_t cg = C / G, npc = (HW + SF_GN_CHUNK - 1) / SF_GN_CHUNK;
    /* Per chunk: per-channel sum and sum of squares in double (the inner loop
     * runs along channels, contiguous in NHWC, and vectorizes); channels fold
     * into groups afterwards. Double sums make the one-pass variance
     * E[x^2] - mean^2 safe: its cancellation costs ~1e-16 * mean^2/var, far
     * below F32 resolution for any activation. */
    double *part = sf_malloc((size_t)(B * npc * 2 * C) * sizeof(double));
    const double work = (double)B * (double)HW * (double)C;
#pragma omp parallel for schedule(static) if (work > 65536)
    for (int64_t q = 0; q < B * npc; q++) {
        int64_t b = q / npc, c0 = q % npc * SF_GN_CHUNK;
        int64_t c1 = c0 + SF_GN_CHUNK < HW ? c0 + SF_GN_CHUNK : HW;
        double *s = part + q * 2 * C, *s2 = s + C;
        for (int64_t c = 0; c < C; c++)
            s[c] = 0, s2[c] = 0;
        for (int64_t p = c0; p < c1; p++) {
            const float *xr = x + (b * HW + p) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                double v = xr[c];
                s[c] += v;
                s2[c] += v * v;
            }
        }
    }
    /* scale a and shift d per (b, c): y = x a + d, a = rstd gamma,
     * d = beta - mean a (the form torch's CPU kernel uses too). */
    float *ad = sf_malloc((size_t)(B * 2 * C) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < G; g++) {
            double s = 0, s2 = 0;
            for (int64_t q = 0; q < npc; q++) {
                const double *pp = part + (b * npc + q) * 2 * C;
                for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                    s += pp[c], s2 += pp[C + c];
            }
            double n = (double)HW * (double)cg, mean = s / n, var = s2 / n - mean * mean;
            if (var < 0) var = 0;
            /* torch: rstd = 1 / sqrt(var + eps) in F32 */
            float fmean = (float)mean, rstd = 1.0f / sqrtf((float)var + eps);
            for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                float a = rstd * (gamma ? gamma[c] : 1.0f);
                ad[b * 2 * C + c] = a;
                ad[b * 2 * C + C + c] = (beta ? beta[c] : 0.0f) - fmean * a;
            }
        }
    free(part);
#pragma omp parallel for schedule(static) if (work > 65536)
    for (int64_t r = 0; r < B * HW; r++) {
        const float *a = ad + (r / HW) * 2 * C, *d = a + C;
        const float *xr = x + r * C;
        float *yr = y + r * C;
        if (silu) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float v = xr[c] * a[c] + d[c];
                yr[c] = v / (1.0f + sf_expf_fast(-v));
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++)
                yr[c] = xr[c] * a[c] + d[c];
        }
    }
    free(ad);
}

void sf_upsample_nearest2x(const float *x, float *y, int64_t B, int64_t H, int64_t W, int64_t C) {
    // x (B, H, W, C) -> y (B, 2H, 2W, C), y[b, 2i + dy, 2j + dx] = x[b, i, j]
    const size_t row = (size_t)C * sizeof(float);
#pragma omp parallel for schedule(static) if (B * H * W * C > 65536)
    for (int64_t bi = 0; bi < B * H; bi++) {
        int64_t b = bi / H, i = bi % H;
        float *y0 = y + ((b * 2 * H + 2 * i) * 2 * W) * C;
        const float *xr = x + bi * W * C;
        for (int64_t j = 0; j < W; j++) {
            memcpy(y0 + (2 * j) * C, xr + j * C, row);
            memcpy(y0 + (2 * j + 1) * C, xr + j * C, row);
        }
        memcpy(y0 + 2 * W * C, y0, 2 * row * (size_t)W); /* second output row: a copy */
    }
}

void sf_nchw_to_nhwc(const float *x, float *y, int64_t B, int64_t C, int64_t HW) {
#pragma omp parallel for schedule(static) if (B * C * HW > 65536)
    for (int64_t bp = 0; bp < B * HW; bp++) {
        int64_t b = bp / HW, p = bp % HW;
        for (int64_t c = 0; c < C; c++)
            y[bp * C + c] = x[(b * C + c) * HW + p];
    }
}

void sf_nhwc_to_nchw(const float *x, float *y, int64_t B, int64_t C, int64_t HW) {
#pragma omp parallel for schedule(static) if (B * C * HW > 65536)
    for (int64_t bc = 0; bc < B * C; bc++) {
        int64_t b = bc / C, c = bc % C;
        for (int64_t p = 0; p < HW; p++)
            y[bc * HW + p] = x[(b * HW + p) * C + c];
    }
}
