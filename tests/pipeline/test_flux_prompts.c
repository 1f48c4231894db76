/* FLUX prompt encoding against diffusers' FluxPipeline.encode_prompt
 * (fixtures/t5/flux_text.expected.safetensors, tools/make_t5_fixtures.py):
 * a tiny CLIP text tower (fixtures/clip/e2e) and a tiny BF16 T5 with the T5
 * tokenizer fixture, six prompts (empty, whitespace, Unicode, an
 * <extra_id_0>, one longer than both max lengths), max_sequence_length 40.
 * Error norm: max |ours - theirs| / max |theirs| per tensor, <= 1e-4. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/flux_prompts.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"
#include "test.h"

TEST(encode_prompt) {
    sf_flux_text_paths p = {SF_SOURCE_DIR "/fixtures/clip/e2e", SF_SOURCE_DIR "/fixtures/clip/e2e",
                            SF_SOURCE_DIR "/fixtures/t5",
                            SF_SOURCE_DIR "/fixtures/t5/flux_text_encoder_2"};
    sf_flux_text *m = sf_flux_text_load_paths(&p, SF_T5_AS_STORED);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (!m) return;
    sf_st st;
    CHECK(sf_st_open(&st, SF_SOURCE_DIR "/fixtures/t5/flux_text.expected.safetensors") == 0);
    cJSON *pj = cJSON_Parse(sf_st_meta(&st, "prompts"));
    int L = atoi(sf_st_meta(&st, "max_sequence_length"));
    int n = cJSON_GetArraySize(pj);
    const char **prompts = sf_malloc((size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++)
        prompts[i] = cJSON_GetArrayItem(pj, i)->valuestring;
    const int64_t J = sf_flux_text_joint_dim(m), P = sf_flux_text_pooled_dim(m);
    float *pe = sf_malloc((size_t)(n * L * J) * sizeof(float));
    float *po = sf_malloc((size_t)(n * P) * sizeof(float));
    CHECK_MSG(sf_flux_encode_prompts(m, prompts, n, L, pe, po) == 0, "%s", sf_errmsg());
    const int64_t s1[3] = {n, L, J}, s2[2] = {n, P};
    float *own1 = NULL, *own2 = NULL;
    const float *want_pe = sf_st_get_f32(&st, "prompt_embeds", 3, s1, &own1);
    const float *want_po = sf_st_get_f32(&st, "pooled_prompt_embeds", 2, s2, &own2);
    CHECK_MSG(want_pe && want_po, "%s", sf_errmsg());
    if (want_pe && want_po) {
        double e1 = test_max_rel(pe, want_pe, (size_t)(n * L * J)),
               e2 = test_max_rel(po, want_po, (size_t)(n * P));
        fprintf(stderr, "  prompt_embeds rel err %.2e, pooled_prompt_embeds rel err %.2e\n", e1,
                e2);
        CHECK(e1 <= 1e-4);
        CHECK(e2 <= 1e-4);
    }
    /* one encoder at a time gives the same rows */
    float *po2 = sf_malloc((size_t)(n * P) * sizeof(float));
    CHECK(sf_flux_encode_prompts(m, prompts, n, L, NULL, po2) == 0);
    CHECK(!memcmp(po, po2, (size_t)(n * P) * sizeof(float)));
    CHECK(sf_flux_encode_prompts(m, prompts, n, 0, pe, NULL) == -1);
    const char *bad[1] = {"bad \xff"};
    CHECK(sf_flux_encode_prompts(m, bad, 1, L, pe, po) == -1);
    CHECK_ERR_HAS("prompt 0");
    free(own1), free(own2), free(pe), free(po), free(po2), free(prompts);
    cJSON_Delete(pj);
    sf_st_close(&st);
    sf_flux_text_free(m);
    CHECK(sf_flux_text_load(SF_SOURCE_DIR "/fixtures/t5", SF_T5_AS_STORED) == NULL);
}

int main(void) {
    RUN(encode_prompt);
    return test_summary();
}
