/* `saeflow data info|write|captions` end to end on the committed fixtures. */
#include <sys/stat.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/data/"

/* Runs a shell command; returns the exit code, output in *out (stdout+stderr). */
TEST(captions_parquet) {
    const char *tmp = test_tmpdir("cli_data_captions");
    char cmd[16384], path[4096], *out = NULL;
    snprintf(path, sizeof path, "%s/captions.txt", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s' data captions --dataset 'cc3m:%srecap_snappy_dict_v1.parquet' --out '%s'",
             SF_EXE, FIX, path);
    CHECK(test_run(cmd, &out) == 0);
    free(out);
    size_t n;
    char *txt = sf_read_file(path, &n);
    CHECK(txt);
    if (!txt) return;
    /* 23 rows -> 23 lines; row 7 (empty list) empty; row 11 flattened. */
    int lines = 0;
    char *line[32] = {0};
    for (char *p = txt, *nl; (nl = strchr(p, '\n')) && lines < 32; p = nl + 1) {
        *nl = 0;
        line[lines++] = p;
    }
    CHECK(lines == 23);
    CHECK_STR(line[7], "");
    CHECK_STR(line[11], "line one line two Tabbed  end");
    CHECK_STR(line[10], "<image> Only a question");
    free(txt);

    /* stdout, --start/--limit */
    snprintf(
        cmd, sizeof cmd,
        "'%s' data captions --dataset 'cc3m:%srecap_snappy_dict_v1.parquet' --start 11 --limit 1",
        SF_EXE, FIX);
    CHECK(test_run(cmd, &out) == 0);
    CHECK_STR(out, "line one line two Tabbed  end\n");
    free(out);
}

TEST(write_images) {
    const char *tmp = test_tmpdir("cli_data_write");
    char cmd[16384], a[4096], b[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' data write --dataset 'folder:%sfolder_tsv' --out '%s/img'",
             SF_EXE, FIX, tmp);
    CHECK(test_run(cmd, &out) == 0);
    CHECK(strstr(out, "wrote 6 images"));
    free(out);
    /* Sorted names: D.JPEG, b.png, c.webp, img00.jpg, ... ; bytes unchanged. */
    snprintf(a, sizeof a, "%s/img/0.jpg", tmp);
    snprintf(b, sizeof b, "%sfolder_tsv/D.JPEG", FIX);
    CHECK(test_same_file(a, b));
    snprintf(a, sizeof a, "%s/img/2.webp", tmp);
    snprintf(b, sizeof b, "%sfolder_tsv/c.webp", FIX);
    CHECK(test_same_file(a, b));

    /* Tar shards: the sample without an image is reported and skipped. */
    snprintf(
        cmd, sizeof cmd,
        "'%s' data write --dataset 'wds:%swds/{00000.tar,00001.tar,00002.tar.gz}' --out '%s/wds'",
        SF_EXE, FIX, tmp);
    CHECK(test_run(cmd, &out) == 0);
    CHECK(strstr(out, "row 6 (id 000006): no image"));
    CHECK(strstr(out, "wrote 8 images"));
    free(out);
    snprintf(a, sizeof a, "%s/wds/1.png", tmp);
    CHECK(test_file_exists(a));
    snprintf(a, sizeof a, "%s/wds/6.jpg", tmp);
    CHECK(!test_file_exists(a));
}

TEST(info_and_errors) {
    char cmd[16384], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' data info --dataset 'wds:%swds/*.tar*' --images", SF_EXE, FIX);
    CHECK(test_run(cmd, &out) == 0);
    CHECK(strstr(out, "rows:       9"));
    CHECK(strstr(out, "images:     8 present, 1 missing"));
    free(out);

    snprintf(cmd, sizeof cmd, "'%s' data info --dataset 'cc3m:%snothing*.parquet'", SF_EXE, FIX);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(strstr(out, "saeflow data info: ") && strstr(out, "no files match"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' data frobnicate", SF_EXE);
    CHECK(test_run(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd, "'%s' data info", SF_EXE);
    CHECK(test_run(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd, "'%s' data write --dataset 'folder:%sfolder_tsv'", SF_EXE, FIX);
    CHECK(test_run(cmd, NULL) == 2);

    /* A truncated parquet file: clear error naming the file, no output left. */
    const char *tmp = test_tmpdir("cli_data_errors");
    char bad[4096], outp[4096];
    snprintf(bad, sizeof bad, "%s/bad.parquet", tmp);
    size_t n;
    char *good = sf_read_file(FIX "recap_gzip_dict_v2.parquet", &n);
    CHECK(good && sf_write_file_atomic(bad, good, n / 2) == 0);
    free(good);
    snprintf(outp, sizeof outp, "%s/c.txt", tmp);
    snprintf(cmd, sizeof cmd, "'%s' data captions --dataset 'cc3m:%s' --out '%s'", SF_EXE, bad,
             outp);
    CHECK(test_run(cmd, &out) == 1);
    CHECK_MSG(strstr(out, "bad.parquet: not a parquet file or truncated"), "%s", out);
    free(out);
    CHECK(!test_file_exists(outp));
}

int main(void) {
    RUN(captions_parquet);
    RUN(write_images);
    RUN(info_and_errors);
    return test_summary();
}
