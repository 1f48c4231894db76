/* Concatenation of safetensors files along dim 0 (saeflow/safetensors.h),
 * through the one writer: each output tensor is the list of its slices in
 * the input mappings (sf_stw_add_pieces), so nothing is gathered in memory. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"

int sf_st_concat(const sf_st *files, int n, const char *out, const char *const *meta) {
    if (n < 1) return sf_error("%s: nothing to concatenate", out);
    const sf_st *f0 = &files[0];
    sf_st_writer *w = sf_stw_new();
    const void **data = sf_malloc((size_t)n * sizeof(void *));
    uint64_t *bytes = sf_malloc((size_t)n * sizeof(uint64_t));
    int rc = -1;
    for (int t = 0; t < f0->n_tensors; t++) {
        const sf_tensor_info *ti = &f0->tensors[t];
        if (ti->ndim < 1) {
            sf_error("%s: tensor '%s' is a scalar: no dim 0 to concatenate along", f0->path,
                     ti->name);
            goto done;
        }
        int64_t shape[SF_MAX_DIMS];
        memcpy(shape, ti->shape, sizeof shape);
        shape[0] = 0;
        for (int k = 0; k < n; k++) {
            const sf_tensor_info *tk = sf_st_find(&files[k], ti->name);
            int same = tk && tk->dtype == ti->dtype && tk->ndim == ti->ndim;
            for (int i = 1; same && i < ti->ndim; i++)
                same = tk->shape[i] == ti->shape[i];
            if (!same) {
                sf_error("%s: tensor '%s' missing or of another dtype or shape than in %s",
                         files[k].path, ti->name, f0->path);
                goto done;
            }
            shape[0] += tk->shape[0];
            data[k] = tk->data;
            bytes[k] = tk->nbytes;
        }
        if (sf_stw_add_pieces(w, ti->name, ti->dtype, ti->ndim, shape, n, data, bytes)) goto done;
    }
    for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2)
        sf_stw_meta(w, meta[i], meta[i + 1]);
    rc = sf_stw_write(w, out);
done:
    sf_stw_free(w);
    free(data);
    free(bytes);
    return rc;
}
