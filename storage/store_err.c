/*
 * store_err.c - storage error codes and their mappings (see store_err.h).
 */
#include "store_err.h"

#include <errno.h>
#include <lmdb.h>

#include "raft.h"

#define STORE_ERROR_TEXT(name, text) text,
static const char* const store_error_texts[] = {STORE_ERRORS(STORE_ERROR_TEXT)};
#undef STORE_ERROR_TEXT

const char* store_strerror(int code) {
    if (code < 0 || code >= STORE_ERROR_COUNT) {
        return "unknown error";
    }
    return store_error_texts[code];
}

int store_err_to_raft(int code) {
    switch (code) {
        case STORE_OK:
            return RAFT_OK;
        case STORE_EINVAL:
            return RAFT_EINVAL;
        case STORE_ENOMEM:
        case STORE_EDISKFULL:
            return RAFT_ENOMEM;
        case STORE_ECOMPACTED:
            return RAFT_ECOMPACTED;
        default:
            return RAFT_ESTORAGE;
    }
}

int store_err_from_mdb(int mdb_rc) {
    switch (mdb_rc) {
        case MDB_SUCCESS:
            return STORE_OK;
        case MDB_MAP_FULL:
        case ENOSPC:
        case EDQUOT:
            return STORE_EDISKFULL;
        case ENOMEM:
        case MDB_TXN_FULL:
            return STORE_ENOMEM;
        case MDB_CORRUPTED:
        case MDB_INVALID:
        case MDB_PAGE_NOTFOUND:
            return STORE_ECORRUPT;
        case MDB_VERSION_MISMATCH:
            return STORE_EVERSION;
        case MDB_NOTFOUND:
            return STORE_ENOTFOUND;
        case EINVAL:
        case MDB_BAD_VALSIZE:
            return STORE_EINVAL;
        default:
            return STORE_EIO;
    }
}
