/* Built against the installed copy only (pkg-config), as a user would: a tiny
 * TopK SAE through the public API, encode then decode one row. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <saeflow/saeflow.h>

int main(void) {
    if (strcmp(sf_version(), SF_VERSION) != 0) {
        fprintf(stderr, "library %s, header %s\n", sf_version(), SF_VERSION);
        return 1;
    }
    if (sf_sae_sizeof() != sizeof(sf_sae)) return 1;
    sf_sae s;
    if (sf_sae_init(&s, SF_SAE_TOPK, 8, 32, 4, 7)) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 1;
    }
    float x[8], xh[8];
    for (int i = 0; i < 8; i++)
        x[i] = (float)(i + 1) / 8.0f;
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, 1, s.k);
    if (sf_sae_encode(&s, x, 1, &c)) return 1;
    sf_sae_decode(&s, &c, xh);
    int ok = c.cnt[0] >= 1 && c.cnt[0] <= 4 && isfinite(xh[0]);
    /* A bad checkpoint is an error message, not a crash. */
    sf_sae bad;
    ok = ok && sf_sae_load(&bad, "/nonexistent-saeflow-dir") != 0 && strlen(sf_errmsg()) > 0;
    printf("saeflow %s: %d active, %s\n", sf_version(), c.cnt[0], ok ? "ok" : "FAIL");
    sf_sae_codes_free(&c);
    sf_sae_free(&s);
    return ok ? 0 : 1;
}
