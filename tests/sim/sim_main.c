/*
 * sim_main.c - the skein-sim command line.
 *
 *   skein-sim --seed S [--nodes N] [--steps K] [--mutant NAME] [--real-kv]
 *             [--trace]
 *   skein-sim --seeds A-B [--nodes N] [--steps K] [--mutant NAME] [--real-kv]
 *   skein-sim --list-mutants
 *   skein-sim --bench [--entries N]
 *
 * --real-kv runs the real state machine (storage/kv_state.h on LMDB, kv
 * snapshot files) on every node instead of the register map (sim_rkv.c).
 *
 * Exit status: 0 when every check held, 1 when one failed (the FAIL line
 * names seed, step and invariant), 2 on a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static void sim_usage(FILE* f) {
    fprintf(f,
            "usage: skein-sim --seed S [--nodes N] [--steps K] "
            "[--mutant NAME] [--real-kv] [--trace]\n"
            "       skein-sim --seeds A-B [--nodes N] [--steps K] "
            "[--mutant NAME] [--real-kv]\n"
            "       skein-sim --list-mutants\n"
            "       skein-sim --bench [--entries N]\n");
}

static bool sim_parse_u64(const char* arg, uint64_t* out) {
    if (arg == NULL || *arg == '\0' || *arg == '-') {
        return false;
    }
    char* end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static bool sim_parse_range(const char* arg, uint64_t* lo, uint64_t* hi) {
    char buf[64];
    const char* dash = arg ? strchr(arg, '-') : NULL;
    if (dash == NULL || (size_t)(dash - arg) >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, arg, (size_t)(dash - arg));
    buf[dash - arg] = '\0';
    return sim_parse_u64(buf, lo) && sim_parse_u64(dash + 1, hi) && *lo <= *hi;
}

static bool sim_parse_mutant(const char* arg, int* out) {
    for (int i = 0; i < RAFT_MUTANT_COUNT; i++) {
        const char* name = raft_mutant_name(i);
        if (arg != NULL && name != NULL && strcmp(arg, name) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static void sim_list_mutants(void) {
    for (int i = 1; i < RAFT_MUTANT_COUNT; i++) {
        printf("%s\n", raft_mutant_name(i));
    }
}

/* What the command line asked for. */
struct sim_cli {
    struct sim_opts o; /* per-run options */
    bool have_seed;    /* --seed given */
    bool have_range;   /* --seeds given */
    uint64_t lo;       /* --seeds range */
    uint64_t hi;       /* inclusive */
    bool list;         /* --list-mutants */
    bool bench;        /* --bench */
    uint64_t entries;  /* --entries */
};

static bool sim_parse_arg(struct sim_cli* c,
                          const char* a,
                          const char* v,
                          int* i) {
    uint64_t x;
    if (strcmp(a, "--trace") == 0) {
        c->o.trace = true;
    } else if (strcmp(a, "--real-kv") == 0) {
        c->o.real_kv = true;
    } else if (strcmp(a, "--list-mutants") == 0) {
        c->list = true;
    } else if (strcmp(a, "--bench") == 0) {
        c->bench = true;
    } else if (strcmp(a, "--seed") == 0 && sim_parse_u64(v, &c->o.seed)) {
        c->have_seed = true;
        (*i)++;
    } else if (strcmp(a, "--seeds") == 0 &&
               sim_parse_range(v, &c->lo, &c->hi)) {
        c->have_range = true;
        (*i)++;
    } else if (strcmp(a, "--nodes") == 0 && sim_parse_u64(v, &x) && x >= 3 &&
               x <= SIM_MAX_NODES) {
        c->o.nodes = (uint32_t)x;
        (*i)++;
    } else if (strcmp(a, "--steps") == 0 && sim_parse_u64(v, &c->o.steps)) {
        (*i)++;
    } else if (strcmp(a, "--entries") == 0 && sim_parse_u64(v, &x) && x > 0) {
        c->entries = x;
        (*i)++;
    } else if (strcmp(a, "--mutant") == 0 &&
               sim_parse_mutant(v, &c->o.mutant)) {
        (*i)++;
    } else {
        return false;
    }
    return true;
}

static int sim_run_range(struct sim_cli* c) {
    c->o.quiet = true;
    c->o.trace = false;
    for (uint64_t seed = c->lo;; seed++) {
        c->o.seed = seed;
        if (sim_run(&c->o) != 0) {
            const char* m = raft_mutant_name(c->o.mutant);
            fprintf(
                stderr,
                "rerun: skein-sim --seed %llu --nodes %u --steps %llu%s%s%s "
                "--trace\n",
                (unsigned long long)seed, c->o.nodes,
                (unsigned long long)c->o.steps, c->o.mutant ? " --mutant " : "",
                c->o.mutant ? m : "", c->o.real_kv ? " --real-kv" : "");
            return 1;
        }
        if (seed == c->hi) {
            return 0;
        }
    }
}

int main(int argc, char** argv) {
    struct sim_cli c;
    memset(&c, 0, sizeof(c));
    c.o.nodes = 3;
    c.o.steps = 3000;
    c.entries = 1000000;
    for (int i = 1; i < argc; i++) {
        if (!sim_parse_arg(&c, argv[i], i + 1 < argc ? argv[i + 1] : NULL,
                           &i)) {
            fprintf(stderr, "skein-sim: bad argument '%s'\n", argv[i]);
            sim_usage(stderr);
            return 2;
        }
    }
    if (c.list) {
        sim_list_mutants();
        return 0;
    }
    if (c.bench) {
        return sim_bench(c.entries);
    }
    if (c.have_range) {
        return sim_run_range(&c);
    }
    if (!c.have_seed) {
        sim_usage(stderr);
        return 2;
    }
    return sim_run(&c.o);
}
