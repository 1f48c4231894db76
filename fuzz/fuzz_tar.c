/* libFuzzer target: the webdataset tar reader (libarchive underneath) on
 * arbitrary bytes: iteration with grouping, count/index, random access. */
#include <stdint.h>
#include <stdlib.h>

#include "saeflow/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sf_dataset *ds = sf_dataset_open_mem("tar", data, size, SF_DS_ALL);
    if (!ds) return 0;
    sf_sample s;
    while (sf_dataset_next(ds, &s) == 1) {
    }
    int64_t n = sf_dataset_count(ds);
    for (int64_t r = n - 1; r >= 0 && r >= n - 4; r--)
        sf_dataset_get(ds, r, &s);
    sf_dataset_close(ds);
    return 0;
}
