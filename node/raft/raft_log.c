/*
 * raft_log.c - the core's view of the log (see raft_log.h).
 */
#include "raft_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Entries fetched from storage per call while visiting. */
#define LOG_VISIT_BATCH 64

void raft_log_init(struct raft_log* log, const struct raft_storage* storage) {
    memset(log, 0, sizeof(*log));
    log->storage = storage;
    log->unstable_offset = storage->last_index(storage->ctx) + 1;
    log->handed = log->unstable_offset - 1;
}

static void log_free_from(struct raft_log* log, size_t pos) {
    for (size_t i = pos; i < log->n_unstable; i++) {
        free((void*)log->unstable[i].data);
    }
    if (pos < log->n_unstable) {
        log->n_unstable = pos;
    }
}

void raft_log_close(struct raft_log* log) {
    log_free_from(log, 0);
    free(log->unstable);
    memset(log, 0, sizeof(*log));
}

raft_index raft_log_first_index(const struct raft_log* log) {
    if (log->has_snapshot) {
        return log->snapshot.index + 1;
    }
    return log->storage->first_index(log->storage->ctx);
}

raft_index raft_log_last_index(const struct raft_log* log) {
    if (log->n_unstable > 0) {
        return log->unstable_offset + log->n_unstable - 1;
    }
    if (log->has_snapshot) {
        return log->snapshot.index;
    }
    /* Storage may still hold a suffix the view truncated: cap it. */
    return log->unstable_offset - 1;
}

int raft_log_term(const struct raft_log* log,
                  raft_index index,
                  raft_term* out) {
    raft_index last = raft_log_last_index(log);

    *out = 0;
    if (index > last) {
        return RAFT_EINVAL;
    }
    if (index >= log->unstable_offset) {
        *out = log->unstable[index - log->unstable_offset].term;
        return RAFT_OK;
    }
    if (log->has_snapshot) {
        if (index == log->snapshot.index) {
            *out = log->snapshot.term;
            return RAFT_OK;
        }
        return RAFT_ECOMPACTED;
    }
    if (index == 0) {
        return RAFT_OK; /* the empty prefix has term 0 */
    }
    {
        raft_index first = log->storage->first_index(log->storage->ctx);
        int rv;
        if (index + 1 < first) {
            return RAFT_ECOMPACTED;
        }
        rv = log->storage->term(log->storage->ctx, index, out);
        if (rv == RAFT_ECOMPACTED) {
            return rv;
        }
        return rv == RAFT_OK ? RAFT_OK : RAFT_ESTORAGE;
    }
}

raft_term raft_log_last_term(const struct raft_log* log) {
    raft_term t = 0;
    (void)raft_log_term(log, raft_log_last_index(log), &t);
    return t;
}

static int log_reserve(struct raft_log* log, size_t need) {
    size_t cap = log->cap_unstable;
    struct raft_entry* p;

    if (need <= cap) {
        return RAFT_OK;
    }
    while (cap < need) {
        cap = cap == 0 ? 64 : cap * 2;
    }
    p = realloc(log->unstable, cap * sizeof(*p));
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    log->unstable = p;
    log->cap_unstable = cap;
    return RAFT_OK;
}

int raft_log_append(struct raft_log* log,
                    const struct raft_entry* entries,
                    size_t n) {
    raft_index at;
    size_t keep, i;

    if (n == 0) {
        return RAFT_OK;
    }
    at = entries[0].index;
    assert(at >= 1 && at <= raft_log_last_index(log) + 1);
    if (at < log->unstable_offset) {
        /* The suffix being replaced is (partly) in storage: the whole
         * unstable part goes, the driver replaces the stored suffix. */
        keep = 0;
    } else {
        keep = (size_t)(at - log->unstable_offset);
    }
    if (log_reserve(log, keep + n) != RAFT_OK) {
        return RAFT_ENOMEM;
    }
    /* Copy all data first so a failure leaves the view unchanged. */
    {
        uint8_t** copies = calloc(n, sizeof(*copies));
        if (copies == NULL) {
            return RAFT_ENOMEM;
        }
        for (i = 0; i < n; i++) {
            if (entries[i].len == 0) {
                continue;
            }
            copies[i] = malloc(entries[i].len);
            if (copies[i] == NULL) {
                while (i-- > 0) {
                    free(copies[i]);
                }
                free(copies);
                return RAFT_ENOMEM;
            }
            memcpy(copies[i], entries[i].data, entries[i].len);
        }
        log_free_from(log, keep);
        if (keep == 0) {
            log->unstable_offset = at;
        }
        for (i = 0; i < n; i++) {
            log->unstable[keep + i] = entries[i];
            log->unstable[keep + i].data = copies[i];
        }
        free(copies);
    }
    log->n_unstable = keep + n;
    if (log->handed >= at) {
        log->handed = at - 1;
    }
    return RAFT_OK;
}

int raft_log_visit(const struct raft_log* log,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   bool (*fn)(void* arg, const struct raft_entry* e),
                   void* arg) {
    size_t bytes = 0;
    struct raft_entry batch[LOG_VISIT_BATCH];

    if (lo < raft_log_first_index(log)) {
        return RAFT_ECOMPACTED;
    }
    if (hi > raft_log_last_index(log) + 1) {
        hi = raft_log_last_index(log) + 1;
    }
    while (lo < hi && lo < log->unstable_offset) {
        raft_index end = hi < log->unstable_offset ? hi : log->unstable_offset;
        size_t n = 0;
        int rv;
        if (end - lo > LOG_VISIT_BATCH) {
            end = lo + LOG_VISIT_BATCH;
        }
        rv = log->storage->entries(log->storage->ctx, lo, end,
                                   max_bytes - bytes, batch, &n);
        if (rv == RAFT_ECOMPACTED) {
            return rv;
        }
        if (rv != RAFT_OK || n == 0 || n > end - lo) {
            return RAFT_ESTORAGE;
        }
        for (size_t i = 0; i < n; i++) {
            if (batch[i].index != lo) {
                return RAFT_ESTORAGE;
            }
            if (!fn(arg, &batch[i])) {
                return RAFT_OK;
            }
            bytes += batch[i].len;
            lo++;
            if (bytes >= max_bytes) {
                return RAFT_OK;
            }
        }
    }
    while (lo < hi) {
        const struct raft_entry* e = &log->unstable[lo - log->unstable_offset];
        if (!fn(arg, e)) {
            return RAFT_OK;
        }
        bytes += e->len;
        lo++;
        if (bytes >= max_bytes) {
            return RAFT_OK;
        }
    }
    return RAFT_OK;
}

bool raft_log_stable_to(struct raft_log* log,
                        raft_index index,
                        raft_term term) {
    raft_term t;
    size_t drop;

    if (raft_log_term(log, index, &t) != RAFT_OK || t != term) {
        return false;
    }
    if (index > log->handed) {
        return false; /* cannot be durable: never handed out */
    }
    if (index >= log->unstable_offset && log->n_unstable > 0) {
        drop = (size_t)(index - log->unstable_offset + 1);
        for (size_t i = 0; i < drop; i++) {
            free((void*)log->unstable[i].data);
        }
        memmove(log->unstable, log->unstable + drop,
                (log->n_unstable - drop) * sizeof(*log->unstable));
        log->n_unstable -= drop;
        log->unstable_offset = index + 1;
    }
    return true;
}

size_t raft_log_unhanded(const struct raft_log* log,
                         const struct raft_entry** out) {
    raft_index last = raft_log_last_index(log);

    *out = NULL;
    if (log->n_unstable == 0 || log->handed >= last) {
        return 0;
    }
    *out = &log->unstable[log->handed + 1 - log->unstable_offset];
    return (size_t)(last - log->handed);
}

void raft_log_mark_handed(struct raft_log* log) {
    if (log->n_unstable > 0) {
        log->handed = raft_log_last_index(log);
    }
}

void raft_log_restore(struct raft_log* log,
                      const struct raft_snapshot_meta* meta) {
    log_free_from(log, 0);
    log->has_snapshot = true;
    log->snapshot_handed = false;
    log->snapshot = *meta;
    log->unstable_offset = meta->index + 1;
    log->handed = meta->index;
}
