/* libFuzzer target: image decoding (JPEG/PNG/WebP sniffed from the bytes)
 * and, for every image that decodes, the CLIP preprocessing at a small size
 * plus a resize to sizes taken from the input, so the resampler sees odd
 * shapes too. Seeds: fixtures/clip-inputs/images and .../corrupt, e.g.
 *   mkdir -p fuzz/corpus/image; cp fixtures/clip-inputs/images/(all) fuzz/corpus/image/
 *   fuzz/run.sh 60 fuzz_image */
#include <stdlib.h>
#include <string.h>

#include "saeflow/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sf_image im;
    /* the last byte's low bit picks the alpha mode */
    unsigned flags = size > 0 && (data[size - 1] & 1) ? SF_IMAGE_ALPHA_WHITE : 0;
    if (sf_image_decode_ex(data, size, "fuzz", flags, &im) != 0) return 0;
    /* keep the per-input work bounded: huge (but valid) images only decode */
    if ((int64_t)im.width * im.height <= 4096 * 4096) {
        sf_clip_preproc p;
        sf_clip_preproc_default(&p);
        p.shortest_edge = 24;
        p.crop_height = 20;
        p.crop_width = 28;
        float px[3 * 20 * 28];
        (void)sf_clip_preprocess(&p, &im, px);
        int w = 1 + (size > 0 ? data[size - 1] % 67 : 0),
            h = 1 + (size > 1 ? data[size - 2] % 53 : 0);
        sf_image out;
        if (sf_image_resize(&im, w, h, size % 2 ? SF_RESAMPLE_BICUBIC : SF_RESAMPLE_BILINEAR,
                            &out) == 0)
            sf_image_free(&out);
        if (sf_image_resize_compat(&im, w, h, SF_RESAMPLE_BICUBIC, 1, &out) == 0)
            sf_image_free(&out);
    }
    sf_image_free(&im);
    return 0;
}
