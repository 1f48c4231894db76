/* `saeflow topk`, `explore` and `serve` end to end: a small SAE trained on
 * the shapes fixture, top-k files byte-identical for every batch size and
 * thread count, a site with thumbnails, the server on a loopback port, and
 * the usage / runtime errors (exit codes 2 / 1, no output left behind). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/analysis/"

static char tmp[2048], ckpt[4096], cmd[32768], path[8192];

TEST(topk_deterministic) {
    char ref[4096], other[4096], *out = NULL;
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmp);
    snprintf(other, sizeof other, "%s/other.safetensors", tmp);
    /* the batch and thread settings are not recorded, so files must match byte for byte */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' topk --checkpoint '%s' --acts fixtures/analysis/acts.safetensors "
             "--out '%s' "
             "--batch 192 --threads 1",
             SF_SOURCE_DIR, SF_EXE, ckpt, ref);
    CHECK(test_run(cmd, &out) == 0);
    CHECK(out && strstr(out, "192 rows x 48 features"));
    free(out);
    const char *variants[] = {"--batch 1 --threads 2", "--batch 7 --threads 3",
                              "--batch 64 --threads 2 --quiet"};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && '%s' topk --checkpoint '%s' --acts fixtures/analysis/acts.safetensors "
                 "--out '%s' %s",
                 SF_SOURCE_DIR, SF_EXE, ckpt, other, variants[i]);
        CHECK(test_run(cmd, NULL) == 0);
        CHECK_MSG(test_same_file(ref, other), "topk output differs with %s", variants[i]);
    }
    /* more rows than one encoder slice (256): batches split rows differently */
    char syn[4096];
    snprintf(syn, sizeof syn, "%s/syn64.safetensors", tmp);
    snprintf(cmd, sizeof cmd, "'%s' synth --out '%s' --d 64 --samples 3000 --seed 3", SF_EXE, syn);
    CHECK(test_run(cmd, NULL) == 0);
    const char *v2[] = {"--batch 256 --threads 1", "--batch 1000 --threads 2",
                        "--batch 100000 --threads 3", "--batch 1 --threads 2"};
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' topk --checkpoint '%s' --acts '%s' --out '%s/syn%d.safetensors' --quiet %s",
                 SF_EXE, ckpt, syn, tmp, i, v2[i]);
        CHECK(test_run(cmd, NULL) == 0);
        char a[8192], b[8192];
        snprintf(a, sizeof a, "%s/syn0.safetensors", tmp);
        snprintf(b, sizeof b, "%s/syn%d.safetensors", tmp, i);
        if (i) CHECK_MSG(test_same_file(a, b), "topk output differs with %s", v2[i]);
    }
    /* -N and --limit change the result */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' topk --checkpoint '%s' --acts fixtures/analysis/acts.safetensors "
             "--out '%s' -N 4 --limit 100 --quiet",
             SF_SOURCE_DIR, SF_EXE, ckpt, other);
    CHECK(test_run(cmd, NULL) == 0);
    CHECK(!test_same_file(ref, other));
}

TEST(topk_errors) {
    char outp[4096], *out = NULL;
    snprintf(outp, sizeof outp, "%s/err.safetensors", tmp);
    snprintf(cmd, sizeof cmd, "'%s' topk --acts x --out '%s'", SF_EXE, outp);
    CHECK(test_run(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --acts '%sacts.safetensors' --out '%s' -N 0", SF_EXE,
             ckpt, FIX, outp);
    CHECK(test_run(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --acts '%sacts.safetensors' --out '%s' --alpha grey",
             SF_EXE, ckpt, FIX, outp);
    CHECK(test_run(cmd, &out) == 2);
    CHECK(out && strstr(out, "--alpha expects drop"));
    free(out);
    out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' topk --checkpoint '%s' --acts '%s/nope.safetensors' --out '%s'",
             SF_EXE, ckpt, tmp, outp);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(out && strstr(out, "nope.safetensors"));
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --acts '%sacts.safetensors' --key nokey --out '%s'",
             SF_EXE, ckpt, FIX, outp);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(out && strstr(out, "nokey"));
    free(out);
    /* width mismatch: synthetic activations of another width */
    snprintf(path, sizeof path, "%s/w32.safetensors", tmp);
    snprintf(cmd, sizeof cmd, "'%s' synth --out '%s' --d 32 --samples 50", SF_EXE, path);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd, "'%s' topk --checkpoint '%s' --acts '%s' --out '%s'", SF_EXE, ckpt,
             path, outp);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(out && strstr(out, "width 32"));
    free(out);
    CHECK(!test_file_exists(outp));
}

/* The raw bytes of tensor `name` with dtype `dt` (malloc'd), or NULL. */
static void *read_tensor(const char *file, const char *name, const char *dt, size_t *nbytes) {
    sf_st f;
    if (sf_st_open(&f, file)) return NULL;
    const sf_tensor_info *t = sf_st_find(&f, name);
    void *out = NULL;
    if (t && !strcmp(sf_dtype_name(t->dtype), dt)) {
        out = sf_malloc(t->nbytes + 8);
        memcpy(out, t->data, t->nbytes);
        *nbytes = t->nbytes;
    }
    sf_st_close(&f);
    return out;
}

static int same_tensor(const char *a, const char *b, const char *name, const char *dt) {
    size_t na = 0, nb = 0;
    char *x = read_tensor(a, name, dt, &na), *y = read_tensor(b, name, dt, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* An I64 tensor of a safetensors file. */
static int64_t *read_i64(const char *file, const char *name, int64_t *numel) {
    size_t nb = 0;
    int64_t *out = read_tensor(file, name, "I64", &nb);
    if (out) *numel = (int64_t)(nb / 8);
    return out;
}

TEST(topk_row_map) {
    char a[8192], b[8192];
    snprintf(a, sizeof a, "%s/plain.safetensors", tmp);
    snprintf(b, sizeof b, "%s/mapped.safetensors", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --acts '%sacts.safetensors' --out '%s' --quiet", SF_EXE,
             ckpt, FIX, a);
    CHECK(test_run(cmd, NULL) == 0);
    /* acts_rows: the same activations as `vision`, with rows = 1000 + 2i */
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --acts '%sacts_rows.safetensors' --key vision --out '%s' "
             "--quiet",
             SF_EXE, ckpt, FIX, b);
    CHECK(test_run(cmd, NULL) == 0);
    int64_t na = 0, nb = 0;
    int64_t *ra = read_i64(a, "topk_rows", &na), *rb = read_i64(b, "topk_rows", &nb);
    CHECK(ra && rb && na == nb && na == 48 * 16);
    int mapped = 1;
    for (int64_t i = 0; ra && rb && i < na; i++)
        if (rb[i] != (ra[i] < 0 ? -1 : 1000 + 2 * ra[i])) mapped = 0;
    CHECK(mapped);
    free(ra);
    free(rb);
    /* --rows-key none: the activation row index again */
    snprintf(
        cmd, sizeof cmd,
        "'%s' topk --checkpoint '%s' --acts '%sacts_rows.safetensors' --key vision --rows-key none "
        "--out '%s' --quiet",
        SF_EXE, ckpt, FIX, b);
    CHECK(test_run(cmd, NULL) == 0);
    ra = read_i64(a, "topk_rows", &na);
    rb = read_i64(b, "topk_rows", &nb);
    CHECK(ra && rb && na == nb && !memcmp(ra, rb, (size_t)na * 8));
    free(ra);
    free(rb);
    char *out = NULL;
    snprintf(
        cmd, sizeof cmd,
        "'%s' topk --checkpoint '%s' --acts '%sacts_rows.safetensors' --key vision --rows-key nope "
        "--out '%s'",
        SF_EXE, ckpt, FIX, b);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(out && strstr(out, "'nope'"));
    free(out);
    snprintf(
        cmd, sizeof cmd,
        "'%s' topk --checkpoint '%s' --acts '%sacts_rows.safetensors' --key vision --row-offset 5 "
        "--out '%s'",
        SF_EXE, ckpt, FIX, b);
    CHECK(test_run(cmd, NULL) == 2);
}

/* A dataset through the tiny CLIP fixture on the fly gives the same top-k as
 * `saeflow extract` followed by topk on its file; undecodable rows are skipped. */
TEST(topk_from_dataset) {
    char acts[8192], a[8192], b[8192], ds[8192], *out = NULL;
    snprintf(acts, sizeof acts, "%s/clip_acts.safetensors", tmp);
    snprintf(a, sizeof a, "%s/clip_a.safetensors", tmp);
    snprintf(b, sizeof b, "%s/clip_b.safetensors", tmp);
    const char *model = SF_SOURCE_DIR "/fixtures/clip/e2e";
    snprintf(cmd, sizeof cmd,
             "'%s' extract --model '%s' --dataset 'folder:%sshapes' --out '%s' --text none", SF_EXE,
             model, FIX, acts);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd,
             "'%s' train --tensorpath '%s' --tensorkey vision --pages 64 --k 4 --num_epochs 5 "
             "--savedir '%s' --name clipsae --quiet",
             SF_EXE, acts, tmp);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/clipsae' --acts '%s' --key vision --out '%s' --quiet",
             SF_EXE, tmp, acts, a);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(
        cmd, sizeof cmd,
        "'%s' topk --checkpoint '%s/clipsae' --dataset 'folder:%sshapes' --model '%s' --out '%s' "
        "--batch 7 --threads 2 --quiet",
        SF_EXE, tmp, FIX, model, b);
    CHECK(test_run(cmd, NULL) == 0);
    CHECK(same_tensor(a, b, "topk_values", "F32") && same_tensor(a, b, "topk_rows", "I64"));
    CHECK(same_tensor(a, b, "hist", "I64") && same_tensor(a, b, "mean", "F32"));
    /* a folder with an undecodable image: that row is skipped and never listed */
    snprintf(ds, sizeof ds, "%s/ds", tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp '%sshapes/'00[0-9].* '%s/' && echo broken > '%s/004.png'", ds,
             FIX, ds, ds);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(
        cmd, sizeof cmd,
        "'%s' topk --checkpoint '%s/clipsae' --dataset 'folder:%s' --model '%s' --out '%s' -N 4",
        SF_EXE, tmp, ds, model, b);
    CHECK(test_run(cmd, &out) == 0);
    CHECK(out && strstr(out, "row 4 has no decodable image") &&
          strstr(out, "9 rows x 64 features"));
    free(out);
    int64_t n = 0, *r = read_i64(b, "topk_rows", &n);
    int seen4 = 0, seen9 = 0;
    for (int64_t i = 0; r && i < n; i++)
        seen4 |= r[i] == 4, seen9 |= r[i] == 9;
    CHECK(r && n == 64 * 4 && !seen4 && seen9);
    free(r);
    /* usage errors */
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/clipsae' --dataset 'folder:%s' --out '%s'", SF_EXE, tmp,
             ds, b);
    CHECK(test_run(cmd, NULL) == 2); /* no --model */
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/clipsae' --dataset 'folder:%s' --model '%s' --clip-batch "
             "3 --out '%s'",
             SF_EXE, tmp, ds, model, b);
    CHECK(test_run(cmd, NULL) == 2);
    /* width mismatch: the shapes SAE (d 64) on this tower (width 32) */
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s' --dataset 'folder:%s' --model '%s' --out '%s'", SF_EXE,
             ckpt, ds, model, b);
    CHECK(test_run(cmd, &out) == 1);
    CHECK(out && strstr(out, "expects 64"));
    free(out);
}

static char site[4096];

TEST(explore_site) {
    char *out = NULL;
    snprintf(site, sizeof site, "%s/site", tmp);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' explore --topk '%s/ref.safetensors' --out '%s' --thumb 48 --quiet",
             SF_SOURCE_DIR, SF_EXE, tmp, site);
    CHECK(test_run(cmd, &out) == 0);
    free(out);
    const char *files[] = {"index.html",    "assets/app.js", "assets/style.css",
                           "data/index.js", "data/words.js", "data/f/0000.js"};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", site, files[i]);
        CHECK_MSG(test_file_exists(path), "%s missing", files[i]);
    }
    snprintf(path, sizeof path, "%s/data/words.js", site);
    char *w = sf_read_file(path, NULL);
    CHECK(w && strstr(w, "\"red\":[") && strstr(w, "\"triangle\":["));
    free(w);
    /* the top row of the most active red feature has a thumbnail */
    snprintf(path, sizeof path, "%s/img", site);
    CHECK(test_file_exists(path));
    /* errors */
    snprintf(cmd, sizeof cmd, "'%s' explore --topk '%sacts.safetensors' --out '%s/x'", SF_EXE, FIX,
             tmp);
    CHECK(test_run(cmd, &out) == 1);
    CHECK_MSG(out && strstr(out, "topk_values"), "got: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' explore --out '%s/x'", SF_EXE, tmp);
    CHECK(test_run(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' explore --topk '%s/ref.safetensors' --out '%s/y' --data "
             "folder:/nonexistent",
             SF_SOURCE_DIR, SF_EXE, tmp, tmp);
    CHECK(test_run(cmd, &out) == 1);
    free(out);
}

static int http_status(int port, const char *req) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int st = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        send(fd, req, strlen(req), MSG_NOSIGNAL);
        /* TCP may deliver the status line in pieces: read until it is whole */
        char buf[512] = {0};
        size_t n = 0;
        while (n < sizeof buf - 1 && !strstr(buf, "\r\n")) {
            ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
            if (r <= 0) break;
            n += (size_t)r;
        }
        sscanf(buf, "HTTP/1.%*d %d", &st);
    }
    close(fd);
    return st;
}

TEST(serve) {
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        execl(SF_EXE, SF_EXE, "serve", "--dir", site, "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    /* "serving SITE on http://127.0.0.1:PORT/ ..." (bounded wait via alarm-free poll) */
    char line[8192] = {0};
    size_t n = 0;
    struct timeval tv = {10, 0};
    fd_set fs;
    while (n < sizeof line - 1 && !strchr(line, '\n')) {
        FD_ZERO(&fs);
        FD_SET(pfd[0], &fs);
        if (select(pfd[0] + 1, &fs, NULL, NULL, &tv) <= 0) break;
        ssize_t r = read(pfd[0], line + n, sizeof line - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    const char *p = strstr(line, "http://127.0.0.1:");
    int port = p ? atoi(p + 17) : 0;
    CHECK_MSG(port > 0, "no port in '%s'", line);
    if (port > 0) {
        CHECK(http_status(port, "GET / HTTP/1.0\r\n\r\n") == 200);
        CHECK(http_status(port, "GET /data/index.js HTTP/1.0\r\n\r\n") == 200);
        CHECK(http_status(port, "HEAD /assets/app.js HTTP/1.0\r\n\r\n") == 200);
        CHECK(http_status(port, "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.0\r\n\r\n") == 400);
        CHECK(http_status(port, "GET /missing.js HTTP/1.0\r\n\r\n") == 404);
        CHECK(http_status(port, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n") == 405);
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, /* clean shutdown on SIGTERM */
              "serve ended with %s %d", WIFEXITED(st) ? "exit code" : "signal",
              WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    close(pfd[0]);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' serve --dir '%s/nonexistent'", SF_EXE, tmp);
    CHECK(test_run(cmd, &out) == 1);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' serve --dir '%s' --port 99999", SF_EXE, site);
    CHECK(test_run(cmd, NULL) == 2);
}

/* Per-token activations: the tokens fixture (known bright patch per image,
 * an identity SAE) gives feature 0's top images with their bright patch as
 * the best token, byte-identical for any batch (batches cut images apart)
 * and thread count; then the CLIP path: `extract --tokens all` + topk
 * --acts equals topk --dataset --tokens all, with the grid from the model. */
TEST(topk_tokens) {
    char a[8192], b[8192], acts[8192], *out = NULL;
    const char *tf = SF_SOURCE_DIR "/fixtures/analysis/tokens";
    snprintf(a, sizeof a, "%s/tok_a.safetensors", tmp);
    snprintf(b, sizeof b, "%s/tok_b.safetensors", tmp);
    const char *variants[] = {"--batch 1000 --threads 1", "--batch 1 --threads 2",
                              "--batch 5 --threads 3"};
    for (int v = 0; v < 3; v++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' topk --checkpoint '%s/sae' --acts '%s/acts.safetensors' --key vision "
                 "--out '%s' -N 8 --quiet %s",
                 SF_EXE, tf, tf, v ? b : a, variants[v]);
        CHECK(test_run(cmd, NULL) == 0);
        if (v) CHECK_MSG(test_same_file(a, b), "token topk differs with %s", variants[v]);
    }
    int64_t n = 0, *rows = read_i64(a, "topk_rows", &n);
    size_t np = 0, nh = 0;
    int32_t *pos = read_tensor(a, "topk_pos", "I32", &np);
    uint8_t *heat = read_tensor(a, "topk_heat", "U8", &nh);
    CHECK(rows && pos && heat && n == 6 * 8 && np == 6 * 8 * 4 && nh == 6 * 8 * 17);
    for (int i = 0; rows && pos && heat && i < 8; i++) { /* feature 0: all 8 images, value 1 */
        int64_t r = rows[i];
        int q = (int)((5 * r + 1) % 16);
        CHECK_MSG(r == i && pos[i] == q + 1, "slot %d: row %lld pos %d", i, (long long)r, pos[i]);
        CHECK(heat[i * 17 + q + 1] == 255 && heat[i * 17 + 0] == 0);
    }
    for (int i = 0; rows && i < 8; i++) /* feature 3 never fires */
        CHECK(rows[3 * 8 + i] == -1);
    free(rows);
    free(pos);
    free(heat);
    sf_st st;
    CHECK(sf_st_open(&st, a) == 0);
    CHECK_STR(sf_st_meta(&st, "grid"), "4,4");
    CHECK_STR(sf_st_meta(&st, "grid_first"), "1");
    CHECK_STR(sf_st_meta(&st, "tokens"), "17");
    CHECK_STR(sf_st_meta(&st, "examples"), "8");
    sf_st_close(&st);
    /* the CLIP path, on the fixture images */
    const char *model = SF_SOURCE_DIR "/fixtures/clip/e2e";
    snprintf(acts, sizeof acts, "%s/clip_tok.safetensors", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s' extract --model '%s' --dataset 'folder:%s/images' --out '%s' --text none "
             "--tokens all",
             SF_EXE, model, tf, acts);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/clipsae' --acts '%s' --key vision --out '%s' -N 4 --quiet",
             SF_EXE, tmp, acts, a);
    CHECK(test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/clipsae' --dataset 'folder:%s/images' --model '%s' "
             "--tokens all --out '%s' -N 4 --batch 3 --threads 2 --quiet",
             SF_EXE, tmp, tf, model, b);
    CHECK(test_run(cmd, NULL) == 0);
    CHECK(same_tensor(a, b, "topk_values", "F32") && same_tensor(a, b, "topk_rows", "I64"));
    CHECK(same_tensor(a, b, "topk_pos", "I32") && same_tensor(a, b, "topk_heat", "U8"));
    CHECK(sf_st_open(&st, b) == 0);
    const char *g = sf_st_meta(&st, "grid");
    CHECK_MSG(g && g[0] != '0', "grid %s", g ? g : "(none)");
    CHECK_STR(sf_st_meta(&st, "grid_first"), "1");
    sf_st_close(&st);
    /* --tokens is for --dataset */
    snprintf(cmd, sizeof cmd,
             "'%s' topk --checkpoint '%s/sae' --acts '%s/acts.safetensors' --key vision "
             "--tokens all --out '%s'",
             SF_EXE, tf, tf, b);
    CHECK(test_run(cmd, &out) == 2);
    free(out);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmp, sizeof tmp, "%.2000s", test_tmpdir("cli_analysis"));
    /* a small SAE on the shapes activations (d 64 -> 48 features, k 4) */
    snprintf(cmd, sizeof cmd,
             "'%s' train --tensorpath '%sacts.safetensors' --pages 48 --k 4 --batch_size 32 "
             "--num_epochs 20 --lr 2e-3 --lr_warmup_steps 10 --bodycount 2000 --savedir '%s' "
             "--name sae --threads 2 --quiet",
             SF_EXE, FIX, tmp);
    char *out = NULL;
    int rc = test_run(cmd, &out);
    CHECK_MSG(rc == 0, "train failed: %s", out ? out : "");
    free(out);
    snprintf(ckpt, sizeof ckpt, "%s/sae", tmp);
    RUN(topk_deterministic);
    RUN(topk_errors);
    RUN(topk_row_map);
    RUN(topk_from_dataset);
    RUN(topk_tokens);
    RUN(explore_site);
    RUN(serve);
    return test_summary();
}
