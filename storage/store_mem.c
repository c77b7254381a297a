/*
 * store_mem.c - in-memory log store with a modelled disk (see store_mem.h).
 *
 * Live entries sit in one array: ents[off .. off + len) hold indexes
 * first .. first + len - 1. Compaction advances `off`; the array is slid
 * back to 0 when it must grow. Each entry's data is its own allocation,
 * freed when the entry is replaced, compacted or dropped by a crash.
 */
#include "store_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_MEM_DEFAULT_MAX ((size_t)1 << 20)
#define STORE_MEM_MIN_CAP     64

/* Stays on in release builds: a broken store must stop the process. */
#define STORE_ASSERT(cond)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: store assertion failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

struct store_mem {
    struct raft_entry* ents;        /* array of cap slots */
    size_t off;                     /* slot of entry `first` */
    size_t len;                     /* live entries */
    size_t cap;                     /* slots allocated */
    size_t max_entries;             /* bound on len */
    size_t data_bytes;              /* sum of live entries' len */
    raft_index first;               /* index of ents[off] */
    raft_term boundary_term;        /* term of entry first - 1 */
    raft_index durable;             /* last durable index, >= first - 1 */
    struct raft_hard_state hs;      /* as written */
    struct raft_hard_state hs_disk; /* as durable */
    struct raft_snapshot_meta snap; /* latest snapshot, durable */
};

static raft_index store_mem_last(const struct store_mem* s) {
    return s->first + s->len - 1;
}

static struct raft_entry* store_mem_at(const struct store_mem* s,
                                       raft_index index) {
    STORE_ASSERT(index >= s->first && index <= store_mem_last(s));
    return &s->ents[s->off + (size_t)(index - s->first)];
}

static void store_mem_free_entry(struct store_mem* s, struct raft_entry* e) {
    s->data_bytes -= e->len;
    free((void*)e->data);
    memset(e, 0, sizeof(*e));
}

/* Drops entries with index >= `from` (from >= first). */
static void store_mem_drop_from(struct store_mem* s, raft_index from) {
    STORE_ASSERT(from >= s->first);
    while (s->len > 0 && store_mem_last(s) >= from) {
        store_mem_free_entry(s, store_mem_at(s, store_mem_last(s)));
        s->len--;
    }
    if (s->durable >= from) {
        s->durable = from - 1;
    }
}

/* Ensures room for `n` more entries after the last one. */
static int store_mem_reserve(struct store_mem* s, size_t n) {
    if (s->len + n > s->max_entries) {
        return RAFT_ENOMEM;
    }
    if (s->off + s->len + n <= s->cap) {
        return RAFT_OK;
    }
    if (s->off > 0) {
        memmove(s->ents, s->ents + s->off, s->len * sizeof(*s->ents));
        s->off = 0;
        if (s->len + n <= s->cap) {
            return RAFT_OK;
        }
    }
    size_t cap = s->cap < STORE_MEM_MIN_CAP ? STORE_MEM_MIN_CAP : s->cap;
    while (cap < s->len + n) {
        cap *= 2;
    }
    struct raft_entry* ents = realloc(s->ents, cap * sizeof(*ents));
    if (ents == NULL) {
        return RAFT_ENOMEM;
    }
    s->ents = ents;
    s->cap = cap;
    return RAFT_OK;
}

int store_mem_init(size_t max_entries, struct store_mem** out) {
    struct store_mem* s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return RAFT_ENOMEM;
    }
    s->max_entries = max_entries ? max_entries : STORE_MEM_DEFAULT_MAX;
    s->first = 1;
    *out = s;
    return RAFT_OK;
}

void store_mem_close(struct store_mem* s) {
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->len; i++) {
        free((void*)s->ents[s->off + i].data);
    }
    free(s->ents);
    free(s);
}

static int store_mem_load(void* ctx, struct raft_start_state* out) {
    struct store_mem* s = ctx;
    out->hard_state = s->hs_disk;
    out->snapshot = s->snap;
    out->applied = s->snap.index; /* the state machine lives elsewhere */
    return RAFT_OK;
}

/* Checks that entries are consecutive and may go at entries[0].index. */
static int store_mem_check_append(const struct store_mem* s,
                                  const struct raft_entry* entries,
                                  size_t n) {
    if (n == 0 || entries == NULL) {
        return RAFT_EINVAL;
    }
    raft_index lo = entries[0].index;
    if (lo < s->first || lo > store_mem_last(s) + 1) {
        return RAFT_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (entries[i].index != lo + i || entries[i].term == 0 ||
            (entries[i].len > 0 && entries[i].data == NULL)) {
            return RAFT_EINVAL;
        }
    }
    return RAFT_OK;
}

static int store_mem_append(void* ctx,
                            const struct raft_entry* entries,
                            size_t n) {
    struct store_mem* s = ctx;
    int rv = store_mem_check_append(s, entries, n);
    if (rv != RAFT_OK) {
        return rv;
    }
    raft_index lo = entries[0].index;
    size_t kept = (size_t)(lo - s->first);
    if (kept + n > s->max_entries) {
        return RAFT_ENOMEM;
    }
    store_mem_drop_from(s, lo);
    rv = store_mem_reserve(s, n);
    if (rv != RAFT_OK) {
        return rv; /* the suffix is gone: as if the write failed midway */
    }
    for (size_t i = 0; i < n; i++) {
        struct raft_entry* e = &s->ents[s->off + s->len];
        uint8_t* data = NULL;
        if (entries[i].len > 0) {
            data = malloc(entries[i].len);
            if (data == NULL) {
                return RAFT_ENOMEM;
            }
            memcpy(data, entries[i].data, entries[i].len);
        }
        *e = entries[i];
        e->data = data;
        s->data_bytes += e->len;
        s->len++;
    }
    return RAFT_OK;
}

static int store_mem_save_hard_state(void* ctx,
                                     const struct raft_hard_state* hs) {
    struct store_mem* s = ctx;
    s->hs = *hs;
    return RAFT_OK;
}

/* Term of `index` in [first - 1, last]; the caller checks the range. */
static raft_term store_mem_term_of(const struct store_mem* s,
                                   raft_index index) {
    if (index == s->first - 1) {
        return s->boundary_term;
    }
    return store_mem_at(s, index)->term;
}

int store_mem_sync_to(struct store_mem* s,
                      raft_index index,
                      raft_index* durable_index,
                      raft_term* durable_term) {
    raft_index last = store_mem_last(s);
    if (index > last) {
        index = last;
    }
    if (index > s->durable) {
        s->durable = index;
    }
    s->hs_disk = s->hs;
    *durable_index = s->durable;
    *durable_term = store_mem_term_of(s, s->durable);
    return RAFT_OK;
}

static int store_mem_sync(void* ctx,
                          raft_index* durable_index,
                          raft_term* durable_term) {
    struct store_mem* s = ctx;
    return store_mem_sync_to(s, store_mem_last(s), durable_index, durable_term);
}

void store_mem_sync_hard_state(struct store_mem* s) {
    s->hs_disk = s->hs;
}

static int store_mem_compact(void* ctx,
                             const struct raft_snapshot_meta* snap,
                             raft_index index) {
    struct store_mem* s = ctx;
    if (snap == NULL || snap->index < s->snap.index || index > snap->index ||
        index + 1 < s->first || index > s->durable) {
        return RAFT_EINVAL;
    }
    s->snap = *snap;
    if (index < s->first) {
        return RAFT_OK; /* nothing to discard */
    }
    s->boundary_term = store_mem_term_of(s, index);
    while (s->first <= index) {
        store_mem_free_entry(s, &s->ents[s->off]);
        s->off++;
        s->len--;
        s->first++;
    }
    if (s->len == 0) {
        s->off = 0;
    }
    return RAFT_OK;
}

static int store_mem_install_snapshot(void* ctx,
                                      const struct raft_snapshot_meta* snap) {
    struct store_mem* s = ctx;
    if (snap == NULL || snap->index == 0 || snap->term == 0) {
        return RAFT_EINVAL;
    }
    store_mem_drop_from(s, s->first);
    s->off = 0;
    s->snap = *snap;
    s->first = snap->index + 1;
    s->boundary_term = snap->term;
    s->durable = snap->index;
    return RAFT_OK;
}

/* The raft_storage view: the durable log only. */

static raft_index store_mem_view_first(void* ctx) {
    const struct store_mem* s = ctx;
    return s->first;
}

static raft_index store_mem_view_last(void* ctx) {
    const struct store_mem* s = ctx;
    return s->durable;
}

static int store_mem_view_term(void* ctx, raft_index index, raft_term* out) {
    const struct store_mem* s = ctx;
    if (index + 1 < s->first) {
        return RAFT_ECOMPACTED;
    }
    if (index > s->durable) {
        return RAFT_EINVAL;
    }
    *out = store_mem_term_of(s, index);
    return RAFT_OK;
}

static int store_mem_view_entries(void* ctx,
                                  raft_index lo,
                                  raft_index hi,
                                  size_t max_bytes,
                                  struct raft_entry* out,
                                  size_t* n) {
    const struct store_mem* s = ctx;
    *n = 0;
    if (lo < s->first) {
        return RAFT_ECOMPACTED;
    }
    if (hi < lo || hi > s->durable + 1) {
        return RAFT_EINVAL;
    }
    size_t bytes = 0;
    for (raft_index i = lo; i < hi; i++) {
        const struct raft_entry* e = store_mem_at(s, i);
        if (*n > 0 && bytes + e->len > max_bytes) {
            break;
        }
        bytes += e->len;
        out[(*n)++] = *e;
    }
    return RAFT_OK;
}

static void store_mem_storage(void* ctx, struct raft_storage* out) {
    out->ctx = ctx;
    out->first_index = store_mem_view_first;
    out->last_index = store_mem_view_last;
    out->term = store_mem_view_term;
    out->entries = store_mem_view_entries;
}

static const struct store_ops store_mem_ops = {
    .load = store_mem_load,
    .append = store_mem_append,
    .save_hard_state = store_mem_save_hard_state,
    .sync = store_mem_sync,
    .compact = store_mem_compact,
    .install_snapshot = store_mem_install_snapshot,
    .storage = store_mem_storage,
};

void store_mem_store(struct store_mem* s, struct store* out) {
    out->ops = &store_mem_ops;
    out->ctx = s;
}

void store_mem_crash(struct store_mem* s) {
    if (s->durable + 1 >= s->first) {
        store_mem_drop_from(s, s->durable + 1);
    }
    s->hs = s->hs_disk;
}

raft_index store_mem_last_index(const struct store_mem* s) {
    return store_mem_last(s);
}

raft_index store_mem_durable_index(const struct store_mem* s) {
    return s->durable;
}

raft_index store_mem_first_index(const struct store_mem* s) {
    return s->first;
}

bool store_mem_entry(const struct store_mem* s,
                     raft_index index,
                     struct raft_entry* out) {
    if (index < s->first || index > store_mem_last(s)) {
        return false;
    }
    *out = *store_mem_at(s, index);
    return true;
}

struct raft_hard_state store_mem_hard_state(const struct store_mem* s) {
    return s->hs;
}

struct raft_hard_state store_mem_durable_hard_state(const struct store_mem* s) {
    return s->hs_disk;
}

struct raft_snapshot_meta store_mem_snapshot(const struct store_mem* s) {
    return s->snap;
}

size_t store_mem_data_bytes(const struct store_mem* s) {
    return s->data_bytes;
}
