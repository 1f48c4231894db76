/* Thread setup for the SAE kernels and the OpenBLAS core-type fix-up. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/sae.h"

void sf_sae_set_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1);
}

const char *sf_sae_blas_core(void) { return openblas_get_corename(); }

void sf_sae_blas_fixup(void) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("SAEFLOW_NO_REEXEC")) return;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "Prescott") != 0) return;
    const char *want = NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
#endif
    if (!want) return;
    /* Rebuild argv from /proc/self/cmdline: callers see only their own slice. */
    size_t len;
    char *cmd = sf_read_file("/proc/self/cmdline", &len);
    if (!cmd || len == 0) {
        free(cmd);
        return;
    }
    int argc = 0;
    for (size_t i = 0; i < len; i++)
        if (cmd[i] == 0) argc++;
    if (cmd[len - 1] != 0) argc++;
    char **argv = sf_calloc((size_t)argc + 1, sizeof(char *));
    int a = 0;
    for (size_t i = 0; i < len && a < argc; a++) {
        argv[a] = cmd + i;
        i += strlen(cmd + i) + 1;
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernels rather than fail. */
    unsetenv("OPENBLAS_CORETYPE");
    free(argv);
    free(cmd);
}
