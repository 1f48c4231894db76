/* Compiled only into libsaeflow.so (not part of any src/<concern> static
 * library): the calls bindings need to stay in step with this build's structs. */
#include "saeflow/saeflow.h"

const char *sf_version(void) {
    return SF_VERSION;
}
size_t sf_sae_sizeof(void) {
    return sizeof(sf_sae);
}
size_t sf_sae_train_opts_sizeof(void) {
    return sizeof(sf_sae_train_opts);
}
size_t sf_sae_run_opts_sizeof(void) {
    return sizeof(sf_sae_run_opts);
}
size_t sf_sae_data_sizeof(void) {
    return sizeof(sf_sae_data);
}
size_t sf_sae_metrics_sizeof(void) {
    return sizeof(sf_sae_metrics);
}
size_t sf_topk_sizeof(void) {
    return sizeof(sf_topk);
}
size_t sf_sae_spec_sizeof(void) {
    return sizeof(sf_sae_spec);
}
size_t sf_clip_source_opts_sizeof(void) {
    return sizeof(sf_clip_source_opts);
}
size_t sf_act_batch_sizeof(void) {
    return sizeof(sf_act_batch);
}
size_t sf_sample_sizeof(void) {
    return sizeof(sf_sample);
}
