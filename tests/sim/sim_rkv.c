/*
 * sim_rkv.c - --real-kv: the simulator runs the real state machine.
 *
 * Every node's state machine is a struct kv_state (storage/kv_state.h) on
 * LMDB, opened with the `fast` durability profile and a small map in a
 * per-run directory (/dev/shm when it exists, else $TMPDIR or /tmp), one
 * sub-directory per node. The directory goes away when the run ends or
 * fails (sim_rkv_close), at exit, on SIGINT/SIGTERM/SIGHUP/SIGABRT, and a
 * later run sweeps the directories of simulators that died without a
 * chance to clean up (SIGKILL from a ctest timeout).
 *
 * Clients propose packed skein.Command entries: creates of fresh ids,
 * updates (unconditional, or compare-and-swap on the seq the client last
 * learnt), deletes, creates of an existing id (BAD_REQUEST), undecodable
 * data (BAD_REQUEST), and retries that re-propose an earlier command's
 * exact bytes (same request id). Ids, request ids, keys and values come
 * from this module's own PRNG stream, created_at from the tick: the output
 * of a seed is deterministic.
 *
 * Checks, on top of those of sim_check.c:
 *  - every apply's result (status, op, seq, entry, duplicate) is the same
 *    on every node that applies the index (the first one defines it);
 *  - after every kv_apply_batch the node's kv_stats (applied term, seq,
 *    count, hash, conf index) equal those every other node reported at
 *    that applied index; so do a reopened state's (crash recovery), a
 *    snapshot file's and an installed snapshot's;
 *  - idempotency: a command whose request id was applied within the
 *    window is answered as a duplicate with the original result and no
 *    new seq; outside the window it is applied afresh; seq is gap free;
 *  - reads (kv_get) return exactly the version the history holds at the
 *    node's applied index, never older than the latest write to that
 *    entry acknowledged before the read began (by seq);
 *  - the entries the core hands out again after a restart are skipped;
 *  - at the end of the liveness phase every node's kv_stats are equal,
 *    every state passes kv_verify and holds every entry as the history
 *    says.
 *
 * The model: for each entry id, the versions (index, seq, entry hash or
 * deleted) in log order, from the results of the first node to apply each
 * index. Results are deterministic, so this is the history every node
 * must follow.
 *
 * A crash (a power cut of the simulator too) is a process crash for the
 * state: committed LMDB transactions survive, as in skein-node, while the
 * simulated log still loses what it had not synced. The node reopens its
 * state and restarts its core from the state's applied index, reconciling
 * with the log as store_recover() does (the reset of the log to the
 * state cannot happen here: an entry is applied only once durable, and
 * durable committed entries are never dropped). Some restarts pass the
 * snapshot index instead, so the core hands out again entries the state
 * already holds and kv_apply_batch must skip them.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_snapshot.h"
#include "kv_state.h"
#include "sim.h"
#include "skein.pb-c.h"

#define SIM_RK_MAP_SIZE     ((size_t)32 << 20) /* LMDB map of each state */
#define SIM_RK_PATH_MAX     512                /* bytes of a path */
#define SIM_RK_ID_LEN       36                 /* UUID text */
#define SIM_RK_RID_MAX      32                 /* bytes of a request id */
#define SIM_RK_KEY_MAX      16                 /* bytes of a key */
#define SIM_RK_VALUE_MAX    300                /* bytes of a value */
#define SIM_RK_EPOCH_MS     1700000000000LL    /* created_at of tick 0 */
#define SIM_RK_TICK_MS      10                 /* created_at per tick */
#define SIM_RK_RECENT       8  /* most writes and reads go to these */
#define SIM_RK_RETRY_RECENT 40 /* most retries repeat one of these */
#define SIM_RK_NONE         UINT32_MAX
#define SIM_RK_RNG_SALT     0x736b65696e726b76ULL /* "skeinrkv" */

/* One write to an entry, as the history applied it. */
struct sim_rk_ver {
    raft_index index; /* log index of the write */
    uint64_t seq;     /* seq it took */
    uint64_t hash;    /* kv_entry_hash of the entry after it; 0 if deleted */
    bool deleted;     /* a delete */
};

/* One entry id the clients use. */
struct sim_rk_ent {
    char id[SIM_RK_ID_LEN + 1]; /* UUID text, the first 8 digits = index */
    uint64_t known_seq;         /* the clients' latest knowledge (CAS) */
    uint64_t acked_seq;         /* floor for reads: seq of the latest
                                   acknowledged write or CAS answer */
    struct sim_rk_ver* vers;    /* model, in log order */
    size_t n_vers;              /* used */
    size_t cap_vers;            /* slots */
};

/* One command ever built; retries propose the same bytes again. */
struct sim_rk_cmd {
    uint8_t* data;         /* packed skein.Command (or garbage), owned */
    uint32_t len;          /* bytes at data */
    uint32_t ent;          /* entry it writes, SIM_RK_NONE for garbage */
    uint32_t op;           /* enum kv_op, KV_OP_NONE for garbage */
    bool has_rid;          /* carries a request id */
    raft_index idem_index; /* history: index of its last fresh apply */
    uint64_t idem_digest;  /* history: digest of that result */
};

/* Counters for the summary line. */
struct sim_rk_counts {
    uint64_t ok;              /* history results by status */
    uint64_t not_found;       /* ... */
    uint64_t cas_mismatch;    /* ... */
    uint64_t bad_request;     /* ... */
    uint64_t duplicates;      /* answered from the idempotency table */
    uint64_t idem_expired;    /* retries applied afresh after the window */
    uint64_t retries;         /* commands proposed again (same bytes) */
    uint64_t skipped;         /* entries kv_apply_batch skipped (any node) */
    uint64_t reads_found;     /* reads served with an entry */
    uint64_t reads_missing;   /* reads served NOT_FOUND */
    uint64_t files;           /* kv_snapshot_create calls */
    uint64_t installs_writer; /* installs through the chunked writer */
    uint64_t installs_file;   /* installs through kv_snapshot_install_file */
    uint64_t reopens;         /* states reopened after a crash */
    uint64_t rehands;         /* restarts that re-hand applied entries */
    uint64_t log_resets;      /* restarts that reset the log to the state */
    uint64_t entries;         /* live entries at the end */
};

struct sim_rkv {
    struct sim_rng rng;        /* this module's PRNG stream */
    uint64_t idem_window;      /* kv_options.idem_window */
    uint32_t rehand_bp;        /* chance a restart re-hands entries */
    uint32_t batch_bp;         /* chance of a multi-entry apply batch */
    uint32_t retry_bp;         /* chance a write is a retry */
    char dir[SIM_RK_PATH_MAX]; /* run directory, "" when none */
    struct sim_rk_ent* ents;   /* entry ids, owned */
    size_t n_ents;             /* used */
    size_t cap_ents;           /* slots */
    struct sim_rk_cmd* cmds;   /* commands, owned */
    size_t n_cmds;             /* used */
    size_t cap_cmds;           /* slots */
    struct kv_result* results; /* apply results */
    size_t cap_results;        /* slots */
    struct kv_buf buf;         /* kv_get buffer */
    raft_index defined_max;    /* highest index whose result is defined */
    uint64_t defined_seq;      /* seq after it */
    struct sim_rk_counts c;    /* counters */
};

/* ---------------------------------------------------------------------------
 * Memory and small helpers
 */

static void* sim_rk_xrealloc(void* p, size_t size) {
    void* q = realloc(p, size > 0 ? size : 1);
    if (q == NULL) {
        fprintf(stderr, "skein-sim: out of memory\n");
        abort();
    }
    return q;
}

struct sim_blob* sim_blob_new(size_t size) {
    struct sim_blob* b = sim_rk_xrealloc(NULL, sizeof(*b) + size);
    b->refs = 1;
    b->size = size;
    return b;
}

struct sim_blob* sim_blob_retain(struct sim_blob* b) {
    if (b != NULL) {
        b->refs++;
    }
    return b;
}

void sim_blob_release(struct sim_blob* b) {
    if (b != NULL && --b->refs == 0) {
        free(b);
    }
}

static uint64_t sim_rk_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t sim_rk_hash_bytes(uint64_t h, const void* p, size_t len) {
    const uint8_t* b = p;
    h ^= 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return sim_rk_mix(h ^ len);
}

/* Copies msg into out with the run directory replaced by "$RUN", so a
 * FAIL line reads the same in every run of a seed. */
static const char* sim_rk_clean(const struct sim* s,
                                const char* msg,
                                char* out,
                                size_t cap) {
    const char* dir = s->rk != NULL ? s->rk->dir : "";
    size_t dl = strlen(dir);
    size_t o = 0;
    for (const char* p = msg; *p != '\0' && o + 1 < cap;) {
        if (dl > 0 && strncmp(p, dir, dl) == 0 && o + 5 < cap) {
            memcpy(out + o, "$RUN", 4);
            o += 4;
            p += dl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

/* "<run>/n<id>/<leaf>" into out (SIM_RK_PATH_MAX bytes). */
static void sim_rk_path(struct sim* s,
                        const struct sim_node* n,
                        const char* leaf,
                        char* out) {
    int len = snprintf(out, SIM_RK_PATH_MAX, "%s/n%llu/%s", s->rk->dir,
                       (unsigned long long)n->id, leaf);
    if (len < 0 || len >= SIM_RK_PATH_MAX) {
        sim_fail(s, "sim-internal", "path too long");
    }
}

static struct kv_options sim_rk_options(const struct sim* s) {
    struct kv_options o;
    memset(&o, 0, sizeof(o));
    o.map_size = SIM_RK_MAP_SIZE;
    o.durability = STORE_DURABILITY_FAST;
    o.fast_flush_ms = 3600 * 1000; /* a crash is a process crash: no need */
    o.idem_window = s->rk->idem_window;
    o.rss_file_budget = SIZE_MAX; /* no /proc reads */
    return o;
}

/* The bootstrap configuration every node starts from. */
static void sim_rk_bootstrap(const struct sim* s, struct raft_conf* c) {
    memset(c, 0, sizeof(*c));
    c->count = s->o.nodes;
    for (uint32_t i = 0; i < s->o.nodes; i++) {
        c->ids[i] = i + 1;
        c->roles[i] = RAFT_VOTER;
    }
}

/* ---------------------------------------------------------------------------
 * The run directory and its removal
 */

static char sim_rk_live_dir[SIM_RK_PATH_MAX]; /* for exit and signals */
static bool sim_rk_hooked;                    /* handlers installed */

/* Async-signal-safe removal: rm -rf in a child. */
static void sim_rk_on_signal(int sig) {
    static char a0[] = "rm", a1[] = "-rf", a2[] = "--";
    if (sim_rk_live_dir[0] != '\0') {
        pid_t pid = fork();
        if (pid == 0) {
            char* const argv[] = {a0, a1, a2, sim_rk_live_dir, NULL};
            char* const envp[] = {NULL};
            execve("/bin/rm", argv, envp);
            _exit(127);
        }
        if (pid > 0) {
            (void)waitpid(pid, NULL, 0);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void sim_rk_at_exit(void) {
    if (sim_rk_live_dir[0] != '\0') {
        (void)store_rmtree(sim_rk_live_dir);
        sim_rk_live_dir[0] = '\0';
    }
}

static void sim_rk_hook(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT};
    if (sim_rk_hooked) {
        return;
    }
    sim_rk_hooked = true;
    atexit(sim_rk_at_exit);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = sim_rk_on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* Removes "skein-sim.<pid>.*" directories of simulators that are gone. */
static void sim_rk_sweep(const char* base) {
    static bool swept;
    if (swept) {
        return;
    }
    swept = true;
    DIR* d = opendir(base);
    if (d == NULL) {
        return;
    }
    struct dirent* de;
    while ((de = readdir(d)) != NULL) {
        long pid = 0;
        int used = 0;
        if (sscanf(de->d_name, "skein-sim.%ld.%n", &pid, &used) != 1 ||
            used == 0 || pid <= 0 || pid == (long)getpid()) {
            continue;
        }
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char path[SIM_RK_PATH_MAX];
            int len = snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
            if (len > 0 && (size_t)len < sizeof(path)) {
                (void)store_rmtree(path);
            }
        }
    }
    closedir(d);
}

static const char* sim_rk_base_dir(void) {
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
        access("/dev/shm", W_OK | X_OK) == 0) {
        return "/dev/shm";
    }
    const char* t = getenv("TMPDIR");
    return t != NULL && t[0] != '\0' ? t : "/tmp";
}

void sim_rkv_params(struct sim* s) {
    struct sim_rkv* rk = calloc(1, sizeof(*rk));
    if (rk == NULL) {
        fprintf(stderr, "skein-sim: out of memory\n");
        abort();
    }
    s->rk = rk;
    sim_rng_seed(&rk->rng, s->o.seed ^ SIM_RK_RNG_SALT);
    rk->idem_window = sim_rng_chance(&rk->rng, 5000)
                          ? sim_rng_range(&rk->rng, 8, 64)
                          : sim_rng_range(&rk->rng, 65, 1000);
    rk->rehand_bp = (uint32_t)sim_rng_range(&rk->rng, 0, 5000);
    rk->batch_bp = (uint32_t)sim_rng_range(&rk->rng, 0, 5000);
    rk->retry_bp = (uint32_t)sim_rng_range(&rk->rng, 300, 1500);
}

void sim_rkv_print_params(const struct sim* s) {
    const struct sim_rkv* rk = s->rk;
    printf(
        "kv: real (storage/kv_state, LMDB, durability=fast, map=%zu MiB) "
        "idem_window=%llu retry=%u.%02u%% batch_apply=%u.%02u%% "
        "rehand=%u.%02u%%\n",
        SIM_RK_MAP_SIZE >> 20, (unsigned long long)rk->idem_window,
        rk->retry_bp / 100, rk->retry_bp % 100, rk->batch_bp / 100,
        rk->batch_bp % 100, rk->rehand_bp / 100, rk->rehand_bp % 100);
}

void sim_rkv_init(struct sim* s) {
    struct sim_rkv* rk = s->rk;
    const char* base = sim_rk_base_dir();
    sim_rk_hook();
    sim_rk_sweep(base);
    int len = snprintf(rk->dir, sizeof(rk->dir), "%s/skein-sim.%ld.XXXXXX",
                       base, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof(rk->dir) - 64 ||
        mkdtemp(rk->dir) == NULL) {
        int err = errno;
        rk->dir[0] = '\0';
        sim_fail(s, "sim-internal", "cannot create a run directory in %s: %s",
                 base, strerror(err));
    }
    memcpy(sim_rk_live_dir, rk->dir, sizeof(sim_rk_live_dir));
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        char path[SIM_RK_PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/n%u", rk->dir, i);
        if (store_mkdirs(path) != STORE_OK) {
            sim_fail(s, "sim-internal", "cannot create n%u's directory", i);
        }
    }
}

void sim_rkv_close(struct sim* s) {
    struct sim_rkv* rk = s->rk;
    if (rk == NULL) {
        return;
    }
    for (uint32_t i = 1; i <= SIM_MAX_NODES; i++) {
        kv_close(s->node[i].rk);
        s->node[i].rk = NULL;
    }
    if (rk->dir[0] != '\0') {
        (void)store_rmtree(rk->dir);
        sim_rk_live_dir[0] = '\0';
    }
    for (size_t i = 0; i < rk->n_ents; i++) {
        free(rk->ents[i].vers);
    }
    for (size_t i = 0; i < rk->n_cmds; i++) {
        free(rk->cmds[i].data);
    }
    free(rk->ents);
    free(rk->cmds);
    free(rk->results);
    kv_buf_free(&rk->buf);
    free(rk);
    s->rk = NULL;
}

/* ---------------------------------------------------------------------------
 * State counters and the per-index history
 */

static void sim_rk_stats(struct sim* s,
                         struct sim_node* n,
                         struct sim_rk_stats* out) {
    struct kv_stats ks;
    int rv = kv_stats(n->rk, &ks);
    if (rv != STORE_OK) {
        sim_fail(s, "storage", "n%llu: kv_stats: %s", (unsigned long long)n->id,
                 store_strerror(rv));
    }
    out->index = ks.applied_index;
    out->term = ks.applied_term;
    out->seq = ks.seq;
    out->count = ks.count;
    out->hash = ks.hash;
    out->conf_index = ks.conf_index;
}

static bool sim_rk_stats_equal(const struct sim_rk_stats* a,
                               const struct sim_rk_stats* b) {
    return a->index == b->index && a->term == b->term && a->seq == b->seq &&
           a->count == b->count && a->hash == b->hash &&
           a->conf_index == b->conf_index;
}

/*
 * The state at one applied index is the same on every node: the first
 * report defines it, every later one (another node, a reopened state, a
 * snapshot) must match.
 */
static void sim_rk_check_state(struct sim* s,
                               struct sim_node* n,
                               const struct sim_rk_stats* st,
                               const char* what) {
    struct sim_hist_ent* h = sim_hist(s, st->index);
    if (!h->rk_known) {
        h->rk_known = true;
        h->rk = *st;
        return;
    }
    if (!sim_rk_stats_equal(&h->rk, st)) {
        sim_fail(s, "kv-state-hash",
                 "n%llu %s state at applied %llu: term %llu seq %llu count "
                 "%llu hash %016llx conf %llu; the history has term %llu seq "
                 "%llu count %llu hash %016llx conf %llu",
                 (unsigned long long)n->id, what, (unsigned long long)st->index,
                 (unsigned long long)st->term, (unsigned long long)st->seq,
                 (unsigned long long)st->count, (unsigned long long)st->hash,
                 (unsigned long long)st->conf_index,
                 (unsigned long long)h->rk.term, (unsigned long long)h->rk.seq,
                 (unsigned long long)h->rk.count,
                 (unsigned long long)h->rk.hash,
                 (unsigned long long)h->rk.conf_index);
    }
}

void sim_rkv_check_snapshot(struct sim* s,
                            struct sim_node* n,
                            const struct sim_snap* snap,
                            const char* what) {
    const struct sim_hist_ent* h = sim_hist(s, snap->meta.index);
    if (snap->rk.index != snap->meta.index ||
        snap->rk.term != snap->meta.term) {
        sim_fail(s, "snapshot-data",
                 "n%llu: snapshot %llu/%llu %s holds state %llu/%llu",
                 (unsigned long long)n->id,
                 (unsigned long long)snap->meta.index,
                 (unsigned long long)snap->meta.term, what,
                 (unsigned long long)snap->rk.index,
                 (unsigned long long)snap->rk.term);
    }
    if (!h->rk_known) {
        sim_fail(s, "kv-state-hash",
                 "n%llu: snapshot %llu %s, but no node reported its state "
                 "at that index",
                 (unsigned long long)n->id,
                 (unsigned long long)snap->meta.index, what);
    }
    if (!sim_rk_stats_equal(&h->rk, &snap->rk)) {
        sim_fail(
            s, "kv-state-hash",
            "n%llu: snapshot %llu %s has seq %llu count %llu hash "
            "%016llx; the history has seq %llu count %llu hash %016llx",
            (unsigned long long)n->id, (unsigned long long)snap->meta.index,
            what, (unsigned long long)snap->rk.seq,
            (unsigned long long)snap->rk.count,
            (unsigned long long)snap->rk.hash, (unsigned long long)h->rk.seq,
            (unsigned long long)h->rk.count, (unsigned long long)h->rk.hash);
    }
}

/* ---------------------------------------------------------------------------
 * Entry ids, request ids and the model
 */

/* Parses the entry number out of an id the simulator made. */
static bool sim_rk_parse_id(const struct sim_rkv* rk,
                            const char* id,
                            size_t len,
                            uint32_t* out) {
    char hex[9];
    if (id == NULL || len != SIM_RK_ID_LEN) {
        return false;
    }
    memcpy(hex, id, 8);
    hex[8] = '\0';
    char* end;
    unsigned long v = strtoul(hex, &end, 16);
    if (*end != '\0' || v >= rk->n_ents ||
        memcmp(rk->ents[v].id, id, SIM_RK_ID_LEN) != 0) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* Parses the command number out of a request id "req-<8 hex>-...". */
static bool sim_rk_parse_rid(const struct sim_rkv* rk,
                             const char* rid,
                             uint32_t* out) {
    char hex[9];
    if (rid == NULL || strncmp(rid, "req-", 4) != 0 || strlen(rid) < 12) {
        return false;
    }
    memcpy(hex, rid + 4, 8);
    hex[8] = '\0';
    char* end;
    unsigned long v = strtoul(hex, &end, 16);
    if (*end != '\0' || v >= rk->n_cmds || !rk->cmds[v].has_rid) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static uint32_t sim_rk_new_ent(struct sim_rkv* rk) {
    if (rk->n_ents == rk->cap_ents) {
        rk->cap_ents = rk->cap_ents ? rk->cap_ents * 2 : 256;
        rk->ents = sim_rk_xrealloc(rk->ents, rk->cap_ents * sizeof(*rk->ents));
    }
    uint32_t e = (uint32_t)rk->n_ents++;
    struct sim_rk_ent* x = &rk->ents[e];
    memset(x, 0, sizeof(*x));
    uint64_t a = sim_rng_next(&rk->rng);
    uint64_t b = sim_rng_next(&rk->rng);
    snprintf(x->id, sizeof(x->id), "%08x-%04x-4%03x-%04x-%012llx", e,
             (unsigned)(a & 0xffff), (unsigned)((a >> 16) & 0xfff),
             (unsigned)(0x8000 | ((a >> 28) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffULL));
    return e;
}

/* An entry for a write or a read: mostly one of the latest few. */
static uint32_t sim_rk_pick_ent(struct sim_rkv* rk) {
    if (sim_rng_chance(&rk->rng, 7500)) {
        uint64_t span = rk->n_ents < SIM_RK_RECENT ? rk->n_ents : SIM_RK_RECENT;
        return (uint32_t)(rk->n_ents - 1 - sim_rng_below(&rk->rng, span));
    }
    return (uint32_t)sim_rng_below(&rk->rng, rk->n_ents);
}

/* The version of entry x at applied index `at` (NULL: none yet). */
static const struct sim_rk_ver* sim_rk_version_at(const struct sim_rk_ent* x,
                                                  raft_index at) {
    for (size_t i = x->n_vers; i > 0; i--) {
        if (x->vers[i - 1].index <= at) {
            return &x->vers[i - 1];
        }
    }
    return NULL;
}

static void sim_rk_add_version(struct sim* s,
                               struct sim_rk_ent* x,
                               const struct sim_rk_ver* v) {
    if (x->n_vers > 0 && x->vers[x->n_vers - 1].index >= v->index) {
        sim_fail(s, "sim-internal", "history of %s out of order at %llu", x->id,
                 (unsigned long long)v->index);
    }
    if (x->n_vers == x->cap_vers) {
        x->cap_vers = x->cap_vers ? x->cap_vers * 2 : 4;
        x->vers = sim_rk_xrealloc(x->vers, x->cap_vers * sizeof(*x->vers));
    }
    x->vers[x->n_vers++] = *v;
}

/* ---------------------------------------------------------------------------
 * Commands
 */

static void sim_rk_random_text(struct sim_rkv* rk, char* out, size_t len) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < len; i++) {
        out[i] = alphabet[sim_rng_below(&rk->rng, sizeof(alphabet) - 1)];
    }
    out[len] = '\0';
}

static void sim_rk_random_value(struct sim_rkv* rk, char* out) {
    uint64_t r = sim_rng_below(&rk->rng, 100);
    size_t len = r < 3    ? 0
                 : r < 73 ? (size_t)sim_rng_range(&rk->rng, 1, 16)
                 : r < 95
                     ? (size_t)sim_rng_range(&rk->rng, 17, 64)
                     : (size_t)sim_rng_range(&rk->rng, 65, SIM_RK_VALUE_MAX);
    sim_rk_random_text(rk, out, len);
}

static void sim_rk_random_key(struct sim* s, char* out) {
    if (sim_rng_chance(&s->rk->rng, 300)) {
        out[0] = '\0'; /* the empty key is indexed too */
        return;
    }
    snprintf(out, SIM_RK_KEY_MAX, "key-%u",
             (unsigned)sim_rng_below(&s->rk->rng, s->p.keys));
}

/* The expected seq of a conditional write: usually the one known. */
static uint64_t sim_rk_expected_seq(struct sim_rkv* rk,
                                    const struct sim_rk_ent* x) {
    if (sim_rng_chance(&rk->rng, 1500)) {
        return x->known_seq + 1 + sim_rng_below(&rk->rng, 3);
    }
    return x->known_seq;
}

static uint32_t sim_rk_push_cmd(struct sim_rkv* rk) {
    if (rk->n_cmds == rk->cap_cmds) {
        rk->cap_cmds = rk->cap_cmds ? rk->cap_cmds * 2 : 256;
        rk->cmds = sim_rk_xrealloc(rk->cmds, rk->cap_cmds * sizeof(*rk->cmds));
    }
    uint32_t c = (uint32_t)rk->n_cmds++;
    memset(&rk->cmds[c], 0, sizeof(rk->cmds[c]));
    rk->cmds[c].ent = SIM_RK_NONE;
    return c;
}

/* Bytes that never decode as a skein.Command (wire type 7). */
static void sim_rk_garbage(struct sim_rkv* rk, struct sim_rk_cmd* c) {
    c->len = (uint32_t)sim_rng_range(&rk->rng, 1, 12);
    c->data = sim_rk_xrealloc(NULL, c->len);
    c->data[0] = 0xff;
    for (uint32_t i = 1; i < c->len; i++) {
        c->data[i] = (uint8_t)sim_rng_next(&rk->rng);
    }
}

/* Builds a new command proposed on n; returns its number. */
static uint32_t sim_rk_build(struct sim* s, struct sim_node* n) {
    struct sim_rkv* rk = s->rk;
    char id[SIM_RK_ID_LEN + 1], key[SIM_RK_KEY_MAX],
        value[SIM_RK_VALUE_MAX + 1];
    char rid[SIM_RK_RID_MAX];
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__CreateOp cr = SKEIN__CREATE_OP__INIT;
    Skein__UpdateOp up = SKEIN__UPDATE_OP__INIT;
    Skein__DeleteOp de = SKEIN__DELETE_OP__INIT;
    uint32_t c = sim_rk_push_cmd(rk);
    uint64_t kind = rk->n_ents == 0 ? 0 : sim_rng_below(&rk->rng, 100);
    if (kind >= 38 && kind < 40) {
        sim_rk_garbage(rk, &rk->cmds[c]);
        return c;
    }
    uint32_t e = kind < 30 ? sim_rk_new_ent(rk) : sim_rk_pick_ent(rk);
    struct sim_rk_ent* x = &rk->ents[e];
    memcpy(id, x->id, sizeof(id));
    sim_rk_random_key(s, key);
    sim_rk_random_value(rk, value);
    if (kind < 33) { /* create; 30..32: an id that exists */
        cr.id = id;
        cr.key = sim_rng_chance(&rk->rng, 300) ? NULL : key;
        cr.value = value;
        cr.has_source_node = cr.has_created_at = 1;
        cr.source_node = n->id;
        cr.created_at = SIM_RK_EPOCH_MS + (int64_t)s->now * SIM_RK_TICK_MS;
        cmd.op_case = SKEIN__COMMAND__OP_CREATE;
        cmd.create = &cr;
        rk->cmds[c].op = KV_OP_CREATE;
    } else if (kind < 38) {
        de.id = id;
        de.has_expected_seq = sim_rng_chance(&rk->rng, 4000);
        de.expected_seq = de.has_expected_seq ? sim_rk_expected_seq(rk, x) : 0;
        cmd.op_case = SKEIN__COMMAND__OP_DELETE;
        cmd.delete_ = &de;
        rk->cmds[c].op = KV_OP_DELETE;
    } else {
        up.id = id;
        up.key = sim_rng_chance(&rk->rng, 1000) ? key : NULL;
        up.value = sim_rng_chance(&rk->rng, 9000) ? value : NULL;
        up.has_expected_seq = sim_rng_chance(&rk->rng, 5000);
        up.expected_seq = up.has_expected_seq ? sim_rk_expected_seq(rk, x) : 0;
        cmd.op_case = SKEIN__COMMAND__OP_UPDATE;
        cmd.update = &up;
        rk->cmds[c].op = KV_OP_UPDATE;
    }
    rk->cmds[c].ent = e;
    if (sim_rng_chance(&rk->rng, 8500)) {
        snprintf(rid, sizeof(rid), "req-%08x-%08x", c,
                 (unsigned)sim_rng_next(&rk->rng));
        cmd.request_id = rid;
        rk->cmds[c].has_rid = true;
    }
    size_t len = skein__command__get_packed_size(&cmd);
    rk->cmds[c].data = sim_rk_xrealloc(NULL, len);
    rk->cmds[c].len = (uint32_t)skein__command__pack(&cmd, rk->cmds[c].data);
    return c;
}

/* A command for a client write: new, or a retry of an earlier one. */
static uint32_t sim_rk_command(struct sim* s, struct sim_node* n) {
    struct sim_rkv* rk = s->rk;
    if (rk->n_cmds > 0 && sim_rng_chance(&rk->rng, rk->retry_bp)) {
        uint64_t span = rk->n_cmds;
        if (span > SIM_RK_RETRY_RECENT && sim_rng_chance(&rk->rng, 8000)) {
            span = SIM_RK_RETRY_RECENT;
        }
        uint32_t c = (uint32_t)(rk->n_cmds - 1 - sim_rng_below(&rk->rng, span));
        if (rk->cmds[c].has_rid) {
            return c;
        }
    }
    return sim_rk_build(s, n);
}

int sim_rkv_client_write(struct sim* s, struct sim_node* n, size_t count) {
    struct sim_rkv* rk = s->rk;
    const uint8_t* data[4];
    uint32_t lens[4];
    uint32_t cmd[4];
    if (count > 4) {
        count = 4;
    }
    if (count == 0) {
        count = 1;
    }
    size_t n_cmds = rk->n_cmds, n_ents = rk->n_ents;
    for (size_t i = 0; i < count; i++) {
        cmd[i] = sim_rk_command(s, n);
    }
    for (size_t i = 0; i < count; i++) { /* cmds is stable now */
        data[i] = rk->cmds[cmd[i]].data;
        lens[i] = rk->cmds[cmd[i]].len;
    }
    raft_index first;
    raft_term term;
    int rv = raft_propose(n->core, RAFT_ENTRY_NORMAL, data, lens, count, &first,
                          &term);
    sim_trace(s, "n%llu client kv write cmd=%u n=%zu: %s index=%llu term=%llu",
              (unsigned long long)n->id, cmd[0], count, raft_strerror(rv),
              (unsigned long long)(rv == RAFT_OK ? first : 0),
              (unsigned long long)(rv == RAFT_OK ? term : 0));
    if (rv != RAFT_OK) {
        /* Never proposed: forget the new commands and entry ids, so later
         * writes and reads go to entries that may exist. */
        while (rk->n_cmds > n_cmds) {
            free(rk->cmds[--rk->n_cmds].data);
        }
        rk->n_ents = n_ents;
        return rv;
    }
    for (size_t i = 0; i < count; i++) {
        rk->c.retries += cmd[i] < n_cmds;
    }
    for (size_t i = 0; i < count && s->n_writes < SIM_MAX_WRITES; i++) {
        s->writes[s->n_writes++] = (struct sim_write){
            .write_id = cmd[i],
            .key = rk->cmds[cmd[i]].ent,
            .node = n->id,
            .incarnation = n->incarnation,
            .index = first + i,
            .term = term,
            .cmd = cmd[i],
        };
    }
    sim_node_pump(s, n);
    return RAFT_OK;
}

/* ---------------------------------------------------------------------------
 * Applying
 */

/* Digest of a result: what every node must answer for one entry. */
static uint64_t sim_rk_digest(const struct kv_result* r, bool with_dup) {
    uint64_t h = sim_rk_mix(((uint64_t)r->status << 32) ^ r->op ^
                            ((uint64_t)r->has_entry << 8) ^
                            (with_dup ? (uint64_t)r->duplicate << 9 : 0));
    h = sim_rk_mix(h ^ r->seq) + sim_rk_mix(r->current_seq ^ 0x5eed);
    if (r->has_entry) {
        h ^= kv_entry_hash(&r->entry);
    }
    if (r->error != NULL) {
        h = sim_rk_hash_bytes(h, r->error, strlen(r->error));
    }
    if (r->request_id != NULL) {
        h = sim_rk_hash_bytes(h, r->request_id, r->request_id_len);
    }
    return h;
}

static void sim_rk_count_status(struct sim_rkv* rk, const struct kv_result* r) {
    switch (r->status) {
        case KV_STATUS_OK:
            rk->c.ok++;
            break;
        case KV_STATUS_NOT_FOUND:
            rk->c.not_found++;
            break;
        case KV_STATUS_CAS_MISMATCH:
            rk->c.cas_mismatch++;
            break;
        default:
            rk->c.bad_request++;
            break;
    }
    rk->c.duplicates += r->duplicate;
}

/*
 * Idempotency, from the history: a request id applied afresh at index i
 * answers every later entry with that id up to i + window as a duplicate
 * with the same result; after that the command is applied afresh again.
 */
static void sim_rk_check_idem(struct sim* s,
                              struct sim_node* n,
                              const struct raft_entry* e,
                              const struct kv_result* r) {
    struct sim_rkv* rk = s->rk;
    uint32_t ci;
    if (r->request_id == NULL) {
        if (r->duplicate) {
            sim_fail(s, "idempotency",
                     "n%llu answered %llu, which has no request id, as a "
                     "duplicate",
                     (unsigned long long)n->id, (unsigned long long)e->index);
        }
        return;
    }
    if (!sim_rk_parse_rid(rk, r->request_id, &ci)) {
        sim_fail(s, "sim-internal", "n%llu: unknown request id %s at %llu",
                 (unsigned long long)n->id, r->request_id,
                 (unsigned long long)e->index);
    }
    struct sim_rk_cmd* c = &rk->cmds[ci];
    uint64_t d = sim_rk_digest(r, false);
    bool live =
        c->idem_index != 0 && e->index <= c->idem_index + rk->idem_window;
    if (live && (!r->duplicate || d != c->idem_digest)) {
        sim_fail(
            s, "idempotency",
            "n%llu applied %s at %llu: %s (seq %llu), but it was applied "
            "at %llu, within the window of %llu",
            (unsigned long long)n->id, r->request_id,
            (unsigned long long)e->index,
            r->duplicate ? "a duplicate with another result" : "applied again",
            (unsigned long long)r->seq, (unsigned long long)c->idem_index,
            (unsigned long long)rk->idem_window);
    }
    if (!live && r->duplicate) {
        sim_fail(s, "idempotency",
                 "n%llu answered %s at %llu as a duplicate, but it %s",
                 (unsigned long long)n->id, r->request_id,
                 (unsigned long long)e->index,
                 c->idem_index == 0 ? "was never applied" : "expired");
    }
    if (!live) {
        rk->c.idem_expired += c->idem_index != 0;
        c->idem_index = e->index;
        c->idem_digest = d;
    }
}

/* The first node to apply index e->index defines its result. */
static void sim_rk_define(struct sim* s,
                          struct sim_node* n,
                          const struct raft_entry* e,
                          const struct kv_result* r) {
    struct sim_rkv* rk = s->rk;
    if (e->index <= rk->defined_max) {
        sim_fail(s, "sim-internal", "history defined at %llu after %llu",
                 (unsigned long long)e->index,
                 (unsigned long long)rk->defined_max);
    }
    rk->defined_max = e->index;
    if (e->type != RAFT_ENTRY_NORMAL) {
        return;
    }
    sim_rk_count_status(rk, r);
    sim_rk_check_idem(s, n, e, r);
    bool fresh = r->status == KV_STATUS_OK && !r->duplicate;
    if (fresh && r->seq != rk->defined_seq + 1) {
        sim_fail(
            s, "kv-seq", "n%llu: the write at %llu took seq %llu after %llu",
            (unsigned long long)n->id, (unsigned long long)e->index,
            (unsigned long long)r->seq, (unsigned long long)rk->defined_seq);
    }
    if (!fresh) {
        return;
    }
    rk->defined_seq = r->seq;
    uint32_t x;
    if (!r->has_entry ||
        !sim_rk_parse_id(rk, r->entry.id, r->entry.id_len, &x)) {
        sim_fail(s, "kv-result",
                 "n%llu: write at %llu is ok without a known "
                 "entry",
                 (unsigned long long)n->id, (unsigned long long)e->index);
    }
    bool del = r->op == KV_OP_DELETE;
    if (!del && r->entry.seq != r->seq) {
        sim_fail(s, "kv-result",
                 "n%llu: write at %llu took seq %llu, entry "
                 "has seq %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)r->seq, (unsigned long long)r->entry.seq);
    }
    struct sim_rk_ver v = {
        .index = e->index,
        .seq = r->seq,
        .hash = del ? 0 : kv_entry_hash(&r->entry),
        .deleted = del,
    };
    sim_rk_add_version(s, &rk->ents[x], &v);
}

/* Checks one applied entry's result against the history. */
static void sim_rk_check_result(struct sim* s,
                                struct sim_node* n,
                                const struct raft_entry* e,
                                const struct kv_result* r) {
    struct sim_hist_ent* h = sim_hist(s, e->index);
    uint64_t d = sim_rk_digest(r, true);
    sim_trace(s, "n%llu kv %llu: %s %s%s seq=%llu", (unsigned long long)n->id,
              (unsigned long long)e->index,
              e->type == RAFT_ENTRY_NORMAL
                  ? (r->op == KV_OP_CREATE   ? "create"
                     : r->op == KV_OP_UPDATE ? "update"
                     : r->op == KV_OP_DELETE ? "delete"
                                             : "malformed")
                  : (e->type == RAFT_ENTRY_CONF ? "conf" : "noop"),
              kv_status_name(r->status), r->duplicate ? " duplicate" : "",
              (unsigned long long)r->seq);
    if (!h->rk_result_known) {
        h->rk_result_known = true;
        h->rk_result = d;
        sim_rk_define(s, n, e, r);
    } else if (h->rk_result != d) {
        sim_fail(s, "state-machine-safety",
                 "n%llu applies %llu with another result than the history "
                 "(%s%s, seq %llu)",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 kv_status_name(r->status), r->duplicate ? ", duplicate" : "",
                 (unsigned long long)r->seq);
    }
}

/* The proposer applied its own write: the client learns the result. */
static void sim_rk_ack(struct sim* s,
                       struct sim_node* n,
                       const struct sim_write* w,
                       const struct raft_entry* e,
                       const struct kv_result* r) {
    struct sim_rkv* rk = s->rk;
    const struct sim_rk_cmd* c = &rk->cmds[w->cmd];
    if (e->type != RAFT_ENTRY_NORMAL || e->len != c->len ||
        memcmp(e->data, c->data, c->len) != 0) {
        sim_fail(s, "proposal-mismatch",
                 "n%llu applied %llu/%llu, which is not command %u proposed "
                 "there",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, w->cmd);
    }
    if (c->ent != SIM_RK_NONE) {
        struct sim_rk_ent* x = &rk->ents[c->ent];
        if (r->has_entry && (r->entry.id_len != SIM_RK_ID_LEN ||
                             memcmp(r->entry.id, x->id, SIM_RK_ID_LEN) != 0)) {
            sim_fail(s, "kv-result", "n%llu: command %u on %s answered for %s",
                     (unsigned long long)n->id, w->cmd, x->id, r->entry.id);
        }
        if (r->status == KV_STATUS_OK) {
            x->acked_seq = r->seq > x->acked_seq ? r->seq : x->acked_seq;
            x->known_seq = r->op == KV_OP_DELETE ? 0 : r->entry.seq;
        } else if (r->status == KV_STATUS_CAS_MISMATCH) {
            x->acked_seq =
                r->current_seq > x->acked_seq ? r->current_seq : x->acked_seq;
            x->known_seq = r->current_seq;
        }
    }
    s->stats.writes_acked++;
    sim_trace(s, "n%llu ack kv cmd=%u index=%llu %s%s seq=%llu",
              (unsigned long long)n->id, w->cmd, (unsigned long long)e->index,
              kv_status_name(r->status), r->duplicate ? " (duplicate)" : "",
              (unsigned long long)r->seq);
    sim_check_acked(s, e->index, raft_current_term(n->core));
}

/* Write outcomes learnt from n applying e (cf. sim_clients_applied). */
static void sim_rk_clients_applied(struct sim* s,
                                   struct sim_node* n,
                                   const struct raft_entry* e,
                                   const struct kv_result* r) {
    for (size_t i = 0; i < s->n_writes;) {
        struct sim_write* w = &s->writes[i];
        if (w->node != n->id || w->incarnation != n->incarnation ||
            w->index != e->index) {
            i++;
            continue;
        }
        if (w->term == e->term && r->applied) {
            sim_rk_ack(s, n, w, e, r);
        } else if (w->term == e->term) {
            sim_fail(s, "sim-internal",
                     "n%llu: the write at %llu was skipped by the state",
                     (unsigned long long)n->id, (unsigned long long)e->index);
        } else {
            s->stats.writes_failed++;
        }
        *w = s->writes[--s->n_writes];
    }
}

/* Applies ents[0..k) in one kv batch and checks every result. */
static void sim_rk_apply_chunk(struct sim* s,
                               struct sim_node* n,
                               const struct raft_entry* ents,
                               size_t k) {
    struct sim_rkv* rk = s->rk;
    raft_index before = kv_applied_index(n->rk);
    int rv = kv_apply_batch(n->rk, ents, k, rk->results);
    if (rv != STORE_OK) {
        char msg[STORE_ERRMSG_SIZE];
        sim_fail(s, "storage", "n%llu: kv_apply_batch %llu..%llu: %s",
                 (unsigned long long)n->id, (unsigned long long)ents[0].index,
                 (unsigned long long)ents[k - 1].index,
                 sim_rk_clean(s, kv_errmsg(n->rk), msg, sizeof(msg)));
    }
    for (size_t j = 0; j < k; j++) {
        const struct raft_entry* e = &ents[j];
        const struct kv_result* r = &rk->results[j];
        sim_check_applied(s, n, e);
        if (r->index != e->index || r->applied != (e->index > before)) {
            sim_fail(
                s, "kv-skip", "n%llu: entry %llu %s with the state at %llu",
                (unsigned long long)n->id, (unsigned long long)e->index,
                r->applied ? "applied" : "skipped", (unsigned long long)before);
        }
        if (r->applied) {
            sim_rk_check_result(s, n, e, r);
        } else {
            rk->c.skipped++;
        }
        sim_rk_clients_applied(s, n, e, r);
    }
    raft_index last = ents[k - 1].index;
    n->applied = kv_applied_index(n->rk);
    struct sim_rk_stats st;
    sim_rk_stats(s, n, &st);
    if (n->applied != (last > before ? last : before) ||
        st.index != n->applied) {
        sim_fail(s, "kv-skip",
                 "n%llu: state at %llu (stats %llu) after "
                 "applying up to %llu from %llu",
                 (unsigned long long)n->id, (unsigned long long)n->applied,
                 (unsigned long long)st.index, (unsigned long long)last,
                 (unsigned long long)before);
    }
    sim_trace(s,
              "n%llu kv applied %llu..%llu -> %llu seq=%llu count=%llu "
              "hash=%016llx",
              (unsigned long long)n->id, (unsigned long long)ents[0].index,
              (unsigned long long)last, (unsigned long long)st.index,
              (unsigned long long)st.seq, (unsigned long long)st.count,
              (unsigned long long)st.hash);
    sim_rk_check_state(s, n, &st, "applied");
}

void sim_rkv_apply(struct sim* s,
                   struct sim_node* n,
                   const struct raft_entry* ents,
                   size_t count) {
    struct sim_rkv* rk = s->rk;
    for (size_t i = 0; i < count; i++) {
        const struct raft_entry* e = &ents[i];
        if (e->index != n->handed + 1) {
            sim_fail(s, "apply-order", "n%llu applies %llu after %llu",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)n->handed);
        }
        if (e->index > store_mem_durable_index(n->mem)) {
            sim_fail(s, "apply-not-durable",
                     "n%llu applies %llu, durable only to %llu",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)store_mem_durable_index(n->mem));
        }
        n->handed = e->index;
    }
    if (count > rk->cap_results) {
        rk->cap_results = count;
        rk->results =
            sim_rk_xrealloc(rk->results, count * sizeof(*rk->results));
    }
    for (size_t i = 0; i < count;) {
        size_t k = 1;
        if (count - i > 1 && sim_rng_chance(&rk->rng, rk->batch_bp)) {
            k = 1 + (size_t)sim_rng_below(&rk->rng, count - i);
        }
        sim_rk_apply_chunk(s, n, ents + i, k);
        i += k;
    }
}

/* ---------------------------------------------------------------------------
 * Snapshots
 */

static bool sim_rk_conf_equal(const struct raft_conf* a,
                              const struct raft_conf* b) {
    if (a->count != b->count) {
        return false;
    }
    for (uint32_t i = 0; i < a->count; i++) {
        bool found = false;
        for (uint32_t j = 0; j < b->count; j++) {
            if (a->ids[i] == b->ids[j]) {
                found = a->roles[i] == b->roles[j];
                break;
            }
        }
        if (!found) {
            return false;
        }
    }
    return true;
}

/* Reads the snapshot file `path` through a kv snapshot reader. */
static struct sim_blob* sim_rk_read_file(struct sim* s,
                                         struct sim_node* n,
                                         const char* path) {
    struct kv_snapshot_reader* r;
    char err[STORE_ERRMSG_SIZE] = "", msg[STORE_ERRMSG_SIZE];
    int rv = kv_snapshot_reader_open(path, &r, NULL, err);
    if (rv != STORE_OK) {
        sim_fail(s, "storage", "n%llu: snapshot reader: %s",
                 (unsigned long long)n->id,
                 sim_rk_clean(s, err, msg, sizeof(msg)));
    }
    uint64_t size = kv_snapshot_reader_size(r);
    struct sim_blob* b = sim_blob_new((size_t)size);
    uint64_t off = 0;
    bool done = size == 0;
    while (!done) {
        size_t cap = (size_t)sim_rng_range(&s->rk->rng, 4096, 65536), got = 0;
        rv = kv_snapshot_reader_read(r, off, b->data + off,
                                     cap < size - off ? cap : size - off, &got,
                                     &done);
        if (rv != STORE_OK || got == 0) {
            kv_snapshot_reader_close(r);
            sim_blob_release(b);
            sim_fail(s, "storage", "n%llu: snapshot read at %llu: %s",
                     (unsigned long long)n->id, (unsigned long long)off,
                     store_strerror(rv));
        }
        off += got;
    }
    kv_snapshot_reader_close(r);
    return b;
}

/* Writes a snapshot file of n's state into snap (meta already set). */
static void sim_rk_take(struct sim* s,
                        struct sim_node* n,
                        struct sim_snap* snap) {
    char path[SIM_RK_PATH_MAX];
    char err[STORE_ERRMSG_SIZE] = "", msg[STORE_ERRMSG_SIZE];
    struct kv_snapshot_info info;
    sim_rk_path(s, n, "snapshot", path);
    int rv = kv_snapshot_create(n->rk, path, &info, err);
    if (rv != STORE_OK) {
        sim_fail(s, "storage", "n%llu: kv_snapshot_create: %s",
                 (unsigned long long)n->id,
                 sim_rk_clean(s, err, msg, sizeof(msg)));
    }
    s->rk->c.files++;
    snap->rk.index = info.stats.applied_index;
    snap->rk.term = info.stats.applied_term;
    snap->rk.seq = info.stats.seq;
    snap->rk.count = info.stats.count;
    snap->rk.hash = info.stats.hash;
    snap->rk.conf_index = info.stats.conf_index;
    struct raft_conf boot;
    struct raft_snapshot_meta km;
    sim_rk_bootstrap(s, &boot);
    rv = kv_snapshot_meta(n->rk, &boot, &km);
    if (rv != STORE_OK || km.index != snap->meta.index ||
        km.term != snap->meta.term ||
        !sim_rk_conf_equal(&km.conf, &snap->meta.conf)) {
        sim_fail(s, "snapshot-conf",
                 "n%llu: the state's snapshot metadata %llu/%llu (%u members) "
                 "differs from the core's %llu/%llu (%u members)",
                 (unsigned long long)n->id, (unsigned long long)km.index,
                 (unsigned long long)km.term, km.conf.count,
                 (unsigned long long)snap->meta.index,
                 (unsigned long long)snap->meta.term, snap->meta.conf.count);
    }
    snap->blob = NULL;
    sim_check_snapshot(s, n, snap, "taken"); /* before anything is owned */
    snap->blob = sim_rk_read_file(s, n, path);
    sim_trace(s,
              "n%llu kv snapshot file %llu/%llu bytes=%zu count=%llu "
              "hash=%016llx",
              (unsigned long long)n->id, (unsigned long long)snap->meta.index,
              (unsigned long long)snap->meta.term, snap->blob->size,
              (unsigned long long)snap->rk.count,
              (unsigned long long)snap->rk.hash);
}

void sim_rkv_snapshot(struct sim* s,
                      struct sim_node* n,
                      struct sim_snap* snap) {
    sim_rk_take(s, n, snap);
}

/* Streams the blob into a writer in random chunks, some repeated. */
static int sim_rk_stream(struct sim* s,
                         struct sim_node* n,
                         const struct sim_blob* b,
                         struct kv_snapshot_info* info,
                         char* err) {
    struct sim_rkv* rk = s->rk;
    struct kv_snapshot_writer* w;
    uint64_t total = sim_rng_chance(&rk->rng, 2000) ? 0 : b->size;
    int rv = kv_snapshot_writer_open(n->rk, total, &w, err);
    if (rv != STORE_OK) {
        return rv;
    }
    uint64_t off = 0;
    while (off < b->size) {
        uint64_t start = off;
        if (off > 0 && sim_rng_chance(&rk->rng, 1500)) {
            start = off - sim_rng_range(&rk->rng, 1, off < 4096 ? off : 4096);
        }
        uint64_t left = b->size - start;
        uint64_t len = sim_rng_range(&rk->rng, 1, left < 65536 ? left : 65536);
        if (start + len <= off) {
            len = off - start + 1; /* always some new bytes */
        }
        uint64_t next = 0;
        rv = kv_snapshot_writer_write(w, start, b->data + start, (size_t)len,
                                      &next);
        if (rv != STORE_OK || next != start + len) {
            kv_snapshot_writer_abort(w);
            snprintf(err, STORE_ERRMSG_SIZE,
                     "writer at %llu+%llu: %s (next %llu)",
                     (unsigned long long)start, (unsigned long long)len,
                     store_strerror(rv), (unsigned long long)next);
            return rv != STORE_OK ? rv : STORE_EIO;
        }
        off = next;
    }
    rk->c.installs_writer++;
    return kv_snapshot_writer_finish(w, info, err);
}

/* Writes the blob to a file and installs it with kv_snapshot_install_file. */
static int sim_rk_install_file(struct sim* s,
                               struct sim_node* n,
                               const struct sim_blob* b,
                               struct kv_snapshot_info* info,
                               char* err) {
    char path[SIM_RK_PATH_MAX];
    sim_rk_path(s, n, "received.snapshot", path);
    FILE* f = fopen(path, "wb");
    if (f == NULL || fwrite(b->data, 1, b->size, f) != b->size) {
        snprintf(err, STORE_ERRMSG_SIZE, "cannot write the received file");
        if (f != NULL) {
            fclose(f);
        }
        return STORE_EIO;
    }
    if (fclose(f) != 0) {
        snprintf(err, STORE_ERRMSG_SIZE, "cannot close the received file");
        return STORE_EIO;
    }
    int rv = kv_snapshot_install_file(n->rk, path, info, err);
    unlink(path);
    s->rk->c.installs_file++;
    return rv;
}

void sim_rkv_install(struct sim* s,
                     struct sim_node* n,
                     const struct raft_snapshot_meta* meta) {
    struct kv_snapshot_info info;
    char err[STORE_ERRMSG_SIZE] = "", msg[STORE_ERRMSG_SIZE];
    const struct sim_blob* b = n->incoming.blob;
    if (b == NULL) {
        sim_fail(s, "snapshot-data",
                 "n%llu must install snapshot %llu "
                 "without data",
                 (unsigned long long)n->id, (unsigned long long)meta->index);
    }
    memset(&info, 0, sizeof(info));
    int rv = sim_rng_chance(&s->rk->rng, 3000)
                 ? sim_rk_install_file(s, n, b, &info, err)
                 : sim_rk_stream(s, n, b, &info, err);
    if (rv != STORE_OK) {
        sim_fail(s, "storage", "n%llu: installing snapshot %llu: %s",
                 (unsigned long long)n->id, (unsigned long long)meta->index,
                 sim_rk_clean(s, err, msg, sizeof(msg)));
    }
    struct sim_rk_stats st;
    sim_rk_stats(s, n, &st);
    if (st.index != meta->index || st.term != meta->term ||
        info.stats.applied_index != meta->index || info.stats.hash != st.hash ||
        kv_applied_index(n->rk) != meta->index) {
        sim_fail(s, "snapshot-data",
                 "n%llu installed snapshot %llu/%llu and holds %llu/%llu",
                 (unsigned long long)n->id, (unsigned long long)meta->index,
                 (unsigned long long)meta->term, (unsigned long long)st.index,
                 (unsigned long long)st.term);
    }
    sim_trace(s,
              "n%llu kv installed snapshot %llu/%llu bytes=%zu count=%llu "
              "hash=%016llx",
              (unsigned long long)n->id, (unsigned long long)meta->index,
              (unsigned long long)meta->term, b->size,
              (unsigned long long)st.count, (unsigned long long)st.hash);
    sim_rk_check_state(s, n, &st, "installed");
}

/* ---------------------------------------------------------------------------
 * Crash and restart
 */

void sim_rkv_node_crash(struct sim* s, struct sim_node* n) {
    (void)s;
    kv_close(n->rk); /* a process crash: committed transactions survive */
    n->rk = NULL;
}

/*
 * The state is ahead of what the log holds (store_recover): the log is
 * reset to a snapshot of the state, which becomes n's saved snapshot.
 */
static void sim_rk_reset_log(struct sim* s,
                             struct sim_node* n,
                             struct raft_start_state* start) {
    struct sim_snap snap;
    memset(&snap, 0, sizeof(snap));
    int rv = kv_snapshot_meta(n->rk, &start->bootstrap, &snap.meta);
    if (rv != STORE_OK) {
        sim_fail(s, "recovery", "n%llu: kv_snapshot_meta: %s",
                 (unsigned long long)n->id, store_strerror(rv));
    }
    sim_rk_take(s, n, &snap);
    if (n->st.ops->install_snapshot(n->st.ctx, &snap.meta) != RAFT_OK) {
        sim_blob_release(snap.blob);
        sim_fail(s, "storage", "n%llu: log reset to %llu refused",
                 (unsigned long long)n->id,
                 (unsigned long long)snap.meta.index);
    }
    sim_blob_release(n->snap.blob);
    n->snap = snap;
    start->snapshot = snap.meta;
    s->rk->c.log_resets++;
    sim_trace(s, "n%llu kv log reset to the state at %llu/%llu",
              (unsigned long long)n->id, (unsigned long long)snap.meta.index,
              (unsigned long long)snap.meta.term);
}

void sim_rkv_node_open(struct sim* s,
                       struct sim_node* n,
                       struct raft_start_state* start) {
    struct sim_rkv* rk = s->rk;
    char path[SIM_RK_PATH_MAX];
    char err[STORE_ERRMSG_SIZE] = "", msg[STORE_ERRMSG_SIZE];
    struct kv_options o = sim_rk_options(s);
    sim_rk_path(s, n, "state", path);
    int rv = kv_open(path, &o, &n->rk, err);
    if (rv != STORE_OK) {
        n->rk = NULL;
        sim_fail(s, "storage", "n%llu: kv_open: %s", (unsigned long long)n->id,
                 sim_rk_clean(s, err, msg, sizeof(msg)));
    }
    rk->c.reopens += n->incarnation > 0;
    raft_index a = kv_applied_index(n->rk);
    raft_term at = kv_applied_term(n->rk);
    struct sim_rk_stats st;
    sim_rk_stats(s, n, &st);
    if (st.index != a) {
        sim_fail(s, "recovery", "n%llu: state applied %llu, stats say %llu",
                 (unsigned long long)n->id, (unsigned long long)a,
                 (unsigned long long)st.index);
    }
    sim_rk_check_state(s, n, &st, "reopened");
    /* store_recover(): reconcile the log with the state. */
    n->st.ops->storage(n->st.ctx, &n->view);
    raft_index first = store_mem_first_index(n->mem);
    if (a + 1 < first) {
        sim_fail(s, "recovery",
                 "n%llu: state applied %llu is below the log's first index "
                 "%llu",
                 (unsigned long long)n->id, (unsigned long long)a,
                 (unsigned long long)first);
    }
    raft_term t = 0;
    if (a > 0 && (n->view.term(n->view.ctx, a, &t) != RAFT_OK || t != at)) {
        sim_rk_reset_log(s, n, start);
    } else if (start->snapshot.index > a) {
        sim_fail(s, "recovery",
                 "n%llu: state applied %llu is behind the log's snapshot %llu",
                 (unsigned long long)n->id, (unsigned long long)a,
                 (unsigned long long)start->snapshot.index);
    }
    raft_index handed = a;
    if (start->snapshot.index < a && sim_rng_chance(&rk->rng, rk->rehand_bp)) {
        handed = start->snapshot.index; /* the core hands out a..: skipped */
        rk->c.rehands++;
    }
    start->applied = handed;
    if (start->hard_state.commit < a) {
        start->hard_state.commit = a;
    }
    n->applied = a;
    n->handed = handed;
    sim_trace(s,
              "n%llu kv open applied=%llu/%llu seq=%llu count=%llu "
              "hash=%016llx core_applied=%llu",
              (unsigned long long)n->id, (unsigned long long)a,
              (unsigned long long)at, (unsigned long long)st.seq,
              (unsigned long long)st.count, (unsigned long long)st.hash,
              (unsigned long long)handed);
}

/* ---------------------------------------------------------------------------
 * Reads
 */

bool sim_rkv_read_pick(struct sim* s, struct sim_read* r) {
    struct sim_rkv* rk = s->rk;
    if (rk->n_ents == 0) {
        return false;
    }
    r->key = sim_rk_pick_ent(rk);
    r->min_seq = rk->ents[r->key].acked_seq;
    return true;
}

void sim_rkv_serve(struct sim* s,
                   struct sim_node* n,
                   const struct sim_read* r) {
    struct sim_rkv* rk = s->rk;
    struct sim_rk_ent* x = &rk->ents[r->key];
    struct kv_entry got;
    int rv = kv_get(n->rk, x->id, SIM_RK_ID_LEN, &rk->buf, &got);
    if (rv != STORE_OK && rv != STORE_ENOTFOUND) {
        sim_fail(s, "storage", "n%llu: kv_get %s: %s",
                 (unsigned long long)n->id, x->id, store_strerror(rv));
    }
    const struct sim_rk_ver* v = sim_rk_version_at(x, n->applied);
    bool live = v != NULL && !v->deleted;
    if (rv == STORE_OK && !live) {
        sim_fail(s, "read-unwritten",
                 "n%llu served %s with seq %llu at applied %llu, but the "
                 "history has %s there",
                 (unsigned long long)n->id, x->id, (unsigned long long)got.seq,
                 (unsigned long long)n->applied,
                 v == NULL ? "no such entry" : "it deleted");
    }
    if (rv == STORE_ENOTFOUND && live) {
        sim_fail(s, "read-lost",
                 "n%llu found no %s at applied %llu, but the history has it "
                 "at seq %llu (index %llu)",
                 (unsigned long long)n->id, x->id,
                 (unsigned long long)n->applied, (unsigned long long)v->seq,
                 (unsigned long long)v->index);
    }
    if (rv == STORE_OK &&
        (got.seq != v->seq || kv_entry_hash(&got) != v->hash)) {
        sim_fail(s, "read-wrong",
                 "n%llu served %s with seq %llu at applied %llu, the history "
                 "has seq %llu (index %llu)%s",
                 (unsigned long long)n->id, x->id, (unsigned long long)got.seq,
                 (unsigned long long)n->applied, (unsigned long long)v->seq,
                 (unsigned long long)v->index,
                 got.seq == v->seq ? " with other contents" : "");
    }
    uint64_t seq = v != NULL ? v->seq : 0;
    if (seq < r->min_seq) {
        sim_fail(s, "stale-read",
                 "n%llu served %s (read index %llu, invoked at tick %llu, "
                 "applied %llu) at seq %llu, but a write with seq %llu was "
                 "acknowledged before",
                 (unsigned long long)n->id, x->id, (unsigned long long)r->index,
                 (unsigned long long)r->invoked_at,
                 (unsigned long long)n->applied, (unsigned long long)seq,
                 (unsigned long long)r->min_seq);
    }
    if (rv == STORE_OK) {
        x->known_seq = got.seq;
        rk->c.reads_found++;
    } else {
        rk->c.reads_missing++;
    }
    s->stats.reads_checked++;
    sim_trace(s, "n%llu serve read ctx=%llu entry=%u -> %s seq=%llu",
              (unsigned long long)n->id, (unsigned long long)r->context, r->key,
              rv == STORE_OK ? "found" : "not found", (unsigned long long)seq);
}

/* ---------------------------------------------------------------------------
 * Liveness and summary
 */

bool sim_rkv_same_applied(struct sim* s,
                          struct sim_node* a,
                          struct sim_node* b) {
    (void)s;
    return a->rk != NULL && b->rk != NULL &&
           kv_applied_index(a->rk) == kv_applied_index(b->rk);
}

uint64_t sim_rkv_hash16(struct sim* s, struct sim_node* n) {
    struct kv_stats ks;
    (void)s;
    if (n->rk == NULL || kv_stats(n->rk, &ks) != STORE_OK) {
        return 0;
    }
    return ks.hash & 0xffff;
}

/* Every entry of the model reads the same from n's state. */
static void sim_rk_check_contents(struct sim* s, struct sim_node* n) {
    struct sim_rkv* rk = s->rk;
    for (size_t i = 0; i < rk->n_ents; i++) {
        struct sim_rk_ent* x = &rk->ents[i];
        struct kv_entry got;
        int rv = kv_get(n->rk, x->id, SIM_RK_ID_LEN, &rk->buf, &got);
        const struct sim_rk_ver* v = sim_rk_version_at(x, n->applied);
        bool live = v != NULL && !v->deleted;
        bool same = live ? rv == STORE_OK && got.seq == v->seq &&
                               kv_entry_hash(&got) == v->hash
                         : rv == STORE_ENOTFOUND;
        if (!same) {
            sim_fail(s, "kv-content",
                     "n%llu at applied %llu: %s is %s (seq %llu), the history "
                     "has %s (seq %llu)",
                     (unsigned long long)n->id, (unsigned long long)n->applied,
                     x->id, rv == STORE_OK ? "present" : "absent",
                     (unsigned long long)(rv == STORE_OK ? got.seq : 0),
                     live ? "it" : "none",
                     (unsigned long long)(v ? v->seq : 0));
        }
    }
}

void sim_rkv_final_check(struct sim* s) {
    struct sim_rk_stats first;
    memset(&first, 0, sizeof(first));
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        struct sim_rk_stats st;
        struct kv_stats re;
        char err[STORE_ERRMSG_SIZE] = "", msg[STORE_ERRMSG_SIZE];
        if (n->rk == NULL) {
            sim_fail(s, "kv-converged", "n%u has no open state", i);
        }
        sim_rk_stats(s, n, &st);
        if (kv_verify(n->rk, &re, err) != STORE_OK) {
            sim_fail(s, "kv-verify", "n%u: %s", i,
                     sim_rk_clean(s, err, msg, sizeof(msg)));
        }
        if (i == 1) {
            first = st;
        } else if (!sim_rk_stats_equal(&first, &st)) {
            sim_fail(
                s, "kv-converged",
                "n%u kv_stats applied=%llu/%llu seq=%llu count=%llu "
                "hash=%016llx, n1 applied=%llu/%llu seq=%llu count=%llu "
                "hash=%016llx",
                i, (unsigned long long)st.index, (unsigned long long)st.term,
                (unsigned long long)st.seq, (unsigned long long)st.count,
                (unsigned long long)st.hash, (unsigned long long)first.index,
                (unsigned long long)first.term, (unsigned long long)first.seq,
                (unsigned long long)first.count,
                (unsigned long long)first.hash);
        }
        sim_rk_check_state(s, n, &st, "final");
        sim_rk_check_contents(s, n);
    }
    s->rk->c.entries = first.count;
}

void sim_rkv_print_summary(const struct sim* s) {
    const struct sim_rk_counts* c = &s->rk->c;
    printf(
        " kv_ok=%llu kv_not_found=%llu kv_cas_mismatch=%llu "
        "kv_bad_request=%llu kv_duplicates=%llu kv_idem_expired=%llu "
        "kv_retries=%llu kv_skipped=%llu kv_reads_found=%llu "
        "kv_reads_missing=%llu kv_snapshot_files=%llu "
        "kv_installs_writer=%llu kv_installs_file=%llu kv_reopens=%llu "
        "kv_rehands=%llu kv_log_resets=%llu kv_entries=%llu\n",
        (unsigned long long)c->ok, (unsigned long long)c->not_found,
        (unsigned long long)c->cas_mismatch, (unsigned long long)c->bad_request,
        (unsigned long long)c->duplicates, (unsigned long long)c->idem_expired,
        (unsigned long long)c->retries, (unsigned long long)c->skipped,
        (unsigned long long)c->reads_found,
        (unsigned long long)c->reads_missing, (unsigned long long)c->files,
        (unsigned long long)c->installs_writer,
        (unsigned long long)c->installs_file, (unsigned long long)c->reopens,
        (unsigned long long)c->rehands, (unsigned long long)c->log_resets,
        (unsigned long long)c->entries);
}
