/* saeflow encode: activations -> sparse codes (CSR) in safetensors. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/dist.h"
#include "saeflow/sae_train.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow encode --checkpoint DIR --input FILE --out FILE [options]\n"
            "\n"
            "Encodes each row x of a [N, d] tensor as z = TopK_k(ReLU(W_enc (x - b) + b_enc))\n"
            "and writes the codes as CSR: indptr I64 [N+1], indices I32 [nnz] (ascending per\n"
            "row), values F32 [nnz]; zeros are not stored.\n"
            "\n"
            "  --checkpoint DIR   SAE checkpoint (config.json + model.safetensors)\n"
            "  --input FILE       safetensors file with the activations\n"
            "  --key KEY          tensor name (default activations)\n"
            "  --out FILE         output safetensors (written atomically)\n"
            "  --batch N          rows per chunk (default 4096)\n"
            "  --threads T        OpenMP threads (default: all cores)\n"
            "\n"
            "Under mpirun / srun the chunks are spread over the ranks and rank 0 writes the\n"
            "same file as one process (docs/mpi.md).\n");
}

int cmd_encode(int argc, char **argv) {
    const char *cmd = "encode";
    static const struct option opts[] = {CLI_SAE_IO_OPTIONS,
                                         {"batch", required_argument, 0, 'b'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    cli_sae_io io = {.key = "activations"};
    long long batch = 4096;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int shared = cli_sae_io_flag(cmd, c, optarg, &io);
        if (shared < 0) return 2;
        if (shared) continue;
        switch (c) {
        case 'b':
            if (cli_parse_int(cmd, "batch", optarg, &batch)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (batch < 1 || batch > (1 << 22)) return cli_usage_error(cmd, "--batch must be in [1, 2^22]");
    sf_sae s;
    int lrc = cli_sae_io_load(cmd, &io, argc, argv, &s);
    if (lrc) return lrc;
    sf_sae_data D;
    if (cli_sae_io_data(cmd, &io, &s, &D)) {
        sf_sae_free(&s);
        return 1;
    }
    int rc = 1;
    int64_t *indptr = NULL;
    int32_t *indices = NULL;
    float *values = NULL, *x = NULL;
    sf_sae_codes codes = {0};
    sf_sae_encoder *enc = NULL;
    const int64_t N = D.N, ch = batch < N ? batch : N;
    const int root = sf_dist_rank() == 0; /* only rank 0 holds the whole output */
    indptr = sf_malloc((size_t)(root ? N + 1 : 1) * sizeof(int64_t));
    indices = sf_malloc((size_t)(root ? N : 0) * s.k * sizeof(int32_t) + 4);
    values = sf_malloc((size_t)(root ? N : 0) * s.k * sizeof(float) + 4);
    x = sf_malloc((size_t)ch * s.d * sizeof(float));
    sf_sae_codes_alloc(&codes, ch, s.k);
    int64_t nnz = 0;
    indptr[0] = 0;
    enc = sf_sae_encoder_new(&s);
    /* Chunk c is rows [c ch, (c + 1) ch) on rank c % R (docs/mpi.md); rank 0
     * appends the chunks in order, so any R writes the same file. */
    const int R = sf_dist_size(), me = sf_dist_rank();
    const int64_t n_chunks = (N + ch - 1) / ch;
    cli_chunk cc = {.codes = codes};
    for (int64_t round = 0; round * R < n_chunks; round++) {
        const int64_t c = round * R + me;
        if (c < n_chunks) {
            int64_t r0 = c * ch, m = N - r0 < ch ? N - r0 : ch;
            if (sf_sae_data_range(&D, r0, m, x)) goto done;
            if (sf_sae_encoder_run(enc, x, m, &codes)) {
                sf_error_prefix("%s: rows from %lld", io.input, (long long)r0);
                goto done;
            }
            cc.m = m;
            if (me && cli_chunk_send(&cc)) goto done;
        }
        if (me) continue;
        for (int q = 0; q < R && round * R + q < n_chunks; q++) {
            if (q && cli_chunk_recv(&cc, q)) goto done;
            const int64_t r0 = (round * R + q) * ch;
            for (int64_t b = 0; b < cc.m; b++) {
                memcpy(indices + nnz, codes.idx + (size_t)b * s.k,
                       (size_t)codes.cnt[b] * sizeof(int32_t));
                memcpy(values + nnz, codes.val + (size_t)b * s.k,
                       (size_t)codes.cnt[b] * sizeof(float));
                nnz += codes.cnt[b];
                indptr[r0 + b + 1] = nnz;
            }
        }
    }
    /* Every rank got here without an error before rank 0 writes: a rank
     * that failed has ended all of them (main), and one that fails after
     * this point cannot, so no output is ever cut short by an abort. */
    if (R > 1 && sf_dist_barrier()) goto done;
    if (me) { /* rank 0 writes */
        rc = 0;
        goto done;
    }
    sf_st_writer *w = sf_stw_new();
    int64_t sp[1] = {N + 1}, sn[1] = {nnz};
    char pages[32];
    snprintf(pages, sizeof pages, "%d", s.n);
    sf_stw_add(w, "indptr", SF_DT_I64, 1, sp, indptr);
    sf_stw_add(w, "indices", SF_DT_I32, 1, sn, indices);
    sf_stw_add(w, "values", SF_DT_F32, 1, sn, values);
    sf_stw_meta(w, "format", "csr");
    sf_stw_meta(w, "pages", pages);
    int wrc = sf_stw_write(w, io.out);
    sf_stw_free(w);
    if (wrc) goto done;
    printf("encoded %lld rows: %lld nonzeros (L0 %.2f of %d) -> %s\n", (long long)N, (long long)nnz,
           (double)nnz / N, s.n, io.out);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    sf_sae_encoder_free(enc);
    sf_sae_codes_free(&codes);
    free(indptr);
    free(indices);
    free(values);
    free(x);
    sf_sae_data_close(&D);
    sf_sae_free(&s);
    return rc;
}
