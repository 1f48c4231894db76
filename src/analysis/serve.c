/* A small read-only static file server for the explorer site (libmicrohttpd).
 *
 * Safety rules: only GET and HEAD (anything else: 405 with Allow); the
 * request path, already percent-decoded by libmicrohttpd (so %2e%2e arrives
 * as ".."), must start with '/', may not contain "..", backslashes, control
 * characters or dot-files; the joined path is resolved with realpath() and
 * must stay inside the site folder's realpath, so symlinks cannot lead out;
 * only regular files are served. Every refusal is a 4xx with a short text
 * body; nothing in a request can crash the server. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow/analysis.h"

const char *sf_content_type(const char *path) {
    static const char *const map[][2] = {{".html", "text/html; charset=utf-8"},
                                         {".htm", "text/html; charset=utf-8"},
                                         {".js", "text/javascript; charset=utf-8"},
                                         {".css", "text/css; charset=utf-8"},
                                         {".json", "application/json"},
                                         {".jpg", "image/jpeg"},
                                         {".jpeg", "image/jpeg"},
                                         {".png", "image/png"},
                                         {".webp", "image/webp"},
                                         {".svg", "image/svg+xml"},
                                         {".txt", "text/plain; charset=utf-8"},
                                         {".ico", "image/x-icon"}};
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcasecmp(dot, map[i][0])) return map[i][1];
    return "application/octet-stream";
}

int sf_site_resolve(const char *root_real, const char *url, char **out) {
    *out = NULL;
    size_t ul = strlen(url);
    if (ul == 0 || url[0] != '/' || ul > 2048) return 400;
    /* segment checks: no "..", no dot-files (also rules out "." and ".."),
     * no backslash or control bytes */
    for (size_t i = 0; i < ul; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c < 0x20 || c == 0x7f || c == '\\') return 400;
        if (c == '/' && url[i + 1] == '.') return url[i + 2] == '.' ? 400 : 403;
    }
    size_t rl = strlen(root_real);
    const char *suffix = url[ul - 1] == '/' ? "index.html" : "";
    char *joined = sf_malloc(rl + ul + strlen(suffix) + 1);
    memcpy(joined, root_real, rl);
    memcpy(joined + rl, url, ul);
    strcpy(joined + rl + ul, suffix);
    char *real = realpath(joined, NULL);
    int e = errno;
    free(joined);
    if (!real) return (e == ENOENT || e == ENOTDIR || e == ENAMETOOLONG) ? 404 : 403;
    /* inside the root? (root "/" contains everything) */
    int inside =
        rl == 1 ? 1 : (strncmp(real, root_real, rl) == 0 && (real[rl] == '/' || real[rl] == 0));
    struct stat st;
    if (!inside || stat(real, &st) != 0) {
        free(real);
        return 403;
    }
    if (!S_ISREG(st.st_mode)) {
        free(real);
        return S_ISDIR(st.st_mode) ? 404 : 403;
    }
    *out = real;
    return 200;
}

struct sf_server {
    struct MHD_Daemon *d;
    char *root;
    int port;
};

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *msg) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* libmicrohttpd cuts the request target at a raw NUL byte ("GET
 * /index.html\0/../x HTTP/1.1" arrives as "/index.html"). Its URI log
 * callback sees the raw target before unescaping: we keep its length (+ 1,
 * as the connection's context pointer, nothing to free) and the handler
 * compares it with the span up to the HTTP version that follows the target
 * in the same request-line buffer. */
static void *uri_log(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls;
    (void)c;
    return (void *)(uintptr_t)(strlen(uri) + 1);
}

static int nul_in_target(const char *url, const char *version, void *ctx) {
    if (!ctx || !url || !version || !*version || version <= url) return 0;
    size_t span = (size_t)(version - url); /* target + the separator the parser cut */
    if (span > 65536) return 0;            /* not the same buffer: cannot tell */
    return (size_t)(uintptr_t)ctx != span;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
    (void)upload_data;
    const sf_server *s = cls;
    if (nul_in_target(url, version, *con_cls))
        return send_text(c, MHD_HTTP_BAD_REQUEST, "400 bad path (NUL byte)\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        *upload_data_size = 0; /* ignore any body */
        return send_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                         "405 method not allowed (read-only server)\n");
    }
    char *path;
    int status = sf_site_resolve(s->root, url ? url : "", &path);
    if (status == 400) return send_text(c, MHD_HTTP_BAD_REQUEST, "400 bad path\n");
    if (status == 403) return send_text(c, MHD_HTTP_FORBIDDEN, "403 forbidden\n");
    if (status != 200) return send_text(c, MHD_HTTP_NOT_FOUND, "404 not found\n");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        free(path);
        return send_text(c, MHD_HTTP_NOT_FOUND, "404 not found\n");
    }
    /* the response owns fd from here (closed when it is destroyed) */
    struct MHD_Response *r = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    if (!r) {
        close(fd);
        free(path);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", sf_content_type(path));
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    free(path);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decoding in place, replacing libmicrohttpd's: the same %HH rule,
 * but a decoded NUL becomes 0x01 instead of silently cutting the path short
 * ("/index.html%00.png" must not be served as "/index.html"); control bytes
 * are refused by sf_site_resolve. Malformed escapes stay literal. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int h, l;
        if (r[0] == '%' && (h = hexval((unsigned char)r[1])) >= 0 &&
            (l = hexval((unsigned char)r[2])) >= 0) {
            int v = h * 16 + l;
            *w++ = (char)(v ? v : 1);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

sf_server *sf_server_start(const char *dir, const char *host, int port) {
    if (port < 0 || port > 65535) {
        sf_error("serve: port %d outside [0, 65535]", port);
        return NULL;
    }
    char *root = realpath(dir, NULL);
    struct stat st;
    if (!root || stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        sf_error("%s: not a folder: %s", dir, root ? "not a directory" : strerror(errno));
        free(root);
        return NULL;
    }
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *addr;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD; /* errors reach the caller via sf_error */
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)port);
        addr = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)port);
        addr = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        sf_error("serve: host '%s' is not an IPv4 or IPv6 address", host);
        free(root);
        return NULL;
    }
    sf_server *s = sf_calloc(1, sizeof *s);
    s->root = root;
    s->d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)15,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL, MHD_OPTION_END);
    if (!s->d) {
        sf_error("serve: cannot listen on %s port %d (in use, or not a local address?)", host,
                 port);
        free(root);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    return s;
}

int sf_server_port(const sf_server *s) {
    return s->port;
}

void sf_server_stop(sf_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->d);
    free(s->root);
    free(s);
}
