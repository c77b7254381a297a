/*
 * store_recover.h - bringing a node's storage back after a restart, replaying
 * the log into the state machine, and deciding when to compact the log.
 *
 * Recovery (store_recover), given the opened log store and state:
 *  1. loads the hard state, the log's extent and its snapshot metadata;
 *  2. reads the state's applied index A and term T;
 *  3. reconciles the two. The state is the truth for what was applied:
 *     - if the log does not hold entry A with term T (the state is ahead
 *       of a log that lost unsynced entries, or a snapshot was installed
 *       in the state but the crash came before the log learned of it), the
 *       log is reset to the state's snapshot (install_snapshot with index
 *       A, term T and the state's membership): entries up to A are
 *       committed and applied, so nothing is lost;
 *     - if A lies below the log's compaction boundary, the state lost
 *       entries the log no longer has: refused with STORE_ECORRUPT (the
 *       node must get a snapshot from the leader);
 *  4. fills the raft_start_state: hard state (commit raised to A), snapshot
 *     metadata (never above A), applied = A, and the bootstrap conf;
 *  5. says what to replay: [A + 1, min(commit, last log index)].
 *
 * The driver then either replays that range itself with store_replay()
 * before raft_init (and passes applied = the new applied index), or passes
 * applied = A and lets the core hand the committed entries out again in
 * rd.committed. kv_apply_batch skips entries at or below its applied index,
 * so a replay that overlaps is harmless.
 *
 * Compaction: the log may be compacted only below an index the state has
 * made durable (kv_sync); store_plan_compaction() says when and where,
 * keeping `retain` entries (--log-retain, default 10000) for followers that
 * lag a little; store_compact_below() performs it.
 */
#ifndef SKEIN_STORE_RECOVER_H
#define SKEIN_STORE_RECOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_state.h"
#include "raft.h"
#include "store_lmdb.h"

/** Entries kept below the applied index when compacting (--log-retain). */
#define STORE_LOG_RETAIN_DEFAULT 10000
/** Extra compactable entries that trigger an automatic compaction. */
#define STORE_COMPACT_THRESHOLD_DEFAULT 10000

/** What store_recover found and did. */
struct store_recovery {
    struct raft_start_state start; /* for raft_init */
    raft_index replay_from;        /* first index to replay (A + 1) */
    raft_index replay_to;          /* last index to replay; < replay_from
                                      when there is nothing to replay */
    bool log_reset;                /* the log was reset to the state */
};

/**
 * Reconciles `log` and `kv` after a start (see the header comment) and
 * fills *out. `bootstrap` (may be NULL) is the configuration used when
 * neither a snapshot nor a CONF entry says otherwise. Returns STORE_OK, or
 * a STORE_E* code with a message in errmsg (STORE_ERRMSG_SIZE bytes, may
 * be NULL).
 */
int store_recover(struct store_lmdb* log,
                  struct kv_state* kv,
                  const struct raft_conf* bootstrap,
                  struct store_recovery* out,
                  char* errmsg);

/**
 * Applies the durable log entries [kv applied + 1, to] to kv in batches of
 * at most `batch_bytes` of entry data (0 = 4 MiB). Returns STORE_OK, or a
 * STORE_E* code with a message in errmsg (an entry failing verification is
 * STORE_ECORRUPT naming it).
 */
int store_replay(struct store_lmdb* log,
                 struct kv_state* kv,
                 raft_index to,
                 size_t batch_bytes,
                 char* errmsg);

/** A compaction decision. */
struct store_compaction {
    bool due;                  /* compact now */
    raft_index snapshot_index; /* index to report to raft_snapshot_taken */
    raft_index compact_index;  /* discard entries up to this one */
};

/**
 * Decides whether to compact: due when the entries below
 * durable_applied - retain number at least `threshold` (0 = 1). Then
 * snapshot_index = durable_applied and compact_index = durable_applied -
 * retain. Pure function.
 */
void store_plan_compaction(raft_index log_first,
                           raft_index durable_applied,
                           uint64_t retain,
                           uint64_t threshold,
                           struct store_compaction* out);

/**
 * Compacts the log below the state: requires meta->index <=
 * kv_durable_applied(kv) (call kv_sync first), then discards the entries up
 * to meta->index - retain (nothing if that is below the first index) and
 * records `meta` (from raft_snapshot_taken) as the latest snapshot.
 * Returns STORE_OK, STORE_EINVAL (state not durable that far) or the log
 * store's error (store_lmdb_last_error).
 */
int store_compact_below(struct store_lmdb* log,
                        struct kv_state* kv,
                        const struct raft_snapshot_meta* meta,
                        uint64_t retain);

#endif /* SKEIN_STORE_RECOVER_H */
