/* saeflow: the CLIP BPE tokenizer (sf_tokenizer_*; T5 has its own Unigram one), matching
 * transformers' CLIPTokenizerFast
 * (what AutoTokenizer / CLIPProcessor give for openai/clip-vit-large-patch14)
 * token for token:
 *
 *   NFC normalise -> every run of whitespace (\s+) becomes one space ->
 *   lowercase -> split with the CLIP regex (Unicode letter/number classes)
 *   -> byte-level map (GPT-2 bytes_to_unicode) -> BPE with "</w>" appended
 *   to the last symbol of each word -> BOS + ids + EOS, truncated to
 *   context_length (BOS + context_length-2 tokens + EOS) -> padded with the
 *   pad id (49407 "<|endoftext|>" for OpenAI CLIP).
 *
 * Differences from the slow CLIPTokenizer (ftfy, leading/trailing space) are
 * listed in docs/inputs.md; we follow the fast one because that is what the
 * reference runs.
 *
 * Typical use:
 *
 *   sf_tokenizer *tok = sf_tokenizer_load_dir(model_dir);  // NULL + sf_errmsg()
 *   int32_t ids[77], mask[77];
 *   int n = sf_tokenizer_encode(tok, caption, 77, ids, mask); // n real tokens
 *   ...
 *   sf_tokenizer_free(tok);
 *
 * Thread safety: sf_tokenizer_encode may be called from several threads on
 * one tokenizer (the per-word BPE cache is behind a mutex).
 */
#ifndef SAEFLOW_CLIP_BPE_H
#define SAEFLOW_CLIP_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sf_tokenizer sf_tokenizer;

/* CLIP's ids (openai/clip-vit-*): the loader reads the real ids of
 * "<|startoftext|>" / "<|endoftext|>" from the vocabulary; these are what
 * they are for every OpenAI CLIP vocabulary. */
#define SF_CLIP_BOS 49406
#define SF_CLIP_EOS 49407
#define SF_CLIP_CONTEXT 77

/* From a GPT-2 style pair: vocab.json ({"token": id}) and merges.txt (one
 * "a b" merge per line, ranked by order, an optional "#version" first line). */
sf_tokenizer *sf_tokenizer_load(const char *vocab_json, const char *merges_txt);
/* From a Hugging Face tokenizer.json (model.type "BPE"; vocab + merges). */
sf_tokenizer *sf_tokenizer_load_json(const char *tokenizer_json);
/* From a model directory: tokenizer.json if present, else vocab.json +
 * merges.txt. Also reads tokenizer_config.json / special_tokens_map.json for
 * the pad token if present (default: the EOS token, as CLIP does). */
sf_tokenizer *sf_tokenizer_load_dir(const char *dir);
void sf_tokenizer_free(sf_tokenizer *t);

int sf_tokenizer_bos(const sf_tokenizer *t);
int sf_tokenizer_eos(const sf_tokenizer *t);
int sf_tokenizer_pad(const sf_tokenizer *t);
int sf_tokenizer_vocab_size(const sf_tokenizer *t);
/* The token string of an id (byte-level form, e.g. "hello</w>"), or NULL. */
const char *sf_tokenizer_token(const sf_tokenizer *t, int id);

/* Encodes UTF-8 `text` like tokenizer(text, padding="max_length",
 * truncation=True, max_length=context_length):
 *   ids  (context_length,)  BOS, tokens..., EOS, pad...
 *   mask (context_length,)  1 for BOS..EOS, 0 for padding (may be NULL)
 * context_length must be >= 2. Returns the number of unpadded tokens
 * (including BOS and EOS, so 2 for ""), or -1 with sf_errmsg() set (invalid
 * UTF-8 is an error). The EOS position, which CLIP's text pooler reads, is
 * the return value minus 1. */
int sf_tokenizer_encode(sf_tokenizer *t, const char *text, int context_length, int32_t *ids,
                        int32_t *mask);

/* Encodes without special tokens, truncation or padding: writes at most
 * `cap` ids and returns the total count (may exceed cap; call again with a
 * larger buffer), or -1 on error. */
int sf_tokenizer_encode_raw(sf_tokenizer *t, const char *text, int32_t *ids, int cap);

#ifdef __cplusplus
}
#endif
#endif
