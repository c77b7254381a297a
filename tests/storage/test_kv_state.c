/*
 * test_kv_state.c - the state machine (storage/kv_state.h), its snapshots
 * (kv_snapshot.h) and recovery (store_recover.h): create / update / delete,
 * compare-and-swap, idempotency with its log-driven expiry, malformed
 * commands, the order-independent state hash on two environments, reads,
 * snapshot round trip in chunks, interrupted installs, disk full,
 * recovery with replay from the log, and restores through the log
 * (RestoreOp: staging, commit, refusals, staging carried by snapshots).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "kv_snapshot.h"
#include "kv_state.h"
#include "skein.pb-c.h"
#include "store_lmdb.h"
#include "store_recover.h"
#include "test_util.h"

#define KV_KEY_PREFIX_FOR_TEST 0x01 /* kv_by_key key prefix (kv_state.h) */

/* One test's state environments under a temporary directory. */
struct fix {
    char* dir;          /* temp dir, removed at teardown */
    char* a_dir;        /* <dir>/a */
    char* b_dir;        /* <dir>/b */
    struct kv_state* a; /* main state */
    struct kv_state* b; /* second state, opened on demand */
    raft_index next;    /* next index for apply_cmd on a */
};

static struct kv_state* open_kv(const char* dir, const struct kv_options* o) {
    struct kv_state* kv = NULL;
    char err[STORE_ERRMSG_SIZE];
    if (kv_open(dir, o, &kv, err) != STORE_OK) {
        fail_msg("kv_open %s: %s", dir, err);
    }
    return kv;
}

static int setup(void** state) {
    struct fix* f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("kv");
    f->a_dir = tu_path(f->dir, "a");
    f->b_dir = tu_path(f->dir, "b");
    f->a = open_kv(f->a_dir, NULL);
    f->next = 1;
    *state = f;
    return 0;
}

static int teardown(void** state) {
    struct fix* f = *state;
    kv_close(f->a);
    kv_close(f->b);
    free(f->a_dir);
    free(f->b_dir);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* Applies one NORMAL entry with `data` (freed) at f->next on a. */
static void apply_data(struct fix* f,
                       uint8_t* data,
                       uint32_t len,
                       struct kv_result* r) {
    struct raft_entry e = {.term = 1,
                           .index = f->next++,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = len,
                           .data = data};
    assert_int_equal(kv_apply_batch(f->a, &e, 1, r), STORE_OK);
    free(data);
}

static void apply_create(struct fix* f,
                         const char* rid,
                         const char* id,
                         const char* key,
                         const char* value,
                         struct kv_result* r) {
    uint32_t len;
    uint8_t* d = tu_cmd_create(rid, id, key, value, &len);
    apply_data(f, d, len, r);
}

static void apply_update(struct fix* f,
                         const char* rid,
                         const char* id,
                         const char* key,
                         const char* value,
                         int64_t expected,
                         struct kv_result* r) {
    uint32_t len;
    uint8_t* d = tu_cmd_update(rid, id, key, value, expected, &len);
    apply_data(f, d, len, r);
}

static void apply_delete(struct fix* f,
                         const char* rid,
                         const char* id,
                         struct kv_result* r) {
    uint32_t len;
    uint8_t* d = tu_cmd_delete(rid, id, &len);
    apply_data(f, d, len, r);
}

static void expect_entry(const struct kv_entry* e,
                         const char* id,
                         const char* key,
                         const char* value,
                         uint64_t seq) {
    assert_int_equal(e->id_len, strlen(id));
    assert_string_equal(e->id, id);
    assert_string_equal(e->key, key);
    assert_int_equal(e->key_len, strlen(key));
    assert_string_equal(e->value, value);
    assert_int_equal(e->seq, seq);
}

static struct kv_stats stats_of(struct kv_state* kv) {
    struct kv_stats st;
    assert_int_equal(kv_stats(kv, &st), STORE_OK);
    return st;
}

static void verify_ok(struct kv_state* kv) {
    char err[STORE_ERRMSG_SIZE] = "";
    if (kv_verify(kv, NULL, err) != STORE_OK) {
        fail_msg("kv_verify: %s", err);
    }
}

/* --- writes -------------------------------------------------------- */

static void test_create_read(void** state) {
    struct fix* f = *state;
    struct kv_result r;
    struct kv_buf buf = {0};
    struct kv_entry e, page[KV_LIST_MAX];
    size_t n;
    bool more;

    apply_create(f, "r1", "id-b", "alpha", "one", &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(r.op, KV_OP_CREATE);
    assert_true(r.applied);
    assert_false(r.duplicate);
    assert_true(r.has_entry);
    expect_entry(&r.entry, "id-b", "alpha", "one", 1);
    assert_int_equal(r.entry.source_node, 1);
    assert_int_equal(r.entry.created_at, 1004);
    assert_string_equal(r.request_id, "r1");
    apply_create(f, "r2", "id-a", "beta", "two", &r);
    assert_int_equal(r.seq, 2);
    apply_create(f, NULL, "id-c", "alpha", "", &r);
    assert_int_equal(r.seq, 3);
    assert_null(r.request_id);
    /* The empty key is a key like any other. */
    apply_create(f, NULL, "id-d", "", "empty key", &r);
    assert_int_equal(r.status, KV_STATUS_OK);

    assert_int_equal(kv_get(f->a, "id-b", 4, &buf, &e), STORE_OK);
    expect_entry(&e, "id-b", "alpha", "one", 1);
    assert_int_equal(kv_get(f->a, "id-x", 4, &buf, &e), STORE_ENOTFOUND);

    struct kv_list_query q = {.limit = 10};
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 4);
    assert_false(more);
    assert_string_equal(page[0].id, "id-a");
    assert_string_equal(page[1].id, "id-b");
    assert_string_equal(page[3].value, "empty key");
    /* Paging: limit 1, then after the last id seen. */
    q.limit = 1;
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 1);
    assert_true(more);
    q.after = "id-a";
    q.after_len = 4;
    q.limit = 2;
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].id, "id-b");
    assert_string_equal(page[1].id, "id-c");
    assert_true(more);
    /* By key. */
    struct kv_list_query kq = {.key = "alpha", .key_len = 5};
    assert_int_equal(kv_list(f->a, &kq, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(page[0].id, "id-b");
    assert_string_equal(page[1].id, "id-c");
    kq.after = "id-b";
    kq.after_len = 4;
    assert_int_equal(kv_list(f->a, &kq, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(page[0].id, "id-c");
    struct kv_list_query eq = {.key = "", .key_len = 0};
    assert_int_equal(kv_list(f->a, &eq, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(page[0].id, "id-d");

    uint64_t count;
    assert_int_equal(kv_count(f->a, &count), STORE_OK);
    assert_int_equal(count, 4);
    for (uint64_t rnd = 0; rnd < 64; rnd++) {
        const char* id;
        size_t id_len;
        assert_int_equal(
            kv_random_id(f->a, rnd * 0x0123456789abcdefULL, &buf, &id, &id_len),
            STORE_OK);
        assert_int_equal(id_len, 4);
        assert_memory_equal(id, "id-", 3);
    }
    struct kv_stats st = stats_of(f->a);
    assert_int_equal(st.applied_index, 4);
    assert_int_equal(st.applied_term, 1);
    assert_int_equal(st.seq, 4);
    assert_int_equal(st.count, 4);
    verify_ok(f->a);
    kv_buf_free(&buf);
}

static void test_update_cas_delete(void** state) {
    struct fix* f = *state;
    struct kv_result r;
    struct kv_buf buf = {0};
    struct kv_entry e, page[KV_LIST_MAX];
    size_t n;
    bool more;

    apply_create(f, "r1", "id-1", "k", "v1", &r);
    apply_update(f, "r2", "id-1", NULL, "v2", -1, &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(r.op, KV_OP_UPDATE);
    expect_entry(&r.entry, "id-1", "k", "v2", 2);
    uint64_t hash = stats_of(f->a).hash;

    /* CAS with a stale seq: refused, nothing changes but applied. */
    apply_update(f, "r3", "id-1", NULL, "v3", 1, &r);
    assert_int_equal(r.status, KV_STATUS_CAS_MISMATCH);
    assert_int_equal(r.current_seq, 2);
    assert_non_null(r.error);
    assert_int_equal(stats_of(f->a).hash, hash);
    assert_int_equal(stats_of(f->a).seq, 2);
    /* CAS with the current seq, moving the entry to another key. */
    apply_update(f, "r4", "id-1", "k2", "v3", 2, &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    expect_entry(&r.entry, "id-1", "k2", "v3", 3);
    struct kv_list_query q = {.key = "k", .key_len = 1};
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 0);
    q.key = "k2";
    q.key_len = 2;
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 1);
    /* Unknown id. */
    apply_update(f, NULL, "id-9", NULL, "x", -1, &r);
    assert_int_equal(r.status, KV_STATUS_NOT_FOUND);
    assert_int_equal(r.seq, 0);
    /* A conditional delete with a stale seq is refused. */
    uint32_t len;
    uint8_t* d = tu_cmd_delete_cas("r6", "id-1", 2, &len);
    apply_data(f, d, len, &r);
    assert_int_equal(r.status, KV_STATUS_CAS_MISMATCH);
    assert_int_equal(r.current_seq, 3);
    assert_int_equal(stats_of(f->a).count, 1);
    /* Delete takes a seq too, and returns the removed entry. */
    apply_delete(f, "r5", "id-1", &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(r.op, KV_OP_DELETE);
    assert_int_equal(r.seq, 4);
    expect_entry(&r.entry, "id-1", "k2", "v3", 3);
    assert_int_equal(kv_get(f->a, "id-1", 4, &buf, &e), STORE_ENOTFOUND);
    assert_int_equal(kv_list(f->a, &q, &buf, page, KV_LIST_MAX, &n, &more),
                     STORE_OK);
    assert_int_equal(n, 0);
    apply_delete(f, NULL, "id-1", &r);
    assert_int_equal(r.status, KV_STATUS_NOT_FOUND);
    struct kv_stats st = stats_of(f->a);
    assert_int_equal(st.count, 0);
    assert_int_equal(st.hash, 0);
    assert_int_equal(st.seq, 4);
    verify_ok(f->a);
    kv_buf_free(&buf);
}

static void test_idempotency(void** state) {
    struct fix* f = *state;
    struct kv_result r;

    apply_create(f, "req-1", "id-1", "k", "first", &r);
    assert_int_equal(r.seq, 1);
    struct kv_stats before = stats_of(f->a);
    /* The same request id again, even with another payload: the original
     * result, nothing applied. */
    apply_create(f, "req-1", "id-2", "k", "second", &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_true(r.duplicate);
    assert_int_equal(r.op, KV_OP_CREATE);
    assert_int_equal(r.seq, 1);
    expect_entry(&r.entry, "id-1", "k", "first", 1);
    struct kv_stats after = stats_of(f->a);
    assert_int_equal(after.count, before.count);
    assert_int_equal(after.seq, before.seq);
    assert_int_equal(after.hash, before.hash);
    assert_int_equal(after.applied_index, before.applied_index + 1);

    /* Failures are remembered too. */
    apply_update(f, "req-2", "id-7", NULL, "x", -1, &r);
    assert_int_equal(r.status, KV_STATUS_NOT_FOUND);
    apply_create(f, NULL, "id-7", "k", "now exists", &r);
    apply_update(f, "req-2", "id-7", NULL, "x", -1, &r);
    assert_true(r.duplicate);
    assert_int_equal(r.status, KV_STATUS_NOT_FOUND);
    assert_non_null(r.error);
    /* A CAS that won is answered OK on retry, not CAS_MISMATCH. */
    apply_update(f, "req-3", "id-7", NULL, "y", 2, &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    apply_update(f, "req-3", "id-7", NULL, "y", 2, &r);
    assert_true(r.duplicate);
    assert_int_equal(r.status, KV_STATUS_OK);
    expect_entry(&r.entry, "id-7", "k", "y", 3);
    verify_ok(f->a);
}

/* A forwarded write names its follower and tag (Command.origin_*): the
 * result carries them, so that follower can answer its client from its
 * own apply; a retry's result carries the retry's own. */
static void test_origin_in_results(void** state) {
    struct fix* f = *state;
    struct kv_result r;
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__CreateOp op = SKEIN__CREATE_OP__INIT;
    uint32_t len;

    cmd.request_id = (char*)"fwd-1";
    cmd.op_case = SKEIN__COMMAND__OP_CREATE;
    cmd.create = &op;
    op.id = (char*)"id-f";
    op.key = (char*)"k";
    op.value = (char*)"v";
    cmd.has_origin_node = 1;
    cmd.origin_node = 7;
    cmd.has_origin_tag = 1;
    cmd.origin_tag = 42;
    uint8_t* d = tu_pack(&cmd, &len);
    apply_data(f, d, len, &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_false(r.duplicate);
    assert_int_equal(r.origin_node, 7);
    assert_int_equal(r.origin_tag, 42);

    cmd.origin_tag = 43;
    d = tu_pack(&cmd, &len);
    apply_data(f, d, len, &r);
    assert_true(r.duplicate);
    assert_int_equal(r.origin_tag, 43);
    expect_entry(&r.entry, "id-f", "k", "v", 1);

    apply_create(f, "plain", "id-p", "k", "v", &r);
    assert_int_equal(r.origin_node, 0);
    assert_int_equal(r.origin_tag, 0);
    verify_ok(f->a);
}

/* Applies the same log to a state split into batches of `batch` entries. */
static struct kv_stats apply_log_batched(const char* dir,
                                         const struct raft_entry* ents,
                                         size_t n,
                                         size_t batch,
                                         struct kv_result* res,
                                         const struct kv_options* o) {
    struct kv_state* kv = open_kv(dir, o);
    for (size_t i = 0; i < n; i += batch) {
        size_t m = n - i < batch ? n - i : batch;
        assert_int_equal(kv_apply_batch(kv, ents + i, m, res + i), STORE_OK);
        /* Results point into kv's buffer: copy what we compare. */
        for (size_t j = i; j < i + m; j++) {
            res[j].entry.id = NULL;
            res[j].entry.key = NULL;
            res[j].entry.value = NULL;
            res[j].request_id = NULL;
            res[j].error = NULL;
        }
    }
    struct kv_stats st = stats_of(kv);
    verify_ok(kv);
    kv_close(kv);
    return st;
}

static void test_idem_expiry(void** state) {
    struct fix* f = *state;
    struct kv_options o = {.idem_window = 10};
    struct raft_entry ents[40];
    uint8_t* owned[40];
    uint32_t len;

    /* index 1: create with r1; 2..10: noops; 11: retry (10 after: still
     * remembered); 12: noop; 13..: noops; 25: retry (24 after: expired, so
     * applied again as a new request). */
    memset(ents, 0, sizeof(ents));
    memset(owned, 0, sizeof(owned));
    for (size_t i = 0; i < 40; i++) {
        ents[i].index = i + 1;
        ents[i].term = 1;
        ents[i].type = RAFT_ENTRY_NOOP;
    }
    owned[0] = tu_cmd_create("r1", "id-1", "k", "v", &len);
    ents[0].type = RAFT_ENTRY_NORMAL;
    ents[0].data = owned[0];
    ents[0].len = len;
    owned[10] = tu_cmd_create("r1", "id-2", "k", "v", &len);
    ents[10] = ents[0];
    ents[10].index = 11;
    ents[10].data = owned[10];
    ents[10].len = len;
    owned[24] = tu_cmd_create("r1", "id-3", "k", "v", &len);
    ents[24] = ents[10];
    ents[24].index = 25;
    ents[24].data = owned[24];
    ents[24].len = len;

    struct kv_result ra[40], rb[40], rc[40];
    char* c_dir = tu_path(f->dir, "c");
    struct kv_stats sa = apply_log_batched(f->b_dir, ents, 40, 40, ra, &o);
    struct kv_stats sb = apply_log_batched(c_dir, ents, 40, 1, rb, &o);
    char* d_dir = tu_path(f->dir, "d");
    struct kv_stats sc = apply_log_batched(d_dir, ents, 40, 7, rc, &o);
    assert_true(ra[10].duplicate);
    assert_int_equal(ra[10].seq, 1);
    assert_false(ra[24].duplicate);
    assert_int_equal(ra[24].status, KV_STATUS_OK);
    assert_int_equal(ra[24].seq, 2);
    assert_int_equal(sa.count, 2);
    /* Batch boundaries change nothing. */
    for (size_t i = 0; i < 40; i++) {
        assert_int_equal(ra[i].duplicate, rb[i].duplicate);
        assert_int_equal(ra[i].duplicate, rc[i].duplicate);
        assert_int_equal(ra[i].status, rb[i].status);
        assert_int_equal(ra[i].seq, rc[i].seq);
    }
    assert_int_equal(sa.hash, sb.hash);
    assert_int_equal(sa.hash, sc.hash);
    assert_int_equal(sa.idem_window, 10);
    for (size_t i = 0; i < 40; i++) {
        free(owned[i]);
    }
    free(c_dir);
    free(d_dir);
}

/* Many request ids, retries inside and outside the window, a reopen (the
 * hash index is rebuilt) and a failed batch (it is rolled back), checked
 * against a reference model of the expiry rule. */
static void test_idem_model(void** state) {
    struct fix* f = *state;
    struct kv_options o = {.idem_window = 300};
    enum { N = 6000, RIDS = 1500 };
    raft_index* last = calloc(RIDS, sizeof(*last));
    uint64_t rng = 5;
    size_t dups = 0, fresh_again = 0;

    kv_close(f->a);
    store_rmtree(f->a_dir);
    f->a = open_kv(f->a_dir, &o);
    for (raft_index i = 1; i <= N; i += 50) {
        struct raft_entry e[50];
        uint8_t* owned[50];
        struct kv_result r[50];
        size_t rid_of[50];
        for (size_t j = 0; j < 50; j++) {
            char rid[16], id[24];
            rid_of[j] = (size_t)tu_below(&rng, RIDS);
            snprintf(rid, sizeof(rid), "r%zu", rid_of[j]);
            snprintf(id, sizeof(id), "id-%llu", (unsigned long long)(i + j));
            owned[j] = tu_cmd_create(rid, id, "k", "v", &e[j].len);
            e[j].data = owned[j];
            e[j].index = i + j;
            e[j].term = 1;
            e[j].type = RAFT_ENTRY_NORMAL;
        }
        if (i == 2001) {
            /* A batch that fails (a gap at its end) changes nothing. */
            raft_index keep = e[49].index;
            e[49].index += 5;
            assert_int_equal(kv_apply_batch(f->a, e, 50, r), STORE_EINVAL);
            e[49].index = keep;
        }
        assert_int_equal(kv_apply_batch(f->a, e, 50, r), STORE_OK);
        for (size_t j = 0; j < 50; j++) {
            raft_index at = i + j;
            raft_index prev = last[rid_of[j]];
            bool dup = prev != 0 && prev + 300 >= at;
            assert_int_equal(r[j].duplicate, dup);
            if (dup) {
                dups++;
                char id[24];
                snprintf(id, sizeof(id), "id-%llu", (unsigned long long)prev);
                assert_string_equal(r[j].entry.id, id);
            } else {
                fresh_again += prev != 0;
                last[rid_of[j]] = at;
            }
            free(owned[j]);
        }
        if (i == 3001) {
            kv_close(f->a);
            f->a = open_kv(f->a_dir, &o);
        }
    }
    printf(
        "    %d writes: %zu answered from the table, %zu expired and "
        "applied again\n",
        N, dups, fresh_again);
    assert_true(dups > 100 && fresh_again > 100);
    verify_ok(f->a);
    free(last);
}

static void test_malformed(void** state) {
    struct fix* f = *state;
    struct kv_result r;
    uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    char long_key[KV_KEY_MAX + 2];

    apply_create(f, NULL, "id-1", "k", "v", &r);
    struct kv_stats before = stats_of(f->a);
    uint8_t* g = malloc(sizeof(garbage));
    memcpy(g, garbage, sizeof(garbage));
    apply_data(f, g, sizeof(garbage), &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "malformed"));
    apply_data(f, NULL, 0, &r); /* an empty Command: no operation */
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    apply_create(f, "rx", "", "k", "v", &r); /* no id */
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    memset(long_key, 'x', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    apply_create(f, NULL, "id-2", long_key, "v", &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    apply_create(f, NULL, "id-1", "k", "again", &r); /* duplicate id */
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    apply_delete(f, NULL, NULL, &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    /* Not UTF-8 (only the nng path can carry it: the REST API is JSON). */
    apply_create(f, NULL, "id-3", "k\xff", "v", &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    apply_create(f, NULL, "id-4", "k", "v\xc3\x28", &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "UTF-8"));
    struct kv_stats after = stats_of(f->a);
    assert_int_equal(after.count, before.count);
    assert_int_equal(after.hash, before.hash);
    assert_int_equal(after.seq, before.seq);
    assert_int_equal(after.applied_index, before.applied_index + 8);
    verify_ok(f->a);
}

static void test_utf8_valid(void** state) {
    static const char* const good[] = {"",
                                       "plain",
                                       "caf\xc3\xa9",
                                       "\xe2\x82\xac",
                                       "\xf0\x9f\x98\x80",
                                       "\xf4\x8f\xbf\xbf" /* U+10FFFF */,
                                       "\xed\x9f\xbf" /* U+D7FF */};
    static const char* const bad[] = {
        "\x80",             /* a lone continuation byte */
        "\xc3",             /* truncated */
        "\xc3\x28",         /* bad continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, three bytes */
        "\xf0\x80\x80\xaf", /* overlong, four bytes */
        "\xed\xa0\x80",     /* a surrogate, U+D800 */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80",
        "\xff",
        "ok\xe2\x82"};
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(kv_utf8_valid(good[i], strlen(good[i])));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(kv_utf8_valid(bad[i], strlen(bad[i])));
    }
}

static void test_noop_conf_skip_gap(void** state) {
    struct fix* f = *state;
    struct raft_conf conf, back;
    uint8_t cb[RAFT_CONF_ENCODED_MAX];
    uint8_t got[RAFT_CONF_ENCODED_MAX];
    struct raft_entry e[6];
    struct kv_result r[6];
    size_t len;
    raft_index ci;

    memset(&conf, 0, sizeof(conf));
    conf.count = 2;
    conf.ids[0] = 4;
    conf.ids[1] = 9;
    conf.roles[1] = RAFT_LEARNER;
    memset(e, 0, sizeof(e));
    for (int i = 0; i < 6; i++) {
        e[i].index = (raft_index)i + 1;
        e[i].term = 2;
        e[i].type = RAFT_ENTRY_NOOP;
    }
    e[1].type = RAFT_ENTRY_CONF;
    e[1].data = cb;
    e[1].len = (uint32_t)raft_conf_encode(&conf, cb);
    assert_int_equal(kv_apply_batch(f->a, e, 3, r), STORE_OK);
    assert_int_equal(kv_applied_index(f->a), 3);
    assert_int_equal(kv_conf(f->a, got, sizeof(got), &len, &ci), STORE_OK);
    assert_int_equal(ci, 2);
    assert_int_equal(len, e[1].len);
    struct raft_snapshot_meta m;
    assert_int_equal(kv_snapshot_meta(f->a, NULL, &m), STORE_OK);
    assert_int_equal(m.index, 3);
    assert_int_equal(m.term, 2);
    assert_int_equal(m.conf.count, 2);
    assert_int_equal(m.conf.roles[1], RAFT_LEARNER);
    (void)back;
    /* Overlap: 2..3 skipped, 4..5 applied. */
    assert_int_equal(kv_apply_batch(f->a, e + 1, 4, r), STORE_OK);
    assert_false(r[0].applied);
    assert_false(r[1].applied);
    assert_true(r[2].applied);
    assert_int_equal(r[3].index, 5);
    assert_int_equal(kv_applied_index(f->a), 5);
    /* Entirely old: nothing. */
    assert_int_equal(kv_apply_batch(f->a, e, 2, r), STORE_OK);
    assert_int_equal(kv_applied_index(f->a), 5);
    /* A gap is refused, nothing applied. */
    e[5].index = 7;
    assert_int_equal(kv_apply_batch(f->a, e + 5, 1, r), STORE_EINVAL);
    assert_non_null(strstr(kv_errmsg(f->a), "gap"));
    assert_int_equal(kv_applied_index(f->a), 5);
    /* Not consecutive. */
    e[5].index = 6;
    e[4].index = 9;
    assert_int_equal(kv_apply_batch(f->a, e + 4, 2, r), STORE_EINVAL);
}

/* --- hashes ---------------------------------------------------------- */

/* Builds entries 1..n of tu_gen_entry with term 1; data in owned[]. */
static struct raft_entry* gen_log(size_t n, uint8_t*** owned) {
    struct raft_entry* e = calloc(n, sizeof(*e));
    *owned = calloc(n, sizeof(**owned));
    for (size_t i = 0; i < n; i++) {
        tu_gen_entry(i + 1, 1 + i / 500, &e[i], &(*owned)[i]);
    }
    return e;
}

static void free_log(struct raft_entry* e, uint8_t** owned, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(owned[i]);
    }
    free(owned);
    free(e);
}

static void test_hash_two_envs(void** state) {
    struct fix* f = *state;
    const size_t n = 3000;
    uint8_t** owned;
    struct raft_entry* log = gen_log(n, &owned);
    struct kv_result* ra = calloc(n, sizeof(*ra));
    struct kv_result* rb = calloc(n, sizeof(*rb));

    struct kv_stats sa = apply_log_batched(f->b_dir, log, n, 1, ra, NULL);
    char* c_dir = tu_path(f->dir, "c");
    struct kv_stats sb = apply_log_batched(c_dir, log, n, 97, rb, NULL);
    assert_int_equal(sa.applied_index, n);
    assert_int_equal(sa.hash, sb.hash);
    assert_int_equal(sa.count, sb.count);
    assert_int_equal(sa.seq, sb.seq);
    assert_int_equal(sa.conf_index, sb.conf_index);
    size_t dup = 0, bad = 0, nf = 0, cas = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ra[i].status, rb[i].status);
        assert_int_equal(ra[i].seq, rb[i].seq);
        assert_int_equal(ra[i].duplicate, rb[i].duplicate);
        dup += ra[i].duplicate;
        bad += ra[i].status == KV_STATUS_BAD_REQUEST;
        nf += ra[i].status == KV_STATUS_NOT_FOUND;
        cas += ra[i].status == KV_STATUS_CAS_MISMATCH;
    }
    printf(
        "    %zu entries: count %llu seq %llu hash %016llx; %zu retries, "
        "%zu bad, %zu not found, %zu cas mismatches\n",
        n, (unsigned long long)sa.count, (unsigned long long)sa.seq,
        (unsigned long long)sa.hash, dup, bad, nf, cas);
    assert_true(dup > 0 && bad > 0 && nf > 0 && cas > 0);

    /* The hash is the sum of the entry hashes of what a list returns. */
    struct kv_state* kv = open_kv(f->b_dir, NULL);
    struct kv_buf buf = {0};
    struct kv_entry* page = calloc(KV_LIST_MAX, sizeof(*page));
    struct kv_list_query q = {.limit = KV_LIST_MAX};
    uint64_t sum = 0, count = 0;
    char after[KV_ID_MAX + 1];
    bool more = true;
    while (more) {
        size_t got;
        assert_int_equal(kv_list(kv, &q, &buf, page, KV_LIST_MAX, &got, &more),
                         STORE_OK);
        for (size_t i = 0; i < got; i++) {
            sum += kv_entry_hash(&page[i]);
        }
        count += got;
        if (got > 0) {
            memcpy(after, page[got - 1].id, page[got - 1].id_len + 1);
            q.after = after;
            q.after_len = page[got - 1].id_len;
        }
    }
    assert_int_equal(count, sa.count);
    assert_int_equal(sum, sa.hash);
    kv_close(kv);
    kv_buf_free(&buf);
    free(page);
    free(c_dir);
    free(ra);
    free(rb);
    free_log(log, owned, n);
}

/* Two different histories ending with the same live entries hash equal. */
static void test_hash_order_independent(void** state) {
    struct fix* f = *state;
    struct kv_result r;

    f->b = open_kv(f->b_dir, NULL);
    apply_create(f, NULL, "z1", "k", "x", &r);
    apply_create(f, NULL, "e2", "k", "same", &r);
    apply_delete(f, NULL, "z1", &r);
    apply_create(f, NULL, "e3", "q", "same too", &r);
    uint64_t ha = stats_of(f->a).hash;

    struct kv_state* a = f->a;
    f->a = f->b;
    f->next = 1;
    apply_create(f, NULL, "q1", "other", "y", &r);
    apply_create(f, NULL, "e2", "k", "same", &r);
    apply_delete(f, NULL, "q1", &r);
    apply_create(f, NULL, "e3", "q", "same too", &r);
    uint64_t hb = stats_of(f->a).hash;
    f->b = f->a;
    f->a = a;
    assert_int_equal(ha, hb);
    assert_int_not_equal(ha, 0);
}

static void test_persistence(void** state) {
    struct fix* f = *state;
    struct kv_result r;

    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof(id), "id-%02d", i);
        apply_create(f, id, id, "k", "v", &r);
    }
    assert_int_equal(kv_sync(f->a), STORE_OK);
    assert_int_equal(kv_durable_applied(f->a), 50);
    struct kv_stats before = stats_of(f->a);
    kv_close(f->a);
    f->a = open_kv(f->a_dir, NULL);
    struct kv_stats after = stats_of(f->a);
    assert_memory_equal(&before, &after, sizeof(before));
    assert_int_equal(kv_applied_index(f->a), 50);
    assert_int_equal(kv_durable_applied(f->a), 50);
    verify_ok(f->a);
    kv_trim_memory(f->a); /* harmless at any time */
    verify_ok(f->a);
    /* Another process (or this one) cannot open it twice. */
    struct kv_state* other = NULL;
    char err[STORE_ERRMSG_SIZE];
    assert_int_equal(kv_open(f->a_dir, NULL, &other, err), STORE_EBUSY);
}

/* --- snapshots ------------------------------------------------------- */

static void apply_gen(struct kv_state* kv, raft_index lo, raft_index hi) {
    for (raft_index i = lo; i <= hi; i += 100) {
        struct raft_entry e[100];
        uint8_t* owned[100];
        size_t n = 0;
        for (raft_index j = i; j <= hi && j < i + 100; j++, n++) {
            tu_gen_entry(j, 1, &e[n], &owned[n]);
        }
        assert_int_equal(kv_apply_batch(kv, e, n, NULL), STORE_OK);
        for (size_t k = 0; k < n; k++) {
            free(owned[k]);
        }
    }
}

static void test_snapshot_roundtrip(void** state) {
    struct fix* f = *state;
    struct kv_snapshot_info info, rinfo, iinfo;
    struct kv_snapshot_reader* rd;
    struct kv_snapshot_writer* w;
    char err[STORE_ERRMSG_SIZE];
    char* snap = tu_path(f->dir, "snap.mdb");
    const size_t chunk = 64 * 1024;
    uint8_t* buf = malloc(chunk);

    apply_gen(f->a, 1, 5000);
    struct kv_stats sa = stats_of(f->a);
    assert_int_equal(kv_snapshot_create(f->a, snap, &info, err), STORE_OK);
    assert_int_equal(info.stats.applied_index, 5000);
    assert_int_equal(info.stats.hash, sa.hash);
    assert_int_equal(info.stats.count, sa.count);
    printf("    snapshot of %llu entries: %llu bytes\n",
           (unsigned long long)sa.count, (unsigned long long)info.size);

    /* B has a history of its own, replaced by the snapshot. */
    f->b = open_kv(f->b_dir, NULL);
    apply_gen(f->b, 1, 300);
    assert_int_equal(kv_snapshot_reader_open(snap, &rd, &rinfo, err), STORE_OK);
    assert_int_equal(kv_snapshot_reader_size(rd), info.size);
    assert_int_equal(rinfo.stats.hash, sa.hash);
    assert_int_equal(
        kv_snapshot_writer_open(f->b, kv_snapshot_reader_size(rd), &w, err),
        STORE_OK);
    uint64_t off = 0, next;
    bool done = false;
    int chunks = 0;
    while (!done) {
        size_t n;
        assert_int_equal(
            kv_snapshot_reader_read(rd, off, buf, chunk, &n, &done), STORE_OK);
        assert_int_equal(kv_snapshot_writer_write(w, off, buf, n, &next),
                         STORE_OK);
        if (chunks == 3) {
            /* A repeated chunk is accepted; one from the future is not. */
            assert_int_equal(kv_snapshot_writer_write(w, off, buf, n, &next),
                             STORE_OK);
            assert_int_equal(next, off + n);
            assert_int_equal(
                kv_snapshot_writer_write(w, off + n + 1, buf, 1, &next),
                STORE_EINVAL);
            assert_int_equal(next, off + n);
        }
        off = next;
        chunks++;
    }
    kv_snapshot_reader_close(rd);
    assert_int_equal(kv_snapshot_writer_received(w), info.size);
    assert_int_equal(kv_snapshot_writer_finish(w, &iinfo, err), STORE_OK);
    struct kv_stats sb = stats_of(f->b);
    assert_int_equal(sb.applied_index, 5000);
    assert_int_equal(sb.hash, sa.hash);
    assert_int_equal(sb.count, sa.count);
    assert_int_equal(sb.seq, sa.seq);
    assert_int_equal(kv_applied_index(f->b), 5000);
    assert_int_equal(iinfo.stats.hash, sa.hash);
    verify_ok(f->b);

    /* Both continue identically, the idempotency table included. */
    apply_gen(f->a, 5001, 6000);
    apply_gen(f->b, 5001, 6000);
    assert_int_equal(stats_of(f->a).hash, stats_of(f->b).hash);
    assert_int_equal(stats_of(f->a).seq, stats_of(f->b).seq);
    /* No leftovers next to the state. */
    char* inc = tu_path(f->dir, "b.incoming");
    struct stat st;
    assert_int_not_equal(stat(inc, &st), 0);
    free(inc);

    /* A restore from the file (POST /_raft/snapshot) on a third state. */
    char* c_dir = tu_path(f->dir, "c");
    struct kv_state* c = open_kv(c_dir, NULL);
    assert_int_equal(kv_snapshot_install_file(c, snap, &iinfo, err), STORE_OK);
    assert_int_equal(stats_of(c).hash, sa.hash);
    kv_close(c);
    free(c_dir);
    free(snap);
    free(buf);
}

/* A snapshot maker on its own thread (as skein-node runs it). */
struct snap_maker {
    struct kv_state* kv;
    char* paths[4];
    int rv[4];
};

static void* snap_maker_main(void* arg) {
    struct snap_maker* m = arg;
    char err[STORE_ERRMSG_SIZE];
    for (int i = 0; i < 4; i++) {
        m->rv[i] = kv_snapshot_create(m->kv, m->paths[i], NULL, err);
        usleep(2000);
    }
    return NULL;
}

/* Snapshots made beside a stream of applies (the node makes them off its
 * loop thread) are each a consistent state at their applied index: one
 * installed elsewhere and brought forward by the same log ends with the
 * same hash. */
static void test_snapshot_beside_applies(void** state) {
    struct fix* f = *state;
    struct snap_maker m = {.kv = f->a};
    char err[STORE_ERRMSG_SIZE];
    pthread_t th;

    apply_gen(f->a, 1, 2000);
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "beside-%d.mdb", i);
        m.paths[i] = tu_path(f->dir, name);
    }
    assert_int_equal(pthread_create(&th, NULL, snap_maker_main, &m), 0);
    apply_gen(f->a, 2001, 12000);
    pthread_join(th, NULL);
    struct kv_stats end = stats_of(f->a);
    for (int i = 0; i < 4; i++) {
        struct kv_snapshot_info info;
        assert_int_equal(m.rv[i], STORE_OK);
        if (kv_snapshot_verify_file(m.paths[i], &info, NULL, err) != STORE_OK) {
            fail_msg("snapshot %d: %s", i, err);
        }
        raft_index at = info.stats.applied_index;
        assert_true(at >= 2000 && at <= 12000);
        printf("    snapshot %d taken at applied index %llu\n", i,
               (unsigned long long)at);
        char name[32];
        snprintf(name, sizeof name, "c%d", i);
        char* c_dir = tu_path(f->dir, name);
        struct kv_state* c = open_kv(c_dir, NULL);
        assert_int_equal(kv_snapshot_install_file(c, m.paths[i], NULL, err),
                         STORE_OK);
        assert_int_equal(kv_applied_index(c), at);
        if (at < 12000) {
            apply_gen(c, at + 1, 12000);
        }
        assert_int_equal(stats_of(c).hash, end.hash);
        assert_int_equal(stats_of(c).count, end.count);
        kv_close(c);
        free(c_dir);
        free(m.paths[i]);
    }
}

static void test_snapshot_garbage_refused(void** state) {
    struct fix* f = *state;
    struct kv_snapshot_writer* w;
    char err[STORE_ERRMSG_SIZE];
    uint8_t junk[65536];
    uint64_t rng = 7;

    apply_gen(f->a, 1, 200);
    struct kv_stats before = stats_of(f->a);
    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)tu_rand(&rng);
    }
    assert_int_equal(kv_snapshot_writer_open(f->a, sizeof(junk), &w, err),
                     STORE_OK);
    assert_int_equal(kv_snapshot_writer_write(w, 0, junk, sizeof(junk), NULL),
                     STORE_OK);
    assert_int_equal(kv_snapshot_writer_finish(w, NULL, err), STORE_ECORRUPT);
    printf("    garbage snapshot refused: %s\n", err);
    /* Short snapshot. */
    assert_int_equal(kv_snapshot_writer_open(f->a, 100, &w, err), STORE_OK);
    assert_int_equal(kv_snapshot_writer_write(w, 0, junk, 50, NULL), STORE_OK);
    assert_int_equal(kv_snapshot_writer_finish(w, NULL, err), STORE_EINVAL);
    /* A takes no harm. */
    struct kv_stats after = stats_of(f->a);
    assert_memory_equal(&before, &after, sizeof(before));
    apply_gen(f->a, 201, 300);
    verify_ok(f->a);
}

/* A crash in the middle of the fallback swap is completed or undone. */
static void test_snapshot_swap_recovery(void** state) {
    struct fix* f = *state;
    char err[STORE_ERRMSG_SIZE];
    char* snap = tu_path(f->dir, "snap.mdb");
    char* old = tu_path(f->dir, "b.old");
    char* inc = tu_path(f->dir, "b.incoming");

    apply_gen(f->a, 1, 400);
    uint64_t hash_a = stats_of(f->a).hash;
    assert_int_equal(kv_snapshot_create(f->a, snap, NULL, err), STORE_OK);

    /* Old state moved aside, new one not yet in place, no READY: undo. */
    f->b = open_kv(f->b_dir, NULL);
    apply_gen(f->b, 1, 100);
    uint64_t hash_b = stats_of(f->b).hash;
    kv_close(f->b);
    assert_int_equal(rename(f->b_dir, old), 0);
    assert_int_equal(mkdir(inc, 0755), 0);
    f->b = open_kv(f->b_dir, NULL);
    assert_int_equal(stats_of(f->b).hash, hash_b);
    kv_close(f->b);

    /* Incoming verified and READY, old moved aside: complete. */
    f->b = open_kv(f->b_dir, NULL);
    struct kv_snapshot_reader* rd;
    uint8_t* buf = malloc(KV_SNAPSHOT_CHUNK_MAX);
    size_t n;
    bool done;
    assert_int_equal(kv_snapshot_reader_open(snap, &rd, NULL, err), STORE_OK);
    assert_int_equal(
        kv_snapshot_reader_read(rd, 0, buf, KV_SNAPSHOT_CHUNK_MAX, &n, &done),
        STORE_OK);
    assert_true(done);
    kv_close(f->b);
    f->b = NULL;
    assert_int_equal(rename(f->b_dir, old), 0);
    assert_int_equal(mkdir(inc, 0755), 0);
    char* file = tu_path(inc, "data.mdb");
    FILE* fp = fopen(file, "wb");
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    char* ready = tu_path(inc, "READY");
    fp = fopen(ready, "wb");
    fclose(fp);
    f->b = open_kv(f->b_dir, NULL);
    assert_int_equal(stats_of(f->b).hash, hash_a);
    struct stat st;
    assert_int_not_equal(stat(old, &st), 0);
    assert_int_not_equal(stat(inc, &st), 0);
    verify_ok(f->b);
    kv_snapshot_reader_close(rd);
    free(buf);
    free(file);
    free(ready);
    free(snap);
    free(old);
    free(inc);
}

/* kv_verify notices an entry changed behind the counters' back and a key
 * index that lost or gained a pair. */
static void test_verify_detects(void** state) {
    struct fix* f = *state;
    char err[STORE_ERRMSG_SIZE];
    MDB_env* env;
    MDB_txn* txn;
    MDB_dbi dbi;

    apply_gen(f->a, 1, 300);
    verify_ok(f->a);
    for (int round = 0; round < 3; round++) {
        kv_close(f->a);
        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
        assert_int_equal(mdb_env_open(env, f->a_dir, 0, 0644), 0);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        MDB_val k = {5, (void*)"id-10"};
        MDB_val v;
        if (round == 0) {
            /* Entry id-10 changed by one bit behind the counters. */
            assert_int_equal(mdb_dbi_open(txn, "kv", 0, &dbi), 0);
            assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
            uint8_t* copy = malloc(v.mv_size);
            memcpy(copy, v.mv_data, v.mv_size);
            copy[v.mv_size - 1] ^= 0x01; /* created_at's last byte */
            v.mv_data = copy;
            assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
            free(copy);
        } else {
            uint8_t kb[8] = {KV_KEY_PREFIX_FOR_TEST, 'k', 'x', 'y'};
            MDB_val ik = {4, kb};
            MDB_val iv = {5, (void*)"id-10"};
            assert_int_equal(mdb_dbi_open(txn, "kv_by_key", 0, &dbi), 0);
            /* round 1: a pair that matches no entry; round 2: undo it. */
            assert_int_equal(round == 1 ? mdb_put(txn, dbi, &ik, &iv, 0)
                                        : mdb_del(txn, dbi, &ik, &iv),
                             0);
        }
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
        f->a = open_kv(f->a_dir, NULL);
        int rv = kv_verify(f->a, NULL, err);
        if (round < 2) {
            assert_int_equal(rv, STORE_ECORRUPT);
            printf("    detected: %s\n", err);
        }
    }
}

/* --- disk full ------------------------------------------------------- */

static void test_disk_full(void** state) {
    struct fix* f = *state;
    struct kv_options o = {.map_size = 512 * 1024};
    char value[2048];
    struct kv_result r[10];
    int rv = STORE_OK;
    raft_index next = 1;

    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    f->b = open_kv(f->b_dir, &o);
    struct raft_entry e[10];
    uint8_t* owned[10];
    while (rv == STORE_OK && next < 100000) {
        for (int i = 0; i < 10; i++) {
            char id[32];
            snprintf(id, sizeof(id), "id-%06llu",
                     (unsigned long long)(next + (raft_index)i));
            owned[i] = tu_cmd_create(id, id, "k", value, &e[i].len);
            e[i].data = owned[i];
            e[i].index = next + (raft_index)i;
            e[i].term = 1;
            e[i].type = RAFT_ENTRY_NORMAL;
        }
        rv = kv_apply_batch(f->b, e, 10, r);
        if (rv == STORE_OK) {
            next += 10;
            for (int i = 0; i < 10; i++) {
                free(owned[i]);
            }
        }
    }
    assert_int_equal(rv, STORE_EDISKFULL);
    assert_int_equal(kv_last_error(f->b), STORE_EDISKFULL);
    printf("    disk full after %llu entries: %s\n",
           (unsigned long long)(next - 1), kv_errmsg(f->b));
    /* Nothing of the failed batch; reads keep working. */
    struct kv_stats st = stats_of(f->b);
    assert_int_equal(st.applied_index, next - 1);
    assert_int_equal(st.count, next - 1);
    assert_int_equal(kv_applied_index(f->b), next - 1);
    struct kv_buf buf = {0};
    struct kv_entry got;
    assert_int_equal(kv_get(f->b, "id-000001", 9, &buf, &got), STORE_OK);
    verify_ok(f->b);
    /* Space again: the same batch goes through. */
    assert_int_equal(kv_set_map_size(f->b, 64 << 20), STORE_OK);
    assert_int_equal(kv_apply_batch(f->b, e, 10, r), STORE_OK);
    assert_int_equal(r[9].status, KV_STATUS_OK);
    assert_int_equal(kv_applied_index(f->b), next + 9);
    for (int i = 0; i < 10; i++) {
        free(owned[i]);
    }
    verify_ok(f->b);
    kv_buf_free(&buf);
}

/* --- recovery -------------------------------------------------------- */

/* Writes entries 1..n (tu_gen_entry) to a log at dir with commit = n. */
static struct store_lmdb* make_log(const char* dir, raft_index n) {
    struct store_lmdb* s;
    struct store st;
    char err[STORE_ERRMSG_SIZE];
    raft_index di;
    raft_term dt;

    assert_int_equal(store_lmdb_open(dir, NULL, &s, err), STORE_OK);
    store_lmdb_store(s, &st);
    for (raft_index i = 1; i <= n; i += 50) {
        struct raft_entry e[50];
        uint8_t* owned[50];
        size_t m = 0;
        for (raft_index j = i; j <= n && j < i + 50; j++, m++) {
            tu_gen_entry(j, 1, &e[m], &owned[m]);
        }
        assert_int_equal(st.ops->append(st.ctx, e, m), RAFT_OK);
        for (size_t k = 0; k < m; k++) {
            free(owned[k]);
        }
    }
    struct raft_hard_state hs = {.term = 1, .vote = 1, .commit = n};
    assert_int_equal(st.ops->save_hard_state(st.ctx, &hs), RAFT_OK);
    assert_int_equal(st.ops->sync(st.ctx, &di, &dt), RAFT_OK);
    return s;
}

static void test_recover_replay(void** state) {
    struct fix* f = *state;
    char err[STORE_ERRMSG_SIZE];
    struct store_recovery rec;
    char* log_dir = tu_path(f->dir, "log");
    struct store_lmdb* log = make_log(log_dir, 1000);

    /* A reference state that applied everything. */
    f->b = open_kv(f->b_dir, NULL);
    apply_gen(f->b, 1, 1000);
    struct kv_stats want = stats_of(f->b);

    /* The node's state lags: applied 400. */
    apply_gen(f->a, 1, 400);
    kv_close(f->a);
    store_lmdb_close(log);
    f->a = open_kv(f->a_dir, NULL);
    assert_int_equal(store_lmdb_open(log_dir, NULL, &log, err), STORE_OK);
    assert_int_equal(store_recover(log, f->a, NULL, &rec, err), STORE_OK);
    assert_false(rec.log_reset);
    assert_int_equal(rec.replay_from, 401);
    assert_int_equal(rec.replay_to, 1000);
    assert_int_equal(rec.start.applied, 400);
    assert_int_equal(rec.start.hard_state.commit, 1000);
    assert_int_equal(store_replay(log, f->a, rec.replay_to, 4096, err),
                     STORE_OK);
    struct kv_stats got = stats_of(f->a);
    assert_int_equal(got.applied_index, 1000);
    assert_int_equal(got.hash, want.hash);
    assert_int_equal(got.count, want.count);
    assert_int_equal(got.seq, want.seq);
    store_lmdb_close(log);
    store_rmtree(log_dir);

    /* The log lost its tail (state ahead): the log is reset to the state. */
    log = make_log(log_dir, 300);
    assert_int_equal(store_recover(log, f->a, NULL, &rec, err), STORE_OK);
    assert_true(rec.log_reset);
    assert_int_equal(rec.start.snapshot.index, 1000);
    assert_int_equal(rec.start.applied, 1000);
    assert_int_equal(store_lmdb_first_index(log), 1001);
    assert_true(rec.replay_to < rec.replay_from);
    store_lmdb_close(log);
    store_rmtree(log_dir);

    /* The log was compacted past a state that lost entries: refused. */
    log = make_log(log_dir, 1000);
    struct store st;
    store_lmdb_store(log, &st);
    struct raft_snapshot_meta m = {.index = 900, .term = 1};
    assert_int_equal(st.ops->compact(st.ctx, &m, 800), RAFT_OK);
    kv_close(f->a);
    store_rmtree(f->a_dir);
    f->a = open_kv(f->a_dir, NULL);
    apply_gen(f->a, 1, 100);
    assert_int_equal(store_recover(log, f->a, NULL, &rec, err), STORE_ECORRUPT);
    assert_non_null(strstr(err, "below the log's first index"));
    store_lmdb_close(log);
    free(log_dir);
}

static void test_compaction_plan(void** state) {
    struct fix* f = *state;
    struct store_compaction c;
    char err[STORE_ERRMSG_SIZE];

    store_plan_compaction(1, 5000, 10000, 10000, &c);
    assert_false(c.due);
    store_plan_compaction(1, 25000, 10000, 10000, &c);
    assert_true(c.due);
    assert_int_equal(c.snapshot_index, 25000);
    assert_int_equal(c.compact_index, 15000);
    store_plan_compaction(15001, 25000, 10000, 10000, &c);
    assert_false(c.due);
    store_plan_compaction(15001, 35000, 10000, 10000, &c);
    assert_true(c.due);
    assert_int_equal(c.compact_index, 25000);

    /* Compaction waits for the state to be durable. */
    char* log_dir = tu_path(f->dir, "log");
    struct store_lmdb* log = make_log(log_dir, 500);
    apply_gen(f->a, 1, 400);
    struct raft_snapshot_meta m;
    assert_int_equal(kv_snapshot_meta(f->a, NULL, &m), STORE_OK);
    assert_int_equal(store_compact_below(log, f->a, &m, 100), STORE_EINVAL);
    assert_int_equal(kv_sync(f->a), STORE_OK);
    assert_int_equal(store_compact_below(log, f->a, &m, 100), STORE_OK);
    assert_int_equal(store_lmdb_first_index(log), 301);
    assert_int_equal(store_lmdb_snapshot(log).index, 400);
    store_lmdb_close(log);
    free(log_dir);
    (void)err;
}

/* --- restore (RestoreOp: POST /_raft/snapshot) ------------------------ */

/* A backup file read into memory, with its checksum. */
struct backup {
    char* path;            /* the snapshot file */
    uint8_t* bytes;        /* its content */
    size_t len;            /* bytes at bytes */
    uint64_t checksum;     /* XXH64, seed KV_RESTORE_CHECKSUM_SEED */
    struct kv_stats stats; /* what it holds */
};

static void backup_load(struct backup* b) {
    FILE* fp = fopen(b->path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    b->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    b->bytes = malloc(b->len);
    assert_int_equal(fread(b->bytes, 1, b->len, fp), b->len);
    fclose(fp);
    b->checksum = XXH64(b->bytes, b->len, KV_RESTORE_CHECKSUM_SEED);
}

static void backup_free(struct backup* b) {
    free(b->path);
    free(b->bytes);
}

/* Packs a RestoreOp command; malloc'd, caller frees. */
static uint8_t* cmd_restore(uint64_t upload,
                            uint64_t offset,
                            const uint8_t* data,
                            size_t len,
                            uint64_t total,
                            bool commit,
                            uint64_t checksum,
                            uint32_t* out_len) {
    Skein__RestoreOp op = SKEIN__RESTORE_OP__INIT;
    Skein__Command cmd = SKEIN__COMMAND__INIT;

    op.has_upload_id = op.has_offset = op.has_total_size = 1;
    op.upload_id = upload;
    op.offset = offset;
    op.total_size = total;
    op.has_data = len > 0;
    op.data.data = (uint8_t*)data;
    op.data.len = len;
    op.has_commit = op.has_checksum = commit;
    op.commit = commit;
    op.checksum = checksum;
    cmd.op_case = SKEIN__COMMAND__OP_RESTORE;
    cmd.restore = &op;
    *out_len = (uint32_t)skein__command__get_packed_size(&cmd);
    uint8_t* buf = malloc(*out_len);
    skein__command__pack(&cmd, buf);
    return buf;
}

/* Applies one NORMAL entry (data freed) at `index` on kv. */
static void apply_on(struct kv_state* kv,
                     raft_index index,
                     raft_term term,
                     uint8_t* data,
                     uint32_t len,
                     struct kv_result* r) {
    struct raft_entry e = {.term = term,
                           .index = index,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = len,
                           .data = data};
    assert_int_equal(kv_apply_batch(kv, &e, 1, r), STORE_OK);
    free(data);
}

/* Stages chunks [from, to) of b (chunk bytes each) as `upload` on f->a. */
static void stage_chunks(struct fix* f,
                         const struct backup* b,
                         uint64_t upload,
                         size_t chunk,
                         size_t from,
                         size_t to) {
    for (size_t i = from; i < to && i * chunk < b->len; i++) {
        size_t off = i * chunk;
        size_t n = b->len - off < chunk ? b->len - off : chunk;
        uint32_t len;
        struct kv_result r;
        uint8_t* d =
            cmd_restore(upload, off, b->bytes + off, n, b->len, false, 0, &len);
        apply_data(f, d, len, &r);
        assert_int_equal(r.status, KV_STATUS_OK);
        assert_int_equal(r.op, KV_OP_RESTORE);
    }
}

/* Applies the commit entry of `upload` on f->a; returns its result. */
static struct kv_result commit_restore(struct fix* f,
                                       const struct backup* b,
                                       uint64_t upload,
                                       uint64_t checksum) {
    struct kv_result r;
    uint32_t len;
    uint8_t* d = cmd_restore(upload, 0, NULL, 0, b->len, true, checksum, &len);
    apply_data(f, d, len, &r);
    assert_int_equal(r.op, KV_OP_RESTORE);
    return r;
}

/*
 * The backup: state b gets 40 entries (two with request ids), the second
 * one at log index 250, then a snapshot of it is taken. Index 250 lies
 * beyond where a's log will be when it restores: that record must not be
 * carried over (it would break the idempotency table's index order).
 */
static void make_backup(struct fix* f, struct backup* b) {
    char err[STORE_ERRMSG_SIZE];
    struct kv_result r;
    uint32_t len;

    f->b = open_kv(f->b_dir, NULL);
    for (raft_index i = 1; i <= 40; i++) {
        char id[32], key[32], val[32];
        snprintf(id, sizeof(id), "b-%02llu", (unsigned long long)i);
        snprintf(key, sizeof(key), "key-%llu", (unsigned long long)(i % 7));
        snprintf(val, sizeof(val), "backup-%llu", (unsigned long long)i);
        uint8_t* d = tu_cmd_create(i == 5 ? "rid-b" : NULL, id, key, val, &len);
        apply_on(f->b, i, 1, d, len, &r);
        assert_int_equal(r.status, KV_STATUS_OK);
    }
    struct raft_entry noop = {.term = 1, .index = 41, .type = RAFT_ENTRY_NOOP};
    assert_int_equal(kv_apply_batch(f->b, &noop, 1, NULL), STORE_OK);
    uint8_t* d = tu_cmd_delete(NULL, "b-03", &len);
    apply_on(f->b, 42, 1, d, len, &r);
    for (raft_index i = 43; i < 250; i++) {
        noop.index = i;
        assert_int_equal(kv_apply_batch(f->b, &noop, 1, NULL), STORE_OK);
    }
    d = tu_cmd_create("rid-late", "b-late", "k", "v", &len);
    apply_on(f->b, 250, 1, d, len, &r);
    b->path = tu_path(f->dir, "backup.mdb");
    assert_int_equal(kv_snapshot_create(f->b, b->path, NULL, err), STORE_OK);
    b->stats = stats_of(f->b);
    backup_load(b);
}

/* a: a membership, its own data and request ids. */
static void make_live(struct fix* f, uint8_t* conf_out, size_t* conf_len) {
    struct raft_conf conf;
    uint8_t cb[RAFT_CONF_ENCODED_MAX];
    struct kv_result r;

    memset(&conf, 0, sizeof(conf));
    conf.count = 3;
    conf.ids[0] = 1;
    conf.ids[1] = 2;
    conf.ids[2] = 3;
    struct raft_entry e = {
        .term = 1, .index = f->next++, .type = RAFT_ENTRY_CONF, .data = cb};
    e.len = (uint32_t)raft_conf_encode(&conf, cb);
    assert_int_equal(kv_apply_batch(f->a, &e, 1, NULL), STORE_OK);
    memcpy(conf_out, cb, e.len);
    *conf_len = e.len;
    apply_create(f, "rid-a", "a-1", "key-1", "live-1", &r);
    apply_create(f, NULL, "a-2", "key-2", "live-2", &r);
    apply_create(f, NULL, "b-01", "key-1", "live-not-backup", &r);
}

static void test_restore_replaces_data(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    uint8_t conf[RAFT_CONF_ENCODED_MAX], got[RAFT_CONF_DATA_MAX];
    size_t conf_len, got_len;
    raft_index conf_index;
    struct kv_buf buf = {0};
    struct kv_entry e;
    struct kv_restore_staging sg;

    make_backup(f, &b);
    make_live(f, conf, &conf_len);
    struct kv_stats live = stats_of(f->a);
    assert_int_not_equal(live.hash, b.stats.hash);
    /* Small chunks: several entries, staged one by one. */
    const size_t chunk = 8192;
    size_t n_chunks = (b.len + chunk - 1) / chunk;
    assert_true(n_chunks > 2);
    stage_chunks(f, &b, 77, chunk, 0, 2);
    stage_chunks(f, &b, 77, chunk, 1, 2); /* a repeated chunk: harmless */
    stage_chunks(f, &b, 77, chunk, 2, n_chunks);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 77);
    assert_int_equal(sg.bytes, b.len);
    /* Staging changes no data. */
    struct kv_stats staged = stats_of(f->a);
    assert_int_equal(staged.hash, live.hash);
    assert_int_equal(staged.count, live.count);

    raft_index commit_index = f->next;
    struct kv_result r = commit_restore(f, &b, 77, b.checksum);
    if (r.status != KV_STATUS_OK) {
        fail_msg("restore commit refused: %s", r.error ? r.error : "?");
    }
    struct kv_stats st = stats_of(f->a);
    assert_int_equal(st.hash, b.stats.hash);
    assert_int_equal(st.count, b.stats.count);
    assert_int_equal(st.seq, b.stats.seq);
    /* Raft metadata and membership are this log's, not the backup's. */
    assert_int_equal(st.applied_index, commit_index);
    assert_int_equal(kv_applied_index(f->a), commit_index);
    assert_int_equal(st.applied_term, 1);
    assert_int_equal(st.conf_index, live.conf_index);
    assert_int_equal(st.idem_window, live.idem_window);
    assert_int_equal(kv_conf(f->a, got, sizeof(got), &got_len, &conf_index),
                     STORE_OK);
    assert_int_equal(conf_index, 1);
    assert_int_equal(got_len, conf_len);
    assert_memory_equal(got, conf, conf_len);
    verify_ok(f->a);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 0);
    assert_int_equal(sg.chunks, 0);
    /* The backup's entries, and only them. */
    assert_int_equal(kv_get(f->a, "a-1", 3, &buf, &e), STORE_ENOTFOUND);
    assert_int_equal(kv_get(f->a, "b-03", 4, &buf, &e), STORE_ENOTFOUND);
    assert_int_equal(kv_get(f->a, "b-01", 4, &buf, &e), STORE_OK);
    assert_string_equal(e.value, "backup-1");
    /* No scratch file left next to the state. */
    char* scratch = tu_path(f->dir,
                            "a"
                            ".restore.mdb");
    struct stat fst;
    assert_int_not_equal(stat(scratch, &fst), 0);
    free(scratch);

    /* The idempotency table is the backup's (minus records from beyond
     * this log); the next writes go on from the backup's seq. */
    apply_create(f, "rid-b", "other", "k", "v", &r);
    assert_true(r.duplicate);
    expect_entry(&r.entry, "b-05", "key-5", "backup-5", 5);
    apply_create(f, "rid-a", "a-3", "k", "v", &r);
    assert_false(r.duplicate);
    assert_int_equal(r.seq, b.stats.seq + 1);
    apply_create(f, "rid-late", "late-2", "k", "v", &r);
    assert_false(r.duplicate);
    assert_int_equal(r.status, KV_STATUS_OK);
    verify_ok(f->a);
    /* The same after a reopen (the idempotency index is rebuilt). */
    kv_close(f->a);
    f->a = open_kv(f->a_dir, NULL);
    apply_create(f, "rid-late", "late-3", "k", "v", &r);
    assert_true(r.duplicate);
    verify_ok(f->a);
    kv_buf_free(&buf);
    backup_free(&b);
}

/* A commit that fails a check changes no data, on every node alike. */
static void test_restore_refused_commits(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    struct backup junk = {0};
    uint8_t conf[RAFT_CONF_ENCODED_MAX];
    size_t conf_len;
    struct kv_restore_staging sg;
    const size_t chunk = 4096;

    make_backup(f, &b);
    make_live(f, conf, &conf_len);
    struct kv_stats live = stats_of(f->a);
    size_t n_chunks = (b.len + chunk - 1) / chunk;

    /* Wrong checksum. */
    stage_chunks(f, &b, 1, chunk, 0, n_chunks);
    struct kv_result r = commit_restore(f, &b, 1, b.checksum ^ 1);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "checksum"));
    /* A chunk missing. */
    stage_chunks(f, &b, 2, chunk, 0, 1);
    stage_chunks(f, &b, 2, chunk, 2, n_chunks);
    r = commit_restore(f, &b, 2, b.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "gap"));
    /* The last chunk missing. */
    stage_chunks(f, &b, 3, chunk, 0, n_chunks - 1);
    r = commit_restore(f, &b, 3, b.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "staged"));
    /* Nothing staged for that upload. */
    r = commit_restore(f, &b, 99, b.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    /* Garbage whose checksum is right: not a snapshot. */
    uint64_t rng = 11;
    junk.len = 3 * chunk;
    junk.bytes = malloc(junk.len);
    for (size_t i = 0; i < junk.len; i++) {
        junk.bytes[i] = (uint8_t)tu_rand(&rng);
    }
    junk.checksum = XXH64(junk.bytes, junk.len, KV_RESTORE_CHECKSUM_SEED);
    stage_chunks(f, &junk, 4, chunk, 0, 3);
    r = commit_restore(f, &junk, 4, junk.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "not a valid snapshot"));
    printf("    garbage restore refused: %s\n", r.error);
    /* A truncated backup (its first pages) with the right checksum: refused
     * before LMDB maps pages that are not there. */
    free(junk.bytes);
    junk.len = b.len / 2;
    junk.bytes = malloc(junk.len);
    memcpy(junk.bytes, b.bytes, junk.len);
    junk.checksum = XXH64(junk.bytes, junk.len, KV_RESTORE_CHECKSUM_SEED);
    stage_chunks(f, &junk, 5, chunk, 0, n_chunks);
    r = commit_restore(f, &junk, 5, junk.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_non_null(strstr(r.error, "truncated"));
    printf("    truncated restore refused: %s\n", r.error);
    /* A chunk beyond total_size or too large is refused as it comes. */
    uint32_t len;
    uint8_t* d = cmd_restore(6, b.len - 1, b.bytes, 2, b.len, false, 0, &len);
    apply_data(f, d, len, &r);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);

    /* Nothing changed but the applied index. */
    struct kv_stats after = stats_of(f->a);
    assert_int_equal(after.hash, live.hash);
    assert_int_equal(after.count, live.count);
    assert_int_equal(after.seq, live.seq);
    assert_int_equal(after.applied_index, f->next - 1);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.chunks, 0);
    verify_ok(f->a);
    /* And a good restore still works afterwards. */
    stage_chunks(f, &b, 7, chunk, 0, n_chunks);
    r = commit_restore(f, &b, 7, b.checksum);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(stats_of(f->a).hash, b.stats.hash);
    free(junk.bytes);
    backup_free(&b);
}

/* A snapshot taken in the middle of a restore carries the staged chunks:
 * a follower that installs it completes the restore from the log. */
static void test_restore_staging_in_snapshot(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    uint8_t conf[RAFT_CONF_ENCODED_MAX];
    size_t conf_len;
    char err[STORE_ERRMSG_SIZE];
    struct kv_snapshot_info info;
    struct kv_restore_staging sg;
    const size_t chunk = 8192;

    make_backup(f, &b);
    make_live(f, conf, &conf_len);
    size_t n_chunks = (b.len + chunk - 1) / chunk;
    size_t half = n_chunks / 2;
    stage_chunks(f, &b, 5, chunk, 0, half);
    char* mid = tu_path(f->dir, "mid.mdb");
    assert_int_equal(kv_snapshot_create(f->a, mid, &info, err), STORE_OK);
    /* kv_snapshot_verify_file accepts it (staging is not data). */
    uint64_t sum = 0;
    assert_int_equal(kv_snapshot_verify_file(mid, NULL, &sum, err), STORE_OK);

    /* c: a follower with a history of its own installs the snapshot. */
    char* c_dir = tu_path(f->dir, "c");
    struct kv_state* c = open_kv(c_dir, NULL);
    apply_gen(c, 1, 30);
    assert_int_equal(kv_snapshot_install_file(c, mid, &info, err), STORE_OK);
    assert_int_equal(kv_applied_index(c), f->next - 1);
    assert_int_equal(kv_restore_staging(c, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 5);
    assert_int_equal(sg.chunks, half);

    /* The rest of the log reaches both. */
    raft_index at = f->next;
    stage_chunks(f, &b, 5, chunk, half, n_chunks);
    struct kv_result r = commit_restore(f, &b, 5, b.checksum);
    assert_int_equal(r.status, KV_STATUS_OK);
    for (size_t i = half; i < n_chunks; i++, at++) {
        size_t off = i * chunk;
        size_t n = b.len - off < chunk ? b.len - off : chunk;
        uint32_t len;
        uint8_t* d =
            cmd_restore(5, off, b.bytes + off, n, b.len, false, 0, &len);
        apply_on(c, at, 1, d, len, &r);
        assert_int_equal(r.status, KV_STATUS_OK);
    }
    uint32_t len;
    uint8_t* d = cmd_restore(5, 0, NULL, 0, b.len, true, b.checksum, &len);
    apply_on(c, at, 1, d, len, &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    struct kv_stats sa = stats_of(f->a), sc = stats_of(c);
    assert_int_equal(sc.hash, b.stats.hash);
    assert_int_equal(sc.hash, sa.hash);
    assert_int_equal(sc.count, sa.count);
    assert_int_equal(sc.seq, sa.seq);
    assert_int_equal(sc.applied_index, sa.applied_index);
    verify_ok(c);
    kv_close(c);
    free(c_dir);
    free(mid);
    backup_free(&b);
}

/* The backup (make_backup) and the live state f->a it will be restored
 * into (make_live); returns how many `chunk`-byte chunks the file has. */
static size_t restore_fixture(struct fix* f, struct backup* b, size_t chunk) {
    uint8_t conf[RAFT_CONF_ENCODED_MAX];
    size_t conf_len;

    make_backup(f, b);
    make_live(f, conf, &conf_len);
    return (b->len + chunk - 1) / chunk;
}

/* A chunk of a new upload clears what an older one staged. */
static void test_restore_new_upload_clears(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    struct kv_restore_staging sg;
    const size_t chunk = 8192;
    size_t n_chunks = restore_fixture(f, &b, chunk);
    stage_chunks(f, &b, 1, chunk, 0, n_chunks - 1); /* abandoned */
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 1);
    assert_int_equal(sg.chunks, n_chunks - 1);
    stage_chunks(f, &b, 2, chunk, 1, 2);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 2);
    assert_int_equal(sg.chunks, 1);
    assert_int_equal(sg.bytes, chunk);
    /* The old upload cannot commit any more, and its refusal leaves the new
     * upload's staging alone. */
    struct kv_result r = commit_restore(f, &b, 1, b.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 2);
    stage_chunks(f, &b, 2, chunk, 0, 1);
    stage_chunks(f, &b, 2, chunk, 2, n_chunks);
    r = commit_restore(f, &b, 2, b.checksum);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(stats_of(f->a).hash, b.stats.hash);
    backup_free(&b);
}

/* Applies an abort entry for `upload` on f->a; returns its result. */
static struct kv_result abort_restore(struct fix* f, uint64_t upload) {
    Skein__RestoreOp op = SKEIN__RESTORE_OP__INIT;
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    struct kv_result r;

    op.has_upload_id = op.has_abort = 1;
    op.upload_id = upload;
    op.abort = 1;
    cmd.op_case = SKEIN__COMMAND__OP_RESTORE;
    cmd.restore = &op;
    uint32_t len = (uint32_t)skein__command__get_packed_size(&cmd);
    uint8_t* d = malloc(len);
    skein__command__pack(&cmd, d);
    apply_data(f, d, len, &r);
    assert_int_equal(r.op, KV_OP_RESTORE);
    return r;
}

/* A restore given up before its commit entry: the next leader's abort
 * entry drops its chunks, and only its own, in log order. */
/* Reads a's counters from another thread: the committed view. */
static void* stats_elsewhere(void* arg) {
    struct fix* f = arg;
    static struct kv_stats st;
    assert_int_equal(kv_stats(f->a, &st), STORE_OK);
    return &st;
}

static raft_index committed_applied(struct fix* f) {
    pthread_t t;
    void* out = NULL;
    assert_int_equal(pthread_create(&t, NULL, stats_elsewhere, f), 0);
    pthread_join(t, &out);
    return ((struct kv_stats*)out)->applied_index;
}

/*
 * Deferred commit: batches applied into the pending transaction are final
 * for the apply thread (reads, idempotent retries) before any commit;
 * other threads see them once kv_commit_pending ran; a process that dies
 * before the commit leaves the last committed state, uncorrupted, for the
 * log to be replayed onto.
 */
static void test_deferred_commit(void** state) {
    struct fix* f = *state;
    struct kv_result r;
    struct kv_entry e;
    struct kv_buf buf = {0};

    assert_int_equal(kv_set_commit_delay(f->a, 60000), STORE_OK);
    assert_int_equal(kv_pending_age_ms(f->a), -1);
    apply_create(f, "r1", "a", "k1", "v1", &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    apply_create(f, "r2", "b", "k2", "v2", &r);
    assert_true(kv_pending_age_ms(f->a) >= 0);

    /* the apply thread sees both batches */
    assert_int_equal(kv_get(f->a, "a", 1, &buf, &e), STORE_OK);
    expect_entry(&e, "a", "k1", "v1", 1);
    assert_int_equal(stats_of(f->a).applied_index, 2);
    /* a retry in a later batch is answered from the pending result */
    apply_create(f, "r1", "a", "k1", "v1", &r);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(r.entry.seq, 1);
    assert_int_equal(stats_of(f->a).count, 2);
    /* another thread sees the committed state only */
    assert_int_equal(committed_applied(f), 0);

    assert_int_equal(kv_commit_pending(f->a), STORE_OK);
    assert_int_equal(kv_pending_age_ms(f->a), -1);
    assert_int_equal(committed_applied(f), 3);
    kv_buf_free(&buf);

    /* A process dying with a batch pending: the state stays at the last
     * commit and opens cleanly. */
    kv_close(f->a);
    f->a = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kv_state* kv = NULL;
        char err[STORE_ERRMSG_SIZE];
        struct raft_entry ent = {
            .term = 1, .index = 4, .type = RAFT_ENTRY_NORMAL};
        ent.data = tu_cmd_create("r4", "c", "k3", "v3", &ent.len);
        if (kv_open(f->a_dir, NULL, &kv, err) != STORE_OK ||
            kv_set_commit_delay(kv, 60000) != STORE_OK ||
            kv_apply_batch(kv, &ent, 1, NULL) != STORE_OK ||
            kv_applied_index(kv) != 4) {
            _exit(1);
        }
        _exit(0); /* no commit, no close */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    f->a = open_kv(f->a_dir, NULL);
    assert_int_equal(kv_applied_index(f->a), 3);
    assert_int_equal(stats_of(f->a).count, 2);
    char err[STORE_ERRMSG_SIZE];
    struct kv_stats recomputed;
    assert_int_equal(kv_verify(f->a, &recomputed, err), STORE_OK);
    assert_int_equal(recomputed.count, 2);
}

static void test_restore_abort_drops_staging(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    struct kv_restore_staging sg;
    const size_t chunk = 8192;
    size_t n_chunks = restore_fixture(f, &b, chunk);
    uint64_t hash = stats_of(f->a).hash;
    stage_chunks(f, &b, 3, chunk, 0, n_chunks);
    /* An abort of another upload (or of none) changes nothing. */
    assert_int_equal(abort_restore(f, 4).status, KV_STATUS_OK);
    assert_int_equal(abort_restore(f, 0).status, KV_STATUS_OK);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 3);
    assert_int_equal(sg.chunks, n_chunks);
    /* Its own abort empties the staging and leaves the data alone. */
    assert_int_equal(abort_restore(f, 3).status, KV_STATUS_OK);
    assert_int_equal(kv_restore_staging(f->a, &sg), STORE_OK);
    assert_int_equal(sg.upload_id, 0);
    assert_int_equal(sg.chunks, 0);
    assert_int_equal(stats_of(f->a).hash, hash);
    /* So a commit entry that comes after it restores nothing. */
    struct kv_result r = commit_restore(f, &b, 3, b.checksum);
    assert_int_equal(r.status, KV_STATUS_BAD_REQUEST);
    assert_int_equal(stats_of(f->a).hash, hash);
    /* One that came before it had restored, and the abort is a no-op. */
    stage_chunks(f, &b, 5, chunk, 0, n_chunks);
    r = commit_restore(f, &b, 5, b.checksum);
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_int_equal(abort_restore(f, 5).status, KV_STATUS_OK);
    assert_int_equal(stats_of(f->a).hash, b.stats.hash);
    backup_free(&b);
}

/* The leader's check of an upload before it proposes anything. */
static void test_snapshot_verify_file(void** state) {
    struct fix* f = *state;
    struct backup b = {0};
    struct kv_snapshot_info info;
    char err[STORE_ERRMSG_SIZE];
    uint64_t sum = 0;

    make_backup(f, &b);
    assert_int_equal(kv_snapshot_verify_file(b.path, &info, &sum, err),
                     STORE_OK);
    assert_int_equal(sum, b.checksum);
    assert_int_equal(info.stats.hash, b.stats.hash);
    assert_int_equal(info.size, b.len);
    /* The same without waiting: polled until the verdict is in. */
    struct kv_snapshot_verifier* v;
    bool done = false;
    int rv = STORE_OK;
    assert_int_equal(kv_snapshot_verify_begin(b.path, &v, err), STORE_OK);
    for (int i = 0; i < 10000 && !done; i++) {
        rv = kv_snapshot_verify_poll(v, &done, &info, &sum, err);
        if (!done) {
            usleep(1000);
        }
    }
    assert_true(done);
    assert_int_equal(rv, STORE_OK);
    assert_int_equal(sum, b.checksum);
    kv_snapshot_verify_close(v);
    /* Closed while it runs: the child is stopped and reaped. */
    assert_int_equal(kv_snapshot_verify_begin(b.path, &v, err), STORE_OK);
    kv_snapshot_verify_close(v);
    char* cut = tu_path(f->dir, "cut.mdb");
    size_t sizes[] = {0, 100, 4096, 8192 + 100, b.len / 2, b.len - 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        FILE* fp = fopen(cut, "wb");
        assert_int_equal(fwrite(b.bytes, 1, sizes[i], fp), sizes[i]);
        fclose(fp);
        assert_int_equal(kv_snapshot_verify_file(cut, NULL, NULL, err),
                         STORE_ECORRUPT);
    }
    printf("    truncated file: %s\n", err);
    /* A damaged entry page: the meta pages are fine, verification is not. */
    FILE* fp = fopen(cut, "wb");
    uint8_t* copy = malloc(b.len);
    memcpy(copy, b.bytes, b.len);
    for (size_t i = 2 * 4096; i < b.len; i += 4096) {
        memset(copy + i + 64, 0x5a, 512);
    }
    assert_int_equal(fwrite(copy, 1, b.len, fp), b.len);
    fclose(fp);
    assert_int_equal(kv_snapshot_verify_file(cut, NULL, NULL, err),
                     STORE_ECORRUPT);
    printf("    damaged file: %s\n", err);
    free(copy);
    free(cut);
    backup_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_read, setup, teardown),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test_setup_teardown(test_update_cas_delete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_origin_in_results, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_idem_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idem_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noop_conf_skip_gap, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hash_two_envs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_order_independent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_roundtrip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_beside_applies, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_garbage_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_swap_recovery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_verify_detects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_replaces_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_refused_commits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_staging_in_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_new_upload_clears, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_abort_drops_staging, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deferred_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_verify_file, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("kv_state", tests, NULL, NULL);
}
