/*
 * store_env.h - one LMDB environment as the storage layer opens it, shared
 * by the log store (store_lmdb.h) and the state machine (kv_state.h), plus
 * the durability profiles and small file-system helpers.
 *
 * Opening an environment:
 *  - creates the directory if needed and takes an exclusive flock() on
 *    <dir>/LOCK, so two processes never write one environment;
 *  - refuses a data.mdb that is not an LMDB file, has another format
 *    version, or is shorter than the pages its meta page references (a
 *    truncated file would make LMDB fault on a page beyond the end);
 *  - clears stale reader slots left by a killed process;
 *  - opens with MDB_NOTLS (read transactions are not tied to threads, so a
 *    thread may hold several, e.g. while mdb_env_copyfd2 runs) and the
 *    sync flags of the durability profile.
 *
 * Durability profiles (--durability), and why the flags:
 *  - strict (default): MDB_NOMETASYNC. A commit writes the data pages and
 *    fdatasync()s them, then writes the meta page without a flush;
 *    store_env_flush() flushes the meta page. Two flushes per batch, in
 *    LMDB's required order (data, then meta), so a power cut never leaves
 *    a meta page that points at pages which did not reach the disk. Every
 *    batch is durable before it is acknowledged. MDB_NOSYNC plus one
 *    flush would save one fdatasync per batch, but lmdb.h warns that on a
 *    file system that reorders writes "a system crash can corrupt the
 *    database": not acceptable for the default.
 *  - balanced: MDB_NOMETASYNC, and the meta flush is skipped for entries
 *    (done only when the hard state's term or vote changed): one fdatasync
 *    per batch. A process crash loses nothing; a power cut may undo the
 *    last committed batch (LMDB keeps integrity: "ACI but not D").
 *  - fast: MDB_NOSYNC, no flush on the write path, a flush at most every
 *    `fast_flush_ms` (and on close). For benchmarks: a process crash loses
 *    nothing (the page cache survives), a power cut may lose the last
 *    writes and, per lmdb.h, may corrupt the environment; the cluster
 *    loses acknowledged writes only if a majority loses power together.
 *
 * Threading: open/close/set_map_size need exclusive use of the
 * environment; flush may run while other threads read.
 */
#ifndef SKEIN_STORE_ENV_H
#define SKEIN_STORE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

/** Durability profiles; see the header comment. */
enum store_durability {
    STORE_DURABILITY_STRICT = 0, /* flush data and meta before every ack */
    STORE_DURABILITY_BALANCED,   /* flush data per batch, meta lazily */
    STORE_DURABILITY_FAST,       /* no flush on the write path */
};

/** Default map size: the file is sparse, only used pages take space. */
#define STORE_ENV_MAP_SIZE_DEFAULT ((size_t)64 << 30)
/** Flush interval of the fast profile. */
#define STORE_ENV_FAST_FLUSH_MS_DEFAULT 1000
/** Size of every errmsg buffer of the storage layer. */
#define STORE_ERRMSG_SIZE 256

/** Parameters of store_env_open. */
struct store_env_config {
    size_t map_size;        /* bytes; 0 = STORE_ENV_MAP_SIZE_DEFAULT */
    int durability;         /* enum store_durability */
    unsigned max_dbs;       /* named databases, >= 1 */
    unsigned extra_flags;   /* more mdb_env_open flags (MDB_NORDAHEAD) */
    uint32_t fast_flush_ms; /* fast profile; 0 = the default */
};

/** An open environment. All fields are read-only for users. */
struct store_env {
    MDB_env* env;           /* the LMDB environment */
    char* dir;              /* directory path, owned */
    int lock_fd;            /* fd of <dir>/LOCK holding the flock */
    int durability;         /* enum store_durability */
    size_t map_size;        /* current map size in bytes */
    uint32_t fast_flush_ms; /* flush interval of the fast profile */
    uint64_t last_flush_ms; /* CLOCK_MONOTONIC time of the last flush */
    bool meta_dirty;        /* committed since the last flush */
};

/**
 * Parses "strict", "balanced" or "fast" into *out. Returns STORE_OK or
 * STORE_EINVAL (*out unchanged).
 */
int store_durability_parse(const char* text, int* out);

/** Returns "strict", "balanced", "fast" or "unknown" (static text). */
const char* store_durability_name(int durability);

/**
 * Opens (creating if needed) the environment in directory `dir` as
 * described in the header comment. On success fills *e (close with
 * store_env_close) and returns STORE_OK. On failure returns STORE_EBUSY
 * (locked), STORE_ECORRUPT (not an LMDB file, truncated), STORE_EVERSION,
 * STORE_EIO, STORE_ENOMEM or STORE_EINVAL, writes a message naming the
 * file and the problem into errmsg (STORE_ERRMSG_SIZE bytes), and leaves
 * nothing open.
 */
int store_env_open(struct store_env* e,
                   const char* dir,
                   const struct store_env_config* cfg,
                   char* errmsg);

/** Closes the environment (flushing first) and frees *e's fields. */
void store_env_close(struct store_env* e);

/**
 * Flushes everything committed to disk (mdb_env_sync with force), in every
 * profile. Returns STORE_OK or STORE_EIO / STORE_EDISKFULL.
 */
int store_env_flush(struct store_env* e);

/**
 * Flushes if the profile asks for it at the end of a batch: strict always
 * (when something was committed since the last flush), balanced only when
 * `force_meta` is set, fast only when `fast_flush_ms` passed since the last
 * flush. Returns STORE_OK or the flush error.
 */
int store_env_sync_batch(struct store_env* e, bool force_meta);

/**
 * Sets the map size to `bytes` (rounded by LMDB; at least the used size).
 * No transaction may be active in this process. Returns STORE_OK or the
 * mapped LMDB error.
 */
int store_env_set_map_size(struct store_env* e, size_t bytes);

/**
 * Checks that data.mdb is at least as long as the pages the current meta
 * references. Returns STORE_OK or STORE_ECORRUPT with a message in errmsg.
 */
int store_env_check_size(struct store_env* e, char* errmsg);

/**
 * Drops this process's page-table mapping of data.mdb (MADV_DONTNEED on
 * the read-only shared map LMDB made): the pages stay in the page cache
 * and fault back in on the next access. Bounds the resident set of a
 * process whose environment is larger than its memory budget. Returns the
 * bytes of mappings advised (0 if none was found).
 */
size_t store_env_trim(struct store_env* e);

/** Commits `txn` and maps the result; marks the env dirty on success. */
int store_env_commit(struct store_env* e, MDB_txn* txn);

/** Writes a formatted message into errmsg (STORE_ERRMSG_SIZE bytes). */
void store_errf(char* errmsg, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** fsync()s the directory `path` (after creating or renaming in it). */
int store_fsync_dir(const char* path);

/** Creates `path` and its missing parents (mode 0755). */
int store_mkdirs(const char* path);

/**
 * Removes `path` recursively (files and directories; symlinks are removed,
 * not followed). A missing path is not an error. Returns STORE_OK or
 * STORE_EIO.
 */
int store_rmtree(const char* path);

/**
 * Returns malloc'd "<a>/<b>" (caller frees), or NULL when out of memory.
 */
char* store_path_join(const char* a, const char* b);

/** Milliseconds of CLOCK_MONOTONIC (for the fast profile's flushes). */
uint64_t store_now_ms(void);

/* Little-endian and big-endian fixed-width encoding. */

/** Stores `v` little-endian at p[0..8). */
void store_put_le64(uint8_t* p, uint64_t v);
/** Loads a little-endian u64 from p[0..8). */
uint64_t store_get_le64(const uint8_t* p);
/** Stores `v` little-endian at p[0..4). */
void store_put_le32(uint8_t* p, uint32_t v);
/** Loads a little-endian u32 from p[0..4). */
uint32_t store_get_le32(const uint8_t* p);
/** Stores `v` big-endian at p[0..8) (log keys sort by index). */
void store_put_be64(uint8_t* p, uint64_t v);
/** Loads a big-endian u64 from p[0..8). */
uint64_t store_get_be64(const uint8_t* p);

#endif /* SKEIN_STORE_ENV_H */
