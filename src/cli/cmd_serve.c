/* saeflow serve: serve an explorer site read-only on localhost. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"

static void usage(FILE *out) {
    fprintf(out, "usage: saeflow serve --dir SITE [--port 8080] [--host 127.0.0.1]\n"
                 "\n"
                 "Serves the folder written by `saeflow explore` over HTTP, read-only (GET and\n"
                 "HEAD; other methods get 405), never outside SITE (\"..\", dot-files and\n"
                 "symlinks leading out get 4xx). Listens on localhost only unless --host says\n"
                 "otherwise. Stops on Ctrl-C.\n"
                 "\n"
                 "  --dir SITE     the site folder\n"
                 "  --port P       TCP port (default 8080; 0 = any free port)\n"
                 "  --host ADDR    IPv4/IPv6 address to listen on (default 127.0.0.1)\n");
}

static int stop_pipe[2];

static void on_stop(int sig) {
    (void)sig;
    char c = 1;
    ssize_t r = write(stop_pipe[1], &c, 1); /* async-signal-safe */
    (void)r;
}

int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve", *dir = NULL, *host = "127.0.0.1";
    long long port = 8080;
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"port", required_argument, 0, 'p'},
                                         {"host", required_argument, 0, 'H'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'H':
            host = optarg;
            break;
        case 'p':
            if (cli_parse_int(cmd, "port", optarg, &port)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!dir) return cli_usage_error(cmd, "--dir is required");
    if (port < 0 || port > 65535) return cli_usage_error(cmd, "--port must be in [0, 65535]");
    /* SIGINT/SIGTERM end the server cleanly through a self-pipe: the handler
     * only writes a byte, and the main thread waits for it. A signal mask
     * cannot do this reliably: threads that exist before main() runs (the
     * BLAS library's pool) do not inherit it, and a SIGTERM the kernel hands
     * to one of them killed the process (seen under load in test_cli_analysis). */
    if (pipe(stop_pipe)) {
        sf_error("serve: pipe: %s", strerror(errno));
        return cli_fail(cmd);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client hanging up must not kill us */
    sf_server *s = sf_server_start(dir, host, (int)port);
    if (!s) return cli_fail(cmd);
    int v6 = strchr(host, ':') != NULL;
    printf("serving %s on http://%s%s%s:%d/ (Ctrl-C to stop)\n", dir, v6 ? "[" : "", host,
           v6 ? "]" : "", sf_server_port(s));
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1") && strncmp(host, "127.", 4))
        fprintf(stderr,
                "saeflow serve: warning: %s is not a loopback address; the site is reachable "
                "from other machines\n",
                host);
    fflush(stdout);
    char byte;
    while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    sf_server_stop(s);
    return 0;
}
