/*
 * kv_internal.h - the inside of struct kv_state, shared by kv_state.c and
 * kv_snapshot.c only. Not a public interface.
 */
#ifndef SKEIN_KV_INTERNAL_H
#define SKEIN_KV_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "kv_snapshot.h"
#include "kv_state.h"

#define KV_FORMAT_MAGIC     "skein-state"
#define KV_FORMAT_MAGIC_LEN 11
#define KV_FORMAT_VERSION   1
#define KV_META_SEED        0x736b65696e6b766dULL /* "skeinkvm" */
#define KV_STATE_REC        56 /* payload bytes of meta "state" */
/* A restore commit writes the staged bytes to <state dir> + this suffix,
 * verifies and copies them, and removes it; kv_open removes a leftover. */
#define KV_RESTORE_FILE_SUFFIX ".restore.mdb"

/* A bump allocator handed to protobuf-c while applying: reset per entry. */
struct kv_arena {
    uint8_t* block; /* current block */
    size_t cap;     /* bytes in block */
    size_t used;    /* bytes handed out from block */
    void** big;     /* allocations that did not fit, freed at reset */
    size_t n_big;   /* used slots in big */
    size_t big_cap; /* slots in big */
    size_t high;    /* most bytes asked between two resets */
    size_t asked;   /* bytes asked since the last reset */
};

/* One slot of the idempotency hash index (linear probing). */
struct kv_idem_slot {
    uint64_t hash;    /* XXH64 of the request id */
    raft_index index; /* index of its record in "idem"; 0 = empty slot */
};

/* The idempotency hash index: request id hash -> record index. */
struct kv_idem_map {
    struct kv_idem_slot* slots; /* cap slots, cap a power of two */
    size_t cap;                 /* slots */
    size_t count;               /* used slots */
};

/* String offsets of one pending result, fixed up after the batch. */
struct kv_res_offs {
    size_t id, key, value, request_id, error; /* offsets in res */
    bool has_error;                           /* error is set */
};

struct kv_state {
    struct store_env env;           /* the LMDB environment */
    char* dir;                      /* directory, owned */
    struct kv_options opts;         /* as opened */
    MDB_dbi dbi_kv;                 /* id -> packed KVEntry */
    MDB_dbi dbi_by_key;             /* 0x01 || key -> ids (DUPSORT) */
    MDB_dbi dbi_idem;               /* index (BE) -> result record */
    struct kv_idem_map idem;        /* request id hash -> index */
    MDB_dbi dbi_meta;               /* format, state, conf, restore */
    MDB_dbi dbi_restore;            /* restore staging: offset (BE) ->
                                       chunk bytes */
    struct kv_stats st;             /* counters as last applied */
    MDB_txn* pending;               /* write transaction holding applied
                                       batches not committed yet (deferred
                                       commit), or NULL */
    pthread_t pending_owner;        /* the apply thread that opened it */
    int64_t pending_since_ms;       /* CLOCK_MONOTONIC ms when opened */
    raft_index durable_applied;     /* applied index made durable */
    struct kv_arena arena;          /* protobuf-c allocations while applying */
    struct kv_buf res;              /* result strings of the last batch */
    struct kv_res_offs* offs;       /* per-result offsets, n_offs slots */
    size_t offs_cap;                /* slots in offs */
    struct kv_buf scratch;          /* packing buffer */
    atomic_uint_fast64_t ops;       /* reads and applies, for the RSS check */
    size_t rss_budget;              /* resolved rss_file_budget */
    int last_error;                 /* STORE_E* of the last failure */
    char errmsg[STORE_ERRMSG_SIZE]; /* its message */
};

/** Encodes the counters into the meta "state" payload (KV_STATE_REC). */
void kv_meta_encode(const struct kv_stats* st, uint8_t* out);

/** Decodes and checks a meta "state" value (payload + XXH64). */
int kv_meta_decode(const MDB_val* v, struct kv_stats* out);

/** Checks a meta "format" value. Returns STORE_OK, ECORRUPT or EVERSION. */
int kv_format_check(const MDB_val* v);

/**
 * Finishes or rolls back a snapshot swap interrupted by a crash: see
 * kv_snapshot.c. Returns STORE_OK or STORE_EIO (message in errmsg).
 */
int kv_snapshot_recover_dirs(const char* dir, char* errmsg);

/** Closes kv's environment, keeping the struct (for a swap). */
void kv_env_close(struct kv_state* kv);

/** Reopens kv's environment in kv->dir after kv_env_close. */
int kv_env_reopen(struct kv_state* kv, char* errmsg);

/** Appends len bytes and a NUL to buf; returns the offset or SIZE_MAX. */
size_t kv_buf_put(struct kv_buf* buf, const void* data, size_t len);

/**
 * Opens the snapshot file `path` read-only (no lock file, nothing written)
 * as a kv_state that kv_verify and read transactions accept: the file is
 * checked first (LMDB meta pages, every page present, format and meta
 * records, filled into *info). Returns STORE_OK and sets *out (close it
 * with kv_snapshot_close_ro, never kv_close), STORE_ECORRUPT for a file
 * that is not a state snapshot, STORE_ENOMEM or STORE_EIO.
 */
int kv_snapshot_open_ro(const char* path,
                        struct kv_state** out,
                        struct kv_snapshot_info* info,
                        char* errmsg);

/**
 * Checks that every idempotency record decodes (a restore copies them;
 * kv_verify does not read them). Returns STORE_OK, STORE_ECORRUPT
 * (message in errmsg) or another STORE_E* code.
 */
int kv_verify_idem(struct kv_state* kv, char* errmsg);

/** Closes what kv_snapshot_open_ro opened. Accepts NULL. */
void kv_snapshot_close_ro(struct kv_state* ro);

#endif /* SKEIN_KV_INTERNAL_H */
