/*
 * test_check.c - the linearizability checker (admin/ctl_check.c) on
 * hand-written histories: linearizable ones (with concurrency and
 * indeterminate writes) and the classic anomalies: stale read, lost
 * write, read of a value never written, wrong CAS version. For the bad
 * ones, the offending sub-history printed must be the smallest one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Line builders: W = ok write, R = ok read, I = indeterminate write. */
#define CREATE(op, id, v, seq, t0, t1)                                 \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"create\",\"value\":\"" v \
    "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1                    \
    ",\"outcome\":\"ok\",\"result\":{\"id\":\"" id "\",\"seq\":" #seq  \
    ",\"value\":\"" v "\"}}\n"
#define GET(op, id, v, seq, t0, t1)                               \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"get\",\"id\":\"" id \
    "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1               \
    ",\"outcome\":\"ok\",\"result\":{\"seq\":" #seq ",\"value\":\"" v "\"}}\n"
#define GET_NF(op, id, t0, t1)                                    \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"get\",\"id\":\"" id \
    "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1               \
    ",\"outcome\":\"ok\",\"result\":{\"found\":false}}\n"
#define UPDATE(op, id, v, seq, t0, t1)                                  \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"update\",\"id\":\"" id    \
    "\",\"value\":\"" v "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1 \
    ",\"outcome\":\"ok\",\"result\":{\"seq\":" #seq ",\"value\":\"" v "\"}}\n"
#define CAS(op, id, v, exp, seq, t0, t1)                                    \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"update\",\"id\":\"" id        \
    "\",\"value\":\"" v "\",\"if_match\":" #exp ",\"invoke_us\":" #t0       \
    ",\"complete_us\":" #t1 ",\"outcome\":\"ok\",\"result\":{\"seq\":" #seq \
    ",\"value\":\"" v "\"}}\n"
#define CAS_412(op, id, v, exp, cur, t0, t1)                          \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"update\",\"id\":\"" id  \
    "\",\"value\":\"" v "\",\"if_match\":" #exp ",\"invoke_us\":" #t0 \
    ",\"complete_us\":" #t1                                           \
    ",\"outcome\":\"ok\",\"result\":"                                 \
    "{\"cas_mismatch\":true,\"current_seq\":" #cur "}}\n"
#define UPDATE_IND(op, id, v, t0)                                    \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"update\",\"id\":\"" id \
    "\",\"value\":\"" v "\",\"invoke_us\":" #t0                      \
    ",\"outcome\":\"indeterminate\"}\n"
#define DELETE(op, id, t0, t1)                                       \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"delete\",\"id\":\"" id \
    "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1                  \
    ",\"outcome\":\"ok\",\"result\":{\"deleted\":true}}\n"
#define FAILED_UPDATE(op, id, v, t0, t1)                                \
    "{\"op\":" #op ",\"proc\":" #op ",\"f\":\"update\",\"id\":\"" id    \
    "\",\"value\":\"" v "\",\"invoke_us\":" #t0 ",\"complete_us\":" #t1 \
    ",\"outcome\":\"fail\"}\n"

/* Runs the checker on `text`; returns the verdict and fills *res. */
static enum ctl_verdict run(const char* text,
                            struct ctl_history* h,
                            struct ctl_check_result* res) {
    char err[256];
    ctl_history_init(h);
    assert_int_equal(ctl_history_parse(text, strlen(text), h, err, sizeof err),
                     0);
    struct ctl_check_opts opts = {.step_budget = 0, .minimize = true};
    enum ctl_verdict v = ctl_check(h, &opts, res);
    if (v != CTL_LINEARIZABLE) {
        ctl_check_print(stderr, h, res);
    }
    return v;
}

/* Checks that the smallest sub-history is exactly the ops `want`. */
static void expect_bad(const char* text,
                       const char* id,
                       size_t n,
                       const uint64_t* want) {
    struct ctl_history h;
    struct ctl_check_result res;
    assert_int_equal(run(text, &h, &res), CTL_NOT_LINEARIZABLE);
    assert_int_equal(res.bad_count, 1);
    assert_string_equal(res.bad[0].id, id);
    assert_true(res.bad[0].minimal);
    assert_int_equal(res.bad[0].count, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(h.ops[res.bad[0].ops[i]].op, want[i]);
    }
    ctl_check_result_free(&res);
    ctl_history_free(&h);
}

static void expect_ok(const char* text) {
    struct ctl_history h;
    struct ctl_check_result res;
    assert_int_equal(run(text, &h, &res), CTL_LINEARIZABLE);
    assert_int_equal(res.bad_count, 0);
    ctl_check_result_free(&res);
    ctl_history_free(&h);
}

static void test_linearizable_sequential(void** state) {
    (void)state;
    expect_ok(CREATE(1, "A", "a", 1, 0, 10) GET(2, "A", "a", 1, 20, 30)
                  CAS(3, "A", "b", 1, 5, 40, 50) GET(4, "A", "b", 5, 60, 70)
                      DELETE(5, "A", 80, 90) GET_NF(6, "A", 100, 110));
}

static void test_linearizable_concurrent(void** state) {
    (void)state;
    /* Reads overlapping an update may see either value; two concurrent
     * updates are ordered by their seqs, and a later read sees the last. */
    expect_ok(CREATE(1, "A", "a", 1, 0, 10) UPDATE(2, "A", "b", 4, 20, 60) GET(
        3, "A", "a", 1, 25, 35) GET(4, "A", "b", 4, 30, 70)
                  UPDATE(5, "A", "c", 6, 40, 65) GET(6, "A", "c", 6, 80, 90));
}

static void test_linearizable_indeterminate(void** state) {
    (void)state;
    /* An indeterminate update may have taken effect... */
    expect_ok(CREATE(1, "A", "a", 1, 0, 10) UPDATE_IND(2, "A", "b", 20)
                  GET(3, "A", "b", 7, 40, 50) GET(4, "A", "b", 7, 60, 70));
    /* ... or not at all. */
    expect_ok(CREATE(1, "A", "a", 1, 0, 10) UPDATE_IND(2, "A", "b", 20)
                  GET(3, "A", "a", 1, 40, 50));
    /* A failed write certainly did not. */
    expect_ok(CREATE(1, "A", "a", 1, 0, 10) FAILED_UPDATE(2, "A", "b", 20, 30)
                  GET(3, "A", "a", 1, 40, 50));
}

static void test_stale_read(void** state) {
    (void)state;
    /* The read starts after the update was acknowledged, yet returns the
     * old value. Bystanders before and after must not be in the answer. */
    static const uint64_t want[] = {1, 4, 5};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) GET(2, "A", "a", 1, 11, 12)
                   GET(3, "A", "a", 1, 13, 14) UPDATE(4, "A", "b", 2, 20, 30)
                       GET(5, "A", "a", 1, 40, 50) GET(6, "A", "b", 2, 60, 70)
                           GET(7, "A", "b", 2, 80, 90),
               "A", 3, want);
}

static void test_lost_write(void** state) {
    (void)state;
    /* An acknowledged create is gone on a later read. */
    static const uint64_t want[] = {1, 3};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) GET(2, "A", "a", 1, 20, 30)
                   GET_NF(3, "A", 40, 50) CREATE(4, "B", "x", 2, 0, 10)
                       GET(5, "B", "x", 2, 60, 70),
               "A", 2, want);
    /* An acknowledged update is lost: later reads see the older value. */
    static const uint64_t want2[] = {1, 2, 4};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) UPDATE(2, "A", "b", 3, 20, 30)
                   GET(3, "A", "b", 3, 40, 50) GET(4, "A", "a", 1, 60, 70),
               "A", 3, want2);
}

static void test_never_written(void** state) {
    (void)state;
    static const uint64_t want[] = {1, 3};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) GET(2, "A", "a", 1, 20, 30)
                   GET(3, "A", "ghost", 9, 40, 50),
               "A", 2, want);
}

static void test_wrong_cas_version(void** state) {
    (void)state;
    /* A CAS expecting seq 7 succeeded while the entry was at seq 1. */
    static const uint64_t want[] = {1, 2};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) CAS(2, "A", "b", 7, 8, 20, 30)
                   GET(3, "A", "b", 8, 40, 50),
               "A", 2, want);
    /* A CAS refused with 412 although its expected seq was current. */
    static const uint64_t want2[] = {1, 2};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) CAS_412(2, "A", "b", 1, 1, 20, 30),
               "A", 2, want2);
}

static void test_indeterminate_cannot_revert(void** state) {
    (void)state;
    /* Once a read saw the indeterminate write, it took effect: a later
     * read of the older value is a stale read. */
    static const uint64_t want[] = {1, 2, 3, 4};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) UPDATE_IND(2, "A", "b", 20)
                   GET(3, "A", "b", 7, 40, 50) GET(4, "A", "a", 1, 60, 70),
               "A", 4, want);
}

static void test_seq_order(void** state) {
    (void)state;
    /* Concurrent updates got seqs 2 and 3: the one with seq 3 came last,
     * so a read after both must see it. */
    static const uint64_t want[] = {1, 2, 3, 4};
    expect_bad(CREATE(1, "A", "a", 1, 0, 10) UPDATE(2, "A", "b", 2, 20, 60)
                   UPDATE(3, "A", "c", 3, 20, 60) GET(4, "A", "b", 2, 70, 80),
               "A", 4, want);
}

static void test_many_concurrent_reads(void** state) {
    (void)state;
    /* 60 reads overlap each other and an update; half see the old value,
     * half the new one. Without the read rule the search explores every
     * subset of the reads; with it a few thousand steps decide. */
    char* text = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&text, &len);
    assert_non_null(f);
    fputs(CREATE(1, "A", "a", 1, 0, 10) UPDATE(2, "A", "b", 5, 100, 1000), f);
    for (int i = 0; i < 60; i++) {
        fprintf(f,
                "{\"op\":%d,\"proc\":%d,\"f\":\"get\",\"id\":\"A\","
                "\"invoke_us\":%d,\"complete_us\":2000,\"outcome\":\"ok\","
                "\"result\":{\"seq\":%d,\"value\":\"%s\"}}\n",
                10 + i, 10 + i, 50 + i, i % 2 ? 5 : 1, i % 2 ? "b" : "a");
    }
    fclose(f);
    struct ctl_history h;
    struct ctl_check_result res;
    char err[256];
    ctl_history_init(&h);
    assert_int_equal(ctl_history_parse(text, len, &h, err, sizeof err), 0);
    struct ctl_check_opts opts = {.step_budget = 100000, .minimize = true};
    assert_int_equal(ctl_check(&h, &opts, &res), CTL_LINEARIZABLE);
    assert_true(res.steps < 100000);
    ctl_check_result_free(&res);
    ctl_history_free(&h);
    free(text);
}

/* ---- randomized comparison with a brute-force oracle --------------------- */

/* One generated operation (the oracle's own view of it). */
struct gen_op {
    int fn;          /* 0 create, 1 get, 2 update, 3 delete */
    int value;       /* value written (index), -1 none */
    bool has_if;     /* conditional */
    uint64_t if_seq; /* expected seq */
    bool det;        /* determinate */
    int res;         /* 0 entry, 1 not found, 2 cas mismatch, 3 deleted */
    int res_value;   /* value read */
    uint64_t res_seq;
    int64_t t0, t1;
};

/* The register, as the oracle sees it (independent of ctl_check.c). */
struct oreg {
    bool present;
    int value;
    uint64_t seq;
    bool known; /* seq exact; else a strict lower bound */
};

static bool oseq(struct oreg* r, uint64_t s) {
    if (r->known) {
        return r->seq == s;
    }
    if (s <= r->seq) {
        return false;
    }
    r->seq = s;
    r->known = true;
    return true;
}

static bool ostep(const struct gen_op* o, struct oreg* r) {
    if (!o->det) {
        if (o->fn == 0) {
            if (r->present) {
                return false;
            }
            *r = (struct oreg){true, o->value, 0, false};
            return true;
        }
        if (!r->present || (o->has_if && !oseq(r, o->if_seq))) {
            return false;
        }
        if (o->fn == 2) {
            r->value = o->value;
            r->known = false;
        } else {
            *r = (struct oreg){false, -1, 0, false};
        }
        return true;
    }
    if (o->res == 1) {
        return o->fn != 0 && !r->present;
    }
    if (o->res == 2) {
        return (o->fn == 2 || o->fn == 3) && r->present && o->has_if &&
               o->res_seq != o->if_seq && oseq(r, o->res_seq);
    }
    switch (o->fn) {
        case 0:
            if (r->present) {
                return false;
            }
            *r = (struct oreg){true, o->value, o->res_seq, true};
            return true;
        case 1:
            return r->present && r->value == o->res_value &&
                   oseq(r, o->res_seq);
        case 2:
            if (!r->present || (o->has_if && !oseq(r, o->if_seq)) ||
                o->res_seq <= r->seq) {
                return false;
            }
            *r = (struct oreg){true, o->value, o->res_seq, true};
            return true;
        default:
            if (!r->present || (o->has_if && !oseq(r, o->if_seq))) {
                return false;
            }
            *r = (struct oreg){false, -1, 0, false};
            return true;
    }
}

/* Depth-first search over every order (and every subset of the
 * indeterminate operations) that respects real time. */
static bool oracle(const struct gen_op* ops,
                   int n,
                   unsigned done,
                   struct oreg r) {
    bool all = true;
    for (int i = 0; i < n; i++) {
        all = all && (!ops[i].det || (done >> i & 1));
    }
    if (all) {
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (done >> i & 1) {
            continue;
        }
        bool ready = true; /* nothing pending returned before i began */
        for (int j = 0; j < n && ready; j++) {
            ready = (done >> j & 1) || !ops[j].det || j == i ||
                    ops[j].t1 >= ops[i].t0;
        }
        struct oreg next = r;
        if (ready && ostep(&ops[i], &next) &&
            oracle(ops, n, done | 1u << i, next)) {
            return true;
        }
    }
    /* An indeterminate operation may also never take effect: drop it. */
    for (int i = 0; i < n; i++) {
        if (!(done >> i & 1) && !ops[i].det &&
            oracle(ops, n, done | 1u << i, r)) {
            return true;
        }
    }
    return false;
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(uint64_t n) {
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state % n;
}

/* Makes a history by running random operations against a real register
 * at random points of their intervals, then maybe corrupts one answer. */
static int gen_history(struct gen_op* ops) {
    int n = 2 + (int)rnd(6);
    int64_t point[8];
    for (int i = 0; i < n; i++) {
        struct gen_op* o = &ops[i];
        memset(o, 0, sizeof *o);
        o->fn = i == 0 ? 0 : 1 + (int)rnd(3);
        o->t0 = i == 0 ? 0 : 5 + (int64_t)rnd(60);
        o->t1 = o->t0 + 1 + (int64_t)rnd(40);
        point[i] = o->t0 + (int64_t)rnd((uint64_t)(o->t1 - o->t0 + 1));
        o->value = (o->fn == 0 || o->fn == 2) ? i : -1;
        o->has_if = (o->fn == 2 || o->fn == 3) && rnd(2) == 0;
        o->det = i == 0 || o->fn == 1 || rnd(5) != 0;
    }
    /* Execute in linearization-point order. */
    int order[8];
    for (int i = 0; i < n; i++) {
        order[i] = i;
    }
    for (int a = 0; a < n; a++) {
        for (int b = a + 1; b < n; b++) {
            if (point[order[b]] < point[order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
        }
    }
    bool present = false;
    int value = -1;
    uint64_t seq = 0, counter = 0;
    for (int k = 0; k < n; k++) {
        struct gen_op* o = &ops[order[k]];
        bool applies = o->det || rnd(2) == 0; /* indeterminate: maybe */
        if (o->has_if) {
            o->if_seq = present && rnd(3) != 0 ? seq : 1 + rnd(6);
        }
        if (!applies) {
            continue;
        }
        if (o->fn != 0 && !present) {
            o->res = 1;
        } else if (o->fn == 1) {
            o->res = 0;
            o->res_value = value;
            o->res_seq = seq;
        } else if (o->has_if && o->if_seq != seq) {
            o->res = 2;
            o->res_seq = seq;
        } else if (o->fn == 3) {
            o->res = 3;
            present = false;
            value = -1;
        } else {
            o->res = 0;
            present = true;
            value = o->value;
            seq = o->res_seq = ++counter;
            o->res_value = value;
        }
        if (!o->det && o->res != 0 && o->res != 3) {
            o->det = true; /* a no-op answer: keep it determinate */
        }
    }
    if (rnd(2) == 0) { /* corrupt one answer */
        struct gen_op* o = &ops[rnd((uint64_t)n)];
        if (o->det) {
            switch (rnd(3)) {
                case 0:
                    o->res_seq += 1;
                    break;
                case 1:
                    o->res = o->fn == 0 ? 0 : 1;
                    break;
                default:
                    o->res_value = (o->res_value + 1) % n;
                    break;
            }
        }
    }
    return n;
}

static void gen_line(FILE* f, const struct gen_op* o, int i) {
    static const char* fns[] = {"create", "get", "update", "delete"};
    fprintf(f, "{\"op\":%d,\"proc\":%d,\"f\":\"%s\",\"id\":\"A\"", i, i,
            fns[o->fn]);
    if (o->value >= 0) {
        fprintf(f, ",\"value\":\"v%d\"", o->value);
    }
    if (o->has_if) {
        fprintf(f, ",\"if_match\":%llu", (unsigned long long)o->if_seq);
    }
    fprintf(f, ",\"invoke_us\":%lld", (long long)o->t0);
    if (!o->det) {
        fprintf(f, ",\"outcome\":\"indeterminate\"}\n");
        return;
    }
    fprintf(f, ",\"complete_us\":%lld,\"outcome\":\"ok\",\"result\":",
            (long long)o->t1);
    switch (o->res) {
        case 0:
            fprintf(f, "{\"seq\":%llu,\"value\":\"v%d\"}}\n",
                    (unsigned long long)o->res_seq,
                    o->fn == 1 ? o->res_value : o->value);
            break;
        case 1:
            fprintf(f, "{\"found\":false}}\n");
            break;
        case 2:
            fprintf(f, "{\"cas_mismatch\":true,\"current_seq\":%llu}}\n",
                    (unsigned long long)o->res_seq);
            break;
        default:
            fprintf(f, "{\"deleted\":true}}\n");
            break;
    }
}

static void test_random_vs_oracle(void** state) {
    (void)state;
    int agree_ok = 0, agree_bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        struct gen_op ops[8];
        int n = gen_history(ops);
        char* text = NULL;
        size_t len = 0;
        FILE* f = open_memstream(&text, &len);
        assert_non_null(f);
        for (int i = 0; i < n; i++) {
            gen_line(f, &ops[i], i);
        }
        fclose(f);
        struct ctl_history h;
        struct ctl_check_result res;
        char err[256];
        ctl_history_init(&h);
        assert_int_equal(ctl_history_parse(text, len, &h, err, sizeof err), 0);
        struct ctl_check_opts opts = {.step_budget = 0, .minimize = true};
        enum ctl_verdict v = ctl_check(&h, &opts, &res);
        /* The oracle reads values as indices: a corrupted read of an
         * index nobody wrote is simply never matched. */
        bool want = oracle(ops, n, 0, (struct oreg){false, -1, 0, false});
        if ((v == CTL_LINEARIZABLE) != want) {
            fprintf(stderr, "disagreement (oracle: %s) on:\n%s",
                    want ? "linearizable" : "not", text);
        }
        assert_int_equal(v == CTL_LINEARIZABLE, want);
        if (v == CTL_NOT_LINEARIZABLE) {
            /* The reported sub-history must itself fail. */
            struct ctl_history sub;
            ctl_history_init(&sub);
            sub.ops = calloc(res.bad[0].count, sizeof *sub.ops);
            assert_non_null(sub.ops);
            for (size_t k = 0; k < res.bad[0].count; k++) {
                sub.ops[k] = h.ops[res.bad[0].ops[k]];
            }
            sub.count = sub.cap = res.bad[0].count;
            struct ctl_check_result r2;
            assert_int_equal(ctl_check(&sub, &opts, &r2), CTL_NOT_LINEARIZABLE);
            ctl_check_result_free(&r2);
            free(sub.ops); /* the ops' strings belong to h */
            agree_bad++;
        } else {
            agree_ok++;
        }
        ctl_check_result_free(&res);
        ctl_history_free(&h);
        free(text);
    }
    /* Both kinds must have been exercised. */
    assert_true(agree_ok > 300);
    assert_true(agree_bad > 300);
}

static void test_parse_errors(void** state) {
    (void)state;
    struct ctl_history h;
    char err[256];
    const char* bad[] = {
        "{\"f\":\"get\"\n",
        "{\"f\":\"frob\",\"invoke_us\":1,\"outcome\":\"ok\"}\n",
        "{\"f\":\"get\",\"id\":\"A\",\"invoke_us\":5,\"complete_us\":1,"
        "\"outcome\":\"ok\",\"result\":{\"found\":false}}\n",
        "{\"f\":\"get\",\"id\":\"A\",\"invoke_us\":1,\"complete_us\":2,"
        "\"outcome\":\"ok\"}\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctl_history_init(&h);
        assert_int_equal(
            ctl_history_parse(bad[i], strlen(bad[i]), &h, err, sizeof err), -1);
        assert_non_null(strstr(err, "line 1"));
        ctl_history_free(&h);
    }
}

static void test_roundtrip(void** state) {
    (void)state;
    /* ctl_hop_json writes what ctl_history_parse reads. */
    const char* text = CREATE(1, "A", "a", 1, 0, 10)
        CAS_412(2, "A", "b", 5, 1, 20, 30) UPDATE_IND(3, "A", "c", 40)
            DELETE(4, "A", 50, 60) GET_NF(5, "A", 70, 80);
    struct ctl_history h, h2;
    char err[256];
    ctl_history_init(&h);
    ctl_history_init(&h2);
    assert_int_equal(ctl_history_parse(text, strlen(text), &h, err, sizeof err),
                     0);
    for (size_t i = 0; i < h.count; i++) {
        json_t* o = ctl_hop_json(&h.ops[i]);
        char* s = json_dumps(o, JSON_COMPACT);
        assert_int_equal(ctl_history_parse(s, strlen(s), &h2, err, sizeof err),
                         0);
        free(s);
        json_decref(o);
        const struct ctl_hop *a = &h.ops[i], *b = &h2.ops[i];
        assert_int_equal(a->fn, b->fn);
        assert_int_equal(a->outcome, b->outcome);
        assert_int_equal(a->res, b->res);
        assert_int_equal(a->res_seq, b->res_seq);
        assert_int_equal(a->invoke_us, b->invoke_us);
        assert_string_equal(a->id, b->id);
    }
    ctl_history_free(&h);
    ctl_history_free(&h2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linearizable_sequential),
        cmocka_unit_test(test_linearizable_concurrent),
        cmocka_unit_test(test_linearizable_indeterminate),
        cmocka_unit_test(test_stale_read),
        cmocka_unit_test(test_lost_write),
        cmocka_unit_test(test_never_written),
        cmocka_unit_test(test_wrong_cas_version),
        cmocka_unit_test(test_indeterminate_cannot_revert),
        cmocka_unit_test(test_seq_order),
        cmocka_unit_test(test_many_concurrent_reads),
        cmocka_unit_test(test_random_vs_oracle),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
