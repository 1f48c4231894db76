/* Sparse autoencoders: the model, its checkpoints, encode/decode/surgery.
 *
 * A checkpoint is the reference project's `save_pretrained` directory:
 *   config.json        {"features": d, "pages": n, "k": k, ...extra keys kept}
 *                      (no "arch": inferred from the tensor names)
 *   model.safetensors  encoder.weight [n,d], encoder.bias [n],
 *                      decoder.weight [d,n], bias [d]      (F32; BF16/F16 read)
 *
 * TopK semantics (reference `autoencoder.py`):
 *   encode: z = TopK_k(ReLU(W_enc (x - b) + b_enc))      x (d) -> z (n), k nonzeros
 *   decode: x_hat = W_dec z + b                          z (n) -> x_hat (d)
 *   surgery(x, f, s) = decode(encode(x) + s * e_f)
 *
 * Internally the decoder is kept transposed, W_decT (n, d): row j is decoder
 * column j, so the k columns a sparse code touches are k contiguous rows. That
 * makes the sparse decoder forward, its gradient, unit-norm projection and the
 * per-latent Adam update all row-contiguous. It is transposed back on save.
 *
 * Architectures: `arch` selects the forward/backward; TopK is the only one so
 * far. Parameters are also listed in `params[]` (checkpoint name, shape,
 * layout) so that save/load, Adam and gradient clipping iterate over them
 * without knowing the architecture.
 */
#ifndef SAEFLOW_SAE_H
#define SAEFLOW_SAE_H

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Architectures other than TopK live in src/sae/arch_*.c (docs/architectures.md). */
typedef enum {
    SF_SAE_TOPK = 0,
    SF_SAE_STANDARD,   /* ReLU + L1 (decoder-norm weighted) */
    SF_SAE_GATED,      /* Rajamanoharan et al. 2024 */
    SF_SAE_JUMPRELU,   /* per-latent threshold, STE */
    SF_SAE_BATCHTOPK,  /* top k*B over the batch; global threshold at inference */
    SF_SAE_MATRYOSHKA, /* nested prefixes over TopK or BatchTopK */
    SF_SAE_ARCH_COUNT
} sf_sae_arch;

const char *sf_sae_arch_name(sf_sae_arch a);
int sf_sae_arch_parse(const char *s, sf_sae_arch *a); /* -1 (with message) if unknown */

#define SF_SAE_MAX_PARAMS 8
#define SF_SAE_MAX_GROUPS 16

/* One trainable tensor. `shape` is the checkpoint shape; when `transposed`
 * the buffer holds the 2-D transpose (shape[1], shape[0]). `per_latent`: the
 * internal layout is n rows of `numel / n` floats, one row per latent. */
typedef struct {
    const char *name;
    float *data;
    int ndim;
    int64_t shape[2];
    size_t numel;
    int transposed;
    int per_latent;
} sf_sae_param;

struct cJSON;

typedef struct {
    sf_sae_arch arch;
    int d;         /* "features": input width */
    int n;         /* "pages": dictionary size */
    int k;         /* active latents per row (TopK); for the other architectures the
                    * code capacity per row (n, or k for matryoshka over TopK) */
    float *W_enc;  /* (n, d) encoder.weight */
    float *b_enc;  /* (n)    encoder.bias */
    float *W_decT; /* (n, d) decoder.weight transposed */
    float *b_dec;  /* (d)    bias: subtracted before encoding, added after decoding */
    sf_sae_param params[SF_SAE_MAX_PARAMS];
    int n_params;
    struct cJSON *config; /* config.json as loaded or built; extra keys preserved */
    /* Other architectures (src/sae/arch_*.c); NULL / 0 where unused. */
    float *r_mag;     /* (n) gated: magnitude path scale exp(r_mag) */
    float *b_mag;     /* (n) gated: mag_bias (gate_bias is b_enc, decoder_bias b_dec) */
    float *logthres;  /* (n) jumprelu: log of the per-latent threshold */
    float threshold;  /* batchtopk (and matryoshka over it): global inference threshold */
    int k_sel;        /* batchtopk / matryoshka: mean active latents per row in training */
    int batch_select; /* matryoshka: 1 = BatchTopK selection, 0 = TopK */
    int n_groups;     /* matryoshka: nested group sizes, summing to n */
    int groups[SF_SAE_MAX_GROUPS];
    float input_scale; /* training-time input scale (0 = none); folded into the weights on save */
    int save_half;     /* sf_sae_save stores tensors as 0: F32, 1: BF16, 2: F16 */
} sf_sae;

/* Fresh model as the reference initialises it: W_enc ~ U(-1/sqrt(d), 1/sqrt(d))
 * (torch nn.Linear), W_dec = W_enc^T with unit-norm columns, biases zero. */
int sf_sae_init(sf_sae *s, sf_sae_arch arch, int d, int n, int k, uint64_t seed);
void sf_sae_free(sf_sae *s);
/* Loads a checkpoint directory (config.json + model.safetensors). Errors name
 * the file, the tensor or key, and the problem. */
int sf_sae_load(sf_sae *s, const char *dir);
/* Writes the directory (created if needed). model.safetensors first, then
 * config.json, each atomically (temp file, fsync, rename). */
int sf_sae_save(const sf_sae *s, const char *dir);
/* Standard and gated: decoder columns to unit norm, the norm folded into the
 * encoder (W_enc row j, b_enc[j], gated mag_bias[j] times ||w_j||; zero
 * columns left alone), so codes are in the reference's units (its encode
 * multiplies code j by ||w_j||, its decode divides) and every layout gives
 * the same codes. Reconstructions are unchanged. Save does it on a copy,
 * load of a reference-layout checkpoint on the model; a no-op on columns
 * already within 1e-6 of unit norm, and for the other architectures. */
void sf_sae_fold_decoder_norms(sf_sae *s);
/* Sets an extra config.json key (number or string), e.g. training settings. */
void sf_sae_config_set_number(sf_sae *s, const char *key, double v);
void sf_sae_config_set_string(sf_sae *s, const char *key, const char *v);

/* Sparse codes of B rows: row b has cnt[b] <= k entries at idx/val[b*k ...],
 * latent indices ascending, values > 0. */
typedef struct {
    int64_t B;
    int k;
    int32_t *idx; /* (B, k) */
    float *val;   /* (B, k) */
    int32_t *cnt; /* (B) */
} sf_sae_codes;
void sf_sae_codes_alloc(sf_sae_codes *c, int64_t B, int k);
void sf_sae_codes_free(sf_sae_codes *c);
/* The codes as dense activations z (B, n): zero except the cnt[b] entries of
 * each row (indices must be in [0, n)). Parallel over rows. */
void sf_sae_codes_dense(const sf_sae_codes *c, int n, float *z);

/* x (B, d) -> codes. Parallel over rows (OpenMP); the encoder GEMM runs on row
 * chunks, each followed by the fused bias + ReLU + TopK while it is in cache.
 * Fails on non-finite input (naming the row). */
int sf_sae_encode(const sf_sae *s, const float *x, int64_t B, sf_sae_codes *out);

/* The same, prepared for many calls on unchanged weights: for large TopK
 * models (and row-TopK Matryoshka) it quantises W_enc once and finds each
 * row's exact TopK through the int16 pre-filter (docs/sae.md), twice the
 * arithmetic rate of the F32 GEMM. The selected values are F32 dot products:
 * equal to sf_sae_encode's to F32 rounding (the GEMM sums in another order),
 * and independent of B, of how rows are split into calls, and of threads.
 * Safe to run from several threads at once. Holds an int16 copy of W_enc
 * (half its size). The model must not change while the encoder lives. */
typedef struct sf_sae_encoder sf_sae_encoder;
sf_sae_encoder *sf_sae_encoder_new(const sf_sae *s);
int sf_sae_encoder_run(sf_sae_encoder *e, const float *x, int64_t B, sf_sae_codes *out);
void sf_sae_encoder_free(sf_sae_encoder *e);
/* sf_sae_encoder_run in fixed slices: rows [i S, (i + 1) S) of x, S =
 * SF_SAE_ENCODE_SLICE, one slice per thread, each a single-threaded
 * encoder call. The encoder GEMM's rounding can depend on its row count
 * (OpenBLAS picks other kernels for small M), so fixed slices make every
 * row's code the same for any B that is a multiple of S and any thread
 * count. Errors name rows from r0 (the first row's global index). */
#define SF_SAE_ENCODE_SLICE 256
int sf_sae_encoder_run_sliced(sf_sae_encoder *e, const float *x, int64_t B, int64_t r0,
                              sf_sae_codes *out);
/* codes -> x_hat (B, d). */
void sf_sae_decode(const sf_sae *s, const sf_sae_codes *c, float *x_hat);
/* x (B, d) -> decode(encode(x) + strength * e_feature) (B, d). */
int sf_sae_surgery(const sf_sae *s, const float *x, int64_t B, int feature, float strength,
                   float *out);

/* Old name of sf_kernels_set_threads (kernels.h), the one thread setter
 * (0 = OMP_NUM_THREADS where set, else all cores). OpenBLAS is kept
 * single-threaded because each OpenMP thread runs its own GEMM on its own
 * row chunk (no oversubscription, no spinning BLAS workers, and every row's
 * result is independent of the thread count). */
void sf_sae_set_threads(int threads);

/* OpenBLAS's kernel name ("SkylakeX", "Haswell", "Prescott"...). */
const char *sf_sae_blas_core(void);

#ifdef __cplusplus
}
#endif
#endif
