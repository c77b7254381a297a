/*
 * sim_bench.c - the core benchmark (not a test): 3 cores in one process,
 * no faults, no network delay, a disk that syncs at once. The leader gets
 * proposals of 64 entries of 100 bytes; we count entries committed on the
 * leader per second of CPU time (the simulator's own work included, so the
 * figure is a lower bound for the core).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

#define SIM_BENCH_BATCH 64
#define SIM_BENCH_BYTES 100

static double sim_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sim_bench_params(struct sim* s) {
    memset(&s->p, 0, sizeof(s->p));
    s->p.election_ticks = 10;
    s->p.heartbeat_ticks = 1;
    s->p.max_inflight = 256;
    s->p.max_msg_bytes = 1 << 20;
    s->p.pre_vote = true;
    s->p.check_quorum = true;
    s->p.snapshot_every = 100000;
    s->p.keys = 1;
}

/* Proposes batches on the leader until it refuses or `left` is 0. */
static uint64_t sim_bench_propose(struct sim* s,
                                  struct sim_node* l,
                                  uint64_t left) {
    static uint8_t payload[SIM_BENCH_BATCH][SIM_BENCH_BYTES];
    const uint8_t* data[SIM_BENCH_BATCH];
    uint32_t lens[SIM_BENCH_BATCH];
    uint64_t proposed = 0;
    for (size_t i = 0; i < SIM_BENCH_BATCH; i++) {
        memset(payload[i], (int)i, SIM_BENCH_BYTES);
        data[i] = payload[i];
        lens[i] = SIM_BENCH_BYTES;
    }
    while (left > 0) {
        size_t n = left < SIM_BENCH_BATCH ? (size_t)left : SIM_BENCH_BATCH;
        raft_index first;
        raft_term term;
        if (raft_propose(l->core, RAFT_ENTRY_NORMAL, data, lens, n, &first,
                         &term) != RAFT_OK) {
            break;
        }
        proposed += n;
        left -= n;
    }
    sim_node_pump(s, l);
    return proposed;
}

static int sim_bench_body(struct sim* s, uint64_t entries) {
    while (sim_leader(s) == NULL && s->now < 1000) {
        sim_step(s);
    }
    struct sim_node* l = sim_leader(s);
    if (l == NULL) {
        fprintf(stderr, "bench: no leader elected\n");
        return 1;
    }
    raft_index base = raft_commit_index(l->core);
    uint64_t proposed = 0;
    double t0 = sim_cpu_seconds();
    uint64_t idle = 0;
    while (raft_commit_index(l->core) - base < entries && idle < 1000) {
        raft_index before = raft_commit_index(l->core);
        proposed += sim_bench_propose(s, l, entries - proposed);
        sim_net_deliver(s); /* delay 0: runs until the network is quiet */
        idle = raft_commit_index(l->core) == before ? idle + 1 : 0;
        if (raft_role(l->core) != RAFT_LEADER) {
            fprintf(stderr, "bench: leader lost its role\n");
            return 1;
        }
    }
    double secs = sim_cpu_seconds() - t0;
    uint64_t done = raft_commit_index(l->core) - base;
    if (done < entries) {
        fprintf(stderr, "bench: stalled after %llu entries\n",
                (unsigned long long)done);
        return 1;
    }
    printf(
        "bench: 3 nodes, %llu entries of %d bytes, batches of %d: "
        "%.3f s CPU, %.0f entries/s committed on the leader\n",
        (unsigned long long)done, SIM_BENCH_BYTES, SIM_BENCH_BATCH, secs,
        secs > 0 ? (double)done / secs : 0.0);
    return 0;
}

int sim_bench(uint64_t entries) {
    struct sim* s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return 1;
    }
    s->o.seed = 1;
    s->o.nodes = 3;
    s->bench = true;
    s->liveness = true; /* no faults, no client traffic */
    sim_rng_seed(&s->rng, 1);
    sim_bench_params(s);
    volatile int rv = 1; /* survives the longjmp of a failed check */
    if (setjmp(s->fail_jmp) == 0) {
        sim_nodes_init(s);
        rv = sim_bench_body(s, entries);
    }
    sim_close(s);
    return rv;
}
