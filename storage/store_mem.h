/*
 * store_mem.h - an in-memory log store that models a disk.
 *
 * Implements struct store_ops (store.h) for the simulator and tests. Every
 * write lands in a volatile layer first; sync() makes it durable, and
 * store_mem_crash() throws away whatever was not durable, as a power cut
 * would: entries beyond the durable index, and the hard state back to the
 * last durable one. Durability is in log order. Writing a suffix that
 * starts at index i lowers the durable index to i - 1 (the old entries are
 * gone, the new ones are not durable yet).
 *
 * Snapshot metadata (compact, install_snapshot) is durable at once.
 *
 * The store owns copies of all entry data. It is bounded by `max_entries`
 * live entries and frees everything in store_mem_close(). One thread only.
 */
#ifndef SKEIN_STORE_MEM_H
#define SKEIN_STORE_MEM_H

#include <stdbool.h>
#include <stddef.h>

#include "raft.h"
#include "store.h"

struct store_mem; /* opaque */

/**
 * Creates an empty store (no entries, zero hard state, no snapshot) that
 * holds at most `max_entries` live entries (0 means a default of 1 << 20).
 * Returns RAFT_OK and sets *out (caller owns it, free with
 * store_mem_close), or RAFT_ENOMEM (nothing allocated).
 */
int store_mem_init(size_t max_entries, struct store_mem** out);

/** Frees the store and all entry data it owns. Accepts NULL. */
void store_mem_close(struct store_mem* s);

/**
 * Fills `out` with the generic interface (store.h) of `s`. `out` borrows
 * `s` and must not outlive it.
 */
void store_mem_store(struct store_mem* s, struct store* out);

/**
 * Simulates a crash: drops every entry beyond the durable index and
 * restores the last durable hard state. Snapshot metadata is kept.
 */
void store_mem_crash(struct store_mem* s);

/**
 * Makes the written log durable up to `index` (clamped to the last written
 * entry; never lowers the durable index) and the written hard state
 * durable. Sets *durable_index and *durable_term to the last durable entry
 * (the snapshot boundary if none). Models a disk that completes writes in
 * log order. Returns RAFT_OK.
 */
int store_mem_sync_to(struct store_mem* s,
                      raft_index index,
                      raft_index* durable_index,
                      raft_term* durable_term);

/**
 * Makes only the written hard state durable, leaving entries as they are
 * (a must_sync of the driver contract: the vote before the message).
 */
void store_mem_sync_hard_state(struct store_mem* s);

/** Index of the last written entry (durable or not). */
raft_index store_mem_last_index(const struct store_mem* s);

/** Index of the last durable entry (>= first index - 1). */
raft_index store_mem_durable_index(const struct store_mem* s);

/** First index still stored (compaction boundary + 1). */
raft_index store_mem_first_index(const struct store_mem* s);

/**
 * Looks up the written entry at `index` (durable or not). Returns true and
 * fills *out (data borrowed from the store until the entry is replaced,
 * compacted or dropped) or false when the index is not stored.
 */
bool store_mem_entry(const struct store_mem* s,
                     raft_index index,
                     struct raft_entry* out);

/** The hard state as last written (durable or not). */
struct raft_hard_state store_mem_hard_state(const struct store_mem* s);

/** The hard state as last made durable. */
struct raft_hard_state store_mem_durable_hard_state(const struct store_mem* s);

/** Metadata of the latest snapshot (index 0 if none). */
struct raft_snapshot_meta store_mem_snapshot(const struct store_mem* s);

/** Bytes of entry data currently held (for leak and bound checks). */
size_t store_mem_data_bytes(const struct store_mem* s);

#endif /* SKEIN_STORE_MEM_H */
