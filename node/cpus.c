/*
 * cpus.c - CPU lists (see cpus.h).
 */
#define _GNU_SOURCE
#include "cpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* One CPU number: digits only, below CPU_SETSIZE. Advances *s. */
static int parse_cpu(const char** s, int* cpu) {
    const char* p = *s;
    long v = 0;

    if (*p < '0' || *p > '9') {
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v >= CPU_SETSIZE) {
            return -1;
        }
        p++;
    }
    *s = p;
    *cpu = (int)v;
    return 0;
}

int cpus_parse(const char* list, cpu_set_t* out) {
    const char* p = list;

    CPU_ZERO(out);
    if (p == NULL || *p == '\0') {
        return -1;
    }
    for (;;) {
        int first;
        int last;
        if (parse_cpu(&p, &first) != 0) {
            return -1;
        }
        last = first;
        if (*p == '-') {
            p++;
            if (parse_cpu(&p, &last) != 0 || last < first) {
                return -1;
            }
        }
        for (int c = first; c <= last; c++) {
            CPU_SET(c, out);
        }
        if (*p == '\0') {
            return 0;
        }
        if (*p != ',') {
            return -1;
        }
        p++;
    }
}

char* cpus_format(const cpu_set_t* set, char* buf, size_t buflen) {
    size_t off = 0;

    if (buflen == 0) {
        return buf;
    }
    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++) {
        int last = c;
        int k;
        if (!CPU_ISSET(c, set)) {
            continue;
        }
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, set)) {
            last++;
        }
        if (last == c) {
            k = snprintf(buf + off, buflen - off, "%s%d", off ? "," : "", c);
        } else {
            k = snprintf(buf + off, buflen - off, "%s%d-%d", off ? "," : "", c,
                         last);
        }
        if (k < 0 || (size_t)k >= buflen - off) {
            return buf; /* truncated, still terminated */
        }
        off += (size_t)k;
        c = last;
    }
    return buf;
}
