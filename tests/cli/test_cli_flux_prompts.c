/* saeflow flux encode-prompts on a tiny diffusers-layout FLUX folder (links
 * to fixtures/clip/e2e and the T5 fixtures), against diffusers'
 * FluxPipeline.encode_prompt rows (fixtures/t5/flux_text.expected). */
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"
#include "test.h"

TEST(encode_prompts) {
    const char *tmp = test_tmpdir("cli_flux_prompts");
    CHECK(system(test_fmt("mkdir -p '%s/flux' && ln -s '" SF_SOURCE_DIR "/fixtures/clip/e2e' "
                          "'%s/flux/tokenizer' && ln -s '" SF_SOURCE_DIR "/fixtures/clip/e2e' "
                          "'%s/flux/text_encoder' && ln -s '" SF_SOURCE_DIR "/fixtures/t5' "
                          "'%s/flux/tokenizer_2' && ln -s '" SF_SOURCE_DIR
                          "/fixtures/t5/flux_text_encoder_2' '%s/flux/text_encoder_2' && printf 'a "
                          "photo of a cat\\r\\nA DOG running on the beach!\\n\\n' > '%s/p.txt'",
                          tmp, tmp, tmp, tmp, tmp, tmp)) == 0);
    char *log = NULL;
    int rc = test_run(test_fmt("'" SF_EXE "' flux encode-prompts --model '%s/flux' --prompts "
                               "'%s/p.txt' --out '%s/out.safetensors' --max-sequence-length 40",
                               tmp, tmp, tmp),
                      &log);
    CHECK_MSG(rc == 0, "%s", log);
    free(log);
    sf_st got, want;
    CHECK(sf_st_open(&got, test_fmt("%s/out.safetensors", tmp)) == 0);
    CHECK(sf_st_open(&want, SF_SOURCE_DIR "/fixtures/t5/flux_text.expected.safetensors") == 0);
    const sf_tensor_info *ge = sf_st_find(&got, "prompt_embeds"),
                         *we = sf_st_find(&want, "prompt_embeds"),
                         *gp = sf_st_find(&got, "pooled_prompt_embeds"),
                         *wp = sf_st_find(&want, "pooled_prompt_embeds"),
                         *rows = sf_st_find(&got, "rows");
    CHECK(ge && we && gp && wp && rows);
    if (ge && we && gp && wp && rows) {
        CHECK(ge->shape[0] == 3 && ge->shape[1] == 40 && ge->shape[2] == we->shape[2]);
        CHECK(rows->dtype == SF_DT_I64 && ((const int64_t *)rows->data)[2] == 2);
        size_t ne = (size_t)(3 * 40 * we->shape[2]), np = (size_t)(3 * wp->shape[1]);
        double e1 = test_max_rel((const float *)ge->data, (const float *)we->data, ne);
        double e2 = test_max_rel((const float *)gp->data, (const float *)wp->data, np);
        fprintf(stderr, "  rel err prompt_embeds %.2e pooled %.2e\n", e1, e2);
        CHECK(e1 <= 1e-4 && e2 <= 1e-4);
    }
    sf_st_close(&got);
    sf_st_close(&want);
    /* bf16 storage, offset/limit */
    rc = test_run(
        test_fmt("'" SF_EXE "' flux encode-prompts --model '%s/flux' --prompts '%s/p.txt' "
                 "--out '%s/b.safetensors' --max-sequence-length 8 --dtype bf16 --offset 1 "
                 "--limit 1",
                 tmp, tmp, tmp),
        NULL);
    CHECK(rc == 0);
    CHECK(sf_st_open(&got, test_fmt("%s/b.safetensors", tmp)) == 0);
    ge = sf_st_find(&got, "prompt_embeds");
    rows = sf_st_find(&got, "rows");
    CHECK(ge && ge->dtype == SF_DT_BF16 && ge->shape[0] == 1 && ge->shape[1] == 8);
    CHECK(rows && ((const int64_t *)rows->data)[0] == 1);
    sf_st_close(&got);
    /* captions of a dataset, rows kept */
    rc = test_run(test_fmt("'" SF_EXE "' flux encode-prompts --model '%s/flux' --dataset "
                           "'cc3m:" SF_SOURCE_DIR "/fixtures/data/recap_snappy_dict_v1.parquet' "
                           "--out '%s/d.safetensors' --max-sequence-length 16 --offset 1 --limit 3",
                           tmp, tmp),
                  NULL);
    CHECK(rc == 0);
    CHECK(sf_st_open(&got, test_fmt("%s/d.safetensors", tmp)) == 0);
    rows = sf_st_find(&got, "rows");
    CHECK(rows && rows->shape[0] == 3 && ((const int64_t *)rows->data)[0] == 1 &&
          ((const int64_t *)rows->data)[2] == 3);
    sf_st_close(&got);
    /* usage and runtime errors; no output left behind */
    CHECK(test_run("'" SF_EXE "' flux encode-prompts --help", NULL) == 0);
    CHECK(test_run(test_fmt("'" SF_EXE "' flux encode-prompts --model '%s/flux' --out x", tmp),
                   NULL) == 2);
    CHECK(test_run(test_fmt("'" SF_EXE "' flux encode-prompts --model '%s' --prompts '%s/p.txt' "
                            "--out '%s/c.safetensors'",
                            tmp, tmp, tmp),
                   NULL) == 1);
    CHECK(!test_file_exists(test_fmt("%s/c.safetensors", tmp)));
}

int main(void) {
    RUN(encode_prompts);
    return test_summary();
}
