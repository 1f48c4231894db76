#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "saeflow/common.h"

#define SF_ERRMAX 2048
static _Thread_local char errbuf[SF_ERRMAX];

int sf_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

int sf_error_prefix(const char *fmt, ...) {
    char prefix[SF_ERRMAX], old[SF_ERRMAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    /* Truncation of an over-long message is acceptable; it stays terminated. */
    size_t np = strlen(prefix);
    if (np > SF_ERRMAX - 3) np = SF_ERRMAX - 3;
    memcpy(errbuf, prefix, np);
    memcpy(errbuf + np, ": ", 2);
    const char *o = old[0] ? old : "unknown error";
    size_t room = SF_ERRMAX - np - 3, no = strlen(o);
    if (no > room) no = room;
    memcpy(errbuf + np + 2, o, no);
    errbuf[np + 2 + no] = 0;
    return -1;
}

const char *sf_errmsg(void) {
    return errbuf[0] ? errbuf : "unknown error";
}

void sf_error_clear(void) {
    errbuf[0] = 0;
}
