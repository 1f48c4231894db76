/* Thread setup for the SAE kernels and the OpenBLAS core-type fix-up. */
#include <cblas.h>
#include <omp.h>

#include "saeflow/kernels.h"
#include "saeflow/sae.h"

void sf_sae_set_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1);
}

const char *sf_sae_blas_core(void) { return openblas_get_corename(); }

/* One implementation of the core-type fix lives in the kernels layer
 * (sf_kernels_fix_blas_core); this name stays for the SAE commands. */
void sf_sae_blas_fixup(void) { sf_kernels_fix_blas_core(); }
