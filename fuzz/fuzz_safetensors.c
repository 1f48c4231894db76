/* libFuzzer target: the safetensors reader on arbitrary bytes. The reader
 * works on a file (it mmaps), so each input is written to a temp file. Every
 * accepted file's tensors are read in full, to catch any pointer that the
 * validation let through outside the mapping. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "saeflow/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_st_%d.safetensors", (int)getpid());
    FILE *fp = fopen(path, "wb");
    if (!fp) return 0;
    fwrite(data, 1, size, fp);
    fclose(fp);
    sf_st f;
    if (sf_st_open(&f, path) == 0) {
        volatile uint8_t acc = 0;
        for (int i = 0; i < f.n_tensors; i++) {
            const uint8_t *p = f.tensors[i].data;
            for (uint64_t j = 0; j < f.tensors[i].nbytes; j++)
                acc ^= p[j];
            float *own = NULL;
            const float *v = sf_st_get_f32(&f, f.tensors[i].name, -1, NULL, &own);
            if (v && sf_tensor_numel(&f.tensors[i]) > 0) acc ^= (uint8_t)(v[0] != v[0]);
            free(own);
        }
        (void)acc;
        sf_st_close(&f);
    }
    return 0;
}
