/*
 * kv_state.h - the replicated state machine on LMDB (the `state/`
 * environment of a node's data directory).
 *
 * Databases:
 *  - "kv":       entry id -> packed skein.KVEntry without its id field
 *                (the key holds it)
 *  - "kv_by_key": 0x01 || key -> entry ids (MDB_DUPSORT; the prefix byte
 *                 lets the empty key be indexed)
 *  - "idem":     log index (u64 big-endian) of a write that carried a
 *                request id -> that request id and the write's result
 *                (appended in index order, expired from the front; looked
 *                up through an in-memory hash index of the request ids)
 *  - "meta":     "format"; "state" = applied index and term, seq counter,
 *                entry count, state hash, idempotency window, conf index;
 *                "conf" = the bytes of the last CONF entry applied;
 *                "restore" = upload id and total size of the staged restore
 *  - "restore":  restore staging: chunk offset (u64 big-endian) -> bytes
 *
 * Applying (kv_apply_batch) is deterministic: the result depends only on
 * the state and the entries, never on a clock, the batch boundaries or the
 * node. A batch is applied in ONE write transaction, all or nothing.
 *  - NORMAL entries carry a packed skein.Command. Data that does not decode
 *    or an invalid command is answered KV_STATUS_BAD_REQUEST and changes
 *    nothing but the applied index (the same on every node).
 *  - create: id, source_node and created_at were chosen by the proposing
 *    node; a duplicate id is BAD_REQUEST. update: NOT_FOUND, or
 *    CAS_MISMATCH when expected_seq is set and differs from the entry's
 *    seq; an absent key or value keeps the old one. delete: NOT_FOUND,
 *    CAS_MISMATCH (expected_seq set and different) or OK. Every successful
 * write takes the next value of `seq`, a gap-free counter (create and update
 * store it in the entry).
 *  - A command with a request id already in "idem" is answered with the
 *    stored result and not applied again. A stored result expires when the
 *    entry that looks it up lies more than `idem_window` log indexes after
 *    the entry that stored it; expired results are deleted after each
 *    batch. Both rules depend on log indexes only.
 *  - restore (skein.RestoreOp, POST /_raft/snapshot): a chunk entry stores
 *    its bytes in "restore" under its offset; a chunk of another upload id
 *    first clears the staging (one restore at a time), a repeated offset
 *    overwrites. The staging lives in the state, so a snapshot taken in
 *    the middle of a restore carries it. The commit entry checks that the
 *    staged bytes of its upload are exactly [0, total_size) and that their
 *    XXH64 is its checksum, copies them to <dir>.restore.mdb, verifies
 *    that copy as kv_snapshot_verify_file does, and then, in the batch's
 *    transaction, replaces the entries, the key index, the idempotency
 *    table (records at or after the commit entry's index are dropped:
 *    they cannot belong to this log), the seq counter, the count and the
 *    hash with the backup's. The applied index and term become the commit
 *    entry's; the membership, the conf index and the idempotency window
 *    are kept. Either way the staging is cleared. A commit that fails a
 *    check (no staging for its upload, missing bytes, wrong checksum,
 *    not a valid snapshot) is answered KV_STATUS_BAD_REQUEST and changes
 *    no data: the bytes are the same on every node, so is the verdict.
 *    An abort entry clears the staging if (and only if) it belongs to its
 *    upload id: a leader proposes one for a restore it finds staged but
 *    no longer running (its leader changed before the commit entry).
 *    Only an environment failure (disk full, I/O, memory) fails the batch.
 *  - NOOP entries only advance the applied index; CONF entries also store
 *    their data as the membership.
 *  - Entries at or below the applied index are skipped (reported with
 *    applied = false), so replaying a log over a newer state is harmless.
 *
 * The state hash is the sum (mod 2^64) of kv_entry_hash() over the live
 * entries: order-independent, updated in O(1) per write (subtract the old
 * entry's hash, add the new one). Two nodes at the same applied index
 * report the same hash and count.
 *
 * Durability: strict and balanced open the environment with
 * MDB_NOMETASYNC: each apply batch's commit fdatasyncs its data pages, the
 * meta page is flushed by the next commit or kv_sync(), so a power cut may
 * undo the last batch but never corrupts the environment; fast uses
 * MDB_NOSYNC with a periodic flush. The state may
 * lag the log after a crash: recovery replays the log from the applied
 * index (store_recover.h). kv_sync() makes everything applied durable; the
 * log may be compacted only below kv_durable_applied().
 *
 * Deferred commit (commit_delay_ms > 0): the flush per batch costs the
 * apply thread a disk round trip on every raft round, so batches are
 * instead applied in child transactions of one write transaction that
 * stays open until kv_commit_pending() (the node calls it every
 * commit_delay_ms, and kv_sync, kv_close and snapshot installation call
 * it). This is etcd's batched backend commit. A batch's results are final
 * when kv_apply_batch returns: the log, not the state, is what makes a
 * write durable, and a crash loses only state that recovery replays from
 * the log. The environment stays uncorrupted: each commit still flushes
 * its data before its meta page.
 *
 * Threading: kv_apply_batch, kv_commit_pending, kv_sync, kv_set_map_size,
 * the snapshot writer and kv_close belong to one thread (the apply
 * thread). The read functions (kv_get, kv_list, kv_count, kv_random_id,
 * kv_stats, kv_verify) and kv_snapshot_create may run concurrently from
 * other threads, each with its own struct kv_buf; they see the state of
 * the last committed transaction. On the apply thread they also see the
 * batches applied but not committed yet, so a write acknowledged from its
 * result is visible to the next read served there.
 * Snapshot installation and kv_set_map_size need every reader to be out.
 */
#ifndef SKEIN_KV_STATE_H
#define SKEIN_KV_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "store_env.h"
#include "store_err.h"

#define KV_ID_MAX         64        /* bytes of an entry id */
#define KV_KEY_MAX        256       /* bytes of a key */
#define KV_VALUE_MAX      (1 << 20) /* bytes of a value */
#define KV_REQUEST_ID_MAX 128       /* bytes of a request id */
#define KV_LIST_DEFAULT   100       /* page size when limit is 0 */
#define KV_LIST_MAX       1000      /* largest page */
/**
 * True if s[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). Keys and values must be: the REST
 * API is JSON, and a string the gateway cannot encode would come back
 * empty. None of the state machine's libraries offers the check (jansson
 * does it inside its own parser only).
 */
bool kv_utf8_valid(const char* s, size_t len);

/** Default idempotency window, in log entries. Cluster-wide: every node
 * must use the same value (it is stored in the state and travels with
 * snapshots; a new state takes it from kv_options). */
#define KV_IDEM_WINDOW_DEFAULT 100000

/** Largest data of one restore chunk entry (skein.RestoreOp.data). */
#define KV_RESTORE_CHUNK_MAX ((size_t)1 << 20)
/** Seed of the XXH64 checksum of a restored file (RestoreOp.checksum). */
#define KV_RESTORE_CHECKSUM_SEED 0

/** Default budget of file-backed resident memory (see kv_options). */
#define KV_RSS_FILE_BUDGET_DEFAULT ((size_t)32 << 20)
/** Operations between two checks of the resident memory. */
#define KV_RSS_CHECK_EVERY 64

/** Outcome of one write; the values are those of
 * skein.ClientResponse.Status so the node can copy them. */
enum kv_status {
    KV_STATUS_OK = 0,
    KV_STATUS_NOT_FOUND = 1,
    KV_STATUS_CAS_MISMATCH = 2,
    KV_STATUS_BAD_REQUEST = 7,
};

/** Kind of write in a NORMAL entry. */
enum kv_op {
    KV_OP_NONE = 0, /* NOOP/CONF entry, skipped or malformed entry */
    KV_OP_CREATE,
    KV_OP_UPDATE,
    KV_OP_DELETE,
    KV_OP_RESTORE, /* a restore chunk or commit (RestoreOp) */
};

/** One stored entry (skein.KVEntry). Strings are NUL-terminated too. */
struct kv_entry {
    const char* id;       /* entry id (UUID text) */
    uint32_t id_len;      /* bytes at id */
    const char* key;      /* key, may be empty */
    uint32_t key_len;     /* bytes at key */
    const char* value;    /* value, may be empty */
    uint32_t value_len;   /* bytes at value */
    uint64_t seq;         /* write counter value of the last write */
    uint64_t source_node; /* node that accepted the create */
    int64_t created_at;   /* ms since the epoch, chosen by that node */
};

/** The result of applying one entry (what the node tells the client). */
struct kv_result {
    raft_index index;        /* log index of the entry */
    uint32_t type;           /* enum raft_entry_type */
    uint32_t op;             /* enum kv_op */
    uint32_t status;         /* enum kv_status */
    bool applied;            /* false: at or below the applied index, skipped */
    bool duplicate;          /* answered from the idempotency table */
    bool has_entry;          /* entry is set */
    struct kv_entry entry;   /* create/update: the entry now; delete: the
                                entry removed */
    uint64_t seq;            /* seq taken by this write, 0 if none */
    uint64_t current_seq;    /* CAS_MISMATCH: the entry's seq */
    const char* request_id;  /* NULL if the command had none */
    uint32_t request_id_len; /* bytes at request_id */
    const char* error;       /* detail for a non-OK status, else NULL */
    uint64_t origin_node;    /* a forwarded write: the follower that tagged */
    uint64_t origin_tag;     /* it, and its tag (0, 0 otherwise) */
};

/** Options of kv_open; zero-initialised means the defaults. */
struct kv_options {
    size_t map_size;        /* LMDB map size, 0 = STORE_ENV_MAP_SIZE_DEFAULT */
    int durability;         /* enum store_durability, 0 = strict */
    uint32_t fast_flush_ms; /* fast profile flush interval, 0 = default */
    uint64_t idem_window;   /* for a new state; 0 = KV_IDEM_WINDOW_DEFAULT */
    size_t rss_file_budget; /* file-backed resident bytes above which reads
                               and applies trim the map (kv_trim_memory);
                               0 = KV_RSS_FILE_BUDGET_DEFAULT, SIZE_MAX =
                               never */
    uint32_t commit_delay_ms; /* 0: every kv_apply_batch commits its own
                                 transaction. Otherwise batches accumulate
                                 in one write transaction that
                                 kv_commit_pending() commits (one flush for
                                 all of them); see "Deferred commit". */
};

/** A consistent view of the state's counters. */
struct kv_stats {
    raft_index applied_index; /* last entry applied */
    raft_term applied_term;   /* its term */
    uint64_t seq;             /* last seq assigned */
    uint64_t count;           /* live entries */
    uint64_t hash;            /* order-independent hash of live entries */
    uint64_t idem_window;     /* idempotency window in log entries */
    raft_index conf_index;    /* index of the last CONF entry applied */
};

/** A growable buffer owned by the caller of a read (free: kv_buf_free). */
struct kv_buf {
    uint8_t* data; /* malloc'd bytes */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
};

/** A page query for kv_list. */
struct kv_list_query {
    const char* key;    /* only entries with this key, or NULL for all */
    uint32_t key_len;   /* bytes at key */
    const char* after;  /* resume after this id, or NULL */
    uint32_t after_len; /* bytes at after */
    uint32_t limit;     /* page size; 0 = KV_LIST_DEFAULT, capped at
                           KV_LIST_MAX */
};

struct kv_state; /* opaque */

/**
 * Opens (creating if needed) the state environment in directory `dir`.
 * First finishes or rolls back a snapshot installation interrupted by a
 * crash (<dir>.incoming, <dir>.old). `opts` may be NULL. Returns STORE_OK
 * and sets *out (caller owns it, close with kv_close), or a STORE_E* code
 * with a message in `errmsg` (STORE_ERRMSG_SIZE bytes, may be NULL).
 */
int kv_open(const char* dir,
            const struct kv_options* opts,
            struct kv_state** out,
            char* errmsg);

/** Flushes and closes the state, freeing everything. Accepts NULL. */
void kv_close(struct kv_state* kv);

/**
 * Applies committed entries in ONE write transaction (see the header
 * comment). entries[i].index must be consecutive; the first one not yet
 * applied must be applied_index + 1. If `results` is not NULL it has room
 * for n results, filled in order; their strings live in a buffer owned by
 * kv, valid until the next kv_apply_batch or kv_close. Returns STORE_OK,
 * STORE_EINVAL (a gap; nothing applied), STORE_EDISKFULL (nothing applied;
 * retry once space exists), STORE_ENOMEM or STORE_EIO (nothing applied).
 */
int kv_apply_batch(struct kv_state* kv,
                   const struct raft_entry* entries,
                   size_t n,
                   struct kv_result* results);

/**
 * Makes everything applied durable (one flush) and advances
 * kv_durable_applied(). Commits the deferred transaction first. Returns
 * STORE_OK, STORE_EDISKFULL or STORE_EIO; after a failed commit the
 * applied index is back at the last committed one (kv_commit_pending).
 */
int kv_sync(struct kv_state* kv);

/**
 * Commits the batches applied since the last commit (deferred commit), in
 * one transaction with one flush. Does nothing without a pending
 * transaction. Returns STORE_OK, or STORE_EDISKFULL / STORE_EIO: then the
 * pending batches are dropped, kv_applied_index() and the idempotency map
 * are back at the last committed state, and the caller replays the log
 * from there (store_replay). Apply thread only.
 */
int kv_commit_pending(struct kv_state* kv);

/**
 * Sets commit_delay_ms (kv_options) from now on; the calling thread becomes
 * the apply thread. Setting 0 commits what is pending. Returns STORE_OK or
 * what kv_commit_pending returns.
 */
int kv_set_commit_delay(struct kv_state* kv, uint32_t ms);

/**
 * Milliseconds (CLOCK_MONOTONIC) since the pending transaction was opened,
 * or -1 without one. Apply thread only.
 */
int64_t kv_pending_age_ms(const struct kv_state* kv);

/** Last applied index (apply thread; no transaction). */
raft_index kv_applied_index(const struct kv_state* kv);

/** Term of the last applied entry (apply thread). */
raft_term kv_applied_term(const struct kv_state* kv);

/** Applied index made durable by the last kv_sync (or found at open). */
raft_index kv_durable_applied(const struct kv_state* kv);

/**
 * Reads the counters of the last committed batch in one read transaction
 * (any thread). Returns STORE_OK or STORE_EIO.
 */
int kv_stats(struct kv_state* kv, struct kv_stats* out);

/**
 * Looks up entry `id`. On STORE_OK fills *out with strings copied into
 * `buf` (reset first; valid until buf is reused or freed). Returns
 * STORE_ENOTFOUND when there is no such entry, STORE_EINVAL for a bad id.
 */
int kv_get(struct kv_state* kv,
           const char* id,
           size_t id_len,
           struct kv_buf* buf,
           struct kv_entry* out);

/**
 * Lists one page of entries in id order (see struct kv_list_query). `out`
 * has room for `cap` entries (at least the effective limit); strings are
 * copied into `buf` (reset first). Sets *n and *truncated (another entry
 * follows the page). Returns STORE_OK or STORE_EINVAL / STORE_EIO.
 */
int kv_list(struct kv_state* kv,
            const struct kv_list_query* q,
            struct kv_buf* buf,
            struct kv_entry* out,
            size_t cap,
            size_t* n,
            bool* truncated);

/** Sets *out to the number of live entries. Returns STORE_OK or an error. */
int kv_count(struct kv_state* kv, uint64_t* out);

/**
 * Picks the id of a live entry from the random number `rnd` (the caller's
 * PRNG): the first id at or after a probe made from rnd, wrapping around.
 * The id is copied into `buf` (reset first) and *id points to it. Returns
 * STORE_OK or STORE_ENOTFOUND when there is no entry.
 */
int kv_random_id(struct kv_state* kv,
                 uint64_t rnd,
                 struct kv_buf* buf,
                 const char** id,
                 size_t* id_len);

/**
 * Copies the membership stored by the last CONF entry applied into buf
 * (at most `cap` bytes). Sets *len (0 if none) and *conf_index. Returns
 * STORE_OK or STORE_EINVAL if it does not fit.
 */
int kv_conf(struct kv_state* kv,
            uint8_t* buf,
            size_t cap,
            size_t* len,
            raft_index* conf_index);

/**
 * Fills *out with the snapshot metadata of the current state: index and
 * term applied, and the stored membership decoded (raft_conf_decode_prefix: the
 * data may carry a context), or `bootstrap` when no CONF entry was ever
 * applied. Returns STORE_OK or STORE_ECORRUPT (stored membership does not
 * decode).
 */
int kv_snapshot_meta(struct kv_state* kv,
                     const struct raft_conf* bootstrap,
                     struct raft_snapshot_meta* out);

/** What the restore staging holds (kv_restore_staging). */
struct kv_restore_staging {
    uint64_t upload_id;  /* upload being staged, 0 = none */
    uint64_t total_size; /* its announced size */
    uint64_t chunks;     /* chunks stored */
    uint64_t bytes;      /* bytes stored (chunks may overlap if repeated
                            at other boundaries) */
};

/**
 * Reads the restore staging of the last committed batch (any thread).
 * Returns STORE_OK or an error.
 */
int kv_restore_staging(struct kv_state* kv, struct kv_restore_staging* out);

/**
 * Recomputes count and hash from every entry, checks the key index
 * against the entries, and compares with the stored counters. Fills
 * *recomputed if not NULL. Returns STORE_OK or STORE_ECORRUPT (message in
 * errmsg, STORE_ERRMSG_SIZE bytes, may be NULL).
 */
int kv_verify(struct kv_state* kv, struct kv_stats* recomputed, char* errmsg);

/**
 * Changes the map size (after STORE_EDISKFULL), committing what is pending
 * first. No other thread may be inside kv. Returns STORE_OK or a STORE_E*
 * code.
 */
int kv_set_map_size(struct kv_state* kv, size_t bytes);

/**
 * Drops this process's mapping of the environment's pages (the data stays
 * in the page cache), bounding the resident set of a node whose state is
 * larger than its memory budget. Safe at any time, from any thread: pages
 * fault back in on the next read. Reads and applies call it by themselves
 * when the process's file-backed resident memory (/proc/self/statm
 * "shared") exceeds kv_options.rss_file_budget, checked every
 * KV_RSS_CHECK_EVERY operations: LMDB reads through mmap and the kernel's
 * fault-around maps 16 pages per fault, so random reads of a large state
 * would otherwise map most of it.
 */
void kv_trim_memory(struct kv_state* kv);

/** STORE_E* code of the last failed kv_apply_batch / kv_sync / open. */
int kv_last_error(const struct kv_state* kv);

/** Message of the last failure of the apply thread's calls ("" if none). */
const char* kv_errmsg(const struct kv_state* kv);

/** Directory of the environment (borrowed). */
const char* kv_dir(const struct kv_state* kv);

/**
 * Hash of one entry's canonical bytes (lengths, id, key, value, seq,
 * source_node, created_at): the term the state hash sums.
 */
uint64_t kv_entry_hash(const struct kv_entry* e);

/** Frees a kv_buf's memory (the struct itself is the caller's). */
void kv_buf_free(struct kv_buf* buf);

/** Returns a static name for a kv_status ("ok", "not found", ...). */
const char* kv_status_name(uint32_t status);

#endif /* SKEIN_KV_STATE_H */
