/* FLUX prompt encoding (diffusers pipeline_flux.py, encode_prompt):
 *   CLIP: ids = tokenizer(p, padding="max_length", max_length=77,
 *         truncation=True); pooled = text_encoder(ids).pooler_output
 *   T5:   ids = tokenizer_2(p, padding="max_length", max_length=L,
 *         truncation=True); prompt_embeds = text_encoder_2(ids)[0]
 * no attention masks. Prompts go through in chunks so memory stays bounded
 * by the chunk, not by n. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/clip.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/t5.h"
#include "saeflow/t5_tokenizer.h"
#include "saeflow/clip_bpe.h"

#define CHUNK 8 /* prompts per forward */

struct sf_flux_text {
    sf_tokenizer *clip_tok;
    sf_clip *clip;
    sf_t5_tokenizer *t5_tok;
    sf_t5 *t5;
    int clip_ctx; /* 77, or the tower's max_position_embeddings if smaller */
};

void sf_flux_text_free(sf_flux_text *m) {
    if (!m) return;
    sf_tokenizer_free(m->clip_tok);
    sf_clip_free(m->clip);
    sf_t5_tokenizer_free(m->t5_tok);
    sf_t5_free(m->t5);
    free(m);
}

sf_flux_text *sf_flux_text_load_paths(const sf_flux_text_paths *p, sf_dtype t5_dtype) {
    sf_flux_text *m = sf_calloc(1, sizeof *m);
    sf_clip_load_opts co = {SF_DT_F32, 0, 1};
    if (!(m->clip_tok = sf_tokenizer_load_dir(p->clip_tokenizer)) ||
        !(m->clip = sf_clip_load(p->clip_model, &co)) ||
        !(m->t5_tok = sf_t5_tokenizer_load_dir(p->t5_tokenizer)) ||
        !(m->t5 = sf_t5_load(p->t5_model, t5_dtype))) {
        sf_flux_text_free(m);
        return NULL;
    }
    const sf_clip_config *cc = sf_clip_text_config(m->clip);
    m->clip_ctx = cc->max_positions < SF_CLIP_CONTEXT ? cc->max_positions : SF_CLIP_CONTEXT;
    if (sf_t5_tokenizer_vocab_size(m->t5_tok) > sf_t5_config_of(m->t5)->vocab_size) {
        sf_error("%s: the tokenizer's %d ids do not fit the encoder's vocab_size %d",
                 p->t5_tokenizer, sf_t5_tokenizer_vocab_size(m->t5_tok),
                 sf_t5_config_of(m->t5)->vocab_size);
        sf_flux_text_free(m);
        return NULL;
    }
    return m;
}

sf_flux_text *sf_flux_text_load(const char *dir, sf_dtype t5_dtype) {
    char *a = sf_path_join(dir, "tokenizer"), *b = sf_path_join(dir, "text_encoder"),
         *c = sf_path_join(dir, "tokenizer_2"), *d = sf_path_join(dir, "text_encoder_2");
    sf_flux_text_paths p = {a, b, c, d};
    sf_flux_text *m = sf_flux_text_load_paths(&p, t5_dtype);
    if (!m) sf_error_prefix("%s (a diffusers FLUX folder)", dir);
    free(a), free(b), free(c), free(d);
    return m;
}

int sf_flux_text_joint_dim(const sf_flux_text *m) {
    return sf_t5_config_of(m->t5)->d_model;
}
int sf_flux_text_pooled_dim(const sf_flux_text *m) {
    return sf_clip_text_config(m->clip)->hidden;
}

int sf_flux_encode_prompts(const sf_flux_text *m, const char *const *prompts, int64_t n, int L,
                           float *prompt_embeds, float *pooled) {
    if (L < 1 || L > 100000)
        return sf_error("flux prompts: max_sequence_length %d out of range", L);
    const int64_t J = sf_flux_text_joint_dim(m), P = sf_flux_text_pooled_dim(m), C = m->clip_ctx;
    int32_t *ids = sf_malloc((size_t)(CHUNK * (L > C ? L : C)) * sizeof(int32_t));
    int rc = 0;
    for (int64_t i0 = 0; i0 < n && !rc; i0 += CHUNK) {
        const int64_t b = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (pooled) {
            for (int64_t j = 0; j < b && !rc; j++)
                if (sf_tokenizer_encode(m->clip_tok, prompts[i0 + j], (int)C, ids + j * C, NULL) <
                    0)
                    rc = sf_error_prefix("prompt %lld (CLIP tokenizer)", (long long)(i0 + j));
            sf_clip_request r = {SF_CLIP_POOLED, 0, SF_CLIP_TOK_POOLED};
            if (!rc && sf_clip_text_forward(m->clip, ids, NULL, b, C, &r, pooled + i0 * P)) rc = -1;
        }
        if (prompt_embeds && !rc) {
            for (int64_t j = 0; j < b && !rc; j++)
                if (sf_t5_tokenizer_encode(m->t5_tok, prompts[i0 + j], L, ids + j * L, NULL) < 0)
                    rc = sf_error_prefix("prompt %lld (T5 tokenizer)", (long long)(i0 + j));
            sf_t5_request r = {SF_T5_LAST, 0};
            if (!rc && sf_t5_forward(m->t5, ids, NULL, b, L, &r, prompt_embeds + i0 * L * J))
                rc = -1;
        }
    }
    free(ids);
    return rc;
}
