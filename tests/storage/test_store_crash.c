/*
 * test_store_crash.c - kill -9 at random points, then check the storage.
 *
 * A child process runs a node's storage loop on a log (strict durability)
 * and a state: it recovers (store_recover + store_replay), then appends
 * batches of entries, sometimes replacing an uncommitted suffix under a
 * new term (as a follower does for a new leader), syncs, reports over a
 * pipe what sync() said is durable, advances the commit index and applies
 * committed entries to the state, and with --compact also syncs the state
 * and compacts the log. Before each append it reports its intent (the
 * range and term), so the parent knows the two logs that may be on disk
 * if the kill lands between the commit and the report.
 *
 * The parent SIGKILLs the child after a random delay, many times, and
 * after every kill reopens the storage and checks:
 *  - the log opens: every entry passes its checksum, no index is missing,
 *    terms never go down (store_lmdb_open scans it all): no partial entry;
 *  - every entry the child reported durable is present with its term and
 *    its exact data, unless the child's last intent replaced it, in which
 *    case the log is exactly the old one or exactly the new one;
 *  - the state verifies (count and hash recomputed from its entries) and
 *    recovery brings it to the commit index.
 * At the end, the recovered state, a fresh state replaying the log from
 * index 1 (without --compact), and a clean run applying the same entries
 * generated in memory must have the same applied index, count, seq and
 * state hash.
 *
 * Usage: test_store_crash [--seed N] [--iterations N] [--seconds N]
 *                         [--compact]
 * The seed is printed; the kill points depend on timing, so a seed
 * reproduces the child's choices, not the exact kill instants. The test is
 * time-bounded and does not depend on the machine's speed: a slow machine
 * writes fewer entries between kills, the checks are the same.
 */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_state.h"
#include "store_lmdb.h"
#include "store_recover.h"
#include "test_util.h"

#define REC_INTENT  'I' /* a = lo, b = hi, c = term: about to append */
#define REC_DURABLE 'D' /* a = durable index, b = its term */
#define RETAIN      300 /* --compact: entries kept below the state */

/* One report from the child: written with one write() (< PIPE_BUF). */
struct rec {
    uint64_t type; /* REC_* */
    uint64_t a, b, c;
};

/* The parent's model of the log: the term of every index. */
struct model {
    raft_term* term;    /* term[i] for 1 <= i <= last */
    size_t cap;         /* slots */
    raft_index last;    /* last index the model holds */
    raft_index durable; /* last index reported durable */
    bool pending;       /* an intent without its durable report */
    struct rec intent;  /* that intent */
    raft_index checked; /* entries up to here were compared */
    int in_flight;      /* last kill: 0 none, 1 old log kept, 2 new log */
    int kills_old;      /* kills mid-batch that left the old log */
    int kills_new;      /* kills mid-batch that left the new batch */
};

static bool opt_compact;

static void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

static uint64_t g_seed;
static int g_iteration;

static void die(const char* fmt, ...) {
    va_list ap;
    fprintf(stderr, "FAIL seed=%llu iteration=%d: ", (unsigned long long)g_seed,
            g_iteration);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static void report(int fd, uint64_t type, uint64_t a, uint64_t b, uint64_t c) {
    struct rec r = {type, a, b, c};
    if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
        _exit(3);
    }
}

/* ------------------------------------------------------------------ */
/* The child                                                           */

struct child {
    struct store_lmdb* log;
    struct store st;
    struct raft_storage view;
    struct kv_state* kv;
    raft_index last;
    raft_term term;
    raft_index commit;
    uint64_t rng;
    int fd;
};

static void child_open(struct child* c, const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* log_dir = tu_path(dir, "log");
    char* state_dir = tu_path(dir, "state");
    struct store_recovery rec;

    if (store_lmdb_open(log_dir, NULL, &c->log, err) != STORE_OK ||
        kv_open(state_dir, NULL, &c->kv, err) != STORE_OK ||
        store_recover(c->log, c->kv, NULL, &rec, err) != STORE_OK ||
        store_replay(c->log, c->kv, rec.replay_to, 0, err) != STORE_OK) {
        fprintf(stderr, "child: %s\n", err);
        _exit(2);
    }
    store_lmdb_store(c->log, &c->st);
    c->st.ops->storage(c->st.ctx, &c->view);
    c->last = store_lmdb_last_index(c->log);
    c->commit = rec.start.hard_state.commit;
    if (c->commit > c->last) {
        c->commit = c->last;
    }
    raft_term lt = 0;
    c->view.term(c->view.ctx, c->last, &lt);
    c->term = rec.start.hard_state.term > lt ? rec.start.hard_state.term : lt;
    if (c->term == 0) {
        c->term = 1;
    }
    free(log_dir);
    free(state_dir);
}

/* Appends one batch (maybe replacing an uncommitted suffix) and syncs. */
static void child_append(struct child* c) {
    raft_index lo = c->last + 1;
    uint64_t pick = tu_below(&c->rng, 100);
    if (pick < 10 && c->last > c->commit) {
        raft_index back = 1 + tu_below(&c->rng, c->last - c->commit);
        lo = c->last + 1 - back;
        c->term++;
    } else if (pick < 13) {
        c->term++;
    }
    size_t n = 1 + (size_t)tu_below(&c->rng, pick < 50 ? 8 : 64);
    struct raft_entry* e = calloc(n, sizeof(*e));
    uint8_t** owned = calloc(n, sizeof(*owned));
    for (size_t i = 0; i < n; i++) {
        tu_gen_entry(lo + i, c->term, &e[i], &owned[i]);
    }
    struct raft_hard_state hs = {c->term, 0, c->commit};
    c->st.ops->save_hard_state(c->st.ctx, &hs);
    report(c->fd, REC_INTENT, lo, lo + n - 1, c->term);
    if (c->st.ops->append(c->st.ctx, e, n) != RAFT_OK) {
        fprintf(stderr, "child: append: %s\n", store_lmdb_errmsg(c->log));
        _exit(2);
    }
    raft_index di;
    raft_term dt;
    if (c->st.ops->sync(c->st.ctx, &di, &dt) != RAFT_OK) {
        _exit(2);
    }
    report(c->fd, REC_DURABLE, di, dt, 0);
    c->last = lo + n - 1;
    for (size_t i = 0; i < n; i++) {
        free(owned[i]);
    }
    free(owned);
    free(e);
}

/* Commits part of the durable log and applies it to the state. */
static void child_apply(struct child* c) {
    char err[STORE_ERRMSG_SIZE];
    if (c->last > c->commit && tu_below(&c->rng, 3) > 0) {
        c->commit += 1 + tu_below(&c->rng, c->last - c->commit);
    }
    if (store_replay(c->log, c->kv, c->commit, 16 * 1024, err) != STORE_OK) {
        fprintf(stderr, "child: apply: %s\n", err);
        _exit(2);
    }
}

static void child_compact(struct child* c) {
    struct raft_snapshot_meta m;
    struct store_compaction plan;

    if (kv_sync(c->kv) != STORE_OK) {
        _exit(2);
    }
    store_plan_compaction(store_lmdb_first_index(c->log),
                          kv_durable_applied(c->kv), RETAIN, RETAIN, &plan);
    if (!plan.due || kv_snapshot_meta(c->kv, NULL, &m) != STORE_OK) {
        return;
    }
    if (store_compact_below(c->log, c->kv, &m, RETAIN) != STORE_OK) {
        fprintf(stderr, "child: compact: %s\n", store_lmdb_errmsg(c->log));
        _exit(2);
    }
}

static void child_run(const char* dir, uint64_t seed, int fd) {
    struct child c;
    memset(&c, 0, sizeof(c));
    c.fd = fd;
    c.rng = seed;
    child_open(&c, dir);
    for (;;) {
        child_append(&c);
        child_apply(&c);
        if (opt_compact && tu_below(&c.rng, 20) == 0) {
            child_compact(&c);
        }
    }
}

/* ------------------------------------------------------------------ */
/* The parent's checks                                                 */

static void model_set(struct model* m, raft_index i, raft_term t) {
    if (i >= m->cap) {
        size_t cap = m->cap ? m->cap : 1024;
        while (cap <= i) {
            cap *= 2;
        }
        m->term = realloc(m->term, cap * sizeof(*m->term));
        memset(m->term + m->cap, 0, (cap - m->cap) * sizeof(*m->term));
        m->cap = cap;
    }
    m->term[i] = t;
}

static void model_apply_intent(struct model* m, const struct rec* in) {
    for (raft_index i = in->a; i <= in->b; i++) {
        model_set(m, i, in->c);
    }
    m->last = in->b;
    if (m->checked >= in->a) {
        m->checked = in->a - 1;
    }
}

/* Reads the child's reports until EOF and updates the model. */
static void model_read(struct model* m, int fd) {
    struct rec r;
    for (;;) {
        ssize_t got = read(fd, &r, sizeof(r));
        if (got == 0) {
            break;
        }
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got != (ssize_t)sizeof(r)) {
            die("short report from the child (%zd bytes)", got);
        }
        if (r.type == REC_INTENT) {
            m->pending = true;
            m->intent = r;
        } else if (r.type == REC_DURABLE) {
            if (!m->pending || r.a != m->intent.b || r.b != m->intent.c) {
                die("durable report %llu/%llu does not match the intent",
                    (unsigned long long)r.a, (unsigned long long)r.b);
            }
            model_apply_intent(m, &m->intent);
            m->pending = false;
            m->durable = r.a;
        }
    }
}

/* Compares stored entry i with the generated one for its term. */
static void check_entry(const struct raft_entry* got, raft_term want_term) {
    struct raft_entry e;
    uint8_t* owned;

    if (got->term != want_term) {
        die("entry %llu has term %llu, expected %llu",
            (unsigned long long)got->index, (unsigned long long)got->term,
            (unsigned long long)want_term);
    }
    tu_gen_entry(got->index, got->term, &e, &owned);
    if (e.type != got->type || e.len != got->len ||
        (e.len > 0 && memcmp(e.data, got->data, e.len) != 0)) {
        die("entry %llu: data differs from what was written",
            (unsigned long long)got->index);
    }
    free(owned);
}

/* Decides whether the pending intent reached the disk; updates the model. */
static void resolve_pending(struct model* m, struct raft_storage* v) {
    raft_term t = 0;
    raft_index last = v->last_index(v->ctx);

    m->in_flight = 0;
    if (!m->pending) {
        return;
    }
    bool applied = last == m->intent.b &&
                   v->term(v->ctx, m->intent.a, &t) == RAFT_OK &&
                   t == m->intent.c;
    if (applied) {
        model_apply_intent(m, &m->intent);
        m->durable = m->intent.b;
        m->kills_new++;
    } else {
        m->kills_old++;
    }
    m->in_flight = applied ? 2 : 1;
    m->pending = false;
}

static void check_log(struct model* m, struct store_lmdb* log) {
    struct store st;
    struct raft_storage v;
    struct raft_entry ents[256];

    store_lmdb_store(log, &st);
    st.ops->storage(st.ctx, &v);
    resolve_pending(m, &v);
    raft_index first = v.first_index(v.ctx);
    raft_index last = v.last_index(v.ctx);
    if (last != m->last) {
        die("log ends at %llu, the model at %llu (durable reported %llu)",
            (unsigned long long)last, (unsigned long long)m->last,
            (unsigned long long)m->durable);
    }
    if (last < m->durable) {
        die("entry %llu was reported durable but the log ends at %llu",
            (unsigned long long)m->durable, (unsigned long long)last);
    }
    raft_index lo = m->checked + 1 > first ? m->checked + 1 : first;
    while (lo <= last) {
        size_t n = 0;
        raft_index hi = last + 1 - lo > 256 ? lo + 256 : last + 1;
        if (v.entries(v.ctx, lo, hi, SIZE_MAX, ents, &n) != RAFT_OK || n == 0) {
            die("reading %llu..: %s", (unsigned long long)lo,
                store_lmdb_errmsg(log));
        }
        for (size_t i = 0; i < n; i++) {
            check_entry(&ents[i], m->term[ents[i].index]);
        }
        lo += n;
    }
    m->checked = last;
}

/* Reopens everything after a kill and checks it; returns entries held. */
static raft_index check_after_kill(struct model* m, const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* log_dir = tu_path(dir, "log");
    char* state_dir = tu_path(dir, "state");
    struct store_lmdb* log;
    struct kv_state* kv;
    struct store_recovery rec;

    if (store_lmdb_open(log_dir, NULL, &log, err) != STORE_OK) {
        die("log refused after a kill: %s", err);
    }
    check_log(m, log);
    if (kv_open(state_dir, NULL, &kv, err) != STORE_OK) {
        die("state refused after a kill: %s", err);
    }
    if (kv_verify(kv, NULL, err) != STORE_OK) {
        die("state does not verify: %s", err);
    }
    if (store_recover(log, kv, NULL, &rec, err) != STORE_OK) {
        die("recovery: %s", err);
    }
    if (rec.log_reset) {
        die("recovery had to reset the log: the state ran ahead of it");
    }
    if (store_replay(log, kv, rec.replay_to, 0, err) != STORE_OK) {
        die("replay: %s", err);
    }
    raft_index last = store_lmdb_last_index(log);
    kv_close(kv);
    store_lmdb_close(log);
    free(log_dir);
    free(state_dir);
    return last;
}

/* ------------------------------------------------------------------ */
/* Final comparison                                                    */

static struct kv_stats stats(struct kv_state* kv) {
    struct kv_stats st;
    if (kv_stats(kv, &st) != STORE_OK) {
        die("kv_stats failed");
    }
    return st;
}

/* Applies generated entries 1..upto (model terms) to a fresh state. */
static struct kv_stats clean_run(const struct model* m,
                                 const char* dir,
                                 raft_index upto) {
    char err[STORE_ERRMSG_SIZE];
    struct kv_state* kv;
    struct raft_entry e[128];
    uint8_t* owned[128];

    if (kv_open(dir, NULL, &kv, err) != STORE_OK) {
        die("clean state: %s", err);
    }
    for (raft_index i = 1; i <= upto;) {
        size_t n = 0;
        for (; n < 128 && i <= upto; n++, i++) {
            tu_gen_entry(i, m->term[i], &e[n], &owned[n]);
        }
        if (kv_apply_batch(kv, e, n, NULL) != STORE_OK) {
            die("clean run: %s", kv_errmsg(kv));
        }
        for (size_t k = 0; k < n; k++) {
            free(owned[k]);
        }
    }
    struct kv_stats st = stats(kv);
    kv_close(kv);
    return st;
}

static void expect_same(const char* what,
                        const struct kv_stats* a,
                        const struct kv_stats* b) {
    if (a->applied_index != b->applied_index || a->count != b->count ||
        a->seq != b->seq || a->hash != b->hash) {
        die("%s: applied %llu count %llu seq %llu hash %016llx vs applied "
            "%llu count %llu seq %llu hash %016llx",
            what, (unsigned long long)a->applied_index,
            (unsigned long long)a->count, (unsigned long long)a->seq,
            (unsigned long long)a->hash, (unsigned long long)b->applied_index,
            (unsigned long long)b->count, (unsigned long long)b->seq,
            (unsigned long long)b->hash);
    }
}

static void final_check(const struct model* m, const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* log_dir = tu_path(dir, "log");
    char* state_dir = tu_path(dir, "state");
    char* fresh_dir = tu_path(dir, "fresh");
    char* clean_dir = tu_path(dir, "clean");
    struct store_lmdb* log;
    struct kv_state* kv;

    if (store_lmdb_open(log_dir, NULL, &log, err) != STORE_OK ||
        kv_open(state_dir, NULL, &kv, err) != STORE_OK) {
        die("final open: %s", err);
    }
    struct kv_stats recovered = stats(kv);
    raft_index upto = recovered.applied_index;
    struct kv_stats clean = clean_run(m, clean_dir, upto);
    expect_same("recovered state vs clean run", &recovered, &clean);
    bool fresh_done = false;
    if (store_lmdb_first_index(log) == 1) {
        struct kv_state* fresh;
        if (kv_open(fresh_dir, NULL, &fresh, err) != STORE_OK ||
            store_replay(log, fresh, upto, 0, err) != STORE_OK) {
            die("fresh replay: %s", err);
        }
        struct kv_stats fs = stats(fresh);
        expect_same("fresh replay of the log vs clean run", &fs, &clean);
        kv_close(fresh);
        fresh_done = true;
    }
    printf(
        "final: log %llu..%llu, applied %llu, %llu live entries, seq "
        "%llu, hash %016llx: recovered == clean run%s\n",
        (unsigned long long)store_lmdb_first_index(log),
        (unsigned long long)store_lmdb_last_index(log),
        (unsigned long long)upto, (unsigned long long)clean.count,
        (unsigned long long)clean.seq, (unsigned long long)clean.hash,
        fresh_done ? " == fresh replay" : "");
    kv_close(kv);
    store_lmdb_close(log);
    free(log_dir);
    free(state_dir);
    free(fresh_dir);
    free(clean_dir);
}

/* ------------------------------------------------------------------ */

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Creates both environments once, so no kill lands on their creation. */
static void create_stores(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    char* log_dir = tu_path(dir, "log");
    char* state_dir = tu_path(dir, "state");
    struct store_lmdb* log;
    struct kv_state* kv;

    if (store_lmdb_open(log_dir, NULL, &log, err) != STORE_OK ||
        kv_open(state_dir, NULL, &kv, err) != STORE_OK) {
        die("create: %s", err);
    }
    kv_close(kv);
    store_lmdb_close(log);
    free(log_dir);
    free(state_dir);
}

static pid_t spawn(const char* dir, uint64_t seed, int* rfd) {
    int p[2];
    if (pipe(p) != 0) {
        die("pipe: %s", strerror(errno));
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        die("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(p[0]);
        child_run(dir, seed, p[1]);
        _exit(0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

int main(int argc, char** argv) {
    int iterations = 30;
    double seconds = 60;
    struct model m;

    g_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            g_seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iterations = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--compact") == 0) {
            opt_compact = true;
        } else {
            fprintf(stderr,
                    "usage: %s [--seed N] [--iterations N] [--seconds N] "
                    "[--compact]\n",
                    argv[0]);
            return 2;
        }
    }
    printf("crash test seed=%llu iterations=%d seconds=%.0f%s\n",
           (unsigned long long)g_seed, iterations, seconds,
           opt_compact ? " compact" : "");
    memset(&m, 0, sizeof(m));
    uint64_t rng = g_seed;
    char* dir = tu_mkdtemp("crash");
    create_stores(dir);
    double start = tu_now();
    int done = 0;
    for (g_iteration = 0; g_iteration < iterations; g_iteration++) {
        if (tu_now() - start > seconds) {
            break;
        }
        int rfd;
        pid_t pid = spawn(dir, tu_rand(&rng), &rfd);
        sleep_ms(2 + tu_below(&rng, 100));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        model_read(&m, rfd);
        close(rfd);
        if (!WIFSIGNALED(status)) {
            die("the child exited by itself (status %d)",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        raft_index last = check_after_kill(&m, dir);
        static const char* const mid[] = {"", " (killed mid-batch: old log)",
                                          " (killed mid-batch: new batch)"};
        printf("kill %2d: log ends at %llu, durable reported %llu, ok%s\n",
               g_iteration, (unsigned long long)last,
               (unsigned long long)m.durable, mid[m.in_flight]);
        done++;
    }
    final_check(&m, dir);
    printf(
        "PASS: %d kills (%d mid-batch keeping the old log, %d keeping "
        "the new batch), seed=%llu\n",
        done, m.kills_old, m.kills_new, (unsigned long long)g_seed);
    tu_rmtree(dir);
    free(m.term);
    return done > 0 ? 0 : 1;
}
