/*
 * store_err.h - error codes of the LMDB storage layer (log store, state
 * machine, snapshots).
 *
 * Every function of store_lmdb.h, kv_state.h, kv_snapshot.h and
 * store_recover.h returns 0 (STORE_OK) or one positive STORE_E* code. LMDB
 * return codes and errno values are mapped here, at the module boundary,
 * and never passed through. The raft-facing operations of struct store_ops
 * (store.h) must return raft error codes: store_err_to_raft() is the one
 * mapping, and the LMDB store keeps the precise STORE_E* code and a message
 * for the caller to ask (store_lmdb_last_error, store_lmdb_errmsg).
 *
 * STORE_EDISKFULL is distinct on purpose: the LMDB map is full (MDB_MAP_FULL)
 * or the file system is (ENOSPC, EDQUOT). The write was aborted as a whole,
 * nothing of it is visible, reads keep working and writes work again once
 * space exists (map grown, log compacted, disk freed). The REST layer
 * answers 507.
 */
#ifndef SKEIN_STORE_ERR_H
#define SKEIN_STORE_ERR_H

#define STORE_ERRORS(X)                                        \
    X(STORE_OK, "ok")                                          \
    X(STORE_EINVAL, "invalid argument")                        \
    X(STORE_ENOMEM, "out of memory")                           \
    X(STORE_EDISKFULL, "disk full (LMDB map or file system)")  \
    X(STORE_EIO, "I/O error")                                  \
    X(STORE_ECORRUPT, "stored data is corrupted or truncated") \
    X(STORE_ENOTFOUND, "not found")                            \
    X(STORE_EBUSY, "directory is locked by another process")   \
    X(STORE_ECOMPACTED, "requested entries were compacted")    \
    X(STORE_EVERSION, "stored data has an unknown format version")

#define STORE_ERROR_ENUM(name, text) name,
/** Error codes of the storage layer (0 is success). */
enum store_error { STORE_ERRORS(STORE_ERROR_ENUM) STORE_ERROR_COUNT };
#undef STORE_ERROR_ENUM

/**
 * Returns a static, human-readable text for a store_error code ("unknown
 * error" for a value out of range). Never NULL; the caller frees nothing.
 */
const char* store_strerror(int code);

/**
 * Maps a store_error code to the raft_error code (raft.h) that struct
 * store_ops must return: STORE_OK -> RAFT_OK, STORE_EINVAL -> RAFT_EINVAL,
 * STORE_ENOMEM and STORE_EDISKFULL -> RAFT_ENOMEM ("a bound is reached"),
 * STORE_ECOMPACTED -> RAFT_ECOMPACTED, everything else -> RAFT_ESTORAGE.
 */
int store_err_to_raft(int code);

/**
 * Maps an LMDB return code or an errno value (as returned by LMDB calls) to
 * a store_error code: 0 -> STORE_OK, MDB_MAP_FULL / ENOSPC / EDQUOT ->
 * STORE_EDISKFULL, ENOMEM -> STORE_ENOMEM, MDB_CORRUPTED / MDB_INVALID /
 * MDB_PAGE_NOTFOUND -> STORE_ECORRUPT, MDB_VERSION_MISMATCH ->
 * STORE_EVERSION, MDB_NOTFOUND -> STORE_ENOTFOUND, EINVAL / MDB_BAD_VALSIZE
 * -> STORE_EINVAL, anything else -> STORE_EIO.
 */
int store_err_from_mdb(int mdb_rc);

#endif /* SKEIN_STORE_ERR_H */
