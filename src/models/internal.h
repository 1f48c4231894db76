/* The weight loader every model in src/models binds its tensors with.
 * Private to src/models (not a public header).
 *
 * A model asks for tensors by their checkpoint names (printf formats, so a
 * layer loop reads "double_blocks.%d.img_attn.qkv.weight", i) with the shape
 * its config implies; the loader finds them in one safetensors file or a
 * sharded set, checks the shape, and hands out:
 * - small tensors (biases, norms, embeddings) as F32;
 * - big matrices as sf_weight in the loader's dtype: F32, BF16 or F16, or the
 *   file's own dtype (SF_WL_AS_STORED). Zero-copy from the mapping where the
 *   dtype already matches; otherwise converted into a buffer the loader owns,
 *   after which the source pages are dropped from the page cache;
 * - fused rows: several 2-D tensors (or row ranges of them) stacked into one
 *   matrix, so q/k/v become one GEMM.
 * Everything handed out lives until sf_wl_close (weights carry owned = NULL:
 * sf_weight_free on them is a no-op). Errors name the file, the tensor, and
 * the expected and found shapes. */
#ifndef SAEFLOW_MODELS_INTERNAL_H
#define SAEFLOW_MODELS_INTERNAL_H

#include <stdint.h>

#include "saeflow/common.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"

/* How big matrices are stored in memory: keep the file's dtype (F32/BF16/F16
 * zero-copy from the mapping, F64 -> F32, F8_E4M3/F8_E5M2 -> BF16, exact). */
#define SF_WL_AS_STORED ((sf_dtype)-1)

typedef struct sf_wl sf_wl; /* owns the sf_st_set and every converted buffer */

/* path: a .safetensors file, an *.safetensors.index.json, or a folder holding
 * model.safetensors / diffusion_pytorch_model.safetensors (or their
 * .index.json, sharded). dtype: SF_DT_F32, SF_DT_BF16, SF_DT_F16 or
 * SF_WL_AS_STORED. NULL + sf_error on failure. */
sf_wl *sf_wl_open(const char *path, sf_dtype dtype);
void sf_wl_close(sf_wl *L);             /* frees everything it handed out; NULL is fine */
const char *sf_wl_path(const sf_wl *L); /* for messages */
/* The dtype big matrices are stored in (as passed to sf_wl_open). */
sf_dtype sf_wl_dtype(const sf_wl *L);
/* e.g. "model.diffusion_model.": names are looked up as prefix+name first,
 * then as name (NULL or "" = no prefix). */
void sf_wl_set_prefix(sf_wl *L, const char *prefix);
/* The underlying set (files in shard order), for whoever needs to list it. */
const sf_st_set *sf_wl_set(const sf_wl *L);

/* 1 if the tensor exists, else 0 (no error set). */
int sf_wl_has(sf_wl *L, const char *fmt, ...) SF_PRINTF(2, 3);
/* The tensor's header entry; NULL + sf_error if it is missing. */
const sf_tensor_info *sf_wl_info(sf_wl *L, const char *fmt, ...) SF_PRINTF(2, 3);
/* 0 if the tensor exists with this shape (entries < 0 are wildcards), else
 * -1 + sf_error naming the file, tensor, expected and found shape. */
int sf_wl_check(sf_wl *L, int ndim, const int64_t *shape, const char *fmt, ...) SF_PRINTF(4, 5);
/* A small tensor as F32, shape-checked (ndim < 0: no check; shape entries
 * < 0 are wildcards). Owned by L. */
const float *sf_wl_f32(sf_wl *L, int ndim, const int64_t *shape, const char *fmt, ...)
    SF_PRINTF(4, 5);
/* A big matrix in L's dtype, shape-checked (ndim < 0: any shape), viewed 2-D as (shape[0],
 * prod(rest)) (conv weights). */
int sf_wl_weight(sf_wl *L, sf_weight *w, int ndim, const int64_t *shape, const char *fmt, ...)
    SF_PRINTF(5, 6);

/* Fused rows: the concatenation of row ranges of several 2-D tensors (q;k;v,
 * BFL's linear1 split, the swapped halves of final_layer.adaLN_modulation).
 * Rows [row0, row0 + rows) of tensor `name` (a plain name, not a format;
 * the prefix applies); rows = -1: all rows from row0. */
typedef struct {
    char name[256];
    int64_t row0, rows;
} sf_wl_part;
/* All parts must have `cols` columns. Result (sum rows, cols) in L's dtype
 * (AS_STORED: the parts' common stored dtype, F32 if they differ). */
int sf_wl_fused(sf_wl *L, sf_weight *w, int64_t cols, int nparts, const sf_wl_part *parts);
/* The same for 1-D tensors (biases): rows are elements. Owned by L. */
const float *sf_wl_fused_f32(sf_wl *L, int nparts, const sf_wl_part *parts);

/* An output spec "layer:N" or "hidden:N" (N a hidden_states index, may be
 * negative): 1 and *layer = N; 0 for anything else. Shared by the CLIP and
 * T5 request parsers. */
int sf_models_parse_layer(const char *s, int *layer);

#endif
