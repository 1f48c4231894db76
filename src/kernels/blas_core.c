/* sf_kernels_fix_blas_core: re-executes the process once with
 * OPENBLAS_CORETYPE set when Debian's OpenBLAS falls back to generic kernels
 * on a CPU newer than it knows (see kernels.h and docs/DEVELOPING.md). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "saeflow/kernels.h"

/* The best OpenBLAS x86-64 kernel set this CPU can run, or NULL. */
static const char *best_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return "Cooperlake";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

const char *sf_kernels_blas_core_wanted(void) {
    /* the user (or our own re-exec) chose; SAEFLOW_NO_REEXEC opts out */
    if (getenv("OPENBLAS_CORETYPE") || getenv("SAEFLOW_NO_REEXEC")) return NULL;
    const char *best = best_core(), *cur = openblas_get_corename();
    if (!best || !cur || !strcasecmp(best, cur)) return NULL;
    /* Only override OpenBLAS's generic fallbacks: a named modern core (Zen,
     * SkylakeX on a Cooperlake-capable CPU...) is a deliberate choice. */
    static const char *fallbacks[] = {"Prescott", "Core2",       "Penryn", "Dunnington",
                                      "Nehalem",  "Sandybridge", "Haswell"};
    int fallback = 0;
    for (size_t i = 0; i < sizeof fallbacks / sizeof *fallbacks; i++)
        if (!strcasecmp(cur, fallbacks[i])) fallback = 1;
    if (!fallback || (!strcasecmp(cur, "Haswell") && !strcmp(best, "Haswell"))) return NULL;
    return best;
}

void sf_kernels_fix_blas_core(void) {
    const char *best = sf_kernels_blas_core_wanted();
    if (!best) return;
    /* Rebuild argv from /proc/self/cmdline, so callers deep in a subcommand
     * need not carry the process's original argv around. */
    size_t len = 0;
    char *cmd = sf_read_file("/proc/self/cmdline", &len);
    if (!cmd || len == 0) {
        free(cmd);
        return;
    }
    int argc = 0;
    for (size_t i = 0; i < len; i++)
        if (cmd[i] == 0) argc++;
    if (cmd[len - 1] != 0) argc++; /* sf_read_file NUL-terminates the last one */
    char **argv = sf_calloc((size_t)argc + 1, sizeof *argv);
    int a = 0;
    for (size_t i = 0; i < len && a < argc; a++) {
        argv[a] = cmd + i;
        i += strlen(cmd + i) + 1;
    }
    argv[a] = NULL;
    setenv("OPENBLAS_CORETYPE", best, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernels, results are the same. */
    unsetenv("OPENBLAS_CORETYPE");
    free(argv);
    free(cmd);
}
