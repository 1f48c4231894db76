/* saeflow decode: sparse codes (CSR, as `saeflow encode` writes) or dense codes
 * -> reconstructions x_hat = W_dec z + b. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_train.h"

static void usage(FILE *out) {
    fprintf(out, "usage: saeflow decode --checkpoint DIR --input FILE --out FILE [options]\n"
                 "\n"
                 "Decodes codes into activations x_hat = W_dec z + b. The input holds either CSR\n"
                 "codes (indptr I64 [N+1], indices I32 [nnz], values F32 [nnz], as written by\n"
                 "`saeflow encode`) or, with --key, a dense [N, pages] float tensor.\n"
                 "\n"
                 "  --checkpoint DIR   SAE checkpoint\n"
                 "  --input FILE       safetensors file with the codes\n"
                 "  --key KEY          dense codes under KEY instead of CSR\n"
                 "  --out FILE         output safetensors (written atomically)\n"
                 "  --outkey KEY       output tensor name (default reconstruction)\n"
                 "  --threads T        OpenMP threads (default: all cores)\n");
}

/* CSR tensors, validated: monotone indptr, indices in range. */
static int load_csr(const sf_st *f, int n, int64_t *N, const int64_t **indptr,
                    const int32_t **indices, const float **values, float **owned) {
    const sf_tensor_info *ip = sf_st_find(f, "indptr"), *ix = sf_st_find(f, "indices");
    if (!ip || !ix)
        return sf_error("%s: no CSR tensors 'indptr' and 'indices' (use --key for dense codes)",
                        f->path);
    if (ip->dtype != SF_DT_I64 || ip->ndim != 1 || ip->shape[0] < 1)
        return sf_error("%s: tensor 'indptr': expected I64 [N+1]", f->path);
    if (ix->dtype != SF_DT_I32 || ix->ndim != 1)
        return sf_error("%s: tensor 'indices': expected I32 [nnz]", f->path);
    int64_t nnz = ix->shape[0];
    int64_t shape[1] = {nnz};
    const float *v = sf_st_get_f32(f, "values", 1, shape, owned);
    if (!v) return -1;
    /* The mapping may be unaligned for I64/I32 in principle; safetensors
     * offsets written by us and by the Python package are 8-aligned. */
    if (((uintptr_t)ip->data % 8) || ((uintptr_t)ix->data % 4))
        return sf_error("%s: CSR tensors are not aligned", f->path);
    const int64_t *p = ip->data;
    const int32_t *q = ix->data;
    *N = ip->shape[0] - 1;
    if (p[0] != 0 || p[*N] != nnz)
        return sf_error("%s: tensor 'indptr': must run from 0 to nnz %lld", f->path,
                        (long long)nnz);
    for (int64_t r = 0; r < *N; r++)
        if (p[r + 1] < p[r])
            return sf_error("%s: tensor 'indptr': decreases at row %lld", f->path, (long long)r);
    for (int64_t e = 0; e < nnz; e++)
        if (q[e] < 0 || q[e] >= n)
            return sf_error("%s: tensor 'indices': entry %lld = %d outside [0, %d)", f->path,
                            (long long)e, q[e], n);
    *indptr = p;
    *indices = q;
    *values = v;
    return 0;
}

int cmd_decode(int argc, char **argv) {
    const char *cmd = "decode";
    static const struct option opts[] = {CLI_SAE_IO_OPTIONS,
                                         {"outkey", required_argument, 0, CLI_IO_OUTKEY},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    cli_sae_io io = {.key = NULL, .outkey = "reconstruction"}; /* no --key: CSR input */
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int shared = cli_sae_io_flag(cmd, c, optarg, &io);
        if (shared < 0) return 2;
        if (shared) continue;
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        return cli_usage_error(cmd, "unknown option");
    }
    sf_sae s;
    int lrc = cli_sae_io_load(cmd, &io, argc, argv, &s);
    if (lrc) return lrc;
    const char *input = io.input, *key = io.key;
    sf_st f;
    if (sf_st_open(&f, input)) {
        sf_sae_free(&s);
        return cli_fail(cmd);
    }
    int rc = 1;
    float *owned = NULL, *out = NULL;
    sf_sae_codes codes = {0};
    int64_t N = 0;
    /* Both inputs become sf_sae_codes and go through sf_sae_decode, so the
     * result is the library's (and the Python binding's) bit for bit. */
    int64_t bad = -1;
    if (key) {
        int64_t shape[2] = {-1, s.n};
        const float *z = sf_st_get_f32(&f, key, 2, shape, &owned);
        if (!z) goto done;
        N = sf_st_find(&f, key)->shape[0];
        int kmax = 1;
        for (int64_t r = 0; r < N; r++) {
            const float *zr = z + (size_t)r * s.n;
            int c = 0;
            for (int j = 0; j < s.n; j++) {
                if (zr[j] * 0.0f != 0.0f && bad < 0) bad = r;
                c += zr[j] != 0.0f;
            }
            if (c > kmax) kmax = c;
        }
        if (bad >= 0) {
            sf_error("%s: tensor '%s': row %lld contains NaN or Inf", input, key, (long long)bad);
            goto done;
        }
        sf_sae_codes_alloc(&codes, N, kmax);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            const float *zr = z + (size_t)r * s.n;
            int c = 0;
            for (int j = 0; j < s.n; j++)
                if (zr[j] != 0.0f) {
                    codes.idx[(size_t)r * kmax + c] = j;
                    codes.val[(size_t)r * kmax + c++] = zr[j];
                }
            codes.cnt[r] = c;
        }
    } else {
        const int64_t *ip;
        const int32_t *ix;
        const float *v;
        if (load_csr(&f, s.n, &N, &ip, &ix, &v, &owned)) goto done;
        int64_t kmax = 1;
        for (int64_t r = 0; r < N; r++) {
            if (ip[r + 1] - ip[r] > kmax) kmax = ip[r + 1] - ip[r];
            for (int64_t e = ip[r]; e < ip[r + 1]; e++)
                if (v[e] * 0.0f != 0.0f && bad < 0) bad = r;
        }
        if (bad >= 0) {
            sf_error("%s: tensor 'values': row %lld contains NaN or Inf", input, (long long)bad);
            goto done;
        }
        if (kmax > s.n) { /* indices are in range, so a longer row repeats a latent */
            sf_error("%s: a row has %lld entries, more than pages %d", input, (long long)kmax, s.n);
            goto done;
        }
        sf_sae_codes_alloc(&codes, N, (int)kmax);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            int c = 0;
            for (int64_t e = ip[r]; e < ip[r + 1]; e++) {
                codes.idx[(size_t)r * kmax + c] = ix[e];
                codes.val[(size_t)r * kmax + c++] = v[e];
            }
            codes.cnt[r] = c;
        }
    }
    out = sf_malloc((size_t)(N ? N : 1) * s.d * sizeof(float));
    sf_sae_decode(&s, &codes, out);
    sf_st_writer *w = sf_stw_new();
    int64_t shape[2] = {N, s.d};
    sf_stw_add(w, io.outkey, SF_DT_F32, 2, shape, out);
    int wrc = sf_stw_write(w, io.out);
    sf_stw_free(w);
    if (wrc) goto done;
    printf("decoded %lld rows -> %s ('%s' [%lld, %d])\n", (long long)N, io.out, io.outkey,
           (long long)N, s.d);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    sf_sae_codes_free(&codes);
    free(owned);
    free(out);
    sf_st_close(&f);
    sf_sae_free(&s);
    return rc;
}
