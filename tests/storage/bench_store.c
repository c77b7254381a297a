/*
 * bench_store.c - skein-store-bench, the storage benchmark (not a test).
 *
 *   skein-store-bench [--dir DIR] [--keys N] [--seconds S] [--quick]
 *
 * Measures, on the file system holding DIR (default $TMPDIR or /tmp):
 *  1. log appends with fsync: entries/s at batch 1, 10, 100 and 1000, one
 *     write transaction and one sync() per batch (strict; balanced and fast
 *     for comparison at batch 100);
 *  2. applies/s of the state machine (creates of 100-byte values, and the
 *     mixed command stream of the tests) at batch 1, 100 and 1000;
 *  3. snapshot create, stream (4 MiB chunks) and install times for a state
 *     of N keys (default 1,000,000);
 *  4. resident memory of a fresh process that opens the N-key state, reads
 *     100,000 random entries and applies 10,000 updates, before and after
 *     kv_trim_memory().
 * Each append row runs for about S seconds (default 2), --repeat times
 * (default 3; the median and the range are printed). --quick uses 100,000
 * keys and 1 second per row. --only runs one section; --keep-state keeps
 * (and reuses) the loaded state in DIR/bench-state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_snapshot.h"
#include "kv_state.h"
#include "store_lmdb.h"
#include "test_util.h"

#define VALUE_LEN 100
#define ENTRY_LEN 100

static double opt_seconds = 2.0;
static int opt_repeat = 3;
static uint64_t opt_keys = 1000000;

static void die(const char* what, const char* err) {
    fprintf(stderr, "skein-store-bench: %s: %s\n", what, err);
    exit(1);
}

/* ------------------------------------------------------------------ */
/* 1. Log appends                                                      */

/* One timed run; returns entries/s and the mean and worst batch time. */
static double append_run(const char* base,
                         int durability,
                         size_t batch,
                         double* us_mean,
                         double* ms_worst) {
    char err[STORE_ERRMSG_SIZE];
    char* dir = tu_path(base, "bench-log");
    struct store_lmdb_options o = {.durability = durability};
    struct store_lmdb* s;
    struct store st;
    struct raft_entry* e = calloc(batch, sizeof(*e));
    uint8_t* data = malloc(batch * ENTRY_LEN);
    uint64_t batches = 0;

    store_rmtree(dir);
    if (store_lmdb_open(dir, &o, &s, err) != STORE_OK) {
        die("open log", err);
    }
    store_lmdb_store(s, &st);
    raft_index next = 1;
    double t0 = tu_now(), t, busy = 0;
    *ms_worst = 0;
    do {
        for (size_t i = 0; i < batch; i++) {
            tu_entry(&e[i], next + i, 1, data + i * ENTRY_LEN, ENTRY_LEN);
        }
        double b0 = tu_now();
        raft_index di;
        raft_term dt;
        if (st.ops->append(st.ctx, e, batch) != RAFT_OK ||
            st.ops->sync(st.ctx, &di, &dt) != RAFT_OK) {
            die("append", store_lmdb_errmsg(s));
        }
        next += batch;
        batches++;
        t = tu_now();
        busy += t - b0;
        if ((t - b0) * 1e3 > *ms_worst) {
            *ms_worst = (t - b0) * 1e3;
        }
    } while (t - t0 < opt_seconds);
    *us_mean = busy / (double)batches * 1e6;
    store_lmdb_close(s);
    store_rmtree(dir);
    free(dir);
    free(e);
    free(data);
    return (double)(next - 1) / busy;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* Runs `opt_repeat` times and prints the median with the range. */
static void bench_append_row(const char* base, int durability, size_t batch) {
    double rate[16], us[16], worst[16], worst_max = 0;
    int n = opt_repeat < 16 ? opt_repeat : 16;

    for (int i = 0; i < n; i++) {
        rate[i] = append_run(base, durability, batch, &us[i], &worst[i]);
        if (worst[i] > worst_max) {
            worst_max = worst[i];
        }
    }
    qsort(rate, (size_t)n, sizeof(double), cmp_double);
    qsort(us, (size_t)n, sizeof(double), cmp_double);
    printf("| %-8s | %5zu | %10.0f | %8.0f - %-8.0f | %9.0f | %8.1f | %d |\n",
           store_durability_name(durability), batch, rate[n / 2], rate[0],
           rate[n - 1], us[n / 2], worst_max,
           durability == STORE_DURABILITY_STRICT     ? 2
           : durability == STORE_DURABILITY_BALANCED ? 1
                                                     : 0);
}

static void bench_appends(const char* base) {
    static const size_t batches[] = {1, 10, 100, 1000};

    printf(
        "\n## Log appends: append() + sync() per batch, %d-byte entries, "
        "median of %d runs of %.0f s\n\n",
        ENTRY_LEN, opt_repeat, opt_seconds);
    printf(
        "| profile  | batch | entries/s  | range (entries/s)   | "
        "us/batch  | worst ms | fdatasync/batch |\n");
    printf(
        "|----------|-------|------------|---------------------|"
        "-----------|----------|---|\n");
    for (size_t i = 0; i < 4; i++) {
        bench_append_row(base, STORE_DURABILITY_STRICT, batches[i]);
    }
    bench_append_row(base, STORE_DURABILITY_BALANCED, 1);
    bench_append_row(base, STORE_DURABILITY_BALANCED, 100);
    bench_append_row(base, STORE_DURABILITY_FAST, 100);
}

/* ------------------------------------------------------------------ */
/* 2. Applies                                                          */

static bool opt_v7; /* time-ordered ids for the apply rows */

/*
 * The id of key number i (deterministic): a random UUID (v4), or with
 * opt_v7 a time-ordered one (v7 layout: 48-bit millisecond counter first,
 * here one millisecond per 16 keys), which makes creates B-tree appends.
 */
static void make_id(uint64_t i, char* out) {
    uint64_t s = i * 0x9e3779b97f4a7c15ULL + 12345;
    uint64_t a = tu_rand(&s), b = tu_rand(&s);
    if (opt_v7) {
        uint64_t ms = 1700000000000ULL + i / 16;
        a = (ms << 16) | (0x7000 | (i & 0xfff));
    }
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff,
             opt_v7 ? (unsigned)a & 0xffff : 0x4000 | ((unsigned)a & 0xfff),
             (unsigned)(b >> 48) & 0xffff,
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* Fills e[0..n) with creates of keys first.. (data malloc'd into owned). */
static void make_creates(uint64_t first,
                         size_t n,
                         raft_index index,
                         struct raft_entry* e,
                         uint8_t** owned) {
    char id[40], key[32], rid[48], value[VALUE_LEN + 1];
    memset(value, 'v', VALUE_LEN);
    value[VALUE_LEN] = '\0';
    for (size_t i = 0; i < n; i++) {
        make_id(first + i, id);
        snprintf(key, sizeof(key), "key-%llu",
                 (unsigned long long)((first + i) % 100000));
        snprintf(rid, sizeof(rid), "req-%s", id);
        memcpy(value, id, 8);
        owned[i] = tu_cmd_create(rid, id, key, value, &e[i].len);
        e[i].data = owned[i];
        e[i].index = index + i;
        e[i].term = 1;
        e[i].type = RAFT_ENTRY_NORMAL;
    }
}

static void free_owned(uint8_t** owned, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(owned[i]);
    }
}

static void bench_apply_row(const char* base,
                            size_t batch,
                            bool mixed,
                            bool v7) {
    char err[STORE_ERRMSG_SIZE];
    char* dir = tu_path(base, "bench-apply");
    struct kv_state* kv;
    struct raft_entry* e = calloc(batch, sizeof(*e));
    uint8_t** owned = calloc(batch, sizeof(*owned));
    struct kv_result* r = calloc(batch, sizeof(*r));

    store_rmtree(dir);
    if (kv_open(dir, NULL, &kv, err) != STORE_OK) {
        die("open state", err);
    }
    raft_index next = 1;
    double gen = 0;
    opt_v7 = v7;
    double t0 = tu_now(), t;
    do {
        double g0 = tu_now();
        if (mixed) {
            for (size_t i = 0; i < batch; i++) {
                tu_gen_entry(next + i, 1, &e[i], &owned[i]);
            }
        } else {
            make_creates(next, batch, next, e, owned);
        }
        gen += tu_now() - g0;
        if (kv_apply_batch(kv, e, batch, r) != STORE_OK) {
            die("apply", kv_errmsg(kv));
        }
        free_owned(owned, batch);
        next += batch;
        t = tu_now();
    } while (t - t0 < opt_seconds);
    double secs = t - t0 - gen;
    opt_v7 = false;
    printf("| %-12s | %5zu | %10.0f | %9.0f | %9.1f |\n",
           mixed ? "mixed"
           : v7  ? "create v7 id"
                 : "create v4 id",
           batch, (double)(next - 1) / secs,
           (double)(next - 1) / (double)batch / secs,
           secs / ((double)(next - 1) / (double)batch) * 1e6);
    kv_close(kv);
    store_rmtree(dir);
    free(dir);
    free(e);
    free(owned);
    free(r);
}

static void bench_applies(const char* base) {
    printf(
        "\n## State machine applies (strict: one txn and one fdatasync per "
        "batch; command encoding excluded)\n\n");
    printf("| stream       | batch | applies/s  | batches/s | us/batch  |\n");
    printf("|--------------|-------|------------|-----------|-----------|\n");
    bench_apply_row(base, 1, false, false);
    bench_apply_row(base, 100, false, false);
    bench_apply_row(base, 1000, false, false);
    bench_apply_row(base, 100, false, true);
    bench_apply_row(base, 1000, false, true);
    bench_apply_row(base, 1000, true, false);
}

/* ------------------------------------------------------------------ */
/* 3. Snapshots of N keys, 4. RSS                                      */

/* Loads opt_keys creates into dir; returns applies/s of the load. */
static double load_state(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    struct kv_state* kv;
    const size_t batch = 10000;
    struct raft_entry* e = calloc(batch, sizeof(*e));
    uint8_t** owned = calloc(batch, sizeof(*owned));
    double apply = 0;

    store_rmtree(dir);
    if (kv_open(dir, NULL, &kv, err) != STORE_OK) {
        die("open state", err);
    }
    for (uint64_t k = 0; k < opt_keys; k += batch) {
        size_t n = opt_keys - k < batch ? (size_t)(opt_keys - k) : batch;
        make_creates(k, n, k + 1, e, owned);
        double t0 = tu_now();
        if (kv_apply_batch(kv, e, n, NULL) != STORE_OK) {
            die("load", kv_errmsg(kv));
        }
        apply += tu_now() - t0;
        free_owned(owned, n);
    }
    kv_sync(kv);
    kv_close(kv);
    free(e);
    free(owned);
    return (double)opt_keys / apply;
}

static void bench_snapshot(const char* base, const char* state_dir) {
    char err[STORE_ERRMSG_SIZE];
    struct kv_state* src;
    struct kv_state* dst;
    struct kv_snapshot_info info, got;
    struct kv_snapshot_reader* rd;
    struct kv_snapshot_writer* w;
    char* snap = tu_path(base, "bench-snap.mdb");
    char* dst_dir = tu_path(base, "bench-installed");
    uint8_t* buf = malloc(KV_SNAPSHOT_CHUNK_MAX);

    if (kv_open(state_dir, NULL, &src, err) != STORE_OK) {
        die("open state", err);
    }
    struct kv_stats want;
    kv_stats(src, &want);
    double t0 = tu_now();
    if (kv_snapshot_create(src, snap, &info, err) != STORE_OK) {
        die("snapshot create", err);
    }
    double t_create = tu_now() - t0;
    store_rmtree(dst_dir);
    if (kv_open(dst_dir, NULL, &dst, err) != STORE_OK) {
        die("open target", err);
    }
    t0 = tu_now();
    if (kv_snapshot_reader_open(snap, &rd, NULL, err) != STORE_OK ||
        kv_snapshot_writer_open(dst, kv_snapshot_reader_size(rd), &w, err) !=
            STORE_OK) {
        die("stream", err);
    }
    uint64_t off = 0;
    bool done = false;
    while (!done) {
        size_t n;
        if (kv_snapshot_reader_read(rd, off, buf, KV_SNAPSHOT_CHUNK_MAX, &n,
                                    &done) != STORE_OK ||
            kv_snapshot_writer_write(w, off, buf, n, &off) != STORE_OK) {
            die("stream", "chunk");
        }
    }
    double t_stream = tu_now() - t0;
    t0 = tu_now();
    if (kv_snapshot_writer_finish(w, &got, err) != STORE_OK) {
        die("install", err);
    }
    double t_install = tu_now() - t0;
    kv_snapshot_reader_close(rd);
    if (got.stats.hash != want.hash || got.stats.count != want.count) {
        die("install", "hash or count differs");
    }
    printf("\n## Snapshot of %llu keys\n\n", (unsigned long long)want.count);
    printf("| step | seconds | notes |\n|---|---|---|\n");
    printf(
        "| create (mdb_env_copyfd2 compact + fsync) | %.2f | %.1f MiB "
        "file |\n",
        t_create, (double)info.size / 1048576.0);
    printf("| stream (%zu MiB chunks, write + no fsync yet) | %.2f | |\n",
           KV_SNAPSHOT_CHUNK_MAX >> 20, t_stream);
    printf(
        "| install (fsync, verify every entry, swap, reopen) | %.2f | "
        "hash %016llx equal |\n",
        t_install, (unsigned long long)got.stats.hash);
    printf("| **total create + install** | **%.2f** | |\n",
           t_create + t_stream + t_install);
    kv_close(dst);
    kv_close(src);
    unlink(snap);
    store_rmtree(dst_dir);
    free(snap);
    free(dst_dir);
    free(buf);
}

static void print_rss(const char* when) {
    long rss, hwm, anon, file;
    tu_rss_kib(&rss, &hwm, &anon, &file);
    printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", when, rss / 1024.0,
           hwm / 1024.0, anon / 1024.0, file / 1024.0);
}

/* 1000 random gets and 100 random updates (one batch); returns the
 * seconds spent in the gets. */
static double node_ops(struct kv_state* kv,
                       uint64_t* rng,
                       raft_index* next,
                       struct kv_buf* buf) {
    struct raft_entry ents[100];
    uint8_t* owned[100];
    struct kv_entry e;
    char id[40];
    double t0 = tu_now();

    for (int i = 0; i < 1000; i++) {
        make_id(tu_below(rng, opt_keys), id);
        if (kv_get(kv, id, 36, buf, &e) != STORE_OK) {
            die("get", id);
        }
    }
    double gets = tu_now() - t0;
    for (int i = 0; i < 100; i++) {
        make_id(tu_below(rng, opt_keys), id);
        owned[i] = tu_cmd_update(NULL, id, NULL, "updated", -1, &ents[i].len);
        ents[i].data = owned[i];
        ents[i].index = (*next)++;
        ents[i].term = 2;
        ents[i].type = RAFT_ENTRY_NORMAL;
    }
    if (kv_apply_batch(kv, ents, 100, NULL) != STORE_OK) {
        die("update", kv_errmsg(kv));
    }
    free_owned(owned, 100);
    return gets;
}

/* The child of bench_rss: a fresh process, as a node would be. */
static int rss_child(const char* state_dir) {
    char err[STORE_ERRMSG_SIZE];
    char what[128];
    struct kv_state* kv;
    struct kv_buf buf = {0};
    uint64_t rng = 99;
    struct kv_options o = {0};

    print_rss("process start");
    if (kv_open(state_dir, &o, &kv, err) != STORE_OK) {
        die("open state", err);
    }
    struct kv_stats st;
    kv_stats(kv, &st);
    raft_index next = st.applied_index + 1;
    print_rss("state opened (idempotency index rebuilt)");
    /* A node's steady state with the default file-RSS budget (reads and
     * applies trim the map themselves when over it). */
    double gets = 0;
    for (int round = 0; round < 100; round++) {
        gets += node_ops(kv, &rng, &next, &buf);
    }
    snprintf(what, sizeof(what),
             "100k random gets + 10k updates, default budget (%.0f gets/s)",
             100000 / gets);
    print_rss(what);
    kv_close(kv);
    /* The same with trimming off: file pages stay mapped. */
    o.rss_file_budget = SIZE_MAX;
    if (kv_open(state_dir, &o, &kv, err) != STORE_OK) {
        die("open state", err);
    }
    gets = 0;
    for (int round = 0; round < 100; round++) {
        gets += node_ops(kv, &rng, &next, &buf);
    }
    snprintf(what, sizeof(what), "the same again, budget off (%.0f gets/s)",
             100000 / gets);
    print_rss(what);
    kv_trim_memory(kv);
    print_rss("after kv_trim_memory");
    kv_close(kv);
    kv_buf_free(&buf);
    return 0;
}

static void bench_rss(const char* self, const char* state_dir) {
    char keys[32];

    printf("\n## Resident memory of a process holding %llu keys (MiB)\n\n",
           (unsigned long long)opt_keys);
    printf("| when | VmRSS | VmHWM | RssAnon | RssFile |\n");
    printf("|---|---|---|---|---|\n");
    fflush(stdout);
    snprintf(keys, sizeof(keys), "%llu", (unsigned long long)opt_keys);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", self, "--rss-child", state_dir, "--keys", keys,
              (char*)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        die("rss child", "failed");
    }
}

/* True if dir holds a state with opt_keys entries (--keep-state reuse). */
static bool state_ready(const char* dir) {
    char err[STORE_ERRMSG_SIZE];
    struct kv_state* kv;
    struct kv_stats st;
    struct stat sb;
    char* file = tu_path(dir, "data.mdb");
    bool exists = stat(file, &sb) == 0;

    free(file);
    if (!exists || kv_open(dir, NULL, &kv, err) != STORE_OK) {
        return false;
    }
    bool ready = kv_stats(kv, &st) == STORE_OK && st.count == opt_keys;
    kv_close(kv);
    return ready;
}

static void print_env(const char* base) {
    struct utsname u;
    struct statfs sf;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    uname(&u);
    statfs(base, &sf);
    printf("# skein-store-bench\n\n");
    printf("dir %s (fs magic 0x%lx), kernel %s, %ld cpus, %s, LMDB %s\n", base,
           (unsigned long)sf.f_type, u.release, cpus, "xxhash checksums",
           MDB_VERSION_STRING);
}

int main(int argc, char** argv) {
    const char* dir = NULL;
    const char* rss_dir = NULL;
    const char* only = NULL;
    bool keep = false;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            opt_keys = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            opt_seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            opt_repeat = atoi(argv[++i]);
            opt_repeat = opt_repeat < 1 ? 1 : opt_repeat;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--keep-state") == 0) {
            keep = true;
        } else if (strcmp(argv[i], "--quick") == 0) {
            opt_keys = 100000;
            opt_seconds = 1;
        } else if (strcmp(argv[i], "--rss-child") == 0 && i + 1 < argc) {
            rss_dir = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--dir DIR] [--keys N] [--seconds S] "
                    "[--repeat N] [--quick]\n"
                    "       [--only appends|applies|snapshot|rss] "
                    "[--keep-state]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rss_dir != NULL) {
        return rss_child(rss_dir);
    }
    char* base = dir != NULL ? strdup(dir) : tu_mkdtemp("bench");
    store_mkdirs(base);
    print_env(base);
    if (only == NULL || strcmp(only, "appends") == 0) {
        bench_appends(base);
    }
    if (only == NULL || strcmp(only, "applies") == 0) {
        bench_applies(base);
    }
    char* state_dir = tu_path(base, "bench-state");
    if (only == NULL || strcmp(only, "snapshot") == 0 ||
        strcmp(only, "rss") == 0) {
        if (!state_ready(state_dir)) {
            double t0 = tu_now();
            double load_rate = load_state(state_dir);
            printf(
                "\nLoaded %llu keys in %.1f s (batches of 10000: %.0f "
                "applies/s in kv_apply_batch)\n",
                (unsigned long long)opt_keys, tu_now() - t0, load_rate);
        }
        if (only == NULL || strcmp(only, "snapshot") == 0) {
            bench_snapshot(base, state_dir);
        }
        if (only == NULL || strcmp(only, "rss") == 0) {
            bench_rss(argv[0], state_dir);
        }
    }
    if (!keep) {
        store_rmtree(state_dir);
    }
    free(state_dir);
    if (dir == NULL) {
        tu_rmtree(base);
    } else {
        free(base);
    }
    return 0;
}
