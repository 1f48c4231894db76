/* Steering FLUX.1 sampling with SAE features (`saeflow flux generate
 * --steer CKPT:FEATURE:STRENGTH`, docs/generate.md).
 *
 * A steer edits the rows of one hooked block output (sf_flux_request: the
 * block, its stream, delta or not) after that block, at chosen sampling
 * steps, through the generator's edit callback (sf_flux_gen_opts.edit):
 *
 *   add      x <- x + s * W_dec[:, f]              (the error-preserving form)
 *   surgery  x <- decode(encode(x) + s * e_f)      (the reference's sae.surgery:
 *                                                  sf_sae_surgery, bit for bit)
 *
 * For a linear decoder, decode(encode(x) + s e_f) - decode(encode(x)) =
 * s W_dec[:, f], so `add` is x + surgery(x) - surgery_0(x): the same change,
 * keeping the SAE's reconstruction error x - decode(encode(x)). Strength 0
 * in `add` mode leaves the rows untouched (the unsteered image bit for bit);
 * in `surgery` mode it replaces x by the reconstruction.
 *
 * Delta hooks (SAEs trained on block output - input): the edit applies to
 * the delta and the output gets the same additive change: add: out + s W_dec[:, f];
 * surgery: out <- in + surgery(out - in) (needs the block input:
 * sf_flux_gen_opts.edit_input = sf_flux_steer_needs_input(...)).
 */
#ifndef SAEFLOW_FLUX_STEER_H
#define SAEFLOW_FLUX_STEER_H

#include "saeflow/flux.h"
#include "saeflow/sae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SF_STEER_ADD = 0,     /* x + s W_dec[:, f] */
    SF_STEER_SURGERY = 1, /* decode(encode(x) + s e_f) */
} sf_steer_mode;

typedef struct {
    const sf_sae *sae;     /* borrowed */
    sf_flux_request hook;  /* block, stream the SAE was trained on, delta */
    int feature;           /* latent in [0, sae->n) */
    sf_flux_stream tokens; /* rows edited: text, image or both */
    sf_steer_mode mode;
    float strength;         /* every example, unless strengths */
    const float *strengths; /* (B) per example of the generate call, or NULL */
} sf_flux_steer;

/* Steers of one generation, applied in order after their block (a later
 * steer on the same block sees the earlier one's result). */
typedef struct {
    const sf_flux_steer *steers;
    int n;
    const uint8_t *steps; /* steps[i] != 0: steer at step i; NULL: every step */
    int n_steps;          /* length of steps */
    float *buf;           /* scratch (owned; sf_flux_steer_ctx_free) */
    size_t cap;
} sf_flux_steer_ctx;

/* The edit callback (an sf_flux_gen_edit_fn); ctx is an sf_flux_steer_ctx. */
int sf_flux_steer_edit(void *ctx, int step, float sigma, const sf_flux_block_view *v);
void sf_flux_steer_ctx_free(sf_flux_steer_ctx *c);
/* 1 if a steer needs the block inputs (surgery on a delta hook). */
int sf_flux_steer_needs_input(const sf_flux_steer *s, int n);

/* -1 + error unless the steer fits the model: a double or single block the
 * model has, SAE width == the transformer's width, feature in range, tokens
 * the hook's stream for double blocks (their streams are different
 * buffers). */
int sf_flux_steer_check(const sf_flux_steer *s, const sf_flux *m);

/* The hook an SAE was trained at: config.json "hook" (written by `train
 * --source flux`). 0 = found, 1 = absent (no error set), -1 = present but
 * not a FLUX hook (error). */
int sf_flux_steer_hook_of(const sf_sae *s, sf_flux_request *r);
/* Default rows for a hook: its stream, image rows for a single-block hook
 * on text+image. */
sf_flux_stream sf_flux_steer_default_tokens(const sf_flux_request *r);

/* "CKPT:FEATURE:STRENGTH" (with_strength) or "CKPT:FEATURE", split at the
 * last colons (a path may hold ':'). *ckpt is malloc'd. -1 + error. */
int sf_flux_steer_parse_spec(const char *s, int with_strength, char **ckpt, int *feature,
                             float *strength);
/* "all", or a comma list of steps and ranges "0,2", "0-1" in [0, steps):
 * mask (steps) of 0/1. -1 + error. */
int sf_flux_steer_parse_steps(const char *s, int steps, uint8_t *mask);
/* "image", "text", "both" -> stream; "add", "surgery" -> mode. -1 + error. */
int sf_flux_steer_parse_tokens(const char *s, sf_flux_stream *t);
int sf_flux_steer_parse_mode(const char *s, sf_steer_mode *m);
/* A comma list of finite numbers ("0,4,8,-2"), at most max. Count, or -1 + error. */
int sf_flux_steer_parse_list(const char *s, double *v, int max);

#ifdef __cplusplus
}
#endif
#endif
