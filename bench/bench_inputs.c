/* Input pipeline speed, one thread: JPEG bytes -> pixel_values (decode,
 * Pillow-exact resize, crop, normalise), and captions -> CLIP token ids.
 *
 *   build/bench_inputs [image.jpg] [iterations]
 *   (default: fixtures/clip-inputs/images/landscape_640x480_q90_420.jpg)
 * The Python half, bench/bench_inputs.py, times Pillow + transformers'
 * CLIPImageProcessor and the tokenizers-backed CLIP tokenizer on the same
 * inputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/image.h"
#include "saeflow/clip_bpe.h"

#ifndef SF_SOURCE_DIR
#define SF_SOURCE_DIR "."
#endif

int main(int argc, char **argv) {
    const char *img =
        argc > 1 ? argv[1] : "fixtures/clip-inputs/images/landscape_640x480_q90_420.jpg";
    int iters = argc > 2 ? atoi(argv[2]) : 200;
    size_t len;
    char *data = sf_read_file(img, &len);
    if (!data) {
        fprintf(stderr, "%s (run from the repository root)\n", sf_errmsg());
        return 1;
    }
    sf_clip_preproc p;
    sf_clip_preproc_default(&p);
    float *px = sf_malloc(sf_clip_preproc_floats(&p) * sizeof(float));
    sf_image im;
    double t_dec = 0, t_pre = 0;
    for (int i = 0; i < iters; i++) {
        double t0 = sf_now();
        if (sf_image_decode(data, len, img, &im)) {
            fprintf(stderr, "%s\n", sf_errmsg());
            return 1;
        }
        double t1 = sf_now();
        sf_clip_preprocess(&p, &im, px);
        double t2 = sf_now();
        if (i) { /* first iteration is warm-up */
            t_dec += t1 - t0;
            t_pre += t2 - t1;
        }
        if (i == 0) printf("image %s: %dx%d\n", img, im.width, im.height);
        sf_image_free(&im);
    }
    int n = iters - 1;
    printf("decode      %.3f ms/image\n", 1e3 * t_dec / n);
    printf("preprocess  %.3f ms/image (resize + crop + normalise)\n", 1e3 * t_pre / n);
    printf("total       %.1f images/s (1 thread)\n", n / (t_dec + t_pre));

    /* tokenizer: the fixture captions (Unicode, long ones included) */
    sf_tokenizer *tok =
        sf_tokenizer_load("fixtures/clip-inputs/vocab.json", "fixtures/clip-inputs/merges.txt");
    char *cj = sf_read_file("fixtures/clip-inputs/captions.json", &len);
    if (!tok || !cj) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 1;
    }
    cJSON *j = cJSON_ParseWithLength(cj, len);
    const cJSON *c;
    int nc = 0;
    const char *texts[1024];
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "captions")) texts[nc++] =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "random")) if (nc < 1024)
        texts[nc++] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
    int32_t ids[77], mask[77];
    double t0 = sf_now();
    for (int i = 0; i < nc; i++)
        sf_tokenizer_encode(tok, texts[i], 77, ids, mask);
    double cold = sf_now() - t0;
    int reps = 50;
    t0 = sf_now();
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nc; i++)
            sf_tokenizer_encode(tok, texts[i], 77, ids, mask);
    double warm = sf_now() - t0;
    printf("tokenizer   %d captions: %.0f captions/s cold cache, %.0f captions/s warm (1 thread)\n",
           nc, nc / cold, reps * nc / warm);
    t0 = sf_now();
    sf_tokenizer *t2 =
        sf_tokenizer_load("fixtures/clip-inputs/vocab.json", "fixtures/clip-inputs/merges.txt");
    printf("tokenizer   load vocab.json + merges.txt: %.1f ms\n", 1e3 * (sf_now() - t0));
    sf_tokenizer_free(t2);
    sf_tokenizer_free(tok);
    cJSON_Delete(j);
    free(cj);
    free(px);
    free(data);
    return 0;
}
