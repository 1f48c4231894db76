/* sf_weight storage: F32, BF16 or F16, zero-copy or converted. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"

int sf_weight_make(sf_weight *w, sf_dtype want, sf_dtype src_dtype, const void *src, int ndim,
                   const int64_t *shape) {
    memset(w, 0, sizeof *w);
    if (ndim < 1 || ndim > 4) return sf_error("weight: rank %d not supported (1..4)", ndim);
    if ((want != SF_DT_F32 && want != SF_DT_BF16 && want != SF_DT_F16) ||
        !sf_dtype_is_float(src_dtype))
        return sf_error("weight: dtype conversion %s -> %s not supported (to F32, BF16 or F16)",
                        sf_dtype_name(src_dtype), sf_dtype_name(want));
    w->dtype = want;
    w->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sf_error("weight: negative dimension");
        w->shape[i] = shape[i];
        if (sf_mul_size(n, (size_t)shape[i], &n)) return sf_error("weight: size overflows");
    }
    size_t esz = sf_dtype_size(want);
    if (want == src_dtype && ((uintptr_t)src % esz) == 0 && !getenv("SF_EXP_COPY")) {
        w->data = src; /* zero-copy: points into the caller's (mmapped) memory */
        return 0;
    }
    size_t bytes;
    if (sf_mul_size(n, esz, &bytes)) return sf_error("weight: size overflows");
    void *buf = sf_malloc_aligned(bytes ? bytes : 64);
    sf_convert(want, buf, src_dtype, src, n); /* dtypes checked above */
    w->data = w->owned = buf;
    return 0;
}

void sf_weight_free(sf_weight *w) {
    if (w->owned) sf_free_aligned(w->owned);
    memset(w, 0, sizeof *w);
}

void sf_weight_rows_f32(const sf_weight *w, int64_t r0, int64_t nr, float *dst) {
    int64_t K = w->ndim >= 2 ? w->shape[1] : 1;
    const char *src = (const char *)w->data + (size_t)(r0 * K) * sf_dtype_size(w->dtype);
    sf_convert(SF_DT_F32, dst, w->dtype, src, (size_t)(nr * K));
}
