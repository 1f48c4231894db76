/* The saeflow binary's dispatch: help, version, unknown commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "test.h"

/* Runs a shell command, captures stdout+stderr, returns the exit code. */
static int run(const char *args, char *out, size_t n) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", SF_EXE, args);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(help_and_version) {
    char out[65536];
    CHECK(run("help", out, sizeof out) == 0);
    CHECK(strstr(out, "commands:") != NULL);
    CHECK(run("--version", out, sizeof out) == 0);
    CHECK(strstr(out, SF_VERSION) != NULL);
    CHECK(run("", out, sizeof out) == 2);
    CHECK(run("frobnicate", out, sizeof out) == 2);
    CHECK(strstr(out, "unknown command 'frobnicate'") != NULL);
    CHECK(run("help frobnicate", out, sizeof out) == 2);
}

int main(void) {
    RUN(help_and_version);
    return test_summary();
}
