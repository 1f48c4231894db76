/* The whole public API in one include, for programs linking libsaeflow.so
 * (`pkg-config --cflags --libs saeflow`), and the few calls that exist for
 * bindings in other languages (python/saeflow, docs/python.md).
 *
 * Versioning: the shared library's soname is libsaeflow.so.0; SF_VERSION
 * (common.h) is the release. A binding that mirrors a struct asks the library
 * for its size rather than trusting its own copy of the header. */
#ifndef SAEFLOW_SAEFLOW_H
#define SAEFLOW_SAEFLOW_H

#include <stddef.h>

#include "saeflow/analysis.h"
#include "saeflow/clip.h"
#include "saeflow/common.h"
#include "saeflow/dataset.h"
#include "saeflow/image.h"
#include "saeflow/pipeline.h"
#include "saeflow/sae.h"
#include "saeflow/sae_arch.h"
#include "saeflow/sae_formats.h"
#include "saeflow/sae_train.h"
#include "saeflow/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SF_VERSION of the library actually loaded (may differ from the header's). */
const char *sf_version(void);
/* sizeof(sf_sae) in this build: bindings allocate the struct opaquely. */
size_t sf_sae_sizeof(void);
/* sizeof(sf_sae_train_opts) and sizeof(sf_sae_run_opts), for the same reason. */
size_t sf_sae_train_opts_sizeof(void);
size_t sf_sae_run_opts_sizeof(void);
size_t sf_sae_data_sizeof(void);
size_t sf_sae_metrics_sizeof(void);
size_t sf_topk_sizeof(void);
/* sf_sae_spec, sf_clip_source_opts, sf_act_batch, sf_sample (CLIP extraction
 * from a binding: samples in memory through sf_clip_source_open). */
size_t sf_sae_spec_sizeof(void);
size_t sf_clip_source_opts_sizeof(void);
size_t sf_act_batch_sizeof(void);
size_t sf_sample_sizeof(void);

#ifdef __cplusplus
}
#endif
#endif
