/* saeflow serve: serve an explorer site read-only on localhost. */
#include <pthread.h>
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
    /* Block SIGINT/SIGTERM before the server's threads exist, so they inherit
     * the mask and the signal can only be picked up by sigwait() below (a
     * handler + pause() would miss signals delivered to a server thread). */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
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
    int sig;
    sigwait(&stop, &sig);
    sf_server_stop(s);
    return 0;
}
