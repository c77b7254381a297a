/*
 * cpus.h - CPU lists ("0", "0-3", "0,2,4-5"), the form taskset -c, cgroup
 * cpusets and /sys/devices/system/cpu use, for skein-node --cpus.
 */
#ifndef SKEIN_NODE_CPUS_H
#define SKEIN_NODE_CPUS_H

/* cpu_set_t is a GNU interface: a file that includes this header defines
 * _GNU_SOURCE before its first include. */
#include <sched.h>
#include <stddef.h>

/**
 * Parses a CPU list into `out` (cleared first): comma-separated CPU numbers
 * and inclusive ranges A-B, each below CPU_SETSIZE. Returns 0, or -1 when
 * the list is empty or malformed (then `out` is unspecified).
 */
int cpus_parse(const char* list, cpu_set_t* out);

/**
 * Writes `set` as a CPU list into buf (NUL-terminated, truncated to
 * buflen), ranges folded ("0-3,6"); an empty set gives "". Returns buf.
 */
char* cpus_format(const cpu_set_t* set, char* buf, size_t buflen);

#endif
