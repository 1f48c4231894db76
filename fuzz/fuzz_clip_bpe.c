/* libFuzzer target: the CLIP tokenizer. Inputs starting with 0xFF are
 * written to a file and loaded as a tokenizer.json (loader robustness);
 * everything else is encoded as text (any bytes: invalid UTF-8 must be an
 * error, never a crash) with the real CLIP vocabulary from the fixtures, at
 * the CLIP context length and with the raw (unpadded) API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/clip_bpe.h"

static sf_tokenizer *tok;

/* fixtures/clip-inputs of the repository this file is in (__FILE__ is
 * absolute under CMake), or of $SAEFLOW_ROOT */
static void load_once(void) {
    if (tok) return;
    char root[4096];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *s = strstr(root, "fuzz/fuzz_clip_bpe.c");
    if (s == root)
        snprintf(root, sizeof root, "."); /* relative __FILE__: run from the repository root */
    else if (s)
        s[-1] = 0;
    if (getenv("SAEFLOW_ROOT")) snprintf(root, sizeof root, "%s", getenv("SAEFLOW_ROOT"));
    char v[4200], m[4200];
    snprintf(v, sizeof v, "%s/fixtures/clip-inputs/vocab.json", root);
    snprintf(m, sizeof m, "%s/fixtures/clip-inputs/merges.txt", root);
    tok = sf_tokenizer_load(v, m);
    if (!tok) {
        fprintf(stderr, "fuzz_clip_bpe: %s\n", sf_errmsg());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    if (size > 0 && data[0] == 0xFF) {
        static char path[64];
        if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_clip_bpe_%d.json", (int)getpid());
        FILE *fp = fopen(path, "wb");
        if (!fp) return 0;
        fwrite(data + 1, 1, size - 1, fp);
        fclose(fp);
        sf_tokenizer *t = sf_tokenizer_load_json(path);
        if (t) {
            int32_t ids[16];
            (void)sf_tokenizer_encode(t, "a photo of a cat <|endoftext|>", 16, ids, NULL);
            sf_tokenizer_free(t);
        }
        return 0;
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    int32_t ids[77], mask[77], raw[256];
    int n = sf_tokenizer_encode(tok, text, 77, ids, mask);
    if (n >= 0 &&
        (n < 2 || n > 77 || ids[0] != sf_tokenizer_bos(tok) || ids[n - 1] != sf_tokenizer_eos(tok)))
        abort(); /* invariant broken */
    (void)sf_tokenizer_encode_raw(tok, text, raw, 256);
    free(text);
    return 0;
}
