/* C half of the parquet read benchmark (driver: bench/bench_parquet.sh).
 *
 *   bench_parquet FILE [--repeat 3]
 *
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
    int repeat = 3;
    if (argc >= 4 && !strcmp(argv[2], "--repeat")) repeat = atoi(argv[3]);
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
    printf("{\"reader\": \"saeflow\", \"threads\": %d, \"rows\": %lld, \"seconds\": %.4f, \"mb\": %.3f, "
           "\"check\": %llu}\n",
           omp_get_max_threads(), (long long)rows, best, mb, (unsigned long long)check);
    return 0;
}
