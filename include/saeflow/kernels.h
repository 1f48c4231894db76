/* The kernel layer: the numeric building blocks that every model in saeflow
 * (CLIP now; T5, FLUX and the VAE later) is written in.
 *
 * Design
 * - Activations are always F32, row-major, with shapes in the comments
 *   (llm.c style). Weights are `sf_weight`: F32, BF16 or F16 storage behind
 *   one struct, so a model can be held in half the memory (`--dtype bf16`) while
 *   every kernel still computes in F32.
 * - The big matrix products with F32 weights go to sf_sgemm (oneDNN's sgemm
 *   where built with it, else OpenBLAS; one call per thread). BF16/F16
 *   weights go to our own GEMM (gemm_half.c, AVX-512 or AVX2), which widens
 *   them to F32 in its packing step, so a BF16 model never holds an F32
 *   copy of a matrix and the weights cross memory once, as 2 bytes.
 * - One integer product, sf_i16_gemm_packed (int16 in, int32 out, AVX512-VNNI),
 *   with a quantiser whose error bound is proven: the TopK SAE trainer uses
 *   it to find the exact F32 TopK without the F32 encoder GEMM.
 * - Everything else (norms, softmax, activations, attention bookkeeping) is
 *   plain C with OpenMP pragmas, parallel over rows. Per-row work is done by
 *   one thread in a fixed order, so its results do not depend on the thread
 *   count. GEMMs are split over output blocks, never over the reduction. The
 *   BF16/F16 GEMM sums each output in k order whatever the blocking, so its
 *   bits do not depend on the thread count either; with sf_sgemm a thread's
 *   block size changes the BLAS blocking, so F32-weight outputs can move by
 *   an ulp with the thread count (same threads: same bits).
 * - Kernels never allocate on the hot path: their scratch (packed blocks,
 *   im2col columns, attention scores) is kept per thread for the thread's
 *   life. None can fail on valid shapes, so they return void. Shape
 *   validation belongs to the model loader.
 *
 * A CUDA backend (see docs/kernels.md) would keep these signatures and swap
 * the implementation file: the pointers become device pointers, sf_weight
 * gains a device copy, and sf_linear maps to cublasGemmEx with BF16 inputs.
 */
#ifndef SAEFLOW_KERNELS_H
#define SAEFLOW_KERNELS_H

#include "saeflow/common.h"
#include "saeflow/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- weights ------------------------------------------------------------ */

/* A weight tensor in F32, BF16 or F16 storage. `data` is float* (F32) or
 * uint16_t* (BF16: the upper half of an IEEE float; F16: IEEE half). Half
 * weights are widened to F32 a panel at a time inside the kernels, so an F16
 * checkpoint is used as F16 (never F16 -> F32 -> BF16). When `owned` is set the
 * struct owns that buffer (free with sf_weight_free); otherwise `data` points
 * into someone else's memory, e.g. an mmapped safetensors file. */
typedef struct {
    sf_dtype dtype; /* SF_DT_F32, SF_DT_BF16 or SF_DT_F16 */
    int ndim;
    int64_t shape[4];
    const void *data;
    void *owned;
} sf_weight;

static inline int64_t sf_weight_numel(const sf_weight *w) {
    int64_t n = 1;
    for (int i = 0; i < w->ndim; i++)
        n *= w->shape[i];
    return n;
}
/* Makes `w` from the elements of `src` (any float dtype, sf_dtype_is_float;
 * any alignment) stored as `want` (F32, BF16 or F16). Zero-copy when the
 * dtypes match and `src` is suitably aligned; otherwise converts into an
 * owned buffer with sf_convert (narrowing rounds to nearest even). Returns
 * -1 for an unsupported dtype. */
int sf_weight_make(sf_weight *w, sf_dtype want, sf_dtype src_dtype, const void *src, int ndim,
                   const int64_t *shape);
void sf_weight_free(sf_weight *w);
/* Rows [r0, r0 + nr) of a 2-D weight, widened to F32: dst (nr, shape[1]). */
void sf_weight_rows_f32(const sf_weight *w, int64_t r0, int64_t nr, float *dst);

/* ---- threads / BLAS ------------------------------------------------------ */

/* The one thread setter: n threads for every OpenMP region (kernels, SAE
 * training, conversions); OpenBLAS stays single-threaded (OpenMP owns the
 * threads). n <= 0 means OpenMP's default: the OMP_NUM_THREADS environment
 * variable where set, otherwise all cores (omp_get_num_procs) -- also after
 * an earlier call chose another count. */
void sf_kernels_set_threads(int n);
int sf_kernels_threads(void);
/* "OpenBLAS 0.3.21 ... core SkylakeX, 2 threads" for logs and benchmarks. */
const char *sf_kernels_blas_info(void);
/* OpenBLAS picks its kernels once, when the library loads, from the CPU
 * model; a release older than the CPU falls back to generic SSE3 kernels
 * ("Prescott"), 3-4x slower than its AVX-512 ones. The variable
 * OPENBLAS_CORETYPE overrides the choice but is read only at load time, so a
 * program that wants full speed re-executes itself once with it set.
 * Call before any output, in a command or benchmark entry point (argv is
 * recovered from /proc/self/cmdline): returns normally when nothing
 * needs doing (variable already set, core already suitable, or exec failed),
 * otherwise does not return. Changes speed, and GEMM rounding in the last bits. */
void sf_kernels_fix_blas_core(void);
/* The decision alone: the OPENBLAS_CORETYPE value sf_kernels_fix_blas_core
 * would re-execute with, or NULL. A host that cannot re-execute (the Python
 * binding) asks it in a child process and sets the variable before loading
 * the library, so its GEMMs run the CLI's kernels (same speed, same bits). */
const char *sf_kernels_blas_core_wanted(void);

/* ---- dense layers -------------------------------------------------------- */

/* C (M, N) = alpha * op(A) @ op(B) + beta * C, all row-major, on the calling
 * thread only (callers split work over OpenMP threads themselves; inside a
 * parallel region it never starts threads of its own). op(A) is A (M, K) or,
 * with trans_a, A^T for A (K, M); likewise op(B) (K, N) or B^T for B (N, K).
 * The one F32 GEMM of the project: oneDNN's JIT sgemm where saeflow was built
 * with it (SF_HAVE_DNNL, the default where Debian ships libdnnl), otherwise
 * OpenBLAS. Results depend on which, and on the shape of the call, in the
 * last bits. */
void sf_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);
/* "oneDNN 2.6.3 sgemm" or "OpenBLAS cblas_sgemm": which sf_sgemm is built in. */
const char *sf_sgemm_backend(void);

/* y = x @ W^T + bias  (or y += ..., when accumulate is nonzero)
 * x (M, K) row-major, W (N, K) F32, BF16 or F16, bias (N) or NULL,
 * y (M, N) with row stride ldy >= N (so results can land inside a wider
 * buffer, e.g. the q/k/v thirds of a fused (M, 3D) buffer). Accumulate turns
 * a residual add into the GEMM's beta = 1. */
void sf_linear(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias,
               float *y, int64_t ldy, int accumulate);

/* y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim (biased
 * variance, like torch). gamma/beta may be NULL (no affine). x, y (M, D);
 * in place (y == x) is fine. */
void sf_layernorm(const float *x, float *y, int64_t M, int64_t D, const float *gamma,
                  const float *beta, float eps);
/* y = x / sqrt(mean(x^2) + eps) * gamma (gamma may be NULL). x, y (M, D). */
void sf_rmsnorm(const float *x, float *y, int64_t M, int64_t D, const float *gamma, float eps);
/* Numerically stable softmax of each row, in place: x (M, N). A row whose
 * entries are all -INFINITY becomes all zeros (nothing to attend to). */
void sf_softmax_rows(float *x, int64_t M, int64_t N);

typedef enum {
    SF_ACT_IDENTITY,
    SF_ACT_QUICK_GELU, /* x * sigmoid(1.702 x)          (CLIP "quick_gelu") */
    SF_ACT_GELU,       /* 0.5 x (1 + erf(x / sqrt 2))    ("gelu") */
    SF_ACT_GELU_TANH,  /* tanh approximation  ("gelu_new", "gelu_pytorch_tanh") */
    SF_ACT_SILU,       /* x * sigmoid(x)                 ("silu", "swish") */
    SF_ACT_RELU,
} sf_act;
/* Hugging Face `hidden_act` name -> sf_act; -1 if unknown. */
int sf_act_parse(const char *name, sf_act *out);
const char *sf_act_name(sf_act a);
/* x (n) in place. */
void sf_activation(float *x, size_t n, sf_act a);

/* y += x, both (n). */
void sf_add(float *y, const float *x, size_t n);

/* ---- attention ----------------------------------------------------------- */

/* Multi-head scaled dot-product attention, one (batch, head) pair at a time
 * with two GEMMs and a stable softmax:
 *   S = scale * Q_bh K_bh^T (Tq, Tk); masked entries -> -inf; P = softmax(S);
 *   O_bh = P V_bh (Tq, Dh)
 * q (B, Tq, H*Dh) with row stride ldq; k, v (B, Tk, H*Dh) with row strides
 * ldk, ldv (so q, k, v may be the three thirds of one fused (B, T, 3D)
 * buffer); out (B, Tq, H*Dh) with row stride ldo. Head h occupies columns
 * [h*Dh, (h+1)*Dh) of each row, like torch's view(B, T, H, Dh).
 * causal: query i sees keys j <= i + (Tk - Tq) (bottom-right aligned, as for
 * a query suffix of the keys). key_mask (B, Tk) or NULL: 0 = padding, never
 * attended. A query row with no visible key gets zeros.
 * Ragged batches (sequences of different lengths packed back to back, no
 * padding rows): q_off and k_off, each B + 1 row offsets (like flash-attn's
 * cu_seqlens), give sequence b the query rows [q_off[b], q_off[b+1]) and the
 * key/value rows [k_off[b], k_off[b+1]); Tq and Tk are then ignored (except
 * as the strides of bias), out rows follow q_off, and key_mask is indexed by
 * packed key row. Both NULL: the uniform (B, Tq) / (B, Tk) layout above.
 * bias (H, Tq, Tk) or NULL: an additive score bias shared by the batch (T5's
 * relative position bias), added after scaling and before the masks:
 *   S = scale * Q_bh K_bh^T + bias_h. With ragged batches, Tq and Tk must be
 * set to at least the longest sequence and sequence b uses the top-left
 * (tq_b, tk_b) corner of each head's (Tq, Tk) matrix.
 * Scratch: queries are processed in blocks of rows, so each thread holds
 * O(block x Tk) scores, not Tq x Tk (FLUX at 1024 px: 4,352 tokens). While
 * Tq x Tk stays small (<= 2^18 floats, e.g. CLIP's 257 x 257 or FLUX at
 * 256 px) a whole sequence is one block. Block boundaries depend only on the
 * shape, so results do not depend on the thread count. */
typedef struct {
    int64_t B, Tq, Tk, H, Dh;
    int64_t ldq, ldk, ldv, ldo;
    float scale; /* usually 1/sqrt(Dh); T5 uses 1 */
    int causal;
    const int32_t *key_mask;
    const int64_t *q_off, *k_off; /* (B + 1) each, or both NULL */
    const float *bias;            /* (H, Tq, Tk) additive score bias, or NULL */
} sf_attn_shape;
void sf_attention(const sf_attn_shape *s, const float *q, const float *k, const float *v,
                  float *out);

/* ---- transformer blocks (FLUX, T5) ---------------------------------------
 * The pieces of FLUX's double/single-stream blocks and T5's layers that are
 * not GEMMs (src/kernels/adaln.c, src/kernels/rope.c). All F32, parallel over
 * rows with one thread per row in a fixed order (thread-count independent),
 * and written with the same operation order as the diffusers code they
 * mirror, so most results match torch's F32 bit for bit. */

/* RMSNorm per head inside a fused buffer, in place (diffusers RMSNorm on q/k
 * after view(B, T, H, Dh)): rows m in [0, M) at stride ld, each row holding H
 * segments of Dh floats from column 0: seg (m, h) = x + m*ld + h*Dh.
 *   seg = seg * rsqrt(mean(seg^2) + eps) * gamma, mean accumulated in F32.
 * gamma (Dh) or NULL. */
void sf_rmsnorm_heads(float *x, int64_t M, int64_t ld, int64_t H, int64_t Dh, const float *gamma,
                      float eps);
/* RoPE tables (diffusers FluxPosEmbed): ids (M, n_axes) positions, as floats
 * like diffusers' ids; axes_dim[n_axes] even widths summing to Dh;
 * cos, sin (M, Dh/2). Pair i of a head belongs to axis a when it falls in
 * that axis's share of Dh/2 pairs (the first axes_dim[0]/2 pairs to axis 0,
 * ...); with j its index inside the axis, omega_j = theta^(-2j / d_a) and
 * angle = id[m][a] * omega_j in float64, cos/sin rounded to F32 at the end. */
void sf_rope_table(const float *ids, int64_t M, int n_axes, const int *axes_dim, double theta,
                   float *cos, float *sin);
/* Interleaved-pair RoPE in place on H heads of Dh (Dh even) in rows of
 * stride ld (q or k inside a fused buffer); cos/sin (M, Dh/2), row m for
 * row m of x, the same for every head:
 *   out[2i] = x[2i] c_i - x[2i+1] s_i ;  out[2i+1] = x[2i+1] c_i + x[2i] s_i */
void sf_rope_apply(float *x, int64_t M, int64_t ld, int64_t H, int64_t Dh, const float *cos,
                   const float *sin);
/* AdaLN modulation: y = x * (1 + scale_b) + shift_b for batch b; x, y
 * (B, T, D) dense (y == x allowed); shift_b = shift + b*ld_mod and
 * scale_b = scale + b*ld_mod (D each): chunks of a (B, k*D) modulation
 * output, e.g. shift = mod + 0*D, scale = mod + 1*D, ld_mod = 6*D. */
void sf_ada_modulate(float *y, const float *x, int64_t B, int64_t T, int64_t D, const float *shift,
                     const float *scale, int64_t ld_mod);
/* Gated residual: x (B, T, D) += gate_b * y, y rows of D at stride ldy
 * (row b*T + t), gate_b = gate + b*ld_mod (D). */
void sf_gated_add(float *x, const float *y, int64_t ldy, int64_t B, int64_t T, int64_t D,
                  const float *gate, int64_t ld_mod);
/* diffusers get_timestep_embedding: t (B) -> out (B, dim), half = dim/2:
 *   exponent_i = -ln(max_period) * i / (half - downscale_freq_shift)
 *   arg_i = scale * t * exp(exponent_i);  out = [sin(arg), cos(arg)]
 * or [cos, sin] with flip_sin_to_cos; an odd dim gets a trailing 0. F32
 * arithmetic in torch's order, with exp/sin/cos rounded correctly; torch's
 * own (SLEEF, <= 1 ulp) can differ by an ulp, which the argument t * f
 * magnifies: up to ~3e-5 absolute at t = 1000 (tests/kernels). FLUX: dim
 * 256, flip 1, shift 0, scale 1, max_period 10000, t = 1000 * sigma. */
void sf_timestep_embedding(const float *t, int64_t B, int64_t dim, int flip_sin_to_cos,
                           float downscale_freq_shift, float scale, float max_period, float *out);

/* ---- convolution as GEMM -------------------------------------------------- */

/* Non-overlapping patch embedding (Conv2d with kernel = stride = p, no
 * padding), the ViT stem:
 * px (B, C, H, W), W (D, C*p*p) (a Conv2d weight (D, C, p, p) seen as 2-D),
 * bias (D) or NULL -> out (B, (H/p)*(W/p), D), patches in row-major grid
 * order (like torch's flatten(2).transpose(1, 2)). Done as im2col + GEMM.
 * Like torch, trailing rows/columns that do not fill a patch are ignored. */
void sf_patch_embed(const float *px, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p,
                    const sf_weight *w, const float *bias, float *out);

/* ---- convolution (VAE) (src/kernels/conv.c) ------------------------------- */

/* Activation layout: NHWC. An image batch x (B, H, W, C) is the row-major
 * (B*H*W, C) matrix of pixels, channels contiguous: a 1x1 conv or a per-pixel
 * Linear is one GEMM on it, and a 3x3 conv is im2col (contiguous runs of
 * 3*C floats) + one GEMM whose rows are the output pixels (why, with a
 * measurement: conv.c). Models convert from/to torch's NCHW at their edges. */

/* A Conv2d weight repacked at load, F32, for the stride it runs at:
 * - im2col form: w (cout, k*k*cin), column (ky*k + kx)*cin + ci;
 * - wino (3x3, stride 1): w = 16 matrices U_e (cout, cin), the Winograd
 *   F(2x2, 3x3) transform G g G^T of each kernel (conv.c says why);
 * bias (cout) or NULL, not owned. */
typedef struct {
    int64_t cout, cin, k, stride;
    int wino;
    float *w;
    const float *bias;
} sf_conv2d_w;
/* From a torch Conv2d weight (cout, cin, k, k) in any sf_weight storage and
 * view (e.g. the loader's 2-D (cout, cin*k*k)); widened to F32. 3x3 stride-1
 * convs are packed for Winograd unless SAEFLOW_CONV_WINOGRAD=0. -1 + sf_error
 * if the element count does not match. */
int sf_conv2d_pack(sf_conv2d_w *cw, const sf_weight *w, int64_t cout, int64_t cin, int64_t k,
                   int64_t stride, const float *bias);
void sf_conv2d_free(sf_conv2d_w *cw);
/* Output length of a conv along one axis: (n + pad0 + pad1 - k) / stride + 1. */
int64_t sf_conv2d_out_size(int64_t n, int64_t k, int64_t stride, int64_t pad0, int64_t pad1);
/* y (B, Ho, Wo, cout) = conv(x (B, H, W, cin)) + bias, or y += ... with
 * accumulate (a residual add folded into the GEMM). Zero padding
 * pad = {top, left, bottom, right} (NULL: none), so torch's padding=1 is
 * {1,1,1,1} and the VAE encoder's downsampler F.pad(x, (0,1,0,1)) + stride 2
 * is {0,0,1,1}. y must not overlap x. */
void sf_conv2d(const float *x, int64_t B, int64_t H, int64_t W, const sf_conv2d_w *cw,
               const int64_t pad[4], float *y, int accumulate);
/* torch.nn.GroupNorm per sample over (HW, C/G channels), then optional SiLU:
 * x, y (B, HW, C) NHWC, G groups of C/G neighbouring channels; gamma/beta (C)
 * or NULL; statistics summed in double in a fixed order (thread-count
 * independent), rstd = 1/sqrt(var + eps) in F32. y == x allowed. */
void sf_groupnorm(const float *x, float *y, int64_t B, int64_t HW, int64_t C, int64_t G,
                  const float *gamma, const float *beta, float eps, int silu);
/* Nearest 2x upsampling (F.interpolate(scale_factor=2, mode="nearest")):
 * x (B, H, W, C) -> y (B, 2H, 2W, C). */
void sf_upsample_nearest2x(const float *x, float *y, int64_t B, int64_t H, int64_t W, int64_t C);
/* Layout changes: x (B, C, HW) <-> y (B, HW, C). */
void sf_nchw_to_nhwc(const float *x, float *y, int64_t B, int64_t C, int64_t HW);
void sf_nhwc_to_nchw(const float *x, float *y, int64_t B, int64_t C, int64_t HW);

/* ---- int16 GEMM with a proven error bound (src/kernels/igemm.c) -------- */

/* A row v (K floats) as v = scale * q + delta, q int16 (|q| <= 32767), with
 * ||q|| < SF_I16_QNORM, so that the int32 dot product of two such rows never
 * overflows. norm = ||v||, qnorm >= ||scale * q||, resid >= ||delta||. For two
 * rows x, w: |x.w - sx*sw*(qx.qw)| <= resid_x * norm_w + qnorm_x * resid_w. */
typedef struct {
    float scale, norm, qnorm, resid;
} sf_quant16;
#define SF_I16_QNORM 46000.0 /* 46000^2 < 2^31 */
void sf_quant16_row(const float *v, int64_t K, int16_t *q, sf_quant16 *out);

#define SF_I16_MR 12 /* rows of A per micro-tile */
#define SF_I16_NR 32 /* rows of B per micro-tile */
/* 1 when the build has the AVX512-VNNI micro-kernel (else a scalar loop). */
int sf_i16_gemm_fast(void);
/* Packed sizes in elements: int32 for A, int16 for B. */
int64_t sf_i16_pack_a_size(int64_t m, int64_t K);
int64_t sf_i16_pack_b_size(int64_t n, int64_t K);
void sf_i16_pack_a(const int16_t *a, int64_t m, int64_t K, int64_t lda, int32_t *pa);
void sf_i16_pack_b(const int16_t *b, int64_t n, int64_t K, int64_t ldb, int16_t *pb);
/* c (m, n) int32, row stride ldc = A (m, K) . B (n, K)^T from packed operands
 * (64-byte aligned). Single-threaded: callers split rows or columns. */
void sf_i16_gemm_packed(int64_t m, int64_t n, int64_t K, const int32_t *pa, const int16_t *pb,
                        int32_t *c, int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
