/*
 * kv_state.c - the state machine on LMDB (see kv_state.h for the rules).
 *
 * The apply thread keeps the counters of the last committed batch in
 * kv->st; a batch works on them in place and restores them if its
 * transaction fails, so memory always matches what is stored.
 */
#include "kv_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "kv_internal.h"
#include "skein.pb-c.h"

#define KV_HASH_SEED    0x736b65696e6b7668ULL /* "skeinkvh" */
#define KV_KEY_PREFIX   0x01                  /* kv_by_key key prefix */
#define KV_IDEM_VERSION 1
#define KV_IDEM_HDR     36
#define KV_ARENA_MIN    (64 * 1024)
#define KV_ERR_MAX      200
#define KV_TRIM_EVERY   1024 /* records scanned between trims */

_Static_assert((int)KV_STATUS_OK == (int)SKEIN__CLIENT_RESPONSE__STATUS__OK,
               "kv_status mirrors ClientResponse.Status");
_Static_assert((int)KV_STATUS_NOT_FOUND ==
                   (int)SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND,
               "kv_status mirrors ClientResponse.Status");
_Static_assert((int)KV_STATUS_CAS_MISMATCH ==
                   (int)SKEIN__CLIENT_RESPONSE__STATUS__CAS_MISMATCH,
               "kv_status mirrors ClientResponse.Status");
_Static_assert((int)KV_STATUS_BAD_REQUEST ==
                   (int)SKEIN__CLIENT_RESPONSE__STATUS__BAD_REQUEST,
               "kv_status mirrors ClientResponse.Status");

/* Stays on in release builds: a broken state machine must stop. */
#define KV_ASSERT(cond)                                                   \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: kv assertion failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                     \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* ------------------------------------------------------------------ */
/* Errors and small helpers                                            */

static int kv_fail(struct kv_state* kv, int code, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int kv_fail(struct kv_state* kv, int code, const char* fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(kv->errmsg, sizeof(kv->errmsg), fmt, ap);
    va_end(ap);
    kv->last_error = code;
    return code;
}

static int kv_fail_mdb(struct kv_state* kv, int mrc, const char* what) {
    int code = store_err_from_mdb(mrc);

    return kv_fail(kv, code, "%s/data.mdb: %s: %s (%s)", kv->dir, what,
                   store_strerror(code), mdb_strerror(mrc));
}

static void kv_ok(struct kv_state* kv) {
    kv->last_error = STORE_OK;
    kv->errmsg[0] = '\0';
}

static int kv_buf_reserve(struct kv_buf* b, size_t need) {
    if (need <= b->cap) {
        return STORE_OK;
    }
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t* p = realloc(b->data, cap);
    if (p == NULL) {
        return STORE_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return STORE_OK;
}

size_t kv_buf_put(struct kv_buf* buf, const void* data, size_t len) {
    if (kv_buf_reserve(buf, buf->len + len + 1) != STORE_OK) {
        return SIZE_MAX;
    }
    size_t off = buf->len;
    if (len > 0) {
        memcpy(buf->data + off, data, len);
    }
    buf->data[off + len] = '\0';
    buf->len += len + 1;
    return off;
}

void kv_buf_free(struct kv_buf* buf) {
    if (buf == NULL) {
        return;
    }
    free(buf->data);
    memset(buf, 0, sizeof(*buf));
}

const char* kv_status_name(uint32_t status) {
    switch (status) {
        case KV_STATUS_OK:
            return "ok";
        case KV_STATUS_NOT_FOUND:
            return "not found";
        case KV_STATUS_CAS_MISMATCH:
            return "cas mismatch";
        case KV_STATUS_BAD_REQUEST:
            return "bad request";
        default:
            return "unknown";
    }
}

static const char* kv_str(const char* s) {
    return s != NULL ? s : "";
}

uint64_t kv_entry_hash(const struct kv_entry* e) {
    uint8_t hdr[36];

    store_put_le32(hdr, e->id_len);
    store_put_le32(hdr + 4, e->key_len);
    store_put_le32(hdr + 8, e->value_len);
    store_put_le64(hdr + 12, e->seq);
    store_put_le64(hdr + 20, e->source_node);
    store_put_le64(hdr + 28, (uint64_t)e->created_at);
    uint64_t h = XXH64(hdr, sizeof(hdr), KV_HASH_SEED);
    h = XXH64(kv_str(e->id), e->id_len, h);
    h = XXH64(kv_str(e->key), e->key_len, h);
    return XXH64(kv_str(e->value), e->value_len, h);
}

/* A view of a protobuf KVEntry as a kv_entry (borrowing its strings). */
static struct kv_entry kv_entry_of(const Skein__KVEntry* p) {
    struct kv_entry e;

    e.id = kv_str(p->id);
    e.id_len = (uint32_t)strlen(e.id);
    e.key = kv_str(p->key);
    e.key_len = (uint32_t)strlen(e.key);
    e.value = kv_str(p->value);
    e.value_len = (uint32_t)strlen(e.value);
    e.seq = p->seq;
    e.source_node = p->source_node;
    e.created_at = p->created_at;
    return e;
}

/* ------------------------------------------------------------------ */
/* The arena handed to protobuf-c                                      */

static void* kv_arena_alloc(void* data, size_t size) {
    struct kv_arena* a = data;
    size_t need = (size + 15) & ~(size_t)15;

    a->asked += need;
    if (a->block != NULL && a->used + need <= a->cap) {
        void* p = a->block + a->used;
        a->used += need;
        return p;
    }
    if (a->n_big == a->big_cap) {
        size_t cap = a->big_cap ? a->big_cap * 2 : 16;
        void** big = realloc(a->big, cap * sizeof(*big));
        if (big == NULL) {
            return NULL;
        }
        a->big = big;
        a->big_cap = cap;
    }
    void* p = malloc(size > 0 ? size : 1);
    if (p != NULL) {
        a->big[a->n_big++] = p;
    }
    return p;
}

static void kv_arena_free(void* data, void* ptr) {
    (void)data;
    (void)ptr; /* freed in bulk by kv_arena_reset */
}

/* Frees what did not fit and grows the block for the next entry. */
static void kv_arena_reset(struct kv_arena* a) {
    for (size_t i = 0; i < a->n_big; i++) {
        free(a->big[i]);
    }
    a->n_big = 0;
    if (a->asked > a->high) {
        a->high = a->asked;
    }
    if (a->high > a->cap) {
        size_t cap = a->high < KV_ARENA_MIN ? KV_ARENA_MIN : a->high * 2;
        uint8_t* b = malloc(cap);
        if (b != NULL) {
            free(a->block);
            a->block = b;
            a->cap = cap;
        }
    }
    a->used = 0;
    a->asked = 0;
}

static void kv_arena_close(struct kv_arena* a) {
    kv_arena_reset(a);
    free(a->block);
    free(a->big);
    memset(a, 0, sizeof(*a));
}

/* ------------------------------------------------------------------ */
/* Meta records                                                        */

void kv_meta_encode(const struct kv_stats* st, uint8_t* out) {
    store_put_le64(out, st->applied_index);
    store_put_le64(out + 8, st->applied_term);
    store_put_le64(out + 16, st->seq);
    store_put_le64(out + 24, st->count);
    store_put_le64(out + 32, st->hash);
    store_put_le64(out + 40, st->idem_window);
    store_put_le64(out + 48, st->conf_index);
}

int kv_meta_decode(const MDB_val* v, struct kv_stats* out) {
    const uint8_t* p = v->mv_data;

    if (v->mv_size != KV_STATE_REC + 8 ||
        store_get_le64(p + KV_STATE_REC) !=
            XXH64(p, KV_STATE_REC, KV_META_SEED)) {
        return STORE_ECORRUPT;
    }
    out->applied_index = store_get_le64(p);
    out->applied_term = store_get_le64(p + 8);
    out->seq = store_get_le64(p + 16);
    out->count = store_get_le64(p + 24);
    out->hash = store_get_le64(p + 32);
    out->idem_window = store_get_le64(p + 40);
    out->conf_index = store_get_le64(p + 48);
    return STORE_OK;
}

int kv_format_check(const MDB_val* v) {
    const uint8_t* p = v->mv_data;

    if (v->mv_size != KV_FORMAT_MAGIC_LEN + 4 ||
        memcmp(p, KV_FORMAT_MAGIC, KV_FORMAT_MAGIC_LEN) != 0) {
        return STORE_ECORRUPT;
    }
    if (store_get_le32(p + KV_FORMAT_MAGIC_LEN) != KV_FORMAT_VERSION) {
        return STORE_EVERSION;
    }
    return STORE_OK;
}

static int kv_put_meta_state(struct kv_state* kv, MDB_txn* txn) {
    uint8_t rec[KV_STATE_REC + 8];
    MDB_val k = {5, (void*)"state"};
    MDB_val v = {sizeof(rec), rec};

    kv_meta_encode(&kv->st, rec);
    store_put_le64(rec + KV_STATE_REC, XXH64(rec, KV_STATE_REC, KV_META_SEED));
    int mrc = mdb_put(txn, kv->dbi_meta, &k, &v, 0);
    return mrc == 0 ? STORE_OK : kv_fail_mdb(kv, mrc, "write meta");
}

static int kv_idem_rebuild(struct kv_state* kv);
static int kv_rbegin(struct kv_state* kv, MDB_txn** txn);
static void kv_rend(struct kv_state* kv, MDB_txn* txn);
static int kv_load_meta(struct kv_state* kv, MDB_txn* txn);

static int64_t kv_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kv_maybe_trim(struct kv_state* kv, uint64_t n);

/* ------------------------------------------------------------------ */
/* Open and close                                                      */

static int kv_init_new(struct kv_state* kv, MDB_txn* txn) {
    uint8_t fmt[KV_FORMAT_MAGIC_LEN + 4];
    MDB_val k = {6, (void*)"format"};
    MDB_val v = {sizeof(fmt), fmt};

    memcpy(fmt, KV_FORMAT_MAGIC, KV_FORMAT_MAGIC_LEN);
    store_put_le32(fmt + KV_FORMAT_MAGIC_LEN, KV_FORMAT_VERSION);
    int mrc = mdb_put(txn, kv->dbi_meta, &k, &v, 0);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "write format");
    }
    memset(&kv->st, 0, sizeof(kv->st));
    kv->st.idem_window =
        kv->opts.idem_window ? kv->opts.idem_window : KV_IDEM_WINDOW_DEFAULT;
    return kv_put_meta_state(kv, txn);
}

/* Checks the format and loads the counters (creating a new state). */
static int kv_load_meta(struct kv_state* kv, MDB_txn* txn) {
    MDB_val k = {6, (void*)"format"};
    MDB_val v;
    int mrc = mdb_get(txn, kv->dbi_meta, &k, &v);

    if (mrc == MDB_NOTFOUND) {
        MDB_stat st;
        mdb_stat(txn, kv->dbi_kv, &st);
        if (st.ms_entries != 0) {
            return kv_fail(kv, STORE_ECORRUPT,
                           "%s/data.mdb: entries without a format record",
                           kv->dir);
        }
        return kv_init_new(kv, txn);
    }
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "read format");
    }
    int rv = kv_format_check(&v);
    if (rv != STORE_OK) {
        return kv_fail(kv, rv, "%s/data.mdb: %s", kv->dir,
                       rv == STORE_EVERSION ? "unknown state format version"
                                            : "not a skein state");
    }
    k.mv_size = 5;
    k.mv_data = (void*)"state";
    mrc = mdb_get(txn, kv->dbi_meta, &k, &v);
    if (mrc != 0 || kv_meta_decode(&v, &kv->st) != STORE_OK) {
        return kv_fail(kv, STORE_ECORRUPT,
                       "%s/data.mdb: meta \"state\" record missing or "
                       "damaged",
                       kv->dir);
    }
    return STORE_OK;
}

static int kv_open_dbs(struct kv_state* kv) {
    MDB_txn* txn;
    int mrc = mdb_txn_begin(kv->env.env, NULL, 0, &txn);

    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "begin");
    }
    mrc = mdb_dbi_open(txn, "kv", MDB_CREATE, &kv->dbi_kv);
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "kv_by_key", MDB_CREATE | MDB_DUPSORT,
                           &kv->dbi_by_key);
    }
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "idem", MDB_CREATE, &kv->dbi_idem);
    }
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &kv->dbi_meta);
    }
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, "restore", MDB_CREATE, &kv->dbi_restore);
    }
    if (mrc != 0) {
        mdb_txn_abort(txn);
        return kv_fail_mdb(kv, mrc, "open databases");
    }
    int rv = kv_load_meta(kv, txn);
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    rv = store_env_commit(&kv->env, txn);
    if (rv != STORE_OK) {
        return kv_fail(kv, rv, "%s/data.mdb: commit: %s", kv->dir,
                       store_strerror(rv));
    }
    return store_env_flush(&kv->env);
}

int kv_env_reopen(struct kv_state* kv, char* errmsg) {
    struct store_env_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.map_size = kv->opts.map_size;
    cfg.durability = kv->opts.durability;
    cfg.max_dbs = 8;
    cfg.extra_flags = MDB_NORDAHEAD;
    cfg.fast_flush_ms = kv->opts.fast_flush_ms;
    int rv = store_env_open(&kv->env, kv->dir, &cfg, kv->errmsg);
    if (rv == STORE_OK) {
        rv = kv_open_dbs(kv);
        if (rv != STORE_OK) {
            store_env_close(&kv->env);
        }
    }
    if (rv != STORE_OK) {
        kv->last_error = rv;
        store_errf(errmsg, "%s", kv->errmsg);
        return rv;
    }
    rv = kv_idem_rebuild(kv);
    if (rv != STORE_OK) {
        store_errf(errmsg, "%s", kv->errmsg);
        store_env_close(&kv->env);
        return rv;
    }
    kv->durable_applied = kv->st.applied_index;
    kv_ok(kv);
    return STORE_OK;
}

void kv_env_close(struct kv_state* kv) {
    if (kv->pending != NULL) {
        /* on failure the batches are replayed from the log at reopen */
        (void)kv_commit_pending(kv);
    }
    store_env_close(&kv->env);
}

int kv_open(const char* dir,
            const struct kv_options* opts,
            struct kv_state** out,
            char* errmsg) {
    struct kv_state* kv = calloc(1, sizeof(*kv));

    if (kv == NULL || (kv->dir = strdup(dir)) == NULL) {
        free(kv);
        store_errf(errmsg, "out of memory");
        return STORE_ENOMEM;
    }
    if (opts != NULL) {
        kv->opts = *opts;
    }
    kv->rss_budget = kv->opts.rss_file_budget ? kv->opts.rss_file_budget
                                              : KV_RSS_FILE_BUDGET_DEFAULT;
    atomic_init(&kv->ops, 0);
    int rv = kv_snapshot_recover_dirs(dir, errmsg);
    if (rv == STORE_OK) {
        rv = kv_env_reopen(kv, errmsg);
    }
    if (rv != STORE_OK) {
        free(kv->dir);
        free(kv);
        return rv;
    }
    *out = kv;
    return STORE_OK;
}

void kv_close(struct kv_state* kv) {
    if (kv == NULL) {
        return;
    }
    kv_env_close(kv);
    kv_arena_close(&kv->arena);
    free(kv->idem.slots);
    kv_buf_free(&kv->res);
    kv_buf_free(&kv->scratch);
    free(kv->offs);
    free(kv->dir);
    free(kv);
}

/* ------------------------------------------------------------------ */
/* Applying one NORMAL entry                                           */

/* What the apply helpers share for one entry. */
struct kv_apply {
    struct kv_state* kv;        /* the state */
    MDB_txn* txn;               /* the batch's write transaction */
    const struct raft_entry* e; /* the entry */
    struct kv_result* r;        /* its result */
    struct kv_res_offs* o;      /* its result's string offsets */
    ProtobufCAllocator alloc;   /* kv->arena */
    const char* rid;            /* request id, NULL if none */
    size_t rid_len;             /* bytes at rid */
};

/* Copies a string into the result buffer; returns its offset. */
static int kv_res_str(struct kv_apply* a,
                      const char* s,
                      size_t len,
                      size_t* off) {
    *off = kv_buf_put(&a->kv->res, s, len);
    return *off == SIZE_MAX ? STORE_ENOMEM : STORE_OK;
}

static int kv_res_entry(struct kv_apply* a, const struct kv_entry* e) {
    int rv = kv_res_str(a, e->id, e->id_len, &a->o->id);

    if (rv == STORE_OK) {
        rv = kv_res_str(a, e->key, e->key_len, &a->o->key);
    }
    if (rv == STORE_OK) {
        rv = kv_res_str(a, e->value, e->value_len, &a->o->value);
    }
    a->r->has_entry = true;
    a->r->entry.id_len = e->id_len;
    a->r->entry.key_len = e->key_len;
    a->r->entry.value_len = e->value_len;
    a->r->entry.seq = e->seq;
    a->r->entry.source_node = e->source_node;
    a->r->entry.created_at = e->created_at;
    return rv;
}

/* Answers the entry with a non-OK status and a detail text. */
static int kv_res_status(struct kv_apply* a, uint32_t status, const char* why) {
    a->r->status = status;
    a->o->has_error = why != NULL;
    return why != NULL ? kv_res_str(a, why, strlen(why), &a->o->error)
                       : STORE_OK;
}

/*
 * Packs `p` into kv->scratch without its id (the database key holds it:
 * 38 bytes less per entry); sets *v to the packed bytes.
 */
static int kv_pack_entry(struct kv_state* kv,
                         const Skein__KVEntry* p,
                         MDB_val* v) {
    Skein__KVEntry q = *p;

    q.id = NULL;
    size_t n = skein__kventry__get_packed_size(&q);
    if (kv_buf_reserve(&kv->scratch, n) != STORE_OK) {
        return kv_fail(kv, STORE_ENOMEM, "apply: out of memory");
    }
    skein__kventry__pack(&q, kv->scratch.data);
    v->mv_size = n;
    v->mv_data = kv->scratch.data;
    return STORE_OK;
}

/* Index key 0x01 || key into kb (KV_KEY_MAX + 1 bytes). */
static MDB_val kv_index_key(uint8_t* kb, const char* key, size_t len) {
    MDB_val k = {len + 1, kb};

    kb[0] = KV_KEY_PREFIX;
    memcpy(kb + 1, key, len);
    return k;
}

/*
 * Reads entry `id` into *out (arena memory). Returns STORE_OK,
 * STORE_ENOTFOUND, or an LMDB / corruption error.
 */
static int kv_load_entry(struct kv_apply* a,
                         const char* id,
                         size_t id_len,
                         Skein__KVEntry** out) {
    MDB_val k = {id_len, (void*)id};
    MDB_val v;
    int mrc = mdb_get(a->txn, a->kv->dbi_kv, &k, &v);

    if (mrc == MDB_NOTFOUND) {
        return STORE_ENOTFOUND;
    }
    if (mrc != 0) {
        return kv_fail_mdb(a->kv, mrc, "read entry");
    }
    *out = skein__kventry__unpack(&a->alloc, v.mv_size, v.mv_data);
    char* copy = kv_arena_alloc(&a->kv->arena, id_len + 1);
    if (*out == NULL || (*out)->id != NULL || copy == NULL) {
        return kv_fail(a->kv, STORE_ECORRUPT,
                       "%s/data.mdb: stored entry %.*s does not decode",
                       a->kv->dir, (int)id_len, id);
    }
    memcpy(copy, id, id_len);
    copy[id_len] = '\0';
    (*out)->id = copy;
    return STORE_OK;
}

/*
 * Stores entry p under its id and indexes its key. With `create` the id
 * must be new: STORE_EINVAL (nothing written) if it exists.
 */
static int kv_store_entry(struct kv_apply* a,
                          const Skein__KVEntry* p,
                          bool index_key,
                          bool create) {
    struct kv_state* kv = a->kv;
    MDB_val k = {strlen(p->id), p->id};
    MDB_val v;
    int rv = kv_pack_entry(kv, p, &v);

    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_put(a->txn, kv->dbi_kv, &k, &v, create ? MDB_NOOVERWRITE : 0);
    if (mrc == MDB_KEYEXIST) {
        return STORE_EINVAL;
    }
    if (mrc == 0 && index_key) {
        uint8_t kb[KV_KEY_MAX + 1];
        MDB_val ik = kv_index_key(kb, p->key, strlen(p->key));
        MDB_val iv = {strlen(p->id), p->id};
        mrc = mdb_put(a->txn, kv->dbi_by_key, &ik, &iv, 0);
    }
    return mrc == 0 ? STORE_OK : kv_fail_mdb(kv, mrc, "write entry");
}

/* Removes id from the index of `key`. */
static int kv_unindex(struct kv_apply* a, const char* key, const char* id) {
    uint8_t kb[KV_KEY_MAX + 1];
    MDB_val ik = kv_index_key(kb, key, strlen(key));
    MDB_val iv = {strlen(id), (void*)id};
    int mrc = mdb_del(a->txn, a->kv->dbi_by_key, &ik, &iv);

    if (mrc == MDB_NOTFOUND) {
        return kv_fail(a->kv, STORE_ECORRUPT,
                       "%s/data.mdb: key index lacks entry %s", a->kv->dir, id);
    }
    return mrc == 0 ? STORE_OK : kv_fail_mdb(a->kv, mrc, "unindex");
}

bool kv_utf8_valid(const char* s, size_t len) {
    const unsigned char* p = (const unsigned char*)s;
    size_t i = 0;

    while (i < len) {
        unsigned char c = p[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false; /* a continuation byte, or C0/C1/F5+ */
        }
        if (len - i <= n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0u) != 0x80u) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        /* Overlong three- and four-byte forms, surrogates, > U+10FFFF. */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

/* Checks the string fields of a command; returns a reason or NULL. */
static const char* kv_check_fields(const char* id,
                                   const char* key,
                                   const char* value) {
    size_t len;

    if (id == NULL || id[0] == '\0' || strlen(id) > KV_ID_MAX) {
        return "id missing or longer than 64 bytes";
    }
    if (key != NULL &&
        ((len = strlen(key)) > KV_KEY_MAX || !kv_utf8_valid(key, len))) {
        return "key longer than 256 bytes or not UTF-8";
    }
    if (value != NULL &&
        ((len = strlen(value)) > KV_VALUE_MAX || !kv_utf8_valid(value, len))) {
        return "value longer than 1 MiB or not UTF-8";
    }
    return NULL;
}

static int kv_apply_create(struct kv_apply* a, const Skein__CreateOp* op) {
    struct kv_state* kv = a->kv;
    Skein__KVEntry p = SKEIN__KVENTRY__INIT;
    const char* why = kv_check_fields(op->id, op->key, op->value);

    a->r->op = KV_OP_CREATE;
    if (why != NULL) {
        return kv_res_status(a, KV_STATUS_BAD_REQUEST, why);
    }
    p.id = op->id;
    p.key = (char*)kv_str(op->key);
    p.value = (char*)kv_str(op->value);
    p.has_seq = p.has_source_node = p.has_created_at = 1;
    p.seq = kv->st.seq + 1;
    p.source_node = op->source_node;
    p.created_at = op->created_at;
    int rv = kv_store_entry(a, &p, true, true);
    if (rv == STORE_EINVAL) {
        return kv_res_status(a, KV_STATUS_BAD_REQUEST, "id already exists");
    }
    if (rv != STORE_OK) {
        return rv;
    }
    struct kv_entry e = kv_entry_of(&p);
    kv->st.seq++;
    kv->st.count++;
    kv->st.hash += kv_entry_hash(&e);
    a->r->seq = p.seq;
    return kv_res_entry(a, &e);
}

static int kv_apply_update(struct kv_apply* a, const Skein__UpdateOp* op) {
    struct kv_state* kv = a->kv;
    Skein__KVEntry* old;
    const char* why = kv_check_fields(op->id, op->key, op->value);

    a->r->op = KV_OP_UPDATE;
    if (why != NULL) {
        return kv_res_status(a, KV_STATUS_BAD_REQUEST, why);
    }
    int rv = kv_load_entry(a, op->id, strlen(op->id), &old);
    if (rv == STORE_ENOTFOUND) {
        return kv_res_status(a, KV_STATUS_NOT_FOUND, "no entry with that id");
    }
    if (rv != STORE_OK) {
        return rv;
    }
    struct kv_entry olde = kv_entry_of(old);
    if (op->has_expected_seq && op->expected_seq != old->seq) {
        a->r->current_seq = old->seq;
        rv = kv_res_entry(a, &olde);
        return rv != STORE_OK ? rv
                              : kv_res_status(a, KV_STATUS_CAS_MISMATCH,
                                              "expected seq differs");
    }
    Skein__KVEntry p = *old;
    p.key = (char*)(op->key != NULL ? op->key : olde.key);
    p.value = (char*)(op->value != NULL ? op->value : olde.value);
    p.has_seq = 1;
    p.seq = kv->st.seq + 1;
    bool rekey = strcmp(p.key, olde.key) != 0;
    if (rekey) {
        rv = kv_unindex(a, olde.key, olde.id);
        if (rv != STORE_OK) {
            return rv;
        }
    }
    rv = kv_store_entry(a, &p, rekey, false);
    if (rv != STORE_OK) {
        return rv;
    }
    struct kv_entry e = kv_entry_of(&p);
    kv->st.seq++;
    kv->st.hash += kv_entry_hash(&e) - kv_entry_hash(&olde);
    a->r->seq = p.seq;
    return kv_res_entry(a, &e);
}

static int kv_apply_delete(struct kv_apply* a, const Skein__DeleteOp* op) {
    struct kv_state* kv = a->kv;
    Skein__KVEntry* old;
    const char* why = kv_check_fields(op->id, NULL, NULL);

    a->r->op = KV_OP_DELETE;
    if (why != NULL) {
        return kv_res_status(a, KV_STATUS_BAD_REQUEST, why);
    }
    int rv = kv_load_entry(a, op->id, strlen(op->id), &old);
    if (rv == STORE_ENOTFOUND) {
        return kv_res_status(a, KV_STATUS_NOT_FOUND, "no entry with that id");
    }
    if (rv != STORE_OK) {
        return rv;
    }
    struct kv_entry olde = kv_entry_of(old);
    if (op->has_expected_seq && op->expected_seq != old->seq) {
        a->r->current_seq = old->seq;
        rv = kv_res_entry(a, &olde);
        return rv != STORE_OK ? rv
                              : kv_res_status(a, KV_STATUS_CAS_MISMATCH,
                                              "expected seq differs");
    }
    MDB_val k = {olde.id_len, (void*)olde.id};
    int mrc = mdb_del(a->txn, kv->dbi_kv, &k, NULL);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "delete entry");
    }
    rv = kv_unindex(a, olde.key, olde.id);
    if (rv != STORE_OK) {
        return rv;
    }
    kv->st.seq++;
    kv->st.count--;
    kv->st.hash -= kv_entry_hash(&olde);
    a->r->seq = kv->st.seq;
    return kv_res_entry(a, &olde);
}

/* ------------------------------------------------------------------ */
/* Idempotency                                                         */
/*
 * Records live in "idem" keyed by the log index of the write that made
 * them (u64 big-endian): new records are appends and expired ones are
 * deleted from the front, so the table costs sequential page writes only,
 * however random the request ids are. Lookups by request id go through an
 * in-memory hash index (XXH64 of the id -> index), rebuilt from "idem"
 * when the environment is opened and after a failed batch. It is a cache
 * of what is stored, so determinism does not depend on it.
 *
 * Record: [0] version [1] status [2] op [3] has_entry [4..8) zero
 * [8..16) index [16..24) seq [24..32) current_seq [32..34) error length
 * [34..36) request id length, then the request id, the error text and the
 * packed entry.
 */

static uint64_t kv_rid_hash(const char* rid, size_t len) {
    return XXH64(rid, len, KV_HASH_SEED ^ 1);
}

static int kv_idem_map_grow(struct kv_idem_map* m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    struct kv_idem_slot* slots = calloc(cap, sizeof(*slots));

    if (slots == NULL) {
        return STORE_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].index != 0) {
            size_t j = m->slots[i].hash & (cap - 1);
            while (slots[j].index != 0) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = m->slots[i];
        }
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return STORE_OK;
}

static int kv_idem_map_insert(struct kv_idem_map* m,
                              uint64_t hash,
                              raft_index index) {
    if ((m->count + 1) * 2 > m->cap && kv_idem_map_grow(m) != STORE_OK) {
        return STORE_ENOMEM;
    }
    size_t j = hash & (m->cap - 1);
    while (m->slots[j].index != 0) {
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j].hash = hash;
    m->slots[j].index = index;
    m->count++;
    return STORE_OK;
}

/* Removes (hash, index) with backward-shift deletion (linear probing). */
static void kv_idem_map_remove(struct kv_idem_map* m,
                               uint64_t hash,
                               raft_index index) {
    size_t mask = m->cap - 1;
    size_t i;

    if (m->cap == 0) {
        return;
    }
    for (i = hash & mask; m->slots[i].index != 0; i = (i + 1) & mask) {
        if (m->slots[i].hash == hash && m->slots[i].index == index) {
            break;
        }
    }
    if (m->slots[i].index == 0) {
        return;
    }
    for (size_t j = (i + 1) & mask; m->slots[j].index != 0;
         j = (j + 1) & mask) {
        size_t k = m->slots[j].hash & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool home_in_gap = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!home_in_gap) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].index = 0;
    m->count--;
}

static void kv_idem_map_clear(struct kv_idem_map* m) {
    if (m->slots != NULL) {
        memset(m->slots, 0, m->cap * sizeof(*m->slots));
    }
    m->count = 0;
}

/* Parses a record's request id; false if the record is damaged. */
static bool kv_idem_rid(const MDB_val* v, const char** rid, size_t* len) {
    const uint8_t* b = v->mv_data;

    if (v->mv_size < KV_IDEM_HDR || b[0] != KV_IDEM_VERSION) {
        return false;
    }
    *len = (size_t)b[34] | (size_t)b[35] << 8;
    size_t err_len = (size_t)b[32] | (size_t)b[33] << 8;
    if (v->mv_size < KV_IDEM_HDR + *len + err_len) {
        return false;
    }
    *rid = (const char*)b + KV_IDEM_HDR;
    return true;
}

/* Rebuilds the hash index from "idem" as `in` sees it (NULL: the last
 * committed state, in a read transaction of its own). */
static int kv_idem_scan(struct kv_state* kv, MDB_txn* in) {
    MDB_txn* txn = in;
    MDB_cursor* c;
    MDB_val k, v;
    int rv = STORE_OK;
    size_t scanned = 0;

    kv_idem_map_clear(&kv->idem);
    int mrc =
        in != NULL ? 0 : mdb_txn_begin(kv->env.env, NULL, MDB_RDONLY, &txn);
    if (mrc == 0) {
        mrc = mdb_cursor_open(txn, kv->dbi_idem, &c);
        if (mrc != 0 && in == NULL) {
            mdb_txn_abort(txn);
        }
    }
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "read idempotency");
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0 && rv == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char* rid;
        size_t len;
        if (k.mv_size != 8 || !kv_idem_rid(&v, &rid, &len)) {
            rv = kv_fail(kv, STORE_ECORRUPT,
                         "%s/data.mdb: idempotency record damaged", kv->dir);
            break;
        }
        rv = kv_idem_map_insert(&kv->idem, kv_rid_hash(rid, len),
                                store_get_be64(k.mv_data));
        if (++scanned % KV_TRIM_EVERY == 0) {
            store_env_trim(&kv->env); /* keep the scan's pages unmapped */
        }
    }
    mdb_cursor_close(c);
    if (in == NULL) {
        mdb_txn_abort(txn);
    }
    if (scanned >= KV_TRIM_EVERY) {
        store_env_trim(&kv->env);
    }
    if (rv == STORE_OK && mrc != MDB_NOTFOUND) {
        rv = kv_fail_mdb(kv, mrc, "scan idempotency");
    }
    return rv;
}

/* Rebuilds the hash index from "idem" (open, failed batch, install). */
static int kv_idem_rebuild(struct kv_state* kv) {
    return kv_idem_scan(kv, NULL);
}

static int kv_idem_record(struct kv_apply* a) {
    struct kv_state* kv = a->kv;
    struct kv_result* r = a->r;
    const char* err = r->status != KV_STATUS_OK && a->o->has_error
                          ? (const char*)kv->res.data + a->o->error
                          : "";
    size_t err_len = strlen(err);
    size_t ent_len = 0;
    Skein__KVEntry p = SKEIN__KVENTRY__INIT;

    KV_ASSERT(err_len <= KV_ERR_MAX && a->rid_len <= KV_REQUEST_ID_MAX);
    if (r->has_entry) {
        p.id = (char*)kv->res.data + a->o->id;
        p.key = (char*)kv->res.data + a->o->key;
        p.value = (char*)kv->res.data + a->o->value;
        p.has_seq = p.has_source_node = p.has_created_at = 1;
        p.seq = r->entry.seq;
        p.source_node = r->entry.source_node;
        p.created_at = r->entry.created_at;
        ent_len = skein__kventry__get_packed_size(&p);
    }
    size_t total = KV_IDEM_HDR + a->rid_len + err_len + ent_len;
    if (kv_buf_reserve(&kv->scratch, total) != STORE_OK) {
        return kv_fail(kv, STORE_ENOMEM, "apply: out of memory");
    }
    uint8_t* b = kv->scratch.data;
    memset(b, 0, KV_IDEM_HDR);
    b[0] = KV_IDEM_VERSION;
    b[1] = (uint8_t)r->status;
    b[2] = (uint8_t)r->op;
    b[3] = r->has_entry ? 1 : 0;
    store_put_le64(b + 8, r->index);
    store_put_le64(b + 16, r->seq);
    store_put_le64(b + 24, r->current_seq);
    b[32] = (uint8_t)err_len;
    b[33] = (uint8_t)(err_len >> 8);
    b[34] = (uint8_t)a->rid_len;
    b[35] = (uint8_t)(a->rid_len >> 8);
    memcpy(b + KV_IDEM_HDR, a->rid, a->rid_len);
    memcpy(b + KV_IDEM_HDR + a->rid_len, err, err_len);
    if (r->has_entry) {
        skein__kventry__pack(&p, b + KV_IDEM_HDR + a->rid_len + err_len);
    }
    uint8_t kb[8];
    MDB_val k = {8, kb};
    MDB_val v = {total, b};
    store_put_be64(kb, r->index);
    int mrc = mdb_put(a->txn, kv->dbi_idem, &k, &v, MDB_APPEND);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "write idempotency");
    }
    if (kv_idem_map_insert(&kv->idem, kv_rid_hash(a->rid, a->rid_len),
                           r->index) != STORE_OK) {
        return kv_fail(kv, STORE_ENOMEM, "apply: out of memory");
    }
    return STORE_OK;
}

/* Fills the result from a stored record (a retried request). */
static int kv_idem_answer(struct kv_apply* a, const MDB_val* v) {
    const uint8_t* b = v->mv_data;
    size_t err_len = (size_t)b[32] | (size_t)b[33] << 8;
    size_t rid_len = (size_t)b[34] | (size_t)b[35] << 8;
    size_t off = KV_IDEM_HDR + rid_len + err_len;

    a->r->duplicate = true;
    a->r->op = b[2];
    a->r->seq = store_get_le64(b + 16);
    a->r->current_seq = store_get_le64(b + 24);
    if (b[3]) {
        Skein__KVEntry* p =
            skein__kventry__unpack(&a->alloc, v->mv_size - off, b + off);
        if (p == NULL) {
            return kv_fail(a->kv, STORE_ECORRUPT,
                           "%s/data.mdb: idempotency record of %.*s: entry "
                           "does not decode",
                           a->kv->dir, (int)a->rid_len, a->rid);
        }
        struct kv_entry e = kv_entry_of(p);
        int rv = kv_res_entry(a, &e);
        if (rv != STORE_OK) {
            return rv;
        }
    }
    a->r->status = b[1];
    if (err_len > 0) {
        a->o->has_error = true;
        return kv_res_str(a, (const char*)b + KV_IDEM_HDR + rid_len, err_len,
                          &a->o->error);
    }
    return STORE_OK;
}

/*
 * Finds the record of a->rid through the hash index. Sets *at to its
 * index (0 if none) and *v to its value.
 */
static int kv_idem_find(struct kv_apply* a, raft_index* at, MDB_val* v) {
    struct kv_state* kv = a->kv;
    uint64_t h = kv_rid_hash(a->rid, a->rid_len);
    size_t mask = kv->idem.cap - 1;

    *at = 0;
    for (size_t i = h & mask; kv->idem.cap > 0 && kv->idem.slots[i].index != 0;
         i = (i + 1) & mask) {
        uint8_t kb[8];
        MDB_val k = {8, kb};
        const char* rid;
        size_t len;
        if (kv->idem.slots[i].hash != h) {
            continue;
        }
        store_put_be64(kb, kv->idem.slots[i].index);
        int mrc = mdb_get(a->txn, kv->dbi_idem, &k, v);
        if (mrc != 0 || !kv_idem_rid(v, &rid, &len)) {
            return mrc != 0 && mrc != MDB_NOTFOUND
                       ? kv_fail_mdb(kv, mrc, "read idempotency")
                       : kv_fail(kv, STORE_ECORRUPT,
                                 "%s/data.mdb: idempotency index and table "
                                 "disagree",
                                 kv->dir);
        }
        if (len == a->rid_len && memcmp(rid, a->rid, len) == 0) {
            *at = kv->idem.slots[i].index;
            return STORE_OK;
        }
    }
    return STORE_OK;
}

/*
 * Looks the request id up. Sets *answered when a live record answered the
 * entry; deletes an expired record (the new one replaces it).
 */
static int kv_idem_lookup(struct kv_apply* a, bool* answered) {
    struct kv_state* kv = a->kv;
    raft_index at;
    MDB_val v;

    *answered = false;
    int rv = kv_idem_find(a, &at, &v);
    if (rv != STORE_OK || at == 0) {
        return rv;
    }
    if (at + kv->st.idem_window >= a->e->index) {
        *answered = true;
        return kv_idem_answer(a, &v);
    }
    uint8_t kb[8];
    MDB_val k = {8, kb};
    store_put_be64(kb, at);
    int mrc = mdb_del(a->txn, kv->dbi_idem, &k, NULL);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "expire idempotency");
    }
    kv_idem_map_remove(&kv->idem, kv_rid_hash(a->rid, a->rid_len), at);
    return STORE_OK;
}

/* Deletes records expired for every later entry (index <= applied - w). */
static int kv_idem_gc(struct kv_state* kv, MDB_txn* txn) {
    MDB_cursor* c;
    MDB_val k, v;

    if (kv->st.applied_index <= kv->st.idem_window) {
        return STORE_OK;
    }
    raft_index limit = kv->st.applied_index - kv->st.idem_window;
    int mrc = mdb_cursor_open(txn, kv->dbi_idem, &c);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "expire idempotency");
    }
    while ((mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0 &&
           store_get_be64(k.mv_data) <= limit) {
        const char* rid;
        size_t len;
        if (kv_idem_rid(&v, &rid, &len)) {
            kv_idem_map_remove(&kv->idem, kv_rid_hash(rid, len),
                               store_get_be64(k.mv_data));
        }
        mrc = mdb_cursor_del(c, 0);
        if (mrc != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    return mrc == 0 || mrc == MDB_NOTFOUND
               ? STORE_OK
               : kv_fail_mdb(kv, mrc, "expire idempotency");
}

int kv_verify_idem(struct kv_state* kv, char* errmsg) {
    MDB_txn* txn;
    MDB_cursor* c;
    MDB_val k, v;
    uint64_t records = 0;
    int rv = kv_rbegin(kv, &txn);

    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_cursor_open(txn, kv->dbi_idem, &c);
    if (mrc != 0) {
        kv_rend(kv, txn);
        return store_err_from_mdb(mrc);
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char* rid;
        size_t len;
        if (k.mv_size != 8 || !kv_idem_rid(&v, &rid, &len)) {
            store_errf(errmsg, "%s: idempotency record %llu is damaged",
                       kv->dir, (unsigned long long)records);
            rv = STORE_ECORRUPT;
            break;
        }
        records++;
    }
    if (rv == STORE_OK && mrc != MDB_NOTFOUND) {
        store_errf(errmsg, "%s: idempotency table: %s", kv->dir,
                   mdb_strerror(mrc));
        rv = store_err_from_mdb(mrc);
    }
    mdb_cursor_close(c);
    kv_rend(kv, txn);
    return rv;
}

/* After a failed batch: the hash index must forget what it learnt. */
static void kv_idem_undo(struct kv_state* kv) {
    int code = kv->last_error;
    char msg[STORE_ERRMSG_SIZE];

    memcpy(msg, kv->errmsg, sizeof(msg));
    if (kv_idem_rebuild(kv) != STORE_OK) {
        /* The index cannot be trusted: stop rather than answer wrong. */
        fprintf(stderr, "kv: cannot rebuild the idempotency index: %s\n",
                kv->errmsg);
        abort();
    }
    kv->last_error = code;
    memcpy(kv->errmsg, msg, sizeof(msg));
}

/* ------------------------------------------------------------------ */
/* Restore (RestoreOp; see kv_state.h)                                 */

#define KV_RESTORE_META_LEN 16 /* meta "restore": upload id, total size */

/* Reads meta "restore" (zeros when nothing is staged). */
static int kv_staging_get(struct kv_state* kv,
                          MDB_txn* txn,
                          uint64_t* upload,
                          uint64_t* total) {
    MDB_val k = {7, (void*)"restore"};
    MDB_val v;
    int mrc = mdb_get(txn, kv->dbi_meta, &k, &v);

    *upload = 0;
    *total = 0;
    if (mrc == MDB_NOTFOUND) {
        return STORE_OK;
    }
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "read restore staging");
    }
    if (v.mv_size != KV_RESTORE_META_LEN) {
        return kv_fail(kv, STORE_ECORRUPT,
                       "%s/data.mdb: meta \"restore\" record damaged", kv->dir);
    }
    *upload = store_get_le64(v.mv_data);
    *total = store_get_le64((const uint8_t*)v.mv_data + 8);
    return STORE_OK;
}

/* Empties the staging; a non-zero upload then owns it. */
static int kv_staging_reset(struct kv_state* kv,
                            MDB_txn* txn,
                            uint64_t upload,
                            uint64_t total) {
    uint8_t rec[KV_RESTORE_META_LEN];
    MDB_val k = {7, (void*)"restore"};
    MDB_val v = {sizeof(rec), rec};
    int mrc = mdb_drop(txn, kv->dbi_restore, 0);

    if (mrc == 0 && upload == 0) {
        mrc = mdb_del(txn, kv->dbi_meta, &k, NULL);
        mrc = mrc == MDB_NOTFOUND ? 0 : mrc;
    } else if (mrc == 0) {
        store_put_le64(rec, upload);
        store_put_le64(rec + 8, total);
        mrc = mdb_put(txn, kv->dbi_meta, &k, &v, 0);
    }
    return mrc == 0 ? STORE_OK : kv_fail_mdb(kv, mrc, "reset restore staging");
}

/* Answers a restore entry BAD_REQUEST with a formatted reason. */
static int kv_restore_refuse(struct kv_apply* a, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int kv_restore_refuse(struct kv_apply* a, const char* fmt, ...) {
    char why[KV_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return kv_res_status(a, KV_STATUS_BAD_REQUEST, why);
}

static int kv_restore_chunk(struct kv_apply* a, const Skein__RestoreOp* op) {
    struct kv_state* kv = a->kv;
    uint64_t upload, total;
    uint8_t kb[8];
    MDB_val k = {sizeof(kb), kb};
    MDB_val v = {op->data.len, op->data.data};

    if (op->upload_id == 0 || op->data.len == 0 ||
        op->data.len > KV_RESTORE_CHUNK_MAX || op->offset > op->total_size ||
        op->data.len > op->total_size - op->offset) {
        return kv_restore_refuse(a,
                                 "restore chunk: no upload id, empty, larger "
                                 "than 1 MiB or beyond total_size");
    }
    int rv = kv_staging_get(kv, a->txn, &upload, &total);
    if (rv == STORE_OK &&
        (upload != op->upload_id || total != op->total_size)) {
        /* A new upload: whatever an older one staged is dead. */
        rv = kv_staging_reset(kv, a->txn, op->upload_id, op->total_size);
    }
    if (rv != STORE_OK) {
        return rv;
    }
    store_put_be64(kb, op->offset);
    int mrc = mdb_put(a->txn, kv->dbi_restore, &k, &v, 0);
    return mrc == 0 ? STORE_OK : kv_fail_mdb(kv, mrc, "stage restore chunk");
}

/* pwrite of all `len` bytes; a STORE_E* code. */
static int kv_pwrite_all(int fd, const uint8_t* p, size_t len, uint64_t off) {
    while (len > 0) {
        ssize_t put = pwrite(fd, p, len, (off_t)off);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            return errno == ENOSPC || errno == EDQUOT ? STORE_EDISKFULL
                                                      : STORE_EIO;
        }
        p += put;
        len -= (size_t)put;
        off += (uint64_t)put;
    }
    return STORE_OK;
}

/*
 * Writes the staged bytes, in offset order, to the file fd while checking
 * that they are exactly [0, total) with XXH64 `checksum`. A check that
 * fails sets why[0] (the entry is refused); an environment failure is
 * returned.
 */
static int kv_restore_unstage(struct kv_apply* a,
                              int fd,
                              uint64_t total,
                              uint64_t checksum,
                              char* why) {
    struct kv_state* kv = a->kv;
    XXH64_state_t* h = XXH64_createState();
    MDB_cursor* c;
    MDB_val k, v;
    uint64_t at = 0;
    int rv = STORE_OK;

    if (h == NULL) {
        return kv_fail(kv, STORE_ENOMEM, "restore: out of memory");
    }
    int mrc = mdb_cursor_open(a->txn, kv->dbi_restore, &c);
    if (mrc != 0) {
        XXH64_freeState(h);
        return kv_fail_mdb(kv, mrc, "read restore staging");
    }
    XXH64_reset(h, KV_RESTORE_CHECKSUM_SEED);
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || store_get_be64(k.mv_data) != at ||
            v.mv_size > total - at) {
            snprintf(why, KV_ERR_MAX,
                     "restore commit: staged bytes have a gap or overlap at "
                     "offset %llu",
                     (unsigned long long)at);
            break;
        }
        rv = kv_pwrite_all(fd, v.mv_data, v.mv_size, at);
        if (rv != STORE_OK) {
            break;
        }
        XXH64_update(h, v.mv_data, v.mv_size);
        at += v.mv_size;
    }
    mdb_cursor_close(c);
    if (rv != STORE_OK) {
        rv = kv_fail(kv, rv, "%s%s: cannot write the restored file: %s",
                     kv->dir, KV_RESTORE_FILE_SUFFIX, store_strerror(rv));
    } else if (why[0] != '\0') {
        /* refused above */
    } else if (mrc != MDB_NOTFOUND) {
        rv = kv_fail_mdb(kv, mrc, "read restore staging");
    } else if (at != total) {
        snprintf(why, KV_ERR_MAX,
                 "restore commit: %llu of %llu bytes were staged",
                 (unsigned long long)at, (unsigned long long)total);
    } else if (XXH64_digest(h) != checksum) {
        snprintf(why, KV_ERR_MAX,
                 "restore commit: the staged bytes do not match the checksum");
    }
    XXH64_freeState(h);
    return rv;
}

/* Copies every record of `from` (ro's) into `to` (kv's), in key order. */
static int kv_restore_copy_dbi(MDB_txn* rtxn,
                               MDB_dbi from,
                               MDB_txn* wtxn,
                               MDB_dbi to,
                               unsigned flags) {
    MDB_cursor* c;
    MDB_val k, v;
    int mrc = mdb_cursor_open(rtxn, from, &c);

    if (mrc != 0) {
        return mrc;
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        mrc = mdb_put(wtxn, to, &k, &v, flags);
        if (mrc != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    return mrc == MDB_NOTFOUND ? 0 : mrc;
}

/* Copies the backup's idempotency records older than `below`. */
static int kv_restore_copy_idem(struct kv_state* kv,
                                struct kv_state* ro,
                                MDB_txn* rtxn,
                                MDB_txn* wtxn,
                                raft_index below,
                                char* why) {
    MDB_cursor* c;
    MDB_val k, v;
    int mrc = mdb_cursor_open(rtxn, ro->dbi_idem, &c);

    if (mrc != 0) {
        return mrc;
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char* rid;
        size_t len;
        if (k.mv_size != 8 || !kv_idem_rid(&v, &rid, &len)) {
            snprintf(why, KV_ERR_MAX,
                     "restore commit: an idempotency record of the backup "
                     "is damaged");
            break;
        }
        if (store_get_be64(k.mv_data) >= below) {
            mrc = MDB_NOTFOUND; /* from a longer log than this one */
            break;
        }
        mrc = mdb_put(wtxn, kv->dbi_idem, &k, &v, MDB_APPEND);
        if (mrc != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    return mrc == MDB_NOTFOUND ? 0 : mrc;
}

/*
 * Replaces the data records with ro's in a child transaction of the
 * batch's, so that a backup refused half-way changes nothing. Sets why[0]
 * if the backup is refused; returns an environment failure.
 */
static int kv_restore_replace(struct kv_apply* a,
                              struct kv_state* ro,
                              char* why) {
    struct kv_state* kv = a->kv;
    MDB_txn* child;
    MDB_txn* rtxn;
    int mrc = mdb_txn_begin(kv->env.env, a->txn, 0, &child);

    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "restore: begin");
    }
    mrc = mdb_txn_begin(ro->env.env, NULL, MDB_RDONLY, &rtxn);
    if (mrc != 0) {
        mdb_txn_abort(child);
        return kv_fail_mdb(kv, mrc, "restore: read the backup");
    }
    mrc = mdb_drop(child, kv->dbi_kv, 0);
    if (mrc == 0) {
        mrc = mdb_drop(child, kv->dbi_by_key, 0);
    }
    if (mrc == 0) {
        mrc = mdb_drop(child, kv->dbi_idem, 0);
    }
    if (mrc == 0) {
        mrc = kv_restore_copy_dbi(rtxn, ro->dbi_kv, child, kv->dbi_kv,
                                  MDB_APPEND);
    }
    if (mrc == 0) {
        mrc = kv_restore_copy_dbi(rtxn, ro->dbi_by_key, child, kv->dbi_by_key,
                                  MDB_APPENDDUP);
    }
    if (mrc == 0) {
        mrc = kv_restore_copy_idem(kv, ro, rtxn, child, a->e->index, why);
    }
    mdb_txn_abort(rtxn);
    if (mrc == MDB_KEYEXIST || mrc == MDB_CORRUPTED ||
        mrc == MDB_PAGE_NOTFOUND || mrc == MDB_BAD_VALSIZE) {
        snprintf(why, KV_ERR_MAX, "restore commit: the backup's records: %s",
                 mdb_strerror(mrc));
    }
    if (mrc != 0 || why[0] != '\0') {
        mdb_txn_abort(child);
        return why[0] != '\0' ? STORE_OK : kv_fail_mdb(kv, mrc, "restore");
    }
    mrc = mdb_txn_commit(child);
    return mrc == 0 ? STORE_OK : kv_fail_mdb(kv, mrc, "restore: commit");
}

/* Opens and verifies the unstaged copy, then puts its data in place. */
static int kv_restore_install(struct kv_apply* a, const char* path, char* why) {
    struct kv_state* kv = a->kv;
    struct kv_snapshot_info info;
    struct kv_stats re;
    struct kv_state* ro = NULL;
    char err[STORE_ERRMSG_SIZE] = "";
    int rv = kv_snapshot_open_ro(path, &ro, &info, err);

    if (rv == STORE_OK) {
        rv = kv_verify(ro, &re, err);
    }
    if (rv == STORE_ECORRUPT || rv == STORE_EVERSION || rv == STORE_EINVAL ||
        rv == STORE_ENOTFOUND) {
        /* Without the file name: the verdict is the same on every node. */
        size_t pl = strlen(path);
        const char* e =
            strncmp(err, path, pl) == 0 && err[pl] == ':' ? err + pl + 2 : err;
        snprintf(why, KV_ERR_MAX, "restore commit: not a valid snapshot: %s",
                 e);
        rv = STORE_OK;
    } else if (rv != STORE_OK) {
        rv = kv_fail(kv, rv, "restore: %s", err[0] ? err : store_strerror(rv));
    } else {
        rv = kv_restore_replace(a, ro, why);
    }
    kv_snapshot_close_ro(ro);
    if (rv != STORE_OK || why[0] != '\0') {
        return rv;
    }
    kv->st.seq = re.seq;
    kv->st.count = re.count;
    kv->st.hash = re.hash;
    /* The hash index must answer the rest of the batch from the backup's
     * table (kv_idem_undo rebuilds it if the batch fails). */
    return kv_idem_scan(kv, a->txn);
}

static int kv_restore_commit(struct kv_apply* a, const Skein__RestoreOp* op) {
    struct kv_state* kv = a->kv;
    uint64_t upload, total;
    char why[KV_ERR_MAX] = "";
    int rv = kv_staging_get(kv, a->txn, &upload, &total);

    if (rv != STORE_OK) {
        return rv;
    }
    if (op->upload_id == 0 || upload != op->upload_id) {
        return kv_restore_refuse(a,
                                 "restore commit: nothing is staged for "
                                 "upload %llu",
                                 (unsigned long long)op->upload_id);
    }
    char* path = malloc(strlen(kv->dir) + sizeof(KV_RESTORE_FILE_SUFFIX));
    if (path == NULL) {
        return kv_fail(kv, STORE_ENOMEM, "restore: out of memory");
    }
    strcpy(path, kv->dir);
    strcat(path, KV_RESTORE_FILE_SUFFIX);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rv = kv_fail(kv, errno == ENOSPC ? STORE_EDISKFULL : STORE_EIO,
                     "%s: %s", path, strerror(errno));
    } else if (total != op->total_size) {
        snprintf(why, sizeof(why),
                 "restore commit: %llu bytes announced, the staged upload "
                 "has %llu",
                 (unsigned long long)op->total_size, (unsigned long long)total);
    } else {
        rv = kv_restore_unstage(a, fd, total, op->checksum, why);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rv == STORE_OK && why[0] == '\0') {
        rv = kv_restore_install(a, path, why);
    }
    unlink(path);
    free(path);
    if (rv == STORE_OK) {
        rv = kv_staging_reset(kv, a->txn, 0, 0);
    }
    if (rv != STORE_OK) {
        return rv;
    }
    return why[0] != '\0' ? kv_res_status(a, KV_STATUS_BAD_REQUEST, why)
                          : STORE_OK;
}

/* Drops the staging if it belongs to the aborted upload; an abort that
 * finds another upload (or none) changes nothing. */
static int kv_restore_abort(struct kv_apply* a, const Skein__RestoreOp* op) {
    uint64_t upload, total;
    int rv = kv_staging_get(a->kv, a->txn, &upload, &total);

    if (rv != STORE_OK || op->upload_id == 0 || upload != op->upload_id) {
        return rv;
    }
    return kv_staging_reset(a->kv, a->txn, 0, 0);
}

static int kv_apply_restore(struct kv_apply* a, const Skein__RestoreOp* op) {
    a->r->op = KV_OP_RESTORE;
    if (op->abort) {
        return kv_restore_abort(a, op);
    }
    return op->commit ? kv_restore_commit(a, op) : kv_restore_chunk(a, op);
}

/* ------------------------------------------------------------------ */
/* Applying a batch                                                    */

static int kv_apply_normal(struct kv_apply* a) {
    Skein__Command* cmd =
        skein__command__unpack(&a->alloc, a->e->len, a->e->data);

    if (cmd == NULL) {
        return kv_res_status(a, KV_STATUS_BAD_REQUEST,
                             "malformed command: not a skein.Command");
    }
    if (cmd->has_origin_node && cmd->has_origin_tag) {
        a->r->origin_node = cmd->origin_node;
        a->r->origin_tag = cmd->origin_tag;
    }
    if (cmd->request_id != NULL && cmd->request_id[0] != '\0') {
        a->rid = cmd->request_id;
        a->rid_len = strlen(cmd->request_id);
        if (a->rid_len > KV_REQUEST_ID_MAX) {
            a->rid = NULL;
            return kv_res_status(a, KV_STATUS_BAD_REQUEST,
                                 "request id longer than 128 bytes");
        }
        int rv = kv_res_str(a, a->rid, a->rid_len, &a->o->request_id);
        if (rv != STORE_OK) {
            return rv;
        }
        a->r->request_id_len = (uint32_t)a->rid_len;
        bool answered;
        rv = kv_idem_lookup(a, &answered);
        if (rv != STORE_OK || answered) {
            return rv;
        }
    }
    int rv;
    switch (cmd->op_case) {
        case SKEIN__COMMAND__OP_CREATE:
            rv = kv_apply_create(a, cmd->create);
            break;
        case SKEIN__COMMAND__OP_UPDATE:
            rv = kv_apply_update(a, cmd->update);
            break;
        case SKEIN__COMMAND__OP_DELETE:
            rv = kv_apply_delete(a, cmd->delete_);
            break;
        case SKEIN__COMMAND__OP_RESTORE:
            rv = kv_apply_restore(a, cmd->restore);
            break;
        default:
            rv = kv_res_status(a, KV_STATUS_BAD_REQUEST,
                               "malformed command: no operation");
            break;
    }
    if (rv == STORE_OK && a->rid != NULL) {
        rv = kv_idem_record(a);
    }
    return rv;
}

static int kv_apply_conf(struct kv_state* kv,
                         MDB_txn* txn,
                         const struct raft_entry* e) {
    MDB_val k = {4, (void*)"conf"};
    static const uint8_t none = 0;
    MDB_val v = {e->len, e->len > 0 ? (void*)e->data : (void*)&none};
    int mrc = mdb_put(txn, kv->dbi_meta, &k, &v, 0);

    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "write conf");
    }
    kv->st.conf_index = e->index;
    return STORE_OK;
}

/* Applies entries[from..n) (all new) in txn. */
static int kv_apply_entries(struct kv_state* kv,
                            MDB_txn* txn,
                            const struct raft_entry* entries,
                            size_t from,
                            size_t n,
                            struct kv_result* results) {
    struct kv_apply a;
    struct kv_result scratch;

    memset(&a, 0, sizeof(a));
    a.kv = kv;
    a.txn = txn;
    a.alloc.alloc = kv_arena_alloc;
    a.alloc.free = kv_arena_free;
    a.alloc.allocator_data = &kv->arena;
    for (size_t i = from; i < n; i++) {
        int rv = STORE_OK;
        a.e = &entries[i];
        a.r = results != NULL ? &results[i] : &scratch;
        a.o = &kv->offs[i];
        a.rid = NULL;
        a.rid_len = 0;
        memset(a.r, 0, sizeof(*a.r));
        a.r->index = a.e->index;
        a.r->type = a.e->type;
        a.r->applied = true;
        if (a.e->type == RAFT_ENTRY_NORMAL) {
            rv = kv_apply_normal(&a);
            kv_arena_reset(&kv->arena);
        } else if (a.e->type == RAFT_ENTRY_CONF) {
            rv = kv_apply_conf(kv, txn, a.e);
        }
        if (rv != STORE_OK) {
            return rv;
        }
        kv->st.applied_index = a.e->index;
        kv->st.applied_term = a.e->term;
    }
    return STORE_OK;
}

/* Points every result's strings into kv->res once it stopped moving. */
static void kv_fix_results(struct kv_state* kv,
                           struct kv_result* results,
                           size_t from,
                           size_t n) {
    const char* base = (const char*)kv->res.data;

    for (size_t i = from; i < n; i++) {
        struct kv_result* r = &results[i];
        const struct kv_res_offs* o = &kv->offs[i];
        if (r->has_entry) {
            r->entry.id = base + o->id;
            r->entry.key = base + o->key;
            r->entry.value = base + o->value;
        }
        if (r->request_id_len > 0) {
            r->request_id = base + o->request_id;
        }
        if (o->has_error) {
            r->error = base + o->error;
        }
    }
}

/* Validates indexes; sets *from to the first entry not yet applied. */
static int kv_check_batch(struct kv_state* kv,
                          const struct raft_entry* entries,
                          size_t n,
                          size_t* from) {
    for (size_t i = 1; i < n; i++) {
        if (entries[i].index != entries[0].index + i) {
            return kv_fail(kv, STORE_EINVAL,
                           "apply: entries not consecutive at %llu",
                           (unsigned long long)entries[i].index);
        }
    }
    raft_index applied = kv->st.applied_index;
    *from = entries[0].index > applied
                ? 0
                : (size_t)(applied + 1 - entries[0].index);
    if (*from < n && entries[*from].index != applied + 1) {
        return kv_fail(kv, STORE_EINVAL,
                       "apply: gap: applied %llu, next entry %llu",
                       (unsigned long long)applied,
                       (unsigned long long)entries[*from].index);
    }
    return STORE_OK;
}

static int kv_prepare_offs(struct kv_state* kv, size_t n) {
    if (n > kv->offs_cap) {
        struct kv_res_offs* o = realloc(kv->offs, n * sizeof(*o));
        if (o == NULL) {
            return kv_fail(kv, STORE_ENOMEM, "apply: out of memory");
        }
        kv->offs = o;
        kv->offs_cap = n;
    }
    memset(kv->offs, 0, n * sizeof(*kv->offs));
    kv->res.len = 0;
    return STORE_OK;
}

int kv_apply_batch(struct kv_state* kv,
                   const struct raft_entry* entries,
                   size_t n,
                   struct kv_result* results) {
    size_t from = 0;
    MDB_txn* txn;

    if (n == 0) {
        return STORE_OK;
    }
    if (entries == NULL || kv->env.env == NULL) {
        return kv_fail(kv, STORE_EINVAL, "apply: no entries or closed");
    }
    int rv = kv_check_batch(kv, entries, n, &from);
    if (rv == STORE_OK) {
        rv = kv_prepare_offs(kv, n);
    }
    if (rv != STORE_OK) {
        return rv;
    }
    for (size_t i = 0; results != NULL && i < from && i < n; i++) {
        memset(&results[i], 0, sizeof(results[i]));
        results[i].index = entries[i].index;
        results[i].type = entries[i].type;
    }
    if (from >= n) {
        kv_ok(kv);
        return STORE_OK;
    }
    struct kv_stats saved = kv->st;
    bool deferred = kv->opts.commit_delay_ms > 0;
    if (deferred && kv->pending == NULL) {
        int mrc = mdb_txn_begin(kv->env.env, NULL, 0, &kv->pending);
        if (mrc != 0) {
            kv->pending = NULL;
            return kv_fail_mdb(kv, mrc, "begin");
        }
        kv->pending_owner = pthread_self();
        kv->pending_since_ms = kv_mono_ms();
    }
    /* Deferred: a child of the pending transaction, so a failed batch
     * rolls back alone and the batches before it stay. */
    int mrc =
        mdb_txn_begin(kv->env.env, deferred ? kv->pending : NULL, 0, &txn);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "begin");
    }
    rv = kv_apply_entries(kv, txn, entries, from, n, results);
    if (rv == STORE_OK) {
        rv = kv_idem_gc(kv, txn);
    }
    if (rv == STORE_OK) {
        rv = kv_put_meta_state(kv, txn);
    }
    if (rv != STORE_OK) {
        mdb_txn_abort(txn);
        kv->st = saved;
        kv_idem_undo(kv);
        return rv;
    }
    if (deferred) {
        mrc = mdb_txn_commit(txn); /* into the pending one: no I/O */
        rv = mrc == 0 ? STORE_OK : store_err_from_mdb(mrc);
    } else {
        rv = store_env_commit(&kv->env, txn);
    }
    if (rv != STORE_OK) {
        kv->st = saved;
        kv_idem_undo(kv);
        return kv_fail(kv, rv, "%s/data.mdb: commit: %s", kv->dir,
                       store_strerror(rv));
    }
    if (results != NULL) {
        kv_fix_results(kv, results, from, n);
    }
    /* The state may lag the log (recovery replays it), so no batch waits
     * for the meta flush: strict and balanced commits already flushed the
     * data (MDB_NOMETASYNC keeps the environment consistent), fast flushes
     * periodically. kv_sync() makes everything durable when it matters. */
    rv = kv->env.durability == STORE_DURABILITY_FAST && !deferred
             ? store_env_sync_batch(&kv->env, false)
             : STORE_OK;
    if (rv != STORE_OK) {
        return kv_fail(kv, rv, "%s/data.mdb: flush: %s", kv->dir,
                       store_strerror(rv));
    }
    kv_ok(kv);
    kv_maybe_trim(kv, n - from);
    return STORE_OK;
}

int kv_set_commit_delay(struct kv_state* kv, uint32_t ms) {
    int rv = ms == 0 ? kv_commit_pending(kv) : STORE_OK;
    kv->opts.commit_delay_ms = ms;
    return rv;
}

int64_t kv_pending_age_ms(const struct kv_state* kv) {
    return kv->pending == NULL ? -1 : kv_mono_ms() - kv->pending_since_ms;
}

/* After a failed commit: the counters and the idempotency map go back to
 * what the environment holds, the last committed state. */
static int kv_reload_committed(struct kv_state* kv) {
    MDB_txn* txn;
    int mrc = mdb_txn_begin(kv->env.env, NULL, MDB_RDONLY, &txn);
    if (mrc != 0) {
        return kv_fail_mdb(kv, mrc, "begin");
    }
    int rv = kv_load_meta(kv, txn);
    mdb_txn_abort(txn);
    if (rv == STORE_OK) {
        rv = kv_idem_rebuild(kv);
    }
    return rv;
}

int kv_commit_pending(struct kv_state* kv) {
    if (kv->pending == NULL) {
        return STORE_OK;
    }
    MDB_txn* txn = kv->pending;
    kv->pending = NULL;
    int rv = store_env_commit(&kv->env, txn);
    if (rv == STORE_OK && kv->env.durability == STORE_DURABILITY_FAST) {
        rv = store_env_sync_batch(&kv->env, false);
        if (rv != STORE_OK) {
            /* committed, only not flushed yet: nothing to reload */
            return kv_fail(kv, rv, "%s/data.mdb: flush: %s", kv->dir,
                           store_strerror(rv));
        }
    }
    if (rv != STORE_OK) {
        int why = rv;
        rv = kv_reload_committed(kv);
        if (rv != STORE_OK) {
            return rv;
        }
        return kv_fail(kv, why, "%s/data.mdb: commit: %s", kv->dir,
                       store_strerror(why));
    }
    kv_ok(kv);
    return STORE_OK;
}

int kv_sync(struct kv_state* kv) {
    int rv = kv_commit_pending(kv);
    if (rv != STORE_OK) {
        return rv;
    }
    raft_index applied = kv->st.applied_index;
    rv = store_env_flush(&kv->env);

    if (rv != STORE_OK) {
        return kv_fail(kv, rv, "%s/data.mdb: flush: %s", kv->dir,
                       store_strerror(rv));
    }
    kv->durable_applied = applied;
    kv_ok(kv);
    return STORE_OK;
}

raft_index kv_applied_index(const struct kv_state* kv) {
    return kv->st.applied_index;
}

raft_term kv_applied_term(const struct kv_state* kv) {
    return kv->st.applied_term;
}

raft_index kv_durable_applied(const struct kv_state* kv) {
    return kv->durable_applied;
}

int kv_last_error(const struct kv_state* kv) {
    return kv->last_error;
}

const char* kv_errmsg(const struct kv_state* kv) {
    return kv->errmsg;
}

const char* kv_dir(const struct kv_state* kv) {
    return kv->dir;
}

int kv_set_map_size(struct kv_state* kv, size_t bytes) {
    /* LMDB refuses while a write transaction is open */
    int rv = kv_commit_pending(kv);
    if (rv == STORE_OK) {
        rv = store_env_set_map_size(&kv->env, bytes);
    }

    if (rv != STORE_OK) {
        return kv_fail(kv, rv, "%s: cannot set the map size to %zu bytes",
                       kv->dir, bytes);
    }
    kv_ok(kv);
    return STORE_OK;
}

/* Reads the process's file-backed resident bytes from /proc/self/statm. */
static size_t kv_rss_file_bytes(void) {
    char buf[128];
    unsigned long size = 0, resident = 0, shared = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    if (sscanf(buf, "%lu %lu %lu", &size, &resident, &shared) != 3) {
        return 0;
    }
    return (size_t)shared * (size_t)sysconf(_SC_PAGESIZE);
}

/* Counts `n` operations; every KV_RSS_CHECK_EVERY, trims over budget. */
static void kv_maybe_trim(struct kv_state* kv, uint64_t n) {
    if (kv->rss_budget == SIZE_MAX) {
        return;
    }
    uint64_t before =
        atomic_fetch_add_explicit(&kv->ops, n, memory_order_relaxed);
    if (before / KV_RSS_CHECK_EVERY == (before + n) / KV_RSS_CHECK_EVERY) {
        return;
    }
    if (kv_rss_file_bytes() > kv->rss_budget) {
        kv_trim_memory(kv);
    }
}

void kv_trim_memory(struct kv_state* kv) {
    if (kv->env.env != NULL) {
        store_env_trim(&kv->env);
    }
}

/* ------------------------------------------------------------------ */
/* Reads (any thread, each call in a read transaction of its own; the  */
/* apply thread reads through its pending write transaction)          */

/* The apply thread reads through its pending write transaction: it must
 * see the batches it applied (and answered) but did not commit yet, and
 * LMDB gives a thread one transaction at a time. */
static bool kv_reads_pending(const struct kv_state* kv) {
    return kv->pending != NULL &&
           pthread_equal(pthread_self(), kv->pending_owner);
}

static int kv_rbegin(struct kv_state* kv, MDB_txn** txn) {
    if (kv_reads_pending(kv)) {
        *txn = kv->pending;
        return STORE_OK;
    }
    int mrc = mdb_txn_begin(kv->env.env, NULL, MDB_RDONLY, txn);
    return mrc == 0 ? STORE_OK : store_err_from_mdb(mrc);
}

static void kv_rend(struct kv_state* kv, MDB_txn* txn) {
    if (txn != kv->pending) {
        mdb_txn_abort(txn);
    }
}

/* Offsets of one entry's strings in a kv_buf, fixed up at the end. */
struct kv_read_offs {
    size_t id, key, value; /* offsets in the caller's buffer */
};

/* Decodes the stored value of entry `id` and copies it into buf. */
static int kv_read_value(const MDB_val* id,
                         const MDB_val* v,
                         struct kv_buf* buf,
                         struct kv_entry* out,
                         struct kv_read_offs* offs) {
    Skein__KVEntry* p = skein__kventry__unpack(NULL, v->mv_size, v->mv_data);

    if (p == NULL || p->id != NULL) {
        skein__kventry__free_unpacked(p, NULL);
        return STORE_ECORRUPT;
    }
    *out = kv_entry_of(p);
    out->id = id->mv_data;
    out->id_len = (uint32_t)id->mv_size;
    offs->id = kv_buf_put(buf, out->id, out->id_len);
    offs->key = kv_buf_put(buf, out->key, out->key_len);
    offs->value = kv_buf_put(buf, out->value, out->value_len);
    skein__kventry__free_unpacked(p, NULL);
    if (offs->id == SIZE_MAX || offs->key == SIZE_MAX ||
        offs->value == SIZE_MAX) {
        return STORE_ENOMEM;
    }
    return STORE_OK;
}

static void kv_read_fix(const struct kv_buf* buf,
                        struct kv_entry* out,
                        const struct kv_read_offs* offs,
                        size_t n) {
    for (size_t i = 0; i < n; i++) {
        out[i].id = (const char*)buf->data + offs[i].id;
        out[i].key = (const char*)buf->data + offs[i].key;
        out[i].value = (const char*)buf->data + offs[i].value;
    }
}

int kv_get(struct kv_state* kv,
           const char* id,
           size_t id_len,
           struct kv_buf* buf,
           struct kv_entry* out) {
    MDB_txn* txn;
    MDB_val k = {id_len, (void*)id};
    MDB_val v;
    struct kv_read_offs offs;

    if (id == NULL || id_len == 0 || id_len > KV_ID_MAX) {
        return STORE_EINVAL;
    }
    buf->len = 0;
    int rv = kv_rbegin(kv, &txn);
    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_get(txn, kv->dbi_kv, &k, &v);
    if (mrc == 0) {
        rv = kv_read_value(&k, &v, buf, out, &offs);
    } else {
        rv = store_err_from_mdb(mrc);
    }
    kv_rend(kv, txn);
    if (rv == STORE_OK) {
        kv_read_fix(buf, out, &offs, 1);
    }
    kv_maybe_trim(kv, 1);
    return rv;
}

/* Pages through all entries in id order. */
static int kv_list_all(struct kv_state* kv,
                       MDB_txn* txn,
                       const struct kv_list_query* q,
                       uint32_t limit,
                       struct kv_buf* buf,
                       struct kv_entry* out,
                       struct kv_read_offs* offs,
                       size_t* n,
                       bool* truncated) {
    MDB_cursor* c;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, kv->dbi_kv, &c);
    int rv = STORE_OK;

    if (mrc != 0) {
        return store_err_from_mdb(mrc);
    }
    if (q->after != NULL && q->after_len > 0) {
        k.mv_size = q->after_len;
        k.mv_data = (void*)q->after;
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == q->after_len &&
            memcmp(k.mv_data, q->after, q->after_len) == 0) {
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
    } else {
        mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    while (mrc == 0 && rv == STORE_OK) {
        if (*n == limit) {
            *truncated = true;
            break;
        }
        rv = kv_read_value(&k, &v, buf, &out[*n], &offs[*n]);
        (*n)++;
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rv == STORE_OK && mrc != 0 && mrc != MDB_NOTFOUND) {
        rv = store_err_from_mdb(mrc);
    }
    return rv;
}

/* Pages through the entries of one key, in id order. */
static int kv_list_key(struct kv_state* kv,
                       MDB_txn* txn,
                       const struct kv_list_query* q,
                       uint32_t limit,
                       struct kv_buf* buf,
                       struct kv_entry* out,
                       struct kv_read_offs* offs,
                       size_t* n,
                       bool* truncated) {
    uint8_t kb[KV_KEY_MAX + 1];
    MDB_cursor* c;
    MDB_val k = kv_index_key(kb, q->key, q->key_len);
    MDB_val d;
    int mrc = mdb_cursor_open(txn, kv->dbi_by_key, &c);
    int rv = STORE_OK;

    if (mrc != 0) {
        return store_err_from_mdb(mrc);
    }
    if (q->after != NULL && q->after_len > 0) {
        d.mv_size = q->after_len;
        d.mv_data = (void*)q->after;
        mrc = mdb_cursor_get(c, &k, &d, MDB_GET_BOTH_RANGE);
        if (mrc == 0 && d.mv_size == q->after_len &&
            memcmp(d.mv_data, q->after, q->after_len) == 0) {
            mrc = mdb_cursor_get(c, &k, &d, MDB_NEXT_DUP);
        }
    } else {
        mrc = mdb_cursor_get(c, &k, &d, MDB_SET_KEY);
    }
    while (mrc == 0 && rv == STORE_OK) {
        MDB_val v;
        if (*n == limit) {
            *truncated = true;
            break;
        }
        mrc = mdb_get(txn, kv->dbi_kv, &d, &v);
        if (mrc != 0) {
            rv = mrc == MDB_NOTFOUND ? STORE_ECORRUPT : store_err_from_mdb(mrc);
            break;
        }
        rv = kv_read_value(&d, &v, buf, &out[*n], &offs[*n]);
        (*n)++;
        mrc = mdb_cursor_get(c, &k, &d, MDB_NEXT_DUP);
    }
    mdb_cursor_close(c);
    if (rv == STORE_OK && mrc != 0 && mrc != MDB_NOTFOUND) {
        rv = store_err_from_mdb(mrc);
    }
    return rv;
}

int kv_list(struct kv_state* kv,
            const struct kv_list_query* q,
            struct kv_buf* buf,
            struct kv_entry* out,
            size_t cap,
            size_t* n,
            bool* truncated) {
    MDB_txn* txn;
    uint32_t limit = q->limit == 0 ? KV_LIST_DEFAULT : q->limit;

    *n = 0;
    *truncated = false;
    buf->len = 0;
    if (limit > KV_LIST_MAX) {
        limit = KV_LIST_MAX;
    }
    if (cap < limit || (q->key != NULL && q->key_len > KV_KEY_MAX)) {
        return STORE_EINVAL;
    }
    struct kv_read_offs* offs = malloc(limit * sizeof(*offs));
    if (offs == NULL) {
        return STORE_ENOMEM;
    }
    int rv = kv_rbegin(kv, &txn);
    if (rv == STORE_OK) {
        rv = q->key != NULL
                 ? kv_list_key(kv, txn, q, limit, buf, out, offs, n, truncated)
                 : kv_list_all(kv, txn, q, limit, buf, out, offs, n, truncated);
        kv_rend(kv, txn);
    }
    if (rv == STORE_OK) {
        kv_read_fix(buf, out, offs, *n);
    } else {
        *n = 0;
    }
    free(offs);
    kv_maybe_trim(kv, 1 + *n);
    return rv;
}

int kv_stats(struct kv_state* kv, struct kv_stats* out) {
    MDB_txn* txn;
    MDB_val k = {5, (void*)"state"};
    MDB_val v;
    int rv = kv_rbegin(kv, &txn);

    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_get(txn, kv->dbi_meta, &k, &v);
    rv = mrc == 0 ? kv_meta_decode(&v, out) : store_err_from_mdb(mrc);
    kv_rend(kv, txn);
    return rv;
}

int kv_count(struct kv_state* kv, uint64_t* out) {
    struct kv_stats st;
    int rv = kv_stats(kv, &st);

    if (rv == STORE_OK) {
        *out = st.count;
    }
    return rv;
}

int kv_random_id(struct kv_state* kv,
                 uint64_t rnd,
                 struct kv_buf* buf,
                 const char** id,
                 size_t* id_len) {
    static const char hex[] = "0123456789abcdef";
    char probe[16];
    MDB_txn* txn;
    MDB_cursor* c;
    MDB_val k = {sizeof(probe), probe};
    MDB_val v;

    for (int i = 0; i < 16; i++) {
        probe[i] = hex[(rnd >> (60 - 4 * i)) & 0xf];
    }
    buf->len = 0;
    int rv = kv_rbegin(kv, &txn);
    if (rv != STORE_OK) {
        return rv;
    }
    int mrc = mdb_cursor_open(txn, kv->dbi_kv, &c);
    if (mrc == 0) {
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (mrc == MDB_NOTFOUND) {
            mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        }
        mdb_cursor_close(c);
    }
    if (mrc == 0) {
        size_t off = kv_buf_put(buf, k.mv_data, k.mv_size);
        rv = off == SIZE_MAX ? STORE_ENOMEM : STORE_OK;
        *id = (const char*)buf->data + (off == SIZE_MAX ? 0 : off);
        *id_len = k.mv_size;
    } else {
        rv = store_err_from_mdb(mrc);
    }
    kv_rend(kv, txn);
    kv_maybe_trim(kv, 1);
    return rv;
}

int kv_conf(struct kv_state* kv,
            uint8_t* buf,
            size_t cap,
            size_t* len,
            raft_index* conf_index) {
    MDB_txn* txn;
    MDB_val k = {4, (void*)"conf"};
    MDB_val v;
    struct kv_stats st;
    int rv = kv_rbegin(kv, &txn);

    if (rv != STORE_OK) {
        return rv;
    }
    *len = 0;
    *conf_index = 0;
    int mrc = mdb_get(txn, kv->dbi_meta, &k, &v);
    if (mrc == 0 && v.mv_size > cap) {
        rv = STORE_EINVAL;
    } else if (mrc == 0) {
        memcpy(buf, v.mv_data, v.mv_size);
        *len = v.mv_size;
    } else if (mrc != MDB_NOTFOUND) {
        rv = store_err_from_mdb(mrc);
    }
    k.mv_size = 5;
    k.mv_data = (void*)"state";
    if (rv == STORE_OK && mdb_get(txn, kv->dbi_meta, &k, &v) == 0 &&
        kv_meta_decode(&v, &st) == STORE_OK) {
        *conf_index = st.conf_index;
    }
    kv_rend(kv, txn);
    return rv;
}

int kv_restore_staging(struct kv_state* kv, struct kv_restore_staging* out) {
    MDB_txn* txn;
    MDB_cursor* c;
    MDB_val k, v;
    int rv = kv_rbegin(kv, &txn);

    memset(out, 0, sizeof(*out));
    if (rv != STORE_OK) {
        return rv;
    }
    rv = kv_staging_get(kv, txn, &out->upload_id, &out->total_size);
    int mrc = rv == STORE_OK ? mdb_cursor_open(txn, kv->dbi_restore, &c) : 0;
    if (rv == STORE_OK && mrc == 0) {
        for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
             mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            out->chunks++;
            out->bytes += v.mv_size;
        }
        mdb_cursor_close(c);
    }
    if (rv == STORE_OK && mrc != 0 && mrc != MDB_NOTFOUND) {
        rv = store_err_from_mdb(mrc);
    }
    kv_rend(kv, txn);
    return rv;
}

int kv_snapshot_meta(struct kv_state* kv,
                     const struct raft_conf* bootstrap,
                     struct raft_snapshot_meta* out) {
    /* A CONF entry's data is the encoded conf plus the driver's context
     * (member addresses): see raft_change_conf_ctx. */
    uint8_t conf[RAFT_CONF_DATA_MAX];
    size_t len;
    size_t used;
    raft_index conf_index;
    struct kv_stats st;
    int rv = kv_stats(kv, &st);

    if (rv == STORE_OK) {
        rv = kv_conf(kv, conf, sizeof(conf), &len, &conf_index);
    }
    if (rv != STORE_OK) {
        return rv == STORE_EINVAL ? STORE_ECORRUPT : rv;
    }
    memset(out, 0, sizeof(*out));
    out->index = st.applied_index;
    out->term = st.applied_term;
    if (st.conf_index == 0) {
        if (bootstrap != NULL) {
            out->conf = *bootstrap;
        }
        return STORE_OK;
    }
    return raft_conf_decode_prefix(conf, len, &out->conf, &used) == RAFT_OK
               ? STORE_OK
               : STORE_ECORRUPT;
}

/* Hash of one (index key, id) pair; both sides of the key index sum it. */
static uint64_t kv_pair_hash(const MDB_val* key, const MDB_val* id) {
    uint64_t h = XXH64(key->mv_data, key->mv_size, KV_HASH_SEED ^ 2);
    return XXH64(id->mv_data, id->mv_size, h);
}

/* Checks one stored entry and adds it to the recomputed counters. */
static int kv_verify_one(struct kv_state* kv,
                         const MDB_val* k,
                         const MDB_val* v,
                         struct kv_stats* re,
                         uint64_t* pairs,
                         char* errmsg) {
    Skein__KVEntry* p = skein__kventry__unpack(NULL, v->mv_size, v->mv_data);

    if (p == NULL || p->id != NULL || k->mv_size == 0 ||
        k->mv_size > KV_ID_MAX) {
        store_errf(errmsg, "%s: entry %.*s does not decode", kv->dir,
                   (int)k->mv_size, (const char*)k->mv_data);
        skein__kventry__free_unpacked(p, NULL);
        return STORE_ECORRUPT;
    }
    struct kv_entry e = kv_entry_of(p);
    e.id = k->mv_data;
    e.id_len = (uint32_t)k->mv_size;
    uint8_t kb[KV_KEY_MAX + 1];
    MDB_val ik = kv_index_key(kb, e.key, e.key_len);
    re->count++;
    re->hash += kv_entry_hash(&e);
    if (e.seq > re->seq) {
        re->seq = e.seq;
    }
    *pairs += kv_pair_hash(&ik, k);
    skein__kventry__free_unpacked(p, NULL);
    return STORE_OK;
}

/*
 * Recomputes count and hash from the entries, and checks the key index
 * against them: both scans are sequential; the index holds exactly the
 * (key, id) pairs of the entries when the pair counts and the sums of the
 * pair hashes agree.
 */
static int kv_verify_scan(struct kv_state* kv,
                          MDB_txn* txn,
                          struct kv_stats* re,
                          char* errmsg) {
    MDB_cursor* c;
    MDB_val k, v;
    uint64_t pairs = 0, ipairs = 0, icount = 0;
    int rv = STORE_OK;
    int mrc = mdb_cursor_open(txn, kv->dbi_kv, &c);

    if (mrc != 0) {
        return store_err_from_mdb(mrc);
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0 && rv == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        rv = kv_verify_one(kv, &k, &v, re, &pairs, errmsg);
    }
    mdb_cursor_close(c);
    if (rv == STORE_OK && mrc != MDB_NOTFOUND) {
        return store_err_from_mdb(mrc);
    }
    if (rv != STORE_OK || (mrc = mdb_cursor_open(txn, kv->dbi_by_key, &c))) {
        return rv != STORE_OK ? rv : store_err_from_mdb(mrc);
    }
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ipairs += kv_pair_hash(&k, &v);
        icount++;
    }
    mdb_cursor_close(c);
    if (mrc != MDB_NOTFOUND) {
        return store_err_from_mdb(mrc);
    }
    if (icount != re->count || ipairs != pairs) {
        store_errf(errmsg,
                   "%s: key index holds %llu ids that do not match the %llu "
                   "entries",
                   kv->dir, (unsigned long long)icount,
                   (unsigned long long)re->count);
        return STORE_ECORRUPT;
    }
    return STORE_OK;
}

int kv_verify(struct kv_state* kv, struct kv_stats* recomputed, char* errmsg) {
    MDB_txn* txn;
    MDB_val k = {5, (void*)"state"};
    MDB_val v;
    struct kv_stats stored;
    struct kv_stats re;
    int rv = kv_rbegin(kv, &txn);

    if (rv != STORE_OK) {
        return rv;
    }
    memset(&re, 0, sizeof(re));
    if (mdb_get(txn, kv->dbi_meta, &k, &v) != 0 ||
        kv_meta_decode(&v, &stored) != STORE_OK) {
        store_errf(errmsg, "%s: meta \"state\" missing or damaged", kv->dir);
        rv = STORE_ECORRUPT;
    }
    if (rv == STORE_OK) {
        rv = kv_verify_scan(kv, txn, &re, errmsg);
    }
    kv_rend(kv, txn);
    if (rv == STORE_OK) {
        re.applied_index = stored.applied_index;
        re.applied_term = stored.applied_term;
        re.idem_window = stored.idem_window;
        re.conf_index = stored.conf_index;
        if (re.count != stored.count || re.hash != stored.hash ||
            re.seq > stored.seq) {
            store_errf(errmsg,
                       "%s: stored count %llu hash %016llx, recomputed count "
                       "%llu hash %016llx",
                       kv->dir, (unsigned long long)stored.count,
                       (unsigned long long)stored.hash,
                       (unsigned long long)re.count,
                       (unsigned long long)re.hash);
            rv = STORE_ECORRUPT;
        }
        re.seq = stored.seq;
    }
    if (recomputed != NULL) {
        *recomputed = re;
    }
    return rv;
}
