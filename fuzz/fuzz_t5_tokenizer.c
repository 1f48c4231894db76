/* libFuzzer target: the T5 Unigram tokenizer. Inputs starting with 0xFF are
 * written to a file and loaded as a tokenizer.json (reader robustness: the
 * charsmap trie, normalizer and pre-tokenizer lists, added tokens);
 * everything else is encoded as text with fixtures/t5/tokenizer.json (real
 * nmt_nfkc charsmap): padded at 32, raw, and through the normalizer alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/t5_tokenizer.h"

static sf_t5_tokenizer *tok;

static void load_once(void) {
    if (tok) return;
    char root[4096];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *s = strstr(root, "fuzz/fuzz_t5_tokenizer.c");
    if (s == root)
        snprintf(root, sizeof root, ".");
    else if (s)
        s[-1] = 0;
    if (getenv("SAEFLOW_ROOT")) snprintf(root, sizeof root, "%s", getenv("SAEFLOW_ROOT"));
    char p[4200];
    snprintf(p, sizeof p, "%s/fixtures/t5/tokenizer.json", root);
    tok = sf_t5_tokenizer_load(p);
    if (!tok) {
        fprintf(stderr, "fuzz_t5_tokenizer: %s\n", sf_errmsg());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    if (size > 0 && data[0] == 0xFF) {
        static char path[64];
        if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_t5tok_%d.json", (int)getpid());
        FILE *fp = fopen(path, "wb");
        if (!fp) return 0;
        fwrite(data + 1, 1, size - 1, fp);
        fclose(fp);
        sf_t5_tokenizer *t = sf_t5_tokenizer_load(path);
        if (t) {
            int32_t ids[16];
            (void)sf_t5_tokenizer_encode(t, "A  photo\r\nof <extra_id_0> caf\xc3\xa9", 16, ids,
                                         NULL);
            sf_t5_tokenizer_free(t);
        }
        return 0;
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    int32_t ids[32], mask[32], raw[256];
    int n = sf_t5_tokenizer_encode(tok, text, 32, ids, mask);
    if (n >= 0 && (n < 1 || n > 32 || ids[n - 1] != sf_t5_tokenizer_eos(tok))) abort();
    (void)sf_t5_tokenizer_encode_raw(tok, text, raw, 256);
    size_t len;
    free(sf_t5_tokenizer_normalize(tok, text, &len));
    free(text);
    return 0;
}
