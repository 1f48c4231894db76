/* The explorer server on a loopback port: files with the right types, HEAD,
 * 404, 405, and every path-escape trick we know of (.., encoded .., double
 * encoding, absolute URLs, backslashes, NUL, symlinks out of the site, dot
 * files). Raw sockets so the client does not normalise anything; every
 * request is bounded by a receive timeout. */
#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "saeflow/analysis.h"
#include "test.h"

static int port;

/* Sends raw bytes, reads the whole reply (server closes: Connection: close). */
static int request(const char *raw, size_t rawlen, char *reply, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    size_t sent = 0;
    while (sent < rawlen) {
        ssize_t w = send(fd, raw + sent, rawlen - sent, MSG_NOSIGNAL);
        if (w <= 0) break;
        sent += (size_t)w;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, reply + got, cap - 1 - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
        if (got + 1 >= cap) break;
    }
    reply[got] = 0;
    close(fd);
    return (int)got;
}

static int status_of(const char *method, const char *path, char *reply, size_t cap) {
    char raw[4096];
    int n =
        snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                 method, path);
    if (request(raw, (size_t)n, reply, cap) <= 0) return -1;
    int st = -1;
    sscanf(reply, "HTTP/1.%*d %d", &st);
    return st;
}

static char site[4096], reply[1 << 16];

static void write_file(const char *dir, const char *name, const char *text) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
}

TEST(resolve_unit) {
    char *out;
    char *root = realpath(site, NULL);
    CHECK(sf_site_resolve(root, "/", &out) == 200 && strstr(out, "/index.html"));
    free(out);
    CHECK(sf_site_resolve(root, "/data/x.js", &out) == 200);
    free(out);
    CHECK(sf_site_resolve(root, "", &out) == 400);
    CHECK(sf_site_resolve(root, "data/x.js", &out) == 400);
    CHECK(sf_site_resolve(root, "/../etc/passwd", &out) == 400);
    CHECK(sf_site_resolve(root, "/data/../../etc/passwd", &out) == 400);
    CHECK(sf_site_resolve(root, "/data/..", &out) == 400);
    CHECK(sf_site_resolve(root, "/data\\..\\x", &out) == 400);
    CHECK(sf_site_resolve(root, "/a\x01", &out) == 400);
    CHECK(sf_site_resolve(root, "/.secret", &out) == 403);
    CHECK(sf_site_resolve(root, "/out/passwd", &out) == 403); /* symlink dir leading out */
    CHECK(sf_site_resolve(root, "/link.txt", &out) == 403);   /* symlink file leading out */
    CHECK(sf_site_resolve(root, "/nope.html", &out) == 404);
    CHECK(sf_site_resolve(root, "/data", &out) == 404); /* a folder is not a file */
    CHECK(sf_site_resolve(root, "/index.html/x", &out) == 404);
    CHECK(out == NULL);
    CHECK_STR(sf_content_type("a/b.JS"), "text/javascript; charset=utf-8");
    CHECK_STR(sf_content_type("img/3.jpg"), "image/jpeg");
    CHECK_STR(sf_content_type("x.tar.gz"), "application/octet-stream");
    CHECK_STR(sf_content_type("dir.v2/README"), "application/octet-stream");
    free(root);
}

TEST(http) {
    sf_server *s = sf_server_start(site, "127.0.0.1", 0);
    CHECK(s != NULL);
    if (!s) return;
    port = sf_server_port(s);
    CHECK(port > 0);

    CHECK(status_of("GET", "/", reply, sizeof reply) == 200);
    CHECK(strstr(reply, "Content-Type: text/html; charset=utf-8") != NULL);
    CHECK(strstr(reply, "<h1>site</h1>") != NULL);
    CHECK(status_of("GET", "/data/x.js?v=1", reply, sizeof reply) == 200);
    CHECK(strstr(reply, "text/javascript") && strstr(reply, "window.X = 1;"));
    CHECK(status_of("GET", "/assets/style.css", reply, sizeof reply) == 200);
    CHECK(strstr(reply, "text/css") != NULL);
    /* HEAD: headers with the length, no body */
    CHECK(status_of("HEAD", "/index.html", reply, sizeof reply) == 200);
    CHECK(strstr(reply, "Content-Length: 15") != NULL);
    CHECK(strstr(reply, "<h1>") == NULL);
    /* methods */
    CHECK(status_of("POST", "/index.html", reply, sizeof reply) == 405);
    CHECK(strstr(reply, "Allow: GET, HEAD") != NULL);
    CHECK(status_of("PUT", "/new.html", reply, sizeof reply) == 405);
    CHECK(status_of("DELETE", "/index.html", reply, sizeof reply) == 405);
    CHECK(status_of("OPTIONS", "*", reply, sizeof reply) == 405);
    /* missing / escapes */
    CHECK(status_of("GET", "/nope.js", reply, sizeof reply) == 404);
    const char *bad[] = {"/../../../../etc/passwd",
                         "/%2e%2e/%2e%2e/etc/passwd",
                         "/data/%2E%2E/%2e%2e/etc/passwd",
                         "/..%2f..%2fetc/passwd",
                         "/%252e%252e/etc/passwd",
                         "/data%5c..%5c..%5cetc%5cpasswd",
                         "/out/passwd",
                         "/link.txt",
                         "/.secret",
                         "/index.html%00.png",
                         "//etc/passwd",
                         "http://localhost/../etc/passwd",
                         "/data/x.js/..",
                         "/%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = status_of("GET", bad[i], reply, sizeof reply);
        CHECK_MSG(st >= 400 && st < 500, "%s -> %d", bad[i], st);
        CHECK_MSG(!strstr(reply, "root:"), "%s leaked a file", bad[i]);
    }
    /* garbage requests: the server answers 4xx or closes, and stays up */
    const char *junk[] = {"GARBAGE\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                          "\x01\x02\x03\r\n\r\n"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        request(junk[i], strlen(junk[i]), reply, sizeof reply);
        int st = -1;
        sscanf(reply, "HTTP/1.%*d %d", &st);
        CHECK_MSG(st == -1 || (st >= 400 && st < 600), "junk %zu -> %d", i, st);
    }
    /* a raw NUL byte inside the request target: 400, never the cut-short path */
    static const char nul1[] =
        "GET /index.html\0/../x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                      nul2[] =
                          "GET /data/x.js?v=1\0y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                      nul3[] = "GET /index.html\0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    const char *nuls[] = {nul1, nul2, nul3};
    const size_t nul_len[] = {sizeof nul1 - 1, sizeof nul2 - 1, sizeof nul3 - 1};
    for (int i = 0; i < 3; i++) {
        request(nuls[i], nul_len[i], reply, sizeof reply);
        int st = -1;
        sscanf(reply, "HTTP/1.%*d %d", &st);
        CHECK_MSG(st == 400, "NUL request %d -> %d", i, st);
        CHECK(!strstr(reply, "<h1>site</h1>") && !strstr(reply, "window.X"));
    }
    CHECK(status_of("GET", "/index.html?a=b%20c", reply, sizeof reply) == 200);
    CHECK(status_of("GET", "/index.html", reply, sizeof reply) == 200);
    /* a header far above the connection memory limit */
    size_t big = 200000;
    char *raw = malloc(big + 64);
    int n = snprintf(raw, 64, "GET / HTTP/1.1\r\nX: ");
    memset(raw + n, 'a', big);
    memcpy(raw + n + big, "\r\n\r\n", 5);
    request(raw, (size_t)n + big + 4, reply, sizeof reply);
    free(raw);
    CHECK(status_of("GET", "/", reply, sizeof reply) == 200); /* still serving */
    sf_server_stop(s);
}

TEST(start_errors) {
    CHECK(sf_server_start("/nonexistent/site", "127.0.0.1", 0) == NULL);
    CHECK(sf_server_start(site, "localhost", 0) == NULL); /* names are not resolved */
    CHECK_ERR_HAS("not an IPv4 or IPv6 address");
    CHECK(sf_server_start(site, "127.0.0.1", 70000) == NULL);
    /* the port in use */
    sf_server *a = sf_server_start(site, "127.0.0.1", 0);
    CHECK(a != NULL);
    if (a) {
        CHECK(sf_server_start(site, "127.0.0.1", sf_server_port(a)) == NULL);
        sf_server_stop(a);
    }
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *t = test_tmpdir("analysis_serve");
    snprintf(site, sizeof site, "%s/site", t);
    char p[8192];
    snprintf(p, sizeof p, "%s/data", site);
    sf_mkdirs(p);
    snprintf(p, sizeof p, "%s/assets", site);
    sf_mkdirs(p);
    snprintf(p, sizeof p, "%s/outside", t);
    sf_mkdirs(p);
    write_file(site, "index.html", "<h1>site</h1>\n\n");
    write_file(site, "data/x.js", "window.X = 1;\n");
    write_file(site, "assets/style.css", "body{}\n");
    write_file(site, ".secret", "hidden\n");
    write_file(p, "passwd", "root:x:0:0\n");
    char l[8192];
    snprintf(l, sizeof l, "%s/out", site);
    CHECK(symlink(p, l) == 0);
    snprintf(l, sizeof l, "%s/link.txt", site);
    snprintf(p, sizeof p, "%s/outside/passwd", t);
    CHECK(symlink(p, l) == 0);
    RUN(resolve_unit);
    RUN(http);
    RUN(start_errors);
    return test_summary();
}
