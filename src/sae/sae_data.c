/* Training data: rows of one [N, d] tensor key across several safetensors
 * files, read through the mmap (F32 rows are copied straight out of the
 * mapping; other float dtypes converted per row), so files larger than RAM
 * work. */
#include <stdlib.h>
#include <string.h>

#include "sae/sae_internal.h"
#include "saeflow/sae_train.h"

void sf_sae_data_close(sf_sae_data *D) {
    if (!D) return;
    for (int i = 0; i < D->n_files; i++)
        sf_st_close(&D->files[i]);
    free(D->files);
    free(D->t);
    free(D->start);
    free(D->key);
    memset(D, 0, sizeof *D);
}

int sf_sae_data_open(sf_sae_data *D, const char *const *paths, int n_paths, const char *key) {
    memset(D, 0, sizeof *D);
    if (n_paths <= 0) return sf_error("no data files given");
    D->files = sf_calloc((size_t)n_paths, sizeof(sf_st));
    D->t = sf_calloc((size_t)n_paths, sizeof(*D->t));
    D->start = sf_calloc((size_t)n_paths + 1, sizeof(int64_t));
    D->key = sf_strdup(key);
    for (int i = 0; i < n_paths; i++) {
        if (sf_st_open(&D->files[i], paths[i])) goto fail;
        D->n_files = i + 1;
        const sf_tensor_info *t = sf_st_find(&D->files[i], key);
        if (!t) {
            sf_error("%s: no tensor '%s'", paths[i], key);
            goto fail;
        }
        if (t->ndim != 2) {
            sf_error("%s: tensor '%s': expected shape [N, d], got %d dimensions", paths[i], key,
                     t->ndim);
            goto fail;
        }
        if (t->dtype != SF_DT_F32 && t->dtype != SF_DT_F16 && t->dtype != SF_DT_BF16 &&
            t->dtype != SF_DT_F64) {
            sf_error("%s: tensor '%s': dtype %s is not a float type", paths[i], key,
                     sf_dtype_name(t->dtype));
            goto fail;
        }
        if (t->shape[1] <= 0 || t->shape[1] > (1 << 24)) {
            sf_error("%s: tensor '%s': bad width %lld", paths[i], key, (long long)t->shape[1]);
            goto fail;
        }
        if (i == 0)
            D->d = (int)t->shape[1];
        else if (t->shape[1] != D->d) {
            sf_error("%s: tensor '%s': width %lld differs from %d in %s", paths[i], key,
                     (long long)t->shape[1], D->d, paths[0]);
            goto fail;
        }
        D->t[i] = t;
        D->start[i + 1] = D->start[i] + t->shape[0];
    }
    D->N = D->start[n_paths];
    if (D->N == 0) {
        sf_error("%s: tensor '%s' has no rows", paths[0], key);
        goto fail;
    }
    return 0;
fail:
    sf_sae_data_close(D);
    return -1;
}

static int file_of(const sf_sae_data *D, int64_t row) {
    int lo = 0, hi = D->n_files - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (D->start[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int read_row(const sf_sae_data *D, int64_t row, float *dst) {
    if (row < 0 || row >= D->N) return sf_error("row %lld out of range", (long long)row);
    int f = file_of(D, row);
    const sf_tensor_info *t = D->t[f];
    int64_t lr = row - D->start[f];
    if (t->dtype == SF_DT_F32) {
        memcpy(dst, (const uint8_t *)t->data + (size_t)lr * D->d * sizeof(float),
               (size_t)D->d * sizeof(float));
    } else if (sf_tensor_rows_f32(t, lr, 1, dst)) {
        return sf_error_prefix("%s", D->files[f].path);
    }
    if (!sae_all_finite(dst, (size_t)D->d))
        return sf_error("%s: tensor '%s': row %lld contains NaN or Inf", D->files[f].path, D->key,
                        (long long)lr);
    return 0;
}

int sf_sae_data_gather(const sf_sae_data *D, const int64_t *rows, int64_t m, float *dst) {
    int64_t bad = -1;
    char msg[1024] = "";
#pragma omp parallel for schedule(static) if (sae_parallel_worth((size_t)m * D->d * 16))
    for (int64_t i = 0; i < m; i++) {
        if (read_row(D, rows[i], dst + (size_t)i * D->d)) {
#pragma omp critical(sae_gather_err)
            if (bad < 0 || i < bad) {
                bad = i;
                snprintf(msg, sizeof msg, "%s", sf_errmsg());
            }
        }
    }
    if (bad >= 0) return sf_error("%s", msg);
    return 0;
}

int sf_sae_data_range(const sf_sae_data *D, int64_t r0, int64_t m, float *dst) {
    int64_t *rows = sf_malloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < m; i++)
        rows[i] = r0 + i;
    int rc = sf_sae_data_gather(D, rows, m, dst);
    free(rows);
    return rc;
}

int sf_sae_data_check_finite(const sf_sae_data *D) {
    const int64_t chunk = 4096;
    float *buf = sf_malloc((size_t)chunk * D->d * sizeof(float));
    int rc = 0;
    for (int64_t r0 = 0; r0 < D->N && !rc; r0 += chunk) {
        int64_t m = D->N - r0 < chunk ? D->N - r0 : chunk;
        rc = sf_sae_data_range(D, r0, m, buf);
    }
    free(buf);
    return rc;
}
