/* Thread setup for the SAE kernels. The OpenBLAS core-type fix-up is
 * sf_kernels_fix_blas_core (saeflow/kernels.h), called once in main(). */
#include <cblas.h>
#include <omp.h>

#include "saeflow/kernels.h"
#include "saeflow/sae.h"

void sf_sae_set_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1);
}

const char *sf_sae_blas_core(void) {
    return openblas_get_corename();
}
