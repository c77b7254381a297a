/*
 * store.h - the raft log store interface.
 *
 * One interface, two implementations: store_mem (memory, with a modelled
 * disk for the simulator) and the LMDB store. A store holds what Raft needs
 * to survive a crash: the log, the hard state (term, vote, commit) and the
 * metadata of the latest snapshot. It holds no raft logic and no state
 * machine (the state machine applies committed entries elsewhere).
 *
 * How a driver uses it, following the DRIVER CONTRACT in raft.h:
 *  - at start, load() fills the raft_start_state (the caller sets the
 *    bootstrap conf) and storage() gives the view the core reads;
 *  - per ready batch: install_snapshot() if rd.snapshot, save_hard_state()
 *    if rd.hard_state_changed, then sync() before sending when
 *    rd.must_sync; append() for rd.entries; later sync(), and step
 *    RAFT_EVENT_PERSISTED with the index and term it made durable;
 *  - after saving a snapshot of the state machine, compact().
 *
 * Error codes are those of raft.h (enum raft_error): RAFT_OK on success,
 * RAFT_EINVAL for a call that breaks the rules below, RAFT_ENOMEM when a
 * bound is reached, RAFT_ESTORAGE when the medium fails.
 *
 * Threading: a store belongs to one thread (the one driving the core).
 */
#ifndef SKEIN_STORE_H
#define SKEIN_STORE_H

#include <stddef.h>

#include "raft.h"

/** The operations every log store implements; `ctx` is the store itself. */
struct store_ops {
    /**
     * Fills out->hard_state, out->snapshot and out->applied (the state
     * machine's applied index as far as the store knows, at least the
     * snapshot index) from what is durable. out->bootstrap is left for the
     * caller. Returns RAFT_OK or RAFT_ESTORAGE.
     */
    int (*load)(void* ctx, struct raft_start_state* out);

    /**
     * Writes `n` (>= 1) entries, consecutive from entries[0].index. Every
     * stored entry with an index >= entries[0].index is replaced first (this
     * is how a conflicting suffix is truncated). entries[0].index must lie
     * in [first_index, last_index + 1]. Data is copied. The write is not
     * durable until sync(). Returns RAFT_OK, RAFT_EINVAL, RAFT_ENOMEM.
     */
    int (*append)(void* ctx, const struct raft_entry* entries, size_t n);

    /** Writes the hard state; durable at the next sync(). Returns RAFT_OK. */
    int (*save_hard_state)(void* ctx, const struct raft_hard_state* hs);

    /**
     * Makes everything written so far durable (entries and hard state).
     * Sets *durable_index and *durable_term to the last durable entry (the
     * snapshot boundary when the log is empty). Returns RAFT_OK or
     * RAFT_ESTORAGE.
     */
    int (*sync)(void* ctx, raft_index* durable_index, raft_term* durable_term);

    /**
     * Records `snap` (durably) as the latest snapshot the caller has saved
     * and discards the entries up to `index`, which must satisfy
     * first_index - 1 <= index <= snap->index and be durable. The term of
     * entry `index` stays known (the compaction boundary). Returns RAFT_OK
     * or RAFT_EINVAL.
     */
    int (*compact)(void* ctx,
                   const struct raft_snapshot_meta* snap,
                   raft_index index);

    /**
     * Installs a snapshot received from a leader, durably: the whole log is
     * dropped and the next entry will be snap->index + 1; the boundary term
     * is snap->term. Returns RAFT_OK or RAFT_EINVAL.
     */
    int (*install_snapshot)(void* ctx, const struct raft_snapshot_meta* snap);

    /**
     * Fills `out` with the read-only view the core uses (struct
     * raft_storage); it shows the durable log only. The view borrows the
     * store, which must outlive every core using it.
     */
    void (*storage)(void* ctx, struct raft_storage* out);
};

/** A log store: its operations and its state. Not owned by the driver. */
struct store {
    const struct store_ops* ops; /* implementation */
    void* ctx;                   /* implementation state, passed to ops */
};

#endif /* SKEIN_STORE_H */
