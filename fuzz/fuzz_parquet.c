/* libFuzzer target: the parquet reader on arbitrary bytes. Opens the input
 * from memory, decodes every column chunk of every row group, and runs the
 * dataset layer over it (iteration + random access) when the columns fit.
 * Lower allocation caps than the defaults keep hostile claims small. */
#include <stdint.h>
#include <stdlib.h>

#include "saeflow/dataset.h"
#include "saeflow/parquet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sf_pq_default_limits.max_page_bytes = (size_t)64 << 20;
    sf_pq_default_limits.max_chunk_slots = (int64_t)1 << 22;
    sf_pq_file *f = sf_pq_open_mem(data, size, "fuzz.parquet");
    if (f) {
        for (int g = 0; g < sf_pq_num_row_groups(f); g++)
            for (int c = 0; c < sf_pq_num_columns(f); c++) {
                sf_pq_chunk ch;
                if (sf_pq_read_chunk(f, g, c, &ch) == 0) {
                    sf_pq_bytes b;
                    for (int64_t r = 0; r < ch.n_rows; r++)
                        sf_pq_chunk_row_bytes(&ch, r, 0, &b);
                    int64_t mid = ch.n_rows / 2;
                    sf_pq_chunk_free(&ch);
                    if (sf_pq_read_chunk_rows(f, g, c, mid, mid + 1, &ch) == 0) {
                        for (int64_t r = 0; r < ch.n_rows; r++)
                            sf_pq_chunk_row_bytes(&ch, r, 0, &b);
                        sf_pq_chunk_free(&ch);
                    }
                }
            }
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            sf_pq_print_schema(f, null);
            fclose(null);
        }
        sf_pq_close(f);
    }
    sf_dataset *ds = sf_dataset_open_mem("parquet", data, size, SF_DS_ALL);
    if (ds) {
        sf_sample s;
        int64_t n = sf_dataset_count(ds);
        while (sf_dataset_next(ds, &s) == 1) {
        }
        for (int64_t r = n - 1; r >= 0 && r >= n - 4; r--)
            sf_dataset_get(ds, r, &s);
        sf_dataset_close(ds);
    }
    return 0;
}
