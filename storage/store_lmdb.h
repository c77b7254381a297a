/*
 * store_lmdb.h - the durable raft log store on LMDB (the `log/`
 * environment of a node's data directory).
 *
 * Implements struct store_ops (store.h). Layout of the environment:
 *  - database "entries": key = entry index, u64 big-endian (so keys sort in
 *    log order and appends use MDB_APPEND); value = a 24-byte header
 *      [0] format version (1)   [1] entry type   [2..4) zero
 *      [4..8) data length, u32 LE   [8..16) term, u64 LE
 *      [16..24) checksum, u64 LE = XXH64(data, seed = XXH64(header[0..16]
 *               || index as u64 LE))
 *    followed by the data. The checksum covers term, index, type, length
 *    and data, so a value that was damaged, cut short or stored under the
 *    wrong key is detected.
 *  - database "meta": "format" (magic and version), "boundary" (index and
 *    term of the entry before the first one: the compaction boundary),
 *    "hard_state" (term, vote, commit), "snapshot" (index, term, encoded
 *    conf of the latest snapshot). Each record carries its own XXH64.
 *
 * Group commit: append() writes its whole batch (suffix deletion, entries
 * and any pending hard state) in ONE write transaction; sync() makes it
 * durable with the flushes of the durability profile (store_env.h): one
 * transaction and at most two fdatasync per batch, however many entries it
 * holds. save_hard_state() only stages the hard state; it is written with
 * the next append() or sync().
 *
 * Verification: store_lmdb_open() scans the whole log and refuses it
 * (STORE_ECORRUPT, message in errmsg) when an entry fails its checksum, a
 * value is shorter than its header says, an index is missing, terms go
 * down, or a meta record is damaged. Opened with skip_verify, the scan
 * happens in load() instead, which then returns RAFT_ESTORAGE with the
 * message in store_lmdb_errmsg(). Every entry read later through the
 * raft_storage view is verified again; a mismatch returns RAFT_ESTORAGE and
 * store_lmdb_errmsg() names the entry and the problem.
 *
 * Disk full: an append, hard state write, compaction or snapshot install
 * that hits MDB_MAP_FULL or ENOSPC is aborted as a whole (nothing of it is
 * stored), the op returns RAFT_ENOMEM and store_lmdb_last_error() returns
 * STORE_EDISKFULL. Reads keep working. The same call succeeds again once
 * space exists (store_lmdb_set_map_size, compaction, a freed disk).
 *
 * A failed sync() (RAFT_ESTORAGE, store_lmdb_last_error() STORE_EIO) is
 * not retryable: after a failed fdatasync the kernel may already have
 * dropped the dirty pages, so a retry could "succeed" without the data.
 * The driver must stop and restart; recovery then reads what is on disk
 * (entries never reported durable may be gone, which Raft tolerates).
 *
 * Memory: the store owns everything it allocates; entry data handed out by
 * the view's entries() is copied into a store-owned buffer, valid until the
 * next entries() call. Threading: one thread (the one driving the core).
 */
#ifndef SKEIN_STORE_LMDB_H
#define SKEIN_STORE_LMDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "store.h"
#include "store_env.h"
#include "store_err.h"

/** Largest entry data the store accepts (LMDB handles big values fine). */
#define STORE_LMDB_MAX_ENTRY_BYTES ((uint32_t)64 << 20)
/** Bytes of the header stored before each entry's data. */
#define STORE_LMDB_ENTRY_HEADER 24

struct store_lmdb; /* opaque */

/** Options of store_lmdb_open; zero-initialised means the defaults. */
struct store_lmdb_options {
    size_t map_size;        /* LMDB map size, 0 = STORE_ENV_MAP_SIZE_DEFAULT */
    int durability;         /* enum store_durability, 0 = strict */
    uint32_t fast_flush_ms; /* fast profile flush interval, 0 = default */
    bool skip_verify;       /* do not scan the log at open (tools only) */
};

/**
 * Opens (creating if needed) the log environment in directory `dir`,
 * loads the hard state, boundary and snapshot metadata, and verifies every
 * stored entry unless opts->skip_verify. `opts` may be NULL (defaults).
 * Returns STORE_OK and sets *out (caller owns it, close with
 * store_lmdb_close), or a STORE_E* code with a message naming the file and
 * the problem in `errmsg` (STORE_ERRMSG_SIZE bytes, may be NULL); nothing
 * stays open then.
 */
int store_lmdb_open(const char* dir,
                    const struct store_lmdb_options* opts,
                    struct store_lmdb** out,
                    char* errmsg);

/** Flushes and closes the store, freeing everything. Accepts NULL. */
void store_lmdb_close(struct store_lmdb* s);

/**
 * Fills `out` with the generic interface (store.h) of `s`; `out` borrows
 * `s` and must not outlive it.
 */
void store_lmdb_store(struct store_lmdb* s, struct store* out);

/**
 * The STORE_E* code of the last failed operation (STORE_OK if the last
 * operation succeeded). Lets the driver tell STORE_EDISKFULL from other
 * failures behind the raft codes of store_ops.
 */
int store_lmdb_last_error(const struct store_lmdb* s);

/**
 * A message describing the last failure ("" if none). Borrowed from the
 * store, valid until the next operation.
 */
const char* store_lmdb_errmsg(const struct store_lmdb* s);

/**
 * Changes the LMDB map size (e.g. after STORE_EDISKFULL). No read or write
 * of this store may be in progress. Returns STORE_OK or a STORE_E* code.
 */
int store_lmdb_set_map_size(struct store_lmdb* s, size_t bytes);

/** Current LMDB map size in bytes. */
size_t store_lmdb_map_size(const struct store_lmdb* s);

/** First index still stored (compaction boundary + 1). */
raft_index store_lmdb_first_index(const struct store_lmdb* s);

/** Index of the last written entry (durable or not). */
raft_index store_lmdb_last_index(const struct store_lmdb* s);

/** Index of the last entry sync() reported durable. */
raft_index store_lmdb_durable_index(const struct store_lmdb* s);

/** The hard state as last saved (staged or written). */
struct raft_hard_state store_lmdb_hard_state(const struct store_lmdb* s);

/** Metadata of the latest snapshot (index 0 if none). */
struct raft_snapshot_meta store_lmdb_snapshot(const struct store_lmdb* s);

/** Term of the compaction boundary (entry first_index - 1). */
raft_term store_lmdb_boundary_term(const struct store_lmdb* s);

/**
 * Reads and verifies every stored entry and meta record again. Returns
 * STORE_OK or STORE_ECORRUPT (message in store_lmdb_errmsg).
 */
int store_lmdb_verify(struct store_lmdb* s);

/** Counters for /metrics and benchmarks. */
struct store_lmdb_stats {
    uint64_t appends;       /* append() calls that wrote */
    uint64_t entries;       /* entries written */
    uint64_t syncs;         /* sync() calls */
    uint64_t flushes;       /* fdatasync-backed flushes issued by sync() */
    uint64_t disk_full;     /* operations refused with STORE_EDISKFULL */
    uint64_t bytes_written; /* entry bytes (header + data) written */
};

/** Copies the counters into *out. */
void store_lmdb_stats(const struct store_lmdb* s, struct store_lmdb_stats* out);

#endif /* SKEIN_STORE_LMDB_H */
