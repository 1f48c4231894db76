/* C half of the parquet read benchmark (driver: bench/bench_parquet.sh).
 *
 *   bench_parquet FILE [--repeat 3] [--random N]
 *
 * --random N also times N sf_dataset_get calls at random rows (the
 * explorer's access pattern) and prints gets/s.
 * Reads every row of a LLaVA-ReCap-style parquet file through the dataset
 * interface (cc3m:, images + captions: id, image.bytes and the last
 * conversations value) and prints JSON with the best wall time, rows and
 * payload MB (image bytes + caption bytes, the same count the Python half
 * reports). Threads: OMP_NUM_THREADS (pages are decompressed in parallel). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/common.h"
#include "saeflow/dataset.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_parquet FILE [--repeat N]\n");
        return 2;
    }
    int repeat = 3, random_n = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--random")) random_n = atoi(argv[i + 1]);
    }
    char spec[4096];
    snprintf(spec, sizeof spec, "cc3m:%s", argv[1]);
    double best = 1e30, mb = 0;
    int64_t rows = 0;
    uint64_t check = 0;
    for (int it = 0; it < repeat; it++) {
        double t0 = sf_now();
        sf_dataset *ds = sf_dataset_open(spec, SF_DS_ALL);
        if (!ds) {
            fprintf(stderr, "bench_parquet: %s\n", sf_errmsg());
            return 1;
        }
        sf_sample s;
        int r;
        size_t bytes = 0;
        rows = 0;
        while ((r = sf_dataset_next(ds, &s)) == 1) {
            rows++;
            bytes += s.image_len + s.caption_len;
            /* Touch the payload ends so nothing can be skipped. */
            if (s.image_len) check += s.image[0] + s.image[s.image_len - 1];
        }
        sf_dataset_close(ds);
        if (r < 0) {
            fprintf(stderr, "bench_parquet: %s\n", sf_errmsg());
            return 1;
        }
        double dt = sf_now() - t0;
        if (dt < best) best = dt;
        mb = (double)bytes / 1e6;
    }
    if (random_n > 0) {
        sf_dataset *ds = sf_dataset_open(spec, SF_DS_ALL);
        if (!ds) return 1;
        sf_rng rng;
        sf_rng_seed(&rng, 1);
        int64_t n = sf_dataset_count(ds);
        double t0 = sf_now();
        for (int i = 0; i < random_n; i++) {
            sf_sample s;
            if (sf_dataset_get(ds, (int64_t)sf_rng_below(&rng, (uint64_t)n), &s)) {
                fprintf(stderr, "bench_parquet: %s\n", sf_errmsg());
                return 1;
            }
            check += s.image_len;
        }
        fprintf(stderr, "random access: %d gets in %.3f s (%.0f gets/s)\n", random_n, sf_now() - t0,
                random_n / (sf_now() - t0));
        sf_dataset_close(ds);
    }
    printf("{\"reader\": \"saeflow\", \"threads\": %d, \"rows\": %lld, \"seconds\": %.4f, \"mb\": "
           "%.3f, "
           "\"check\": %llu}\n",
           omp_get_max_threads(), (long long)rows, best, mb, (unsigned long long)check);
    return 0;
}
