/*
 * store_lmdb.c - the raft log store on LMDB (see store_lmdb.h for the
 * layout, the durability rules and the verification).
 *
 * In memory the store keeps what every call needs without a read
 * transaction: first/last/durable indexes, the last term, the boundary,
 * the hard state and the snapshot metadata, plus a ring of recent terms.
 * These change only after the LMDB transaction that stores them committed,
 * so a failed write leaves memory and disk as they were.
 */
#include "store_lmdb.h"

#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define LOG_MAGIC         "skein-log"
#define LOG_MAGIC_LEN     9
#define LOG_FORMAT        1                     /* meta "format" version */
#define LOG_ENTRY_VERSION 1                     /* entry header version */
#define LOG_SEED          0x736b65696e6c6f67ULL /* "skeinlog" */
#define LOG_META_SEED     0x736b65696e6d6574ULL /* "skeinmet" */
#define LOG_TERM_CACHE    4096                  /* ring of recent terms */
#define LOG_COMPACT_CHUNK 65536 /* entries deleted per compaction txn */
#define LOG_SNAP_MAX      (20 + RAFT_CONF_ENCODED_MAX + 8)

/* Stays on in release builds: a broken store must stop the process. */
#define LOG_ASSERT(cond)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "%s:%d: log store assertion failed: %s\n", \
                    __FILE__, __LINE__, #cond);                        \
            abort();                                                   \
        }                                                              \
    } while (0)

struct log_term_slot {
    raft_index index; /* 0 = empty */
    raft_term term;   /* term of that index */
};

struct store_lmdb {
    struct store_env env;            /* the LMDB environment */
    MDB_dbi dbi_entries;             /* index -> header + data */
    MDB_dbi dbi_meta;                /* name -> record */
    MDB_txn* rtxn;                   /* reusable read txn, reset when idle */
    raft_index first;                /* first stored index */
    raft_index last;                 /* last written index, >= first - 1 */
    raft_term last_term;             /* term of `last` */
    raft_index durable;              /* last index reported durable */
    raft_term boundary_term;         /* term of entry first - 1 */
    struct raft_hard_state hs;       /* latest saved hard state */
    struct raft_hard_state hs_flush; /* term/vote as of the last flush */
    bool hs_pending;                 /* hs not written to LMDB yet */
    struct raft_snapshot_meta snap;  /* latest snapshot metadata */
    uint8_t* buf;                    /* entries() copies, owned */
    size_t buf_cap;                  /* bytes at buf */
    int last_error;                  /* STORE_E* of the last operation */
    char errmsg[STORE_ERRMSG_SIZE];  /* message of the last failure */
    struct store_lmdb_stats stats;   /* counters */
    bool verified;                   /* every entry checked since open */
    struct log_term_slot terms[LOG_TERM_CACHE]; /* recent terms */
};

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static int log_fail(struct store_lmdb* s, int code, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int log_fail(struct store_lmdb* s, int code, const char* fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
    va_end(ap);
    s->last_error = code;
    if (code == STORE_EDISKFULL) {
        s->stats.disk_full++;
    }
    return code;
}

static int log_fail_mdb(struct store_lmdb* s, int mrc, const char* what) {
    int code = store_err_from_mdb(mrc);

    return log_fail(s, code, "%s/data.mdb: %s: %s%s", s->env.dir, what,
                    code == STORE_EDISKFULL ? "disk full: " : "",
                    code == STORE_EDISKFULL || code == STORE_EIO
                        ? mdb_strerror(mrc)
                        : store_strerror(code));
}

static int log_ok(struct store_lmdb* s) {
    s->last_error = STORE_OK;
    s->errmsg[0] = '\0';
    return STORE_OK;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

static uint64_t log_checksum(const uint8_t* hdr,
                             raft_index index,
                             const uint8_t* data,
                             uint32_t len) {
    static const uint8_t empty = 0;
    uint8_t b[24];

    memcpy(b, hdr, 16);
    store_put_le64(b + 16, index);
    uint64_t seed = XXH64(b, sizeof(b), LOG_SEED);
    return XXH64(len > 0 ? data : &empty, len, seed);
}

/* Writes the header and data of `e` at out (24 + e->len bytes). */
static void log_encode(uint8_t* out, const struct raft_entry* e) {
    memset(out, 0, STORE_LMDB_ENTRY_HEADER);
    out[0] = LOG_ENTRY_VERSION;
    out[1] = (uint8_t)e->type;
    store_put_le32(out + 4, e->len);
    store_put_le64(out + 8, e->term);
    store_put_le64(out + 16, log_checksum(out, e->index, e->data, e->len));
    if (e->len > 0) {
        memcpy(out + STORE_LMDB_ENTRY_HEADER, e->data, e->len);
    }
}

/*
 * Verifies the stored value of entry `index` and fills *out (data points
 * into LMDB memory, valid until the transaction ends).
 */
static int log_decode(struct store_lmdb* s,
                      raft_index index,
                      const MDB_val* key,
                      const MDB_val* val,
                      struct raft_entry* out) {
    const uint8_t* v = val->mv_data;

    if (key->mv_size != 8 || store_get_be64(key->mv_data) != index) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu: stored under a wrong key",
                        s->env.dir, (unsigned long long)index);
    }
    if (val->mv_size < STORE_LMDB_ENTRY_HEADER) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu: value is %zu bytes, shorter "
                        "than the %d-byte header (truncated)",
                        s->env.dir, (unsigned long long)index, val->mv_size,
                        STORE_LMDB_ENTRY_HEADER);
    }
    uint32_t len = store_get_le32(v + 4);
    if (v[0] != LOG_ENTRY_VERSION || v[2] != 0 || v[3] != 0 ||
        v[1] > RAFT_ENTRY_CONF) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu: bad header (version %u, "
                        "type %u)",
                        s->env.dir, (unsigned long long)index, v[0], v[1]);
    }
    if ((size_t)len != val->mv_size - STORE_LMDB_ENTRY_HEADER) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu: header says %u data bytes, "
                        "%zu stored (truncated or damaged)",
                        s->env.dir, (unsigned long long)index, len,
                        val->mv_size - STORE_LMDB_ENTRY_HEADER);
    }
    const uint8_t* data = v + STORE_LMDB_ENTRY_HEADER;
    uint64_t stored = store_get_le64(v + 16);
    uint64_t computed = log_checksum(v, index, data, len);
    if (stored != computed) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu: checksum mismatch (stored "
                        "%016llx, computed %016llx)",
                        s->env.dir, (unsigned long long)index,
                        (unsigned long long)stored,
                        (unsigned long long)computed);
    }
    out->term = store_get_le64(v + 8);
    out->index = index;
    out->type = v[1];
    out->len = len;
    out->data = data;
    if (out->term == 0) {
        return log_fail(s, STORE_ECORRUPT, "%s/data.mdb: entry %llu: term 0",
                        s->env.dir, (unsigned long long)index);
    }
    return STORE_OK;
}

/* Puts meta record `name` = payload || XXH64(payload). */
static int log_meta_put(struct store_lmdb* s,
                        MDB_txn* txn,
                        const char* name,
                        const uint8_t* payload,
                        size_t len) {
    uint8_t rec[LOG_SNAP_MAX + 8];
    MDB_val k = {strlen(name), (void*)name};
    MDB_val v = {len + 8, rec};

    LOG_ASSERT(len <= LOG_SNAP_MAX);
    memcpy(rec, payload, len);
    store_put_le64(rec + len, XXH64(payload, len, LOG_META_SEED));
    int mrc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
    return mrc == 0 ? STORE_OK : log_fail_mdb(s, mrc, name);
}

/*
 * Gets meta record `name` into out (at most cap bytes), verified. Returns
 * STORE_OK, STORE_ENOTFOUND or STORE_ECORRUPT.
 */
static int log_meta_get(struct store_lmdb* s,
                        MDB_txn* txn,
                        const char* name,
                        uint8_t* out,
                        size_t cap,
                        size_t* len) {
    MDB_val k = {strlen(name), (void*)name};
    MDB_val v;
    int mrc = mdb_get(txn, s->dbi_meta, &k, &v);

    if (mrc == MDB_NOTFOUND) {
        return STORE_ENOTFOUND;
    }
    if (mrc != 0) {
        return log_fail_mdb(s, mrc, name);
    }
    const uint8_t* p = v.mv_data;
    if (v.mv_size < 8 || v.mv_size - 8 > cap ||
        store_get_le64(p + v.mv_size - 8) !=
            XXH64(p, v.mv_size - 8, LOG_META_SEED)) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: meta record \"%s\" is damaged "
                        "(checksum or size)",
                        s->env.dir, name);
    }
    *len = v.mv_size - 8;
    memcpy(out, p, *len);
    return STORE_OK;
}

static int log_put_hard_state(struct store_lmdb* s, MDB_txn* txn) {
    uint8_t b[24];

    store_put_le64(b, s->hs.term);
    store_put_le64(b + 8, s->hs.vote);
    store_put_le64(b + 16, s->hs.commit);
    return log_meta_put(s, txn, "hard_state", b, sizeof(b));
}

static int log_put_boundary(struct store_lmdb* s,
                            MDB_txn* txn,
                            raft_index index,
                            raft_term term) {
    uint8_t b[16];

    store_put_le64(b, index);
    store_put_le64(b + 8, term);
    return log_meta_put(s, txn, "boundary", b, sizeof(b));
}

static int log_put_snapshot(struct store_lmdb* s,
                            MDB_txn* txn,
                            const struct raft_snapshot_meta* snap) {
    uint8_t b[LOG_SNAP_MAX];
    size_t n = 0;

    store_put_le64(b, snap->index);
    store_put_le64(b + 8, snap->term);
    if (snap->index > 0) {
        n = raft_conf_encode(&snap->conf, b + 20);
    }
    store_put_le32(b + 16, (uint32_t)n);
    return log_meta_put(s, txn, "snapshot", b, 20 + n);
}

/* ------------------------------------------------------------------ */
/* Read transactions and the term cache                                */

static int log_rbegin(struct store_lmdb* s) {
    int mrc;

    if (s->rtxn == NULL) {
        mrc = mdb_txn_begin(s->env.env, NULL, MDB_RDONLY, &s->rtxn);
        if (mrc != 0) {
            s->rtxn = NULL;
        }
    } else {
        mrc = mdb_txn_renew(s->rtxn);
    }
    return mrc == 0 ? STORE_OK : log_fail_mdb(s, mrc, "read transaction");
}

static void log_rend(struct store_lmdb* s) {
    mdb_txn_reset(s->rtxn);
}

static void log_cache_term(struct store_lmdb* s,
                           raft_index index,
                           raft_term term) {
    struct log_term_slot* slot = &s->terms[index % LOG_TERM_CACHE];

    slot->index = index;
    slot->term = term;
}

/* Reads and verifies entry `index` (first <= index <= last) in txn. */
static int log_read_entry(struct store_lmdb* s,
                          MDB_txn* txn,
                          raft_index index,
                          struct raft_entry* out) {
    uint8_t kb[8];
    MDB_val k = {8, kb};
    MDB_val v;

    store_put_be64(kb, index);
    int mrc = mdb_get(txn, s->dbi_entries, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu is missing (log holds "
                        "%llu..%llu)",
                        s->env.dir, (unsigned long long)index,
                        (unsigned long long)s->first,
                        (unsigned long long)s->last);
    }
    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "read entry");
    }
    return log_decode(s, index, &k, &v, out);
}

/* Term of index in [first - 1, last]. */
static int log_term_of(struct store_lmdb* s, raft_index index, raft_term* out) {
    LOG_ASSERT(index + 1 >= s->first && index <= s->last);
    if (index == s->first - 1) {
        *out = s->boundary_term;
        return STORE_OK;
    }
    if (index == s->last) {
        *out = s->last_term;
        return STORE_OK;
    }
    const struct log_term_slot* slot = &s->terms[index % LOG_TERM_CACHE];
    if (slot->index == index) {
        *out = slot->term;
        return STORE_OK;
    }
    int rv = log_rbegin(s);
    if (rv != STORE_OK) {
        return rv;
    }
    struct raft_entry e;
    rv = log_read_entry(s, s->rtxn, index, &e);
    log_rend(s);
    if (rv == STORE_OK) {
        *out = e.term;
        log_cache_term(s, index, e.term);
    }
    return rv;
}

/* ------------------------------------------------------------------ */
/* Open, load and verification                                         */

/* Writes the format record and an empty log's meta (new environment). */
static int log_init_new(struct store_lmdb* s, MDB_txn* txn) {
    uint8_t b[LOG_MAGIC_LEN + 4];
    struct raft_snapshot_meta none;

    memcpy(b, LOG_MAGIC, LOG_MAGIC_LEN);
    store_put_le32(b + LOG_MAGIC_LEN, LOG_FORMAT);
    memset(&none, 0, sizeof(none));
    int rv = log_meta_put(s, txn, "format", b, sizeof(b));
    if (rv == STORE_OK) {
        rv = log_put_boundary(s, txn, 0, 0);
    }
    if (rv == STORE_OK) {
        rv = log_put_hard_state(s, txn);
    }
    if (rv == STORE_OK) {
        rv = log_put_snapshot(s, txn, &none);
    }
    return rv;
}

static int log_check_format(struct store_lmdb* s, MDB_txn* txn) {
    uint8_t b[64];
    size_t n;
    int rv = log_meta_get(s, txn, "format", b, sizeof(b), &n);

    if (rv != STORE_OK) {
        return rv;
    }
    if (n != LOG_MAGIC_LEN + 4 || memcmp(b, LOG_MAGIC, LOG_MAGIC_LEN) != 0) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: not a skein log (format record)",
                        s->env.dir);
    }
    uint32_t version = store_get_le32(b + LOG_MAGIC_LEN);
    if (version != LOG_FORMAT) {
        return log_fail(s, STORE_EVERSION,
                        "%s/data.mdb: log format version %u, this build "
                        "reads %u",
                        s->env.dir, version, LOG_FORMAT);
    }
    return STORE_OK;
}

/* Opens the databases and creates the meta of a new environment. */
static int log_open_dbs(struct store_lmdb* s) {
    MDB_txn* txn;
    int mrc = mdb_txn_begin(s->env.env, NULL, 0, &txn);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "begin");
    }
    mrc = mdb_dbi_open(txn, "entries", MDB_CREATE, &s->dbi_entries);
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->dbi_meta);
    }
    if (mrc != 0) {
        mdb_txn_abort(txn);
        return log_fail_mdb(s, mrc, "open databases");
    }
    int rv = log_check_format(s, txn);
    if (rv == STORE_ENOTFOUND) {
        MDB_stat st;
        mdb_stat(txn, s->dbi_entries, &st);
        if (st.ms_entries != 0) {
            mdb_txn_abort(txn);
            return log_fail(s, STORE_ECORRUPT,
                            "%s/data.mdb: entries without a format record",
                            s->env.dir);
        }
        rv = log_init_new(s, txn);
    }
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    rv = store_env_commit(&s->env, txn);
    if (rv != STORE_OK) {
        return log_fail(s, rv, "%s/data.mdb: commit: %s", s->env.dir,
                        store_strerror(rv));
    }
    return store_env_flush(&s->env);
}

/* Loads boundary, hard state and snapshot metadata. */
static int log_load_meta(struct store_lmdb* s, MDB_txn* txn) {
    uint8_t b[LOG_SNAP_MAX];
    size_t n;
    int rv = log_meta_get(s, txn, "boundary", b, sizeof(b), &n);

    if (rv == STORE_OK && n != 16) {
        rv = log_fail(s, STORE_ECORRUPT, "%s/data.mdb: boundary record size",
                      s->env.dir);
    }
    if (rv != STORE_OK) {
        return rv == STORE_ENOTFOUND
                   ? log_fail(s, STORE_ECORRUPT,
                              "%s/data.mdb: boundary record missing",
                              s->env.dir)
                   : rv;
    }
    s->first = store_get_le64(b) + 1;
    s->boundary_term = store_get_le64(b + 8);
    rv = log_meta_get(s, txn, "hard_state", b, sizeof(b), &n);
    if (rv != STORE_OK || n != 24) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: hard state record missing or damaged",
                        s->env.dir);
    }
    s->hs.term = store_get_le64(b);
    s->hs.vote = store_get_le64(b + 8);
    s->hs.commit = store_get_le64(b + 16);
    s->hs_flush = s->hs;
    rv = log_meta_get(s, txn, "snapshot", b, sizeof(b), &n);
    if (rv != STORE_OK || n < 20 || store_get_le32(b + 16) != n - 20) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: snapshot record missing or damaged",
                        s->env.dir);
    }
    memset(&s->snap, 0, sizeof(s->snap));
    s->snap.index = store_get_le64(b);
    s->snap.term = store_get_le64(b + 8);
    if (s->snap.index > 0 &&
        raft_conf_decode(b + 20, n - 20, &s->snap.conf) != RAFT_OK) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: snapshot record has a bad conf",
                        s->env.dir);
    }
    return STORE_OK;
}

/* Checks that the cursor's entry is the expected next one; sets *term. */
static int log_check_next(struct store_lmdb* s,
                          const MDB_val* k,
                          const MDB_val* v,
                          raft_index expected,
                          raft_term* term) {
    struct raft_entry e;
    raft_index got = k->mv_size == 8 ? store_get_be64(k->mv_data) : 0;

    if (got != expected) {
        if (got < expected) {
            return log_fail(s, STORE_ECORRUPT,
                            "%s/data.mdb: entry %llu lies below the expected "
                            "index %llu (compaction boundary or bad key)",
                            s->env.dir, (unsigned long long)got,
                            (unsigned long long)expected);
        }
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entries %llu..%llu are missing (the "
                        "log jumps to %llu)",
                        s->env.dir, (unsigned long long)expected,
                        (unsigned long long)(got - 1), (unsigned long long)got);
    }
    int rv = log_decode(s, expected, k, v, &e);
    if (rv != STORE_OK) {
        return rv;
    }
    if (e.term < *term) {
        return log_fail(s, STORE_ECORRUPT,
                        "%s/data.mdb: entry %llu has term %llu, lower than "
                        "the term %llu before it",
                        s->env.dir, (unsigned long long)expected,
                        (unsigned long long)e.term, (unsigned long long)*term);
    }
    log_cache_term(s, expected, e.term);
    *term = e.term;
    return STORE_OK;
}

/*
 * Scans the entries from the boundary on, verifying each one when `full`
 * (else only the first and the last one), and sets last and last_term.
 */
static int log_scan(struct store_lmdb* s, MDB_txn* txn, bool full) {
    MDB_cursor* c;
    MDB_val k, v;
    raft_index expected = s->first;
    raft_term term = s->boundary_term;
    int mrc = mdb_cursor_open(txn, s->dbi_entries, &c);
    int rv = STORE_OK;

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "cursor");
    }
    mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (mrc == 0) {
        rv = log_check_next(s, &k, &v, expected, &term);
        if (rv != STORE_OK) {
            break;
        }
        expected++;
        if (!full) {
            /* Trust the middle: check the last entry only. */
            mrc = mdb_cursor_get(c, &k, &v, MDB_LAST);
            if (mrc == 0 && store_get_be64(k.mv_data) >= expected) {
                expected = store_get_be64(k.mv_data);
                rv = log_check_next(s, &k, &v, expected, &term);
                expected++;
            }
            mrc = MDB_NOTFOUND;
            break;
        }
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rv == STORE_OK && mrc != MDB_NOTFOUND) {
        rv = log_fail_mdb(s, mrc, "scan");
    }
    if (rv == STORE_OK) {
        s->last = expected - 1;
        s->last_term = term;
    }
    return rv;
}

/* Loads the meta and the log's extent; verifies the log if `full`. */
static int log_load(struct store_lmdb* s, bool full) {
    MDB_txn* txn;
    int mrc = mdb_txn_begin(s->env.env, NULL, MDB_RDONLY, &txn);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "begin");
    }
    int rv = log_load_meta(s, txn);
    if (rv == STORE_OK) {
        rv = log_scan(s, txn, full);
    }
    mdb_txn_abort(txn);
    if (rv == STORE_OK) {
        s->durable = s->last;
    }
    return rv;
}

int store_lmdb_open(const char* dir,
                    const struct store_lmdb_options* opts,
                    struct store_lmdb** out,
                    char* errmsg) {
    struct store_lmdb_options def;
    struct store_env_config cfg;

    if (opts == NULL) {
        memset(&def, 0, sizeof(def));
        opts = &def;
    }
    struct store_lmdb* s = calloc(1, sizeof(*s));
    if (s == NULL) {
        store_errf(errmsg, "out of memory");
        return STORE_ENOMEM;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.map_size = opts->map_size;
    cfg.durability = opts->durability;
    cfg.max_dbs = 4;
    cfg.fast_flush_ms = opts->fast_flush_ms;
    int rv = store_env_open(&s->env, dir, &cfg, s->errmsg);
    if (rv == STORE_OK) {
        rv = log_open_dbs(s);
        if (rv == STORE_OK) {
            rv = log_load(s, !opts->skip_verify);
        }
    }
    if (rv != STORE_OK) {
        store_errf(errmsg, "%s", s->errmsg);
        store_env_close(&s->env);
        free(s);
        return rv;
    }
    s->verified = !opts->skip_verify;
    log_ok(s);
    *out = s;
    return STORE_OK;
}

void store_lmdb_close(struct store_lmdb* s) {
    if (s == NULL) {
        return;
    }
    if (s->rtxn != NULL) {
        mdb_txn_abort(s->rtxn);
    }
    store_env_close(&s->env);
    free(s->buf);
    free(s);
}

int store_lmdb_verify(struct store_lmdb* s) {
    raft_index last = s->last;
    raft_term last_term = s->last_term;
    raft_index first = s->first;
    raft_term boundary = s->boundary_term;
    MDB_txn* txn;
    int mrc = mdb_txn_begin(s->env.env, NULL, MDB_RDONLY, &txn);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "begin");
    }
    int rv = log_scan(s, txn, true);
    mdb_txn_abort(txn);
    if (rv == STORE_OK && (s->last != last || s->last_term != last_term ||
                           s->first != first || s->boundary_term != boundary)) {
        rv = log_fail(s, STORE_ECORRUPT,
                      "%s/data.mdb: stored log %llu..%llu differs from the "
                      "one in memory %llu..%llu",
                      s->env.dir, (unsigned long long)first,
                      (unsigned long long)s->last, (unsigned long long)first,
                      (unsigned long long)last);
    }
    s->last = last;
    s->last_term = last_term;
    return rv == STORE_OK ? log_ok(s) : rv;
}

/* ------------------------------------------------------------------ */
/* store_ops                                                           */

static int log_op_load(void* ctx, struct raft_start_state* out) {
    struct store_lmdb* s = ctx;

    /* Never start a core on a log that was not checked end to end. */
    if (!s->verified) {
        if (store_lmdb_verify(s) != STORE_OK) {
            return RAFT_ESTORAGE;
        }
        s->verified = true;
    }
    out->hard_state = s->hs;
    out->snapshot = s->snap;
    out->applied = s->snap.index; /* the state machine is in kv_state */
    log_ok(s);
    return RAFT_OK;
}

static int log_check_append(struct store_lmdb* s,
                            const struct raft_entry* entries,
                            size_t n) {
    if (n == 0 || entries == NULL) {
        return log_fail(s, STORE_EINVAL, "append: no entries");
    }
    raft_index lo = entries[0].index;
    if (lo < s->first || lo > s->last + 1) {
        return log_fail(s, STORE_EINVAL,
                        "append: index %llu outside [%llu, %llu]",
                        (unsigned long long)lo, (unsigned long long)s->first,
                        (unsigned long long)(s->last + 1));
    }
    raft_term prev = 0;
    if (log_term_of(s, lo - 1, &prev) != STORE_OK) {
        return s->last_error;
    }
    for (size_t i = 0; i < n; i++) {
        const struct raft_entry* e = &entries[i];
        if (e->index != lo + i || e->term == 0 || e->term < prev ||
            e->type > RAFT_ENTRY_CONF || e->len > STORE_LMDB_MAX_ENTRY_BYTES ||
            (e->len > 0 && e->data == NULL)) {
            return log_fail(s, STORE_EINVAL,
                            "append: entry %zu (index %llu, term %llu) is "
                            "not valid after term %llu",
                            i, (unsigned long long)e->index,
                            (unsigned long long)e->term,
                            (unsigned long long)prev);
        }
        prev = e->term;
    }
    return STORE_OK;
}

/* Deletes every stored entry with index >= lo. */
static int log_delete_from(struct store_lmdb* s, MDB_txn* txn, raft_index lo) {
    MDB_cursor* c;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->dbi_entries, &c);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "cursor");
    }
    while ((mrc = mdb_cursor_get(c, &k, &v, MDB_LAST)) == 0 &&
           store_get_be64(k.mv_data) >= lo) {
        mrc = mdb_cursor_del(c, 0);
        if (mrc != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        return log_fail_mdb(s, mrc, "truncate suffix");
    }
    return STORE_OK;
}

static int log_put_entries(struct store_lmdb* s,
                           MDB_txn* txn,
                           const struct raft_entry* entries,
                           size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t kb[8];
        MDB_val k = {8, kb};
        MDB_val v = {STORE_LMDB_ENTRY_HEADER + (size_t)entries[i].len, NULL};

        store_put_be64(kb, entries[i].index);
        int mrc =
            mdb_put(txn, s->dbi_entries, &k, &v, MDB_APPEND | MDB_RESERVE);
        if (mrc != 0) {
            return log_fail_mdb(s, mrc, "append");
        }
        log_encode(v.mv_data, &entries[i]);
        s->stats.bytes_written += v.mv_size;
    }
    return STORE_OK;
}

static int log_op_append(void* ctx,
                         const struct raft_entry* entries,
                         size_t n) {
    struct store_lmdb* s = ctx;
    MDB_txn* txn;
    int rv = log_check_append(s, entries, n);

    if (rv != STORE_OK) {
        return store_err_to_raft(rv);
    }
    raft_index lo = entries[0].index;
    int mrc = mdb_txn_begin(s->env.env, NULL, 0, &txn);
    if (mrc != 0) {
        return store_err_to_raft(log_fail_mdb(s, mrc, "begin"));
    }
    if (lo <= s->last) {
        rv = log_delete_from(s, txn, lo);
    }
    if (rv == STORE_OK) {
        rv = log_put_entries(s, txn, entries, n);
    }
    if (rv == STORE_OK && s->hs_pending) {
        rv = log_put_hard_state(s, txn);
    }
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return store_err_to_raft(rv);
    }
    rv = store_env_commit(&s->env, txn);
    if (rv != STORE_OK) {
        return store_err_to_raft(log_fail(s, rv, "%s/data.mdb: commit: %s",
                                          s->env.dir, store_strerror(rv)));
    }
    s->hs_pending = false;
    for (size_t i = 0; i < n; i++) {
        log_cache_term(s, entries[i].index, entries[i].term);
    }
    s->last = entries[n - 1].index;
    s->last_term = entries[n - 1].term;
    if (s->durable >= lo) {
        s->durable = lo - 1;
    }
    s->stats.appends++;
    s->stats.entries += n;
    log_ok(s);
    return RAFT_OK;
}

static int log_op_save_hard_state(void* ctx, const struct raft_hard_state* hs) {
    struct store_lmdb* s = ctx;

    s->hs = *hs;
    s->hs_pending = true;
    log_ok(s);
    return RAFT_OK;
}

/* Writes a staged hard state in its own transaction. */
static int log_write_pending_hs(struct store_lmdb* s) {
    MDB_txn* txn;
    int mrc = mdb_txn_begin(s->env.env, NULL, 0, &txn);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "begin");
    }
    int rv = log_put_hard_state(s, txn);
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    rv = store_env_commit(&s->env, txn);
    if (rv != STORE_OK) {
        return log_fail(s, rv, "%s/data.mdb: commit hard state: %s", s->env.dir,
                        store_strerror(rv));
    }
    s->hs_pending = false;
    return STORE_OK;
}

static int log_op_sync(void* ctx,
                       raft_index* durable_index,
                       raft_term* durable_term) {
    struct store_lmdb* s = ctx;
    int rv = STORE_OK;

    if (s->hs_pending) {
        rv = log_write_pending_hs(s);
        if (rv != STORE_OK) {
            return store_err_to_raft(rv);
        }
    }
    bool vote_changed =
        s->hs.term != s->hs_flush.term || s->hs.vote != s->hs_flush.vote;
    bool was_dirty = s->env.meta_dirty;
    rv = store_env_sync_batch(&s->env, vote_changed);
    if (rv != STORE_OK) {
        return store_err_to_raft(log_fail(s, rv,
                                          "%s/data.mdb: flush failed: %s",
                                          s->env.dir, store_strerror(rv)));
    }
    if (was_dirty && !s->env.meta_dirty) {
        s->stats.flushes++;
        s->hs_flush = s->hs;
    }
    s->durable = s->last;
    s->stats.syncs++;
    *durable_index = s->durable;
    *durable_term = s->last_term;
    log_ok(s);
    return RAFT_OK;
}

/* Deletes entries first..index in chunks, moving the boundary along. */
static int log_compact_chunk(struct store_lmdb* s,
                             raft_index upto,
                             const struct raft_snapshot_meta* snap) {
    MDB_txn* txn;
    MDB_cursor* c;
    MDB_val k, v;
    raft_term upto_term;
    int rv = log_term_of(s, upto, &upto_term);

    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_txn_begin(s->env.env, NULL, 0, &txn);
    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "begin");
    }
    mrc = mdb_cursor_open(txn, s->dbi_entries, &c);
    while (mrc == 0 && (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0 &&
           store_get_be64(k.mv_data) <= upto) {
        mrc = mdb_cursor_del(c, 0);
    }
    if (mrc == MDB_NOTFOUND || mrc == 0) {
        mdb_cursor_close(c);
        rv = log_put_boundary(s, txn, upto, upto_term);
        if (rv == STORE_OK && snap != NULL) {
            rv = log_put_snapshot(s, txn, snap);
        }
    } else {
        rv = log_fail_mdb(s, mrc, "compact");
    }
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    rv = store_env_commit(&s->env, txn);
    if (rv != STORE_OK) {
        return log_fail(s, rv, "%s/data.mdb: commit compaction: %s", s->env.dir,
                        store_strerror(rv));
    }
    s->first = upto + 1;
    s->boundary_term = upto_term;
    return STORE_OK;
}

static int log_op_compact(void* ctx,
                          const struct raft_snapshot_meta* snap,
                          raft_index index) {
    struct store_lmdb* s = ctx;

    if (snap == NULL || snap->index < s->snap.index || index > snap->index ||
        index + 1 < s->first || index > s->durable) {
        return store_err_to_raft(log_fail(
            s, STORE_EINVAL,
            "compact: index %llu not in [%llu, min(%llu, %llu)]",
            (unsigned long long)index, (unsigned long long)(s->first - 1),
            (unsigned long long)(snap != NULL ? snap->index : 0),
            (unsigned long long)s->durable));
    }
    /* The snapshot record goes with the first chunk, so at every crash
     * point the boundary is at or below the recorded snapshot. */
    const struct raft_snapshot_meta* pending = snap;
    int rv = STORE_OK;
    do {
        raft_index upto = index;
        if (upto >= s->first && upto - s->first >= LOG_COMPACT_CHUNK) {
            upto = s->first + LOG_COMPACT_CHUNK - 1;
        }
        rv = log_compact_chunk(s, upto, pending);
        if (rv == STORE_OK && pending != NULL) {
            s->snap = *pending;
            pending = NULL;
        }
    } while (rv == STORE_OK && s->first <= index);
    if (rv == STORE_OK) {
        rv = store_env_sync_batch(&s->env, true);
    }
    if (rv != STORE_OK) {
        if (s->last_error == STORE_OK) {
            log_fail(s, rv, "%s/data.mdb: compaction flush: %s", s->env.dir,
                     store_strerror(rv));
        }
        return store_err_to_raft(rv);
    }
    log_ok(s);
    return RAFT_OK;
}

static int log_op_install_snapshot(void* ctx,
                                   const struct raft_snapshot_meta* snap) {
    struct store_lmdb* s = ctx;
    MDB_txn* txn;

    if (snap == NULL || snap->index == 0 || snap->term == 0) {
        return store_err_to_raft(
            log_fail(s, STORE_EINVAL, "install_snapshot: empty snapshot"));
    }
    int mrc = mdb_txn_begin(s->env.env, NULL, 0, &txn);
    if (mrc != 0) {
        return store_err_to_raft(log_fail_mdb(s, mrc, "begin"));
    }
    int rv = STORE_OK;
    mrc = mdb_drop(txn, s->dbi_entries, 0);
    if (mrc != 0) {
        rv = log_fail_mdb(s, mrc, "drop log");
    }
    if (rv == STORE_OK) {
        rv = log_put_boundary(s, txn, snap->index, snap->term);
    }
    if (rv == STORE_OK) {
        rv = log_put_snapshot(s, txn, snap);
    }
    if (rv == STORE_OK && s->hs_pending) {
        rv = log_put_hard_state(s, txn);
    }
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return store_err_to_raft(rv);
    }
    rv = store_env_commit(&s->env, txn);
    if (rv == STORE_OK) {
        s->hs_pending = false;
        s->snap = *snap;
        s->first = snap->index + 1;
        s->boundary_term = snap->term;
        s->last = snap->index;
        s->last_term = snap->term;
        s->durable = snap->index;
        rv = store_env_sync_batch(&s->env, true);
    }
    if (rv != STORE_OK) {
        return store_err_to_raft(log_fail(s, rv,
                                          "%s/data.mdb: install snapshot: %s",
                                          s->env.dir, store_strerror(rv)));
    }
    log_ok(s);
    return RAFT_OK;
}

/* ------------------------------------------------------------------ */
/* The raft_storage view: the durable log only                         */

static raft_index log_view_first(void* ctx) {
    const struct store_lmdb* s = ctx;
    return s->first;
}

static raft_index log_view_last(void* ctx) {
    const struct store_lmdb* s = ctx;
    return s->durable;
}

static int log_view_term(void* ctx, raft_index index, raft_term* out) {
    struct store_lmdb* s = ctx;

    if (index + 1 < s->first) {
        return RAFT_ECOMPACTED;
    }
    if (index > s->durable) {
        return RAFT_EINVAL;
    }
    return store_err_to_raft(log_term_of(s, index, out));
}

static int log_buf_reserve(struct store_lmdb* s, size_t need) {
    if (need <= s->buf_cap) {
        return STORE_OK;
    }
    size_t cap = s->buf_cap < 4096 ? 4096 : s->buf_cap;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t* b = realloc(s->buf, cap);
    if (b == NULL) {
        return log_fail(s, STORE_ENOMEM, "entries: out of memory");
    }
    s->buf = b;
    s->buf_cap = cap;
    return STORE_OK;
}

/* Copies verified entries [lo, hi) into s->buf; see raft_storage. */
static int log_copy_entries(struct store_lmdb* s,
                            raft_index lo,
                            raft_index hi,
                            size_t max_bytes,
                            struct raft_entry* out,
                            size_t* n) {
    MDB_cursor* c;
    uint8_t kb[8];
    MDB_val k = {8, kb};
    MDB_val v;
    size_t bytes = 0;
    int rv = STORE_OK;
    int mrc = mdb_cursor_open(s->rtxn, s->dbi_entries, &c);

    if (mrc != 0) {
        return log_fail_mdb(s, mrc, "cursor");
    }
    store_put_be64(kb, lo);
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    for (raft_index i = lo; i < hi && rv == STORE_OK; i++) {
        struct raft_entry e;
        if (mrc != 0) {
            rv = mrc == MDB_NOTFOUND
                     ? log_fail(s, STORE_ECORRUPT,
                                "%s/data.mdb: entry %llu is missing",
                                s->env.dir, (unsigned long long)i)
                     : log_fail_mdb(s, mrc, "read entries");
            break;
        }
        rv = log_decode(s, i, &k, &v, &e);
        if (rv != STORE_OK) {
            break;
        }
        if (*n > 0 && bytes + e.len > max_bytes) {
            break;
        }
        rv = log_buf_reserve(s, bytes + e.len);
        if (rv != STORE_OK) {
            break;
        }
        if (e.len > 0) {
            memcpy(s->buf + bytes, e.data, e.len);
        }
        bytes += e.len;
        out[(*n)++] = e;
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    /* Data was packed in order: point each entry at its copy. */
    size_t off = 0;
    for (size_t j = 0; j < *n; j++) {
        out[j].data = out[j].len > 0 ? s->buf + off : NULL;
        off += out[j].len;
    }
    return rv;
}

static int log_view_entries(void* ctx,
                            raft_index lo,
                            raft_index hi,
                            size_t max_bytes,
                            struct raft_entry* out,
                            size_t* n) {
    struct store_lmdb* s = ctx;

    *n = 0;
    if (lo < s->first) {
        return RAFT_ECOMPACTED;
    }
    if (hi < lo || hi > s->durable + 1) {
        return RAFT_EINVAL;
    }
    if (hi == lo) {
        return RAFT_OK;
    }
    int rv = log_rbegin(s);
    if (rv != STORE_OK) {
        return store_err_to_raft(rv);
    }
    rv = log_copy_entries(s, lo, hi, max_bytes, out, n);
    log_rend(s);
    if (rv != STORE_OK) {
        *n = 0;
        return store_err_to_raft(rv);
    }
    return RAFT_OK;
}

static void log_op_storage(void* ctx, struct raft_storage* out) {
    out->ctx = ctx;
    out->first_index = log_view_first;
    out->last_index = log_view_last;
    out->term = log_view_term;
    out->entries = log_view_entries;
}

static const struct store_ops store_lmdb_ops = {
    .load = log_op_load,
    .append = log_op_append,
    .save_hard_state = log_op_save_hard_state,
    .sync = log_op_sync,
    .compact = log_op_compact,
    .install_snapshot = log_op_install_snapshot,
    .storage = log_op_storage,
};

/* ------------------------------------------------------------------ */
/* Accessors                                                           */

void store_lmdb_store(struct store_lmdb* s, struct store* out) {
    out->ops = &store_lmdb_ops;
    out->ctx = s;
}

int store_lmdb_last_error(const struct store_lmdb* s) {
    return s->last_error;
}

const char* store_lmdb_errmsg(const struct store_lmdb* s) {
    return s->errmsg;
}

int store_lmdb_set_map_size(struct store_lmdb* s, size_t bytes) {
    if (s->rtxn != NULL) {
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    int rv = store_env_set_map_size(&s->env, bytes);
    if (rv != STORE_OK) {
        return log_fail(s, rv, "%s: cannot set the map size to %zu bytes",
                        s->env.dir, bytes);
    }
    return log_ok(s);
}

size_t store_lmdb_map_size(const struct store_lmdb* s) {
    return s->env.map_size;
}

raft_index store_lmdb_first_index(const struct store_lmdb* s) {
    return s->first;
}

raft_index store_lmdb_last_index(const struct store_lmdb* s) {
    return s->last;
}

raft_index store_lmdb_durable_index(const struct store_lmdb* s) {
    return s->durable;
}

struct raft_hard_state store_lmdb_hard_state(const struct store_lmdb* s) {
    return s->hs;
}

struct raft_snapshot_meta store_lmdb_snapshot(const struct store_lmdb* s) {
    return s->snap;
}

raft_term store_lmdb_boundary_term(const struct store_lmdb* s) {
    return s->boundary_term;
}

void store_lmdb_stats(const struct store_lmdb* s,
                      struct store_lmdb_stats* out) {
    *out = s->stats;
}
