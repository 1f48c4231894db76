/* saeflow: the T5 tokenizer (SentencePiece Unigram), matching what Hugging
 * Face `tokenizers` does with a T5 tokenizer.json (FLUX's tokenizer_2,
 * t5-v1_1-xxl) id for id:
 *
 *   special tokens (<pad>, </s>, <unk>, <extra_id_N>) found in the RAW text
 *   -> per remaining segment: normalizer (Precompiled charsmap with HF's
 *   grapheme-cluster rule, Strip right, Replace " {2,}" -> "▁")
 *   -> pre-tokenizer (Metaspace "▁", prepend "first"/"always", split)
 *   -> Unigram Viterbi (unknown = min score - 10, runs of unknowns fused)
 *   -> $A </s>, truncated to max_length (max_length-1 tokens + </s>),
 *   right-padded with <pad> (0).
 *
 * The layout transformers 5 builds (Precompiled only, WhitespaceSplit +
 * Metaspace "always") is read too. Anything else in a tokenizer.json
 * (other normalizers, byte fallback, lstrip/rstrip added tokens) is an
 * error, not a silent approximation. Details: src/text/t5_unigram.c.
 *
 *   sf_t5_tokenizer *tok = sf_t5_tokenizer_load_dir(dir);  // NULL + sf_errmsg()
 *   int32_t ids[256];
 *   int n = sf_t5_tokenizer_encode(tok, caption, 256, ids, NULL); // n real tokens
 *   sf_t5_tokenizer_free(tok);
 *
 * Thread safety: encode may be called from several threads on one tokenizer.
 */
#ifndef SAEFLOW_T5_TOKENIZER_H
#define SAEFLOW_T5_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sf_t5_tokenizer sf_t5_tokenizer;

/* From a Hugging Face tokenizer.json (model.type "Unigram"). */
sf_t5_tokenizer *sf_t5_tokenizer_load(const char *tokenizer_json);
/* From a folder holding tokenizer.json (a diffusers tokenizer_2/). */
sf_t5_tokenizer *sf_t5_tokenizer_load_dir(const char *dir);
void sf_t5_tokenizer_free(sf_t5_tokenizer *t);

int sf_t5_tokenizer_eos(const sf_t5_tokenizer *t); /* 1 for T5 */
int sf_t5_tokenizer_pad(const sf_t5_tokenizer *t); /* 0 */
int sf_t5_tokenizer_unk(const sf_t5_tokenizer *t); /* 2 */
int sf_t5_tokenizer_vocab_size(const sf_t5_tokenizer *t);
/* The token string of an id ("▁the"), or NULL. */
const char *sf_t5_tokenizer_token(const sf_t5_tokenizer *t, int id);

/* Like tokenizer(text, padding="max_length", truncation=True,
 * max_length=max_length) (what diffusers' FluxPipeline calls):
 *   ids  (max_length,)  tokens..., </s>, <pad>...
 *   mask (max_length,)  1 for the tokens and </s>, 0 for padding (may be NULL)
 * Returns the number of unpadded tokens (1 for ""), or -1 with sf_errmsg()
 * (invalid UTF-8, max_length too small for the special tokens). */
int sf_t5_tokenizer_encode(sf_t5_tokenizer *t, const char *text, int max_length, int32_t *ids,
                           int32_t *mask);

/* Without special tokens, truncation or padding: writes at most `cap` ids and
 * returns the total count (may exceed cap), or -1 on error. */
int sf_t5_tokenizer_encode_raw(sf_t5_tokenizer *t, const char *text, int32_t *ids, int cap);

/* The normalizer alone on one segment (no special-token split): a malloc'd
 * NUL-terminated string (length in *len), or NULL on invalid UTF-8. */
char *sf_t5_tokenizer_normalize(const sf_t5_tokenizer *t, const char *text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
