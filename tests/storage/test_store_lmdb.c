/*
 * test_store_lmdb.c - the LMDB log store (storage/store_lmdb.h) through
 * its struct store_ops and raft_storage view: appends, suffix truncation,
 * compaction, boundary term, snapshot metadata, hard state round trip,
 * durability profiles, disk full, and refusal of corrupted, truncated and
 * garbage files.
 */
#define _GNU_SOURCE /* memmem, unshare */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_state.h"
#include "store_lmdb.h"
#include "test_util.h"

#define DATA_LEN 100

/* One test's store in its own temporary directory. */
struct fix {
    char* dir;             /* temp dir, removed at teardown */
    char* log_dir;         /* <dir>/log */
    struct store_lmdb* s;  /* open store or NULL */
    struct store st;       /* generic interface of s */
    struct raft_storage v; /* raft view of s */
};

static void fix_open(struct fix* f, const struct store_lmdb_options* o) {
    char err[STORE_ERRMSG_SIZE];
    int rv = store_lmdb_open(f->log_dir, o, &f->s, err);
    if (rv != STORE_OK) {
        fail_msg("open: %s", err);
    }
    store_lmdb_store(f->s, &f->st);
    f->st.ops->storage(f->st.ctx, &f->v);
}

static void fix_close(struct fix* f) {
    store_lmdb_close(f->s);
    f->s = NULL;
}

static int setup(void** state) {
    struct fix* f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("log");
    f->log_dir = tu_path(f->dir, "log");
    fix_open(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void** state) {
    struct fix* f = *state;
    fix_close(f);
    free(f->log_dir);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* Appends entries lo..hi in `term` as one batch. */
static int append_range(struct fix* f,
                        raft_index lo,
                        raft_index hi,
                        raft_term term) {
    size_t n = (size_t)(hi - lo + 1);
    struct raft_entry* e = calloc(n, sizeof(*e));
    uint8_t* data = malloc(n * DATA_LEN);
    for (size_t i = 0; i < n; i++) {
        tu_entry(&e[i], lo + i, term, data + i * DATA_LEN, DATA_LEN);
    }
    int rv = f->st.ops->append(f->st.ctx, e, n);
    free(e);
    free(data);
    return rv;
}

static void sync_to(struct fix* f, raft_index want, raft_term want_term) {
    raft_index di;
    raft_term dt;
    assert_int_equal(f->st.ops->sync(f->st.ctx, &di, &dt), RAFT_OK);
    assert_int_equal(di, want);
    assert_int_equal(dt, want_term);
}

/* Checks that the view returns lo..hi with the expected terms. */
static void check_range(struct fix* f,
                        raft_index lo,
                        raft_index hi,
                        raft_term term) {
    size_t n = (size_t)(hi - lo + 1);
    struct raft_entry* out = calloc(n, sizeof(*out));
    size_t got = 0;
    assert_int_equal(f->v.entries(f->v.ctx, lo, hi + 1, SIZE_MAX, out, &got),
                     RAFT_OK);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].index, lo + i);
        assert_int_equal(out[i].term, term);
        assert_int_equal(out[i].len, DATA_LEN);
        assert_true(tu_entry_ok(&out[i]));
        raft_term t = 0;
        assert_int_equal(f->v.term(f->v.ctx, lo + i, &t), RAFT_OK);
        assert_int_equal(t, term);
    }
    free(out);
}

static void test_open_empty(void** state) {
    struct fix* f = *state;
    struct raft_start_state ss;

    memset(&ss, 0xff, sizeof(ss));
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_OK);
    assert_int_equal(ss.hard_state.term, 0);
    assert_int_equal(ss.hard_state.vote, 0);
    assert_int_equal(ss.hard_state.commit, 0);
    assert_int_equal(ss.snapshot.index, 0);
    assert_int_equal(ss.applied, 0);
    assert_int_equal(f->v.first_index(f->v.ctx), 1);
    assert_int_equal(f->v.last_index(f->v.ctx), 0);
    raft_term t = 99;
    assert_int_equal(f->v.term(f->v.ctx, 0, &t), RAFT_OK);
    assert_int_equal(t, 0);
    sync_to(f, 0, 0);
}

static void test_append_sync_reopen(void** state) {
    struct fix* f = *state;

    assert_int_equal(append_range(f, 1, 10, 1), RAFT_OK);
    /* Not durable yet: the view shows the durable log only. */
    assert_int_equal(f->v.last_index(f->v.ctx), 0);
    assert_int_equal(store_lmdb_last_index(f->s), 10);
    sync_to(f, 10, 1);
    assert_int_equal(append_range(f, 11, 20, 2), RAFT_OK);
    sync_to(f, 20, 2);
    check_range(f, 1, 10, 1);
    check_range(f, 11, 20, 2);

    /* max_bytes stops early but returns at least one entry. */
    struct raft_entry out[20];
    size_t n = 0;
    assert_int_equal(f->v.entries(f->v.ctx, 1, 21, 250, out, &n), RAFT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->v.entries(f->v.ctx, 5, 21, 1, out, &n), RAFT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].index, 5);
    /* Out of range. */
    assert_int_equal(f->v.entries(f->v.ctx, 1, 22, SIZE_MAX, out, &n),
                     RAFT_EINVAL);
    raft_term t;
    assert_int_equal(f->v.term(f->v.ctx, 21, &t), RAFT_EINVAL);

    fix_close(f);
    fix_open(f, NULL);
    assert_int_equal(f->v.last_index(f->v.ctx), 20);
    check_range(f, 1, 10, 1);
    check_range(f, 11, 20, 2);
    assert_int_equal(store_lmdb_verify(f->s), STORE_OK);
}

static void test_suffix_truncation(void** state) {
    struct fix* f = *state;

    assert_int_equal(append_range(f, 1, 10, 1), RAFT_OK);
    sync_to(f, 10, 1);
    /* A new leader's entries replace 6..10. */
    assert_int_equal(append_range(f, 6, 8, 2), RAFT_OK);
    assert_int_equal(store_lmdb_last_index(f->s), 8);
    assert_int_equal(f->v.last_index(f->v.ctx), 5);
    sync_to(f, 8, 2);
    check_range(f, 1, 5, 1);
    check_range(f, 6, 8, 2);
    /* Replace the whole log from its first entry. */
    assert_int_equal(append_range(f, 1, 3, 3), RAFT_OK);
    sync_to(f, 3, 3);
    check_range(f, 1, 3, 3);
    fix_close(f);
    fix_open(f, NULL);
    assert_int_equal(f->v.last_index(f->v.ctx), 3);
    check_range(f, 1, 3, 3);
}

static void test_append_invalid(void** state) {
    struct fix* f = *state;

    assert_int_equal(append_range(f, 1, 5, 2), RAFT_OK);
    sync_to(f, 5, 2);
    /* A gap. */
    assert_int_equal(append_range(f, 7, 8, 2), RAFT_EINVAL);
    assert_int_equal(store_lmdb_last_error(f->s), STORE_EINVAL);
    assert_true(strlen(store_lmdb_errmsg(f->s)) > 0);
    /* Terms going down. */
    assert_int_equal(append_range(f, 6, 6, 1), RAFT_EINVAL);
    /* Nothing changed. */
    assert_int_equal(store_lmdb_last_index(f->s), 5);
    check_range(f, 1, 5, 2);
    assert_int_equal(f->st.ops->append(f->st.ctx, NULL, 0), RAFT_EINVAL);
}

static void test_hard_state_roundtrip(void** state) {
    struct fix* f = *state;
    struct raft_hard_state hs = {.term = 7, .vote = 3, .commit = 0};
    struct raft_start_state ss;

    assert_int_equal(f->st.ops->save_hard_state(f->st.ctx, &hs), RAFT_OK);
    sync_to(f, 0, 0);
    /* Staged hard state travels with the next append's transaction. */
    hs.commit = 4;
    assert_int_equal(f->st.ops->save_hard_state(f->st.ctx, &hs), RAFT_OK);
    assert_int_equal(append_range(f, 1, 4, 7), RAFT_OK);
    sync_to(f, 4, 7);
    fix_close(f);
    fix_open(f, NULL);
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_OK);
    assert_int_equal(ss.hard_state.term, 7);
    assert_int_equal(ss.hard_state.vote, 3);
    assert_int_equal(ss.hard_state.commit, 4);
    hs.term = 9;
    hs.vote = 0;
    assert_int_equal(f->st.ops->save_hard_state(f->st.ctx, &hs), RAFT_OK);
    sync_to(f, 4, 7);
    fix_close(f);
    fix_open(f, NULL);
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_OK);
    assert_int_equal(ss.hard_state.term, 9);
    assert_int_equal(ss.hard_state.vote, 0);
}

static struct raft_snapshot_meta snap_meta(raft_index index, raft_term term) {
    struct raft_snapshot_meta m;
    memset(&m, 0, sizeof(m));
    m.index = index;
    m.term = term;
    m.conf.count = 3;
    for (uint32_t i = 0; i < 3; i++) {
        m.conf.ids[i] = i + 1;
        m.conf.roles[i] = i == 2 ? RAFT_LEARNER : RAFT_VOTER;
    }
    return m;
}

static void test_compaction(void** state) {
    struct fix* f = *state;
    struct raft_snapshot_meta m = snap_meta(50, 2);
    raft_term t;
    struct raft_entry out[4];
    size_t n;

    assert_int_equal(append_range(f, 1, 30, 1), RAFT_OK);
    assert_int_equal(append_range(f, 31, 100, 2), RAFT_OK);
    /* Only durable entries may be compacted. */
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, 40), RAFT_EINVAL);
    sync_to(f, 100, 2);
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, 40), RAFT_OK);
    assert_int_equal(f->v.first_index(f->v.ctx), 41);
    assert_int_equal(f->v.term(f->v.ctx, 40, &t), RAFT_OK);
    assert_int_equal(t, 2);
    assert_int_equal(f->v.term(f->v.ctx, 39, &t), RAFT_ECOMPACTED);
    assert_int_equal(f->v.entries(f->v.ctx, 40, 42, SIZE_MAX, out, &n),
                     RAFT_ECOMPACTED);
    check_range(f, 41, 100, 2);
    /* Beyond the snapshot, or backwards: refused. */
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, 60), RAFT_EINVAL);
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, 30), RAFT_EINVAL);

    fix_close(f);
    fix_open(f, NULL);
    struct raft_start_state ss;
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_OK);
    assert_int_equal(ss.snapshot.index, 50);
    assert_int_equal(ss.snapshot.term, 2);
    assert_int_equal(ss.snapshot.conf.count, 3);
    assert_int_equal(ss.snapshot.conf.ids[2], 3);
    assert_int_equal(ss.snapshot.conf.roles[2], RAFT_LEARNER);
    assert_int_equal(ss.applied, 50);
    assert_int_equal(f->v.first_index(f->v.ctx), 41);
    assert_int_equal(store_lmdb_boundary_term(f->s), 2);
    check_range(f, 41, 100, 2);
    /* Compact everything (boundary = last). */
    m = snap_meta(100, 2);
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, 100), RAFT_OK);
    assert_int_equal(f->v.first_index(f->v.ctx), 101);
    assert_int_equal(f->v.last_index(f->v.ctx), 100);
    assert_int_equal(f->v.term(f->v.ctx, 100, &t), RAFT_OK);
    assert_int_equal(t, 2);
    assert_int_equal(append_range(f, 101, 102, 3), RAFT_OK);
    sync_to(f, 102, 3);
    fix_close(f);
    fix_open(f, NULL);
    check_range(f, 101, 102, 3);
}

static void test_compaction_chunks(void** state) {
    struct fix* f = *state;
    const raft_index total = 150000; /* > 2 compaction chunks */
    raft_term t;

    for (raft_index lo = 1; lo <= total; lo += 10000) {
        assert_int_equal(append_range(f, lo, lo + 9999, 1), RAFT_OK);
    }
    sync_to(f, total, 1);
    struct raft_snapshot_meta m = snap_meta(total - 100, 1);
    assert_int_equal(f->st.ops->compact(f->st.ctx, &m, total - 1000), RAFT_OK);
    assert_int_equal(f->v.first_index(f->v.ctx), total - 999);
    assert_int_equal(f->v.term(f->v.ctx, total - 1000, &t), RAFT_OK);
    fix_close(f);
    fix_open(f, NULL);
    assert_int_equal(f->v.first_index(f->v.ctx), total - 999);
    check_range(f, total - 999, total, 1);
}

static void test_install_snapshot(void** state) {
    struct fix* f = *state;
    struct raft_snapshot_meta m = snap_meta(500, 5);
    raft_term t;

    assert_int_equal(append_range(f, 1, 10, 1), RAFT_OK);
    sync_to(f, 10, 1);
    assert_int_equal(f->st.ops->install_snapshot(f->st.ctx, &m), RAFT_OK);
    assert_int_equal(f->v.first_index(f->v.ctx), 501);
    assert_int_equal(f->v.last_index(f->v.ctx), 500);
    assert_int_equal(f->v.term(f->v.ctx, 500, &t), RAFT_OK);
    assert_int_equal(t, 5);
    assert_int_equal(append_range(f, 501, 505, 6), RAFT_OK);
    sync_to(f, 505, 6);
    fix_close(f);
    fix_open(f, NULL);
    struct raft_start_state ss;
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_OK);
    assert_int_equal(ss.snapshot.index, 500);
    assert_int_equal(ss.snapshot.conf.count, 3);
    check_range(f, 501, 505, 6);
    memset(&m, 0, sizeof(m));
    assert_int_equal(f->st.ops->install_snapshot(f->st.ctx, &m), RAFT_EINVAL);
}

static void test_profiles(void** state) {
    struct fix* f = *state;
    struct store_lmdb_stats st;
    struct raft_hard_state hs = {.term = 1, .vote = 1, .commit = 0};

    for (int p = STORE_DURABILITY_STRICT; p <= STORE_DURABILITY_FAST; p++) {
        struct store_lmdb_options o;
        memset(&o, 0, sizeof(o));
        o.durability = p;
        o.fast_flush_ms = 3600 * 1000;
        fix_close(f);
        fix_open(f, &o);
        raft_index base = store_lmdb_last_index(f->s);
        assert_int_equal(append_range(f, base + 1, base + 10, 1), RAFT_OK);
        sync_to(f, base + 10, 1);
        assert_int_equal(append_range(f, base + 11, base + 20, 1), RAFT_OK);
        sync_to(f, base + 20, 1);
        store_lmdb_stats(f->s, &st);
        assert_int_equal(st.syncs, 2);
        assert_int_equal(st.flushes, p == STORE_DURABILITY_STRICT ? 2 : 0);
        /* A vote is flushed in every profile. */
        hs.term++;
        assert_int_equal(f->st.ops->save_hard_state(f->st.ctx, &hs), RAFT_OK);
        sync_to(f, base + 20, 1);
        store_lmdb_stats(f->s, &st);
        assert_int_equal(st.flushes, p == STORE_DURABILITY_STRICT ? 3 : 1);
    }
    int d = -1;
    assert_int_equal(store_durability_parse("balanced", &d), STORE_OK);
    assert_int_equal(d, STORE_DURABILITY_BALANCED);
    assert_int_equal(store_durability_parse("nope", &d), STORE_EINVAL);
    assert_string_equal(store_durability_name(STORE_DURABILITY_FAST), "fast");
}

static void test_locked(void** state) {
    struct fix* f = *state;
    struct store_lmdb* other = NULL;
    char err[STORE_ERRMSG_SIZE];

    assert_int_equal(store_lmdb_open(f->log_dir, NULL, &other, err),
                     STORE_EBUSY);
    assert_non_null(strstr(err, "in use"));
}

/* --- corruption ---------------------------------------------------- */

/* Writes `val` raw under key `index` (bypassing the store's encoding). */
static void raw_put(const char* dir, raft_index index, MDB_val* val, bool del) {
    MDB_env* env;
    MDB_txn* txn;
    MDB_dbi dbi;
    uint8_t kb[8];
    MDB_val k = {8, kb};

    store_put_be64(kb, index);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    if (del) {
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    } else {
        assert_int_equal(mdb_put(txn, dbi, &k, val, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Reads entry `index`'s raw value into a malloc'd copy. */
static uint8_t* raw_get(const char* dir, raft_index index, size_t* len) {
    MDB_env* env;
    MDB_txn* txn;
    MDB_dbi dbi;
    uint8_t kb[8];
    MDB_val k = {8, kb};
    MDB_val v;

    store_put_be64(kb, index);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t* copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    *len = v.mv_size;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return copy;
}

static void expect_refused(struct fix* f, int code, const char* what) {
    char err[STORE_ERRMSG_SIZE];
    struct store_lmdb* s = NULL;

    err[0] = '\0';
    assert_int_equal(store_lmdb_open(f->log_dir, NULL, &s, err), code);
    assert_null(s);
    if (strstr(err, what) == NULL) {
        fail_msg("error \"%s\" does not mention \"%s\"", err, what);
    }
    printf("    refused as expected: %s\n", err);
}

static void test_checksum_corruption(void** state) {
    struct fix* f = *state;
    size_t len;

    assert_int_equal(append_range(f, 1, 20, 1), RAFT_OK);
    sync_to(f, 20, 1);
    fix_close(f);

    /* One bit flipped in the data of entry 7. */
    uint8_t* v = raw_get(f->log_dir, 7, &len);
    v[STORE_LMDB_ENTRY_HEADER + 50] ^= 0x10;
    MDB_val bad = {len, v};
    raw_put(f->log_dir, 7, &bad, false);
    expect_refused(f, STORE_ECORRUPT, "entry 7: checksum mismatch");

    /* Opened without the scan, load() scans and refuses... */
    struct store_lmdb_options o = {.skip_verify = true};
    struct raft_start_state ss;
    fix_open(f, &o);
    assert_int_equal(f->st.ops->load(f->st.ctx, &ss), RAFT_ESTORAGE);
    assert_non_null(strstr(store_lmdb_errmsg(f->s), "entry 7: checksum"));
    /* ...and the view still refuses to serve the entry. */
    struct raft_entry out[20];
    size_t n;
    assert_int_equal(f->v.entries(f->v.ctx, 1, 21, SIZE_MAX, out, &n),
                     RAFT_ESTORAGE);
    assert_int_equal(n, 0);
    assert_int_equal(store_lmdb_last_error(f->s), STORE_ECORRUPT);
    assert_non_null(strstr(store_lmdb_errmsg(f->s), "entry 7"));
    assert_int_equal(f->v.entries(f->v.ctx, 1, 7, SIZE_MAX, out, &n), RAFT_OK);
    assert_int_equal(n, 6);
    assert_int_equal(store_lmdb_verify(f->s), STORE_ECORRUPT);
    fix_close(f);

    /* A value cut short. */
    v[STORE_LMDB_ENTRY_HEADER + 50] ^= 0x10;
    bad.mv_size = len - 10;
    raw_put(f->log_dir, 7, &bad, false);
    expect_refused(f, STORE_ECORRUPT, "entry 7: header says 100 data bytes");
    bad.mv_size = 10;
    raw_put(f->log_dir, 7, &bad, false);
    expect_refused(f, STORE_ECORRUPT, "shorter than the 24-byte header");

    /* The right value under the wrong key (entry 8's value at 7). */
    free(v);
    v = raw_get(f->log_dir, 8, &len);
    bad.mv_data = v;
    bad.mv_size = len;
    raw_put(f->log_dir, 7, &bad, false);
    expect_refused(f, STORE_ECORRUPT, "entry 7: checksum mismatch");

    /* A missing entry in the middle. */
    raw_put(f->log_dir, 7, NULL, true);
    expect_refused(f, STORE_ECORRUPT, "entries 7..7 are missing");
    free(v);
    fix_open(f, &o); /* for teardown */
}

/* Flips one byte of the file itself where entry data lives (bit rot). */
static void test_file_bit_rot(void** state) {
    struct fix* f = *state;
    struct raft_entry e;
    uint8_t data[DATA_LEN];

    assert_int_equal(append_range(f, 1, 20, 1), RAFT_OK);
    sync_to(f, 20, 1);
    fix_close(f);
    tu_entry(&e, 13, 1, data, DATA_LEN);
    char* path = tu_path(f->log_dir, "data.mdb");
    FILE* fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    uint8_t* file = malloc((size_t)size);
    fseek(fp, 0, SEEK_SET);
    assert_int_equal(fread(file, 1, (size_t)size, fp), (size_t)size);
    uint8_t* hit = memmem(file, (size_t)size, data, DATA_LEN);
    assert_non_null(hit);
    long off = (long)(hit - file) + 40;
    fseek(fp, off, SEEK_SET);
    fputc(file[off] ^ 0x01, fp);
    fclose(fp);
    free(file);
    free(path);
    expect_refused(f, STORE_ECORRUPT, "entry 13: checksum mismatch");
    struct store_lmdb_options o = {.skip_verify = true};
    fix_open(f, &o);
}

static void test_truncated_and_garbage(void** state) {
    struct fix* f = *state;
    struct stat st;

    assert_int_equal(append_range(f, 1, 2000, 1), RAFT_OK);
    sync_to(f, 2000, 1);
    fix_close(f);
    char* path = tu_path(f->log_dir, "data.mdb");
    assert_int_equal(stat(path, &st), 0);

    assert_int_equal(truncate(path, st.st_size / 2), 0);
    expect_refused(f, STORE_ECORRUPT, "truncated");
    assert_int_equal(truncate(path, 0), 0);
    expect_refused(f, STORE_ECORRUPT, "truncated");

    /* Garbage of a plausible size. */
    FILE* fp = fopen(path, "wb");
    uint64_t rng = 42;
    for (long i = 0; i < 64 * 1024; i++) {
        fputc((int)(tu_rand(&rng) & 0xff), fp);
    }
    fclose(fp);
    expect_refused(f, STORE_ECORRUPT, "not an LMDB file");
    free(path);

    /* Start over in an empty directory for teardown. */
    store_rmtree(f->log_dir);
    fix_open(f, NULL);
}

/* --- disk full ----------------------------------------------------- */

static void test_disk_full(void** state) {
    struct fix* f = *state;
    struct store_lmdb_options o = {.map_size = 256 * 1024};
    raft_index next = 1;
    int rv = RAFT_OK;

    fix_close(f);
    store_rmtree(f->log_dir);
    fix_open(f, &o);
    while (rv == RAFT_OK && next < 100000) {
        rv = append_range(f, next, next + 49, 1);
        if (rv == RAFT_OK) {
            next += 50;
            raft_index di;
            raft_term dt;
            assert_int_equal(f->st.ops->sync(f->st.ctx, &di, &dt), RAFT_OK);
        }
    }
    assert_int_equal(rv, RAFT_ENOMEM);
    assert_int_equal(store_lmdb_last_error(f->s), STORE_EDISKFULL);
    assert_non_null(strstr(store_lmdb_errmsg(f->s), "disk full"));
    printf("    disk full after %llu entries: %s\n",
           (unsigned long long)(next - 1), store_lmdb_errmsg(f->s));
    /* Nothing of the failed batch is visible; reads work. */
    assert_int_equal(store_lmdb_last_index(f->s), next - 1);
    check_range(f, 1, next - 1, 1);
    /* A hard state write fails the same clean way, or fits: either way
     * the store stays consistent. Grow the map: the same batch fits. */
    assert_int_equal(store_lmdb_set_map_size(f->s, 64 << 20), STORE_OK);
    assert_int_equal(append_range(f, next, next + 49, 1), RAFT_OK);
    sync_to(f, next + 49, 1);
    check_range(f, 1, next + 49, 1);
    fix_close(f);
    fix_open(f, NULL);
    check_range(f, 1, next + 49, 1);
}

/* Applies creates "d-<i>" for i in [from, to] as one batch each. */
static int apply_creates(struct kv_state* kv, raft_index from, raft_index to) {
    for (raft_index i = from; i <= to; i++) {
        char id[32];
        struct raft_entry e = {
            .index = i, .term = 1, .type = RAFT_ENTRY_NORMAL};
        struct kv_result r;
        snprintf(id, sizeof(id), "d-%04llu", (unsigned long long)i);
        uint8_t* data = tu_cmd_create(id, id, "k", "v", &e.len);
        e.data = data;
        int rv = kv_apply_batch(kv, &e, 1, &r);
        free(data);
        if (rv != STORE_OK || r.status != KV_STATUS_OK || r.entry.seq != i) {
            fprintf(stderr, "apply %llu: %d %s\n", (unsigned long long)i, rv,
                    kv_errmsg(kv));
            return -1;
        }
    }
    return 0;
}

/*
 * Deferred commit on a full file system (enospc_child's third part): the
 * batches apply in memory, the commit fails with STORE_EDISKFULL, and the
 * state is back at its last commit, idempotency map included (the same
 * requests apply again as new ones, with the same seqs), uncorrupted; once
 * space is back the replayed batches commit and survive a reopen.
 */
static int enospc_kv_deferred(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* state_dir = tu_path(dir, "state3");
    char* filler = tu_path(dir, "filler3");
    struct kv_state* kv;
    uint8_t block[4096];

    /* room again: the earlier parts filled the file system */
    char* old_log = tu_path(dir, "log");
    char* old_state = tu_path(dir, "state");
    tu_rmtree(old_log); /* frees the path */
    tu_rmtree(old_state);
    if (kv_open(state_dir, NULL, &kv, err) != STORE_OK ||
        kv_set_commit_delay(kv, 60000) != STORE_OK || apply_creates(kv, 1, 5) ||
        kv_commit_pending(kv) != STORE_OK) {
        fprintf(stderr, "deferred: open and first commit: %s\n", err);
        return 1;
    }
    memset(block, 0xcd, sizeof(block));
    FILE* fp = fopen(filler, "wb");
    while (fp != NULL && fwrite(block, 1, sizeof(block), fp) == sizeof(block) &&
           fflush(fp) == 0) {
    }
    if (fp != NULL) {
        fclose(fp);
    }
    if (apply_creates(kv, 6, 40) != 0 || kv_applied_index(kv) != 40) {
        return 1;
    }
    int rv = kv_commit_pending(kv);
    if (rv != STORE_EDISKFULL || kv_applied_index(kv) != 5 ||
        kv_pending_age_ms(kv) != -1 || kv_verify(kv, NULL, err) != STORE_OK) {
        fprintf(stderr, "deferred: commit gave %d, applied %llu: %s %s\n", rv,
                (unsigned long long)kv_applied_index(kv), kv_errmsg(kv), err);
        return 1;
    }
    printf("    deferred commit on a full disk: %s\n", kv_errmsg(kv));
    unlink(filler);
    /* The log replays them: new requests to the state, same results. */
    if (apply_creates(kv, 6, 40) != 0 || kv_commit_pending(kv) != STORE_OK ||
        kv_verify(kv, NULL, err) != STORE_OK) {
        fprintf(stderr, "deferred: replay: %s %s\n", kv_errmsg(kv), err);
        return 1;
    }
    kv_close(kv);
    if (kv_open(state_dir, NULL, &kv, err) != STORE_OK ||
        kv_applied_index(kv) != 40) {
        fprintf(stderr, "deferred: reopen: %s\n", err);
        return 1;
    }
    kv_close(kv);
    free(state_dir);
    free(filler);
    return 0;
}

/* The state machine on the same full tmpfs (enospc_child's second part). */
static int enospc_kv(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* state_dir = tu_path(dir, "state");
    char* filler = tu_path(dir, "filler2");
    struct kv_state* kv;
    char value[1024];
    raft_index next = 1;
    int rv = STORE_OK;

    if (kv_open(state_dir, NULL, &kv, err) != STORE_OK) {
        fprintf(stderr, "kv open: %s\n", err);
        return 1;
    }
    memset(value, 'x', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    FILE* fp = fopen(filler, "wb");
    for (int i = 0; i < 16; i++) {
        fwrite(value, 1, sizeof(value), fp);
    }
    fclose(fp);
    struct raft_entry e;
    uint8_t* data = NULL;
    while (rv == STORE_OK && next < 100000) {
        char id[32];
        snprintf(id, sizeof(id), "id-%06llu", (unsigned long long)next);
        free(data);
        data = tu_cmd_create(id, id, "k", value, &e.len);
        e.data = data;
        e.index = next;
        e.term = 1;
        e.type = RAFT_ENTRY_NORMAL;
        rv = kv_apply_batch(kv, &e, 1, NULL);
        next += rv == STORE_OK;
    }
    if (rv != STORE_EDISKFULL || kv_applied_index(kv) != next - 1) {
        fprintf(stderr, "kv: expected disk full, got %d: %s\n", rv,
                kv_errmsg(kv));
        return 1;
    }
    printf("    state ENOSPC after %llu entries: %s\n",
           (unsigned long long)(next - 1), kv_errmsg(kv));
    unlink(filler);
    if (kv_apply_batch(kv, &e, 1, NULL) != STORE_OK ||
        kv_verify(kv, NULL, err) != STORE_OK) {
        fprintf(stderr, "kv after freeing: %s %s\n", kv_errmsg(kv), err);
        return 1;
    }
    free(data);
    kv_close(kv);
    free(state_dir);
    free(filler);
    return enospc_kv_deferred(dir);
}

/*
 * A real ENOSPC (not the LMDB map): in a child with its own mount
 * namespace, a 1 MiB tmpfs holds a filler file, the log and a state. Both
 * are written until the file system is full: clean STORE_EDISKFULL,
 * nothing half-written, reads work; after the filler is removed the same
 * writes succeed. Then a state with deferred commit whose commit meets the
 * full disk (enospc_kv_deferred). Skipped where mounting is not allowed.
 */
static int enospc_child(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    struct fix f;
    char* filler = tu_path(dir, "filler");
    uint8_t block[4096];

    if (unshare(CLONE_NEWNS) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0) {
        return 77;
    }
    memset(block, 0xab, sizeof(block));
    FILE* fp = fopen(filler, "wb");
    for (int i = 0; i < 48; i++) {
        fwrite(block, 1, sizeof(block), fp);
    }
    fclose(fp);
    memset(&f, 0, sizeof(f));
    f.log_dir = tu_path(dir, "log");
    if (store_lmdb_open(f.log_dir, NULL, &f.s, err) != STORE_OK) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    store_lmdb_store(f.s, &f.st);
    f.st.ops->storage(f.st.ctx, &f.v);
    raft_index next = 1;
    int rv = RAFT_OK;
    while (rv == RAFT_OK && next < 1000000) {
        rv = append_range(&f, next, next + 19, 1);
        if (rv == RAFT_OK) {
            raft_index di;
            raft_term dt;
            rv = f.st.ops->sync(f.st.ctx, &di, &dt);
            next += 20;
        }
    }
    if (rv != RAFT_ENOMEM || store_lmdb_last_error(f.s) != STORE_EDISKFULL) {
        fprintf(stderr, "expected disk full, got %d: %s\n", rv,
                store_lmdb_errmsg(f.s));
        return 1;
    }
    printf("    ENOSPC after %llu entries: %s\n",
           (unsigned long long)(next - 1), store_lmdb_errmsg(f.s));
    if (store_lmdb_last_index(f.s) != next - 1) {
        return 1;
    }
    check_range(&f, 1, next - 1, 1);
    unlink(filler);
    if (append_range(&f, next, next + 19, 1) != RAFT_OK) {
        fprintf(stderr, "after freeing: %s\n", store_lmdb_errmsg(f.s));
        return 1;
    }
    sync_to(&f, next + 19, 1);
    store_lmdb_close(f.s);
    if (store_lmdb_open(f.log_dir, NULL, &f.s, err) != STORE_OK) {
        fprintf(stderr, "reopen: %s\n", err);
        return 1;
    }
    store_lmdb_store(f.s, &f.st);
    f.st.ops->storage(f.st.ctx, &f.v);
    check_range(&f, 1, next + 19, 1);
    store_lmdb_close(f.s);
    free(f.log_dir);
    free(filler);
    return enospc_kv(dir);
}

static void test_enospc(void** state) {
    struct fix* f = *state;
    char* dir = tu_path(f->dir, "tiny");

    assert_int_equal(mkdir(dir, 0755), 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int rc = enospc_child(dir);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        printf("    skipped: cannot mount a tmpfs here\n");
    } else {
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_sync_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_suffix_truncation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_append_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hard_state_roundtrip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_chunks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_install_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_profiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_corruption, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_file_bit_rot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_and_garbage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enospc, setup, teardown),
    };
    return cmocka_run_group_tests_name("store_lmdb", tests, NULL, NULL);
}
