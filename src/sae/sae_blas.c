/* Thread setup for the SAE kernels. The OpenBLAS core-type fix-up is
 * sf_kernels_fix_blas_core (saeflow/kernels.h), called once in main(). */
#include <cblas.h>

#include "saeflow/kernels.h"
#include "saeflow/sae.h"

void sf_sae_set_threads(int threads) {
    sf_kernels_set_threads(threads);
}

const char *sf_sae_blas_core(void) {
    return openblas_get_corename();
}
