/*
 * raft_log.h - the core's view of the log: durable entries read through
 * struct raft_storage, plus entries not yet reported durable ("unstable"),
 * which the core owns, plus a snapshot received from a leader and not yet
 * installed by the driver.
 */
#ifndef SKEIN_RAFT_LOG_H
#define SKEIN_RAFT_LOG_H

#include "raft.h"

struct raft_log {
    const struct raft_storage* storage;
    struct raft_entry* unstable;        /* owned entries, data owned too */
    size_t n_unstable;                  /* entries used */
    size_t cap_unstable;                /* entries allocated */
    raft_index unstable_offset;         /* index of unstable[0] */
    raft_index handed;                  /* last index handed to the driver */
    bool has_snapshot;                  /* a received snapshot is pending */
    bool snapshot_handed;               /* ... and was handed to the driver */
    struct raft_snapshot_meta snapshot; /* the pending snapshot */
};

/** Initializes an empty view over `storage` (no allocation). */
void raft_log_init(struct raft_log* log, const struct raft_storage* storage);
/** Frees the unstable entries. */
void raft_log_close(struct raft_log* log);
/** First index available (after the compaction boundary). */
raft_index raft_log_first_index(const struct raft_log* log);
/** Last index in the view. */
raft_index raft_log_last_index(const struct raft_log* log);
/**
 * Term at `index`: RAFT_OK, RAFT_ECOMPACTED below the boundary, RAFT_EINVAL
 * past the end, RAFT_ESTORAGE on storage failure.
 */
int raft_log_term(const struct raft_log* log, raft_index index, raft_term* out);
/** Term of the last entry (0 on an empty log). */
raft_term raft_log_last_term(const struct raft_log* log);
/**
 * Appends `n` entries (data copied), replacing every entry at or after
 * entries[0].index, which must be <= last + 1. Returns RAFT_OK or
 * RAFT_ENOMEM (view unchanged).
 */
int raft_log_append(struct raft_log* log,
                    const struct raft_entry* entries,
                    size_t n);
/**
 * Calls `fn` for entries [lo, hi) until it returns false or more than
 * `max_bytes` were visited (at least one entry). Returns RAFT_OK,
 * RAFT_ECOMPACTED or RAFT_ESTORAGE. Entry data is valid only during `fn`.
 */
int raft_log_visit(const struct raft_log* log,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   bool (*fn)(void* arg, const struct raft_entry* e),
                   void* arg);
/**
 * Records that the driver made entries up to `index` (with `term`)
 * durable. Returns true if the entry is still in the view with that term
 * (and drops handed unstable entries up to it); false if stale.
 */
bool raft_log_stable_to(struct raft_log* log, raft_index index, raft_term term);
/** Entries not yet handed to the driver: sets *out and returns the count. */
size_t raft_log_unhanded(const struct raft_log* log,
                         const struct raft_entry** out);
/** Marks every unstable entry as handed. */
void raft_log_mark_handed(struct raft_log* log);
/** Replaces the whole view by a snapshot (unstable entries dropped). */
void raft_log_restore(struct raft_log* log,
                      const struct raft_snapshot_meta* meta);

#endif
