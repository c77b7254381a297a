/*
 * sim_run.c - one seed: draw the fault rates, run the steps with faults
 * (partitions, flapping, crashes, power cuts, pauses), then the liveness
 * phase: everything heals and within 50 election timeouts a leader must
 * commit a new write and every node must reach the same applied index and
 * state. With --real-kv every node's kv_stats must then be equal and every
 * state must pass kv_verify.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static uint32_t sim_pick_bp(struct sim* s,
                            uint32_t zero_bp,
                            uint32_t lo,
                            uint32_t hi) {
    if (sim_rng_chance(&s->rng, zero_bp)) {
        return 0;
    }
    return (uint32_t)sim_rng_range(&s->rng, lo, hi);
}

static void sim_draw_params(struct sim* s) {
    struct sim_params* p = &s->p;
    static const size_t msg_bytes[] = {64, 512, 4096, 1 << 20};
    p->election_ticks = (uint32_t)sim_rng_range(&s->rng, 8, 30);
    p->heartbeat_ticks =
        (uint32_t)sim_rng_range(&s->rng, 1, p->election_ticks / 4);
    p->delay_min = 1;
    p->delay_max = (uint32_t)sim_rng_range(&s->rng, 1, p->election_ticks / 3);
    p->drop_bp = sim_pick_bp(s, 2500, 1, 2000);
    p->dup_bp = sim_pick_bp(s, 4000, 1, 1000);
    p->partition_bp = sim_pick_bp(s, 2000, 5, 200);
    p->flap_bp = sim_pick_bp(s, 3000, 500, 5000);
    p->crash_bp = sim_pick_bp(s, 2000, 5, 100);
    p->power_bp = sim_pick_bp(s, 5000, 1, 20);
    p->pause_bp = sim_pick_bp(s, 3000, 5, 100);
    p->disk_max = (uint32_t)sim_rng_range(&s->rng, 0, 10);
    p->disk_min = (uint32_t)sim_rng_range(&s->rng, 0, p->disk_max);
    p->write_bp = (uint32_t)sim_rng_range(&s->rng, 2000, 9000);
    p->read_bp = (uint32_t)sim_rng_range(&s->rng, 1000, 6000);
    p->conf_bp = s->o.nodes >= 4 ? sim_pick_bp(s, 3000, 5, 100) : 0;
    p->transfer_bp = sim_pick_bp(s, 5000, 2, 50);
    p->snapshot_every = (uint32_t)sim_rng_range(&s->rng, 20, 200);
    p->keys = (uint32_t)sim_rng_range(&s->rng, 5, SIM_MAX_KEYS);
    p->max_inflight = (uint32_t)sim_rng_range(&s->rng, 1, 32);
    p->max_msg_bytes = msg_bytes[sim_rng_below(&s->rng, 4)];
    p->pre_vote = sim_rng_chance(&s->rng, 8500);
    p->check_quorum = sim_rng_chance(&s->rng, 8500);
    p->max_uncommitted = sim_rng_range(&s->rng, 64, 512);
    /* Keep replication able to carry the client load (about one entry a
     * tick), or the backlog outlasts any liveness bound. */
    if (p->max_msg_bytes * p->max_inflight < 1024) {
        p->max_inflight = (uint32_t)(1024 / p->max_msg_bytes);
    }
    p->lease_bp = sim_pick_bp(s, 4000, 1000, 9000);
    /* Some seeds restart crashed nodes almost at once: a node that forgets
     * it heard from a leader is the interesting case for leases. */
    p->down_max = sim_rng_chance(&s->rng, 3000)
                      ? (uint32_t)sim_rng_range(&s->rng, 1, 5)
                      : 100;
}

#define SIM_PCT(bp) (unsigned)((bp) / 100), (unsigned)((bp) % 100)

static void sim_print_params(const struct sim* s) {
    const struct sim_params* p = &s->p;
    const char* mutant = raft_mutant_name(s->o.mutant);
    printf("seed=%llu nodes=%u steps=%llu mutant=%s\n",
           (unsigned long long)s->o.seed, s->o.nodes,
           (unsigned long long)s->o.steps, mutant ? mutant : "?");
    printf(
        "faults: drop=%u.%02u%% dup=%u.%02u%% delay=%u..%u "
        "partition=%u.%02u%%/step flap=%u.%02u%% crash=%u.%02u%%/step "
        "power=%u.%02u%%/step down=1..%u pause=%u.%02u%%/step disk=%u..%u\n",
        SIM_PCT(p->drop_bp), SIM_PCT(p->dup_bp), p->delay_min, p->delay_max,
        SIM_PCT(p->partition_bp), SIM_PCT(p->flap_bp), SIM_PCT(p->crash_bp),
        SIM_PCT(p->power_bp), p->down_max, SIM_PCT(p->pause_bp), p->disk_min,
        p->disk_max);
    printf(
        "cluster: election=%u heartbeat=%u inflight=%u msg_bytes=%zu "
        "uncommitted=%llu prevote=%d checkquorum=%d snapshot_every=%u "
        "keys=%u "
        "writes=%u.%02u%% reads=%u.%02u%% lease=%u.%02u%% conf=%u.%02u%% "
        "transfer=%u.%02u%%\n",
        p->election_ticks, p->heartbeat_ticks, p->max_inflight,
        p->max_msg_bytes, (unsigned long long)p->max_uncommitted, p->pre_vote,
        p->check_quorum, p->snapshot_every, p->keys, SIM_PCT(p->write_bp),
        SIM_PCT(p->read_bp), SIM_PCT(p->lease_bp), SIM_PCT(p->conf_bp),
        SIM_PCT(p->transfer_bp));
    if (s->rk != NULL) {
        sim_rkv_print_params(s);
    }
}

/* --- faults ----------------------------------------------------------------
 */

static void sim_partition_pattern(struct sim* s) {
    struct sim_partition* pt = &s->part;
    uint32_t n = s->o.nodes;
    memset(pt->cut, 0, sizeof(pt->cut));
    uint64_t kind = sim_rng_below(&s->rng, 4);
    if (kind == 0) { /* symmetric split into two non-empty sides */
        bool side[SIM_MAX_NODES + 1];
        uint64_t mask = 1 + sim_rng_below(&s->rng, (1ULL << n) - 2);
        for (uint32_t i = 1; i <= n; i++) {
            side[i] = (mask >> (i - 1)) & 1;
        }
        for (uint32_t a = 1; a <= n; a++) {
            for (uint32_t b = 1; b <= n; b++) {
                pt->cut[a][b] = side[a] != side[b];
            }
        }
    } else if (kind == 1) { /* one or more one-way links */
        uint64_t links = 1 + sim_rng_below(&s->rng, n);
        for (uint64_t k = 0; k < links; k++) {
            uint32_t a = 1 + (uint32_t)sim_rng_below(&s->rng, n);
            uint32_t b = 1 + (uint32_t)sim_rng_below(&s->rng, n);
            pt->cut[a][b] = a != b;
        }
    } else if (kind == 2) { /* isolate the leader (or anyone) both ways */
        struct sim_node* l = sim_leader(s);
        uint32_t x =
            l ? (uint32_t)l->id : 1 + (uint32_t)sim_rng_below(&s->rng, n);
        for (uint32_t i = 1; i <= n; i++) {
            pt->cut[x][i] = pt->cut[i][x] = i != x;
        }
    } else { /* non-transitive: the leader and one node lose each other */
        struct sim_node* l = sim_leader(s);
        uint32_t a =
            l ? (uint32_t)l->id : 1 + (uint32_t)sim_rng_below(&s->rng, n);
        uint32_t b = 1 + (uint32_t)sim_rng_below(&s->rng, n);
        pt->cut[a][b] = pt->cut[b][a] = a != b;
    }
    sim_trace(s, "partition kind=%llu", (unsigned long long)kind);
}

static void sim_faults_partition(struct sim* s) {
    struct sim_partition* pt = &s->part;
    if (pt->active) {
        if (s->now >= pt->until) {
            pt->active = false;
            sim_net_heal(&s->net);
            sim_trace(s, "partition healed");
        } else if (pt->flapping && s->now >= pt->next_toggle) {
            pt->on = !pt->on;
            memcpy(s->net.cut, pt->cut, sizeof(s->net.cut));
            if (!pt->on) {
                sim_net_heal(&s->net);
            }
            pt->next_toggle = s->now + sim_rng_range(&s->rng, 1, 10);
            sim_trace(s, "partition flap %s", pt->on ? "on" : "off");
        }
        return;
    }
    if (!sim_rng_chance(&s->rng, s->p.partition_bp)) {
        return;
    }
    sim_partition_pattern(s);
    pt->active = true;
    pt->on = true;
    pt->until = s->now + sim_rng_range(&s->rng, 10, 400);
    pt->flapping = sim_rng_chance(&s->rng, s->p.flap_bp);
    pt->next_toggle = s->now + sim_rng_range(&s->rng, 1, 10);
    memcpy(s->net.cut, pt->cut, sizeof(s->net.cut));
    s->stats.partitions++;
}

/*
 * A paused process wakes up: its clock kept running, so the driver first
 * feeds the ticks it missed (a driver derives ticks from a monotonic
 * clock), then the queued messages arrive.
 */
static void sim_node_resume(struct sim* s, struct sim_node* x) {
    x->paused = false;
    uint64_t missed = s->now - x->paused_at;
    uint64_t cap = 10 * (uint64_t)s->p.election_ticks;
    sim_trace(s, "n%llu resume after %llu ticks", (unsigned long long)x->id,
              (unsigned long long)missed);
    sim_node_pump(s, x);
    for (uint64_t k = 1; k < missed && k <= cap && sim_node_is_live(x); k++) {
        struct raft_event ev = {.type = RAFT_EVENT_TICK};
        sim_node_step(s, x, &ev);
    }
}

static void sim_faults_nodes(struct sim* s) {
    uint32_t n = s->o.nodes;
    for (uint32_t i = 1; i <= n; i++) {
        struct sim_node* x = &s->node[i];
        if (!x->up && s->now >= x->down_until) {
            sim_node_start(s, x);
        } else if (x->up && x->paused && s->now >= x->paused_until) {
            sim_node_resume(s, x);
        }
    }
    if (sim_rng_chance(&s->rng, s->p.crash_bp)) {
        struct sim_node* x = &s->node[1 + sim_rng_below(&s->rng, n)];
        if (x->up) {
            x->down_until = s->now + sim_rng_range(&s->rng, 1, s->p.down_max);
            sim_node_crash(s, x);
        }
    }
    if (sim_rng_chance(&s->rng, s->p.power_bp)) {
        sim_trace(s, "power failure");
        for (uint32_t i = 1; i <= n; i++) {
            if (s->node[i].up) {
                s->node[i].down_until = s->now + sim_rng_range(&s->rng, 1, 30);
                sim_node_crash(s, &s->node[i]);
            }
        }
    }
    if (sim_rng_chance(&s->rng, s->p.pause_bp)) {
        struct sim_node* x = &s->node[1 + sim_rng_below(&s->rng, n)];
        if (x->up && !x->paused) {
            x->paused = true;
            x->paused_at = s->now;
            x->paused_until =
                s->now + sim_rng_range(&s->rng, 1, 3 * s->p.election_ticks);
            s->stats.pauses++;
            sim_trace(s, "n%llu pause until %llu", (unsigned long long)x->id,
                      (unsigned long long)x->paused_until);
        }
    }
}

/* One tick: faults, deliveries, disk completions and ticks, clients. */
void sim_step(struct sim* s) {
    s->now++;
    if (!s->liveness) {
        sim_faults_partition(s);
        sim_faults_nodes(s);
    }
    sim_net_deliver(s);
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        if (!sim_node_is_live(n) || n->paused) {
            continue;
        }
        sim_node_pump(s, n);
        struct raft_event ev = {.type = RAFT_EVENT_TICK};
        sim_node_step(s, n, &ev);
    }
    sim_clients_step(s);
    sim_check_step(s);
}

/* --- liveness ---------------------------------------------------------------
 */

static void sim_heal_all(struct sim* s) {
    s->liveness = true;
    s->part.active = false;
    sim_net_heal(&s->net);
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        if (!n->up) {
            sim_node_start(s, n);
        } else if (n->paused) {
            sim_node_resume(s, n); /* with the ticks it missed */
        }
    }
    sim_trace(s, "liveness: all healed");
}

/* True when every node runs, is a voter, and all agree on one state. */
static bool sim_converged(struct sim* s, raft_index probe_index) {
    struct sim_node* l = sim_leader(s);
    if (l == NULL || s->conf.phase != 0 ||
        raft_conf_voter_count(raft_conf(l->core)) != s->o.nodes) {
        return false;
    }
    const struct sim_node* a = &s->node[1];
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        const struct sim_node* n = &s->node[i];
        if (!sim_node_is_live(n) || n->applied < probe_index ||
            n->applied != a->applied) {
            return false;
        }
        /* --real-kv: equal counters are asserted by sim_rkv_final_check. */
        if (s->rk != NULL ? !sim_rkv_same_applied(s, &s->node[1], &s->node[i])
                          : sim_kv_hash(&n->kv) != sim_kv_hash(&a->kv)) {
            return false;
        }
    }
    return true;
}

__attribute__((noreturn)) static void sim_fail_liveness(struct sim* s,
                                                        uint64_t bound,
                                                        bool acked) {
    char buf[1024];
    size_t off = 0;
    for (uint32_t i = 1; i <= s->o.nodes && off < sizeof(buf); i++) {
        const struct sim_node* n = &s->node[i];
        if (!sim_node_is_live(n)) {
            off +=
                (size_t)snprintf(buf + off, sizeof(buf) - off, " n%u=down", i);
            continue;
        }
        off += (size_t)snprintf(
            buf + off, sizeof(buf) - off, " n%u=%s/t%llu/c%llu/a%llu/h%04llx",
            i, raft_role_name(raft_role(n->core)),
            (unsigned long long)raft_current_term(n->core),
            (unsigned long long)raft_commit_index(n->core),
            (unsigned long long)n->applied,
            (unsigned long long)(s->rk != NULL ? sim_rkv_hash16(s, &s->node[i])
                                               : sim_kv_hash(&n->kv) & 0xffff));
    }
    struct sim_node* l = sim_leader(s);
    if (l != NULL) {
        static const char* const st[] = {"probe", "replicate", "snapshot"};
        struct raft_progress_info pi[RAFT_MAX_NODES];
        size_t np = raft_progress(l->core, pi, RAFT_MAX_NODES);
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "; leader:");
        for (size_t k = 0; k < np && off < sizeof(buf); k++) {
            off += (size_t)snprintf(
                buf + off, sizeof(buf) - off, " n%llu=%s/m%llu/n%llu/i%u",
                (unsigned long long)pi[k].id, st[pi[k].state % 3],
                (unsigned long long)pi[k].match, (unsigned long long)pi[k].next,
                pi[k].inflight);
        }
    }
    sim_fail(s, "liveness",
             "no convergence within %llu ticks after healing (probe write "
             "%s, conf phase %d):%s",
             (unsigned long long)bound, acked ? "acked" : "not acked",
             s->conf.phase, buf);
}

/* Returns the ticks it took to converge. */
static uint64_t sim_liveness(struct sim* s) {
    sim_heal_all(s);
    uint64_t bound = 50 * (uint64_t)s->p.election_ticks;
    uint64_t acked_before = s->stats.writes_acked;
    raft_index probe_index = 0;
    uint64_t next_probe = 0;
    for (uint64_t t = 1; t <= bound; t++) {
        sim_step(s);
        struct sim_node* l = sim_leader(s);
        bool acked = s->stats.writes_acked > acked_before;
        if (!acked && l != NULL && t >= next_probe) {
            if (sim_client_write(s, l, 1) == RAFT_OK) {
                next_probe = t + 2 * s->p.election_ticks;
            }
        }
        acked = s->stats.writes_acked > acked_before;
        if (acked && probe_index == 0) {
            for (uint32_t i = 1; i <= s->o.nodes; i++) {
                if (s->node[i].up && s->node[i].applied > probe_index) {
                    probe_index = s->node[i].applied;
                }
            }
        }
        if (acked && sim_converged(s, probe_index)) {
            return t;
        }
    }
    sim_fail_liveness(s, bound, s->stats.writes_acked > acked_before);
}

static void sim_print_summary(const struct sim* s, uint64_t live_ticks) {
    const struct sim_stats* st = &s->stats;
    printf(
        "ok seed=%llu nodes=%u steps=%llu leaders=%llu writes_acked=%llu "
        "writes_failed=%llu reads_checked=%llu lease_reads=%llu crashes=%llu "
        "snapshots_taken=%llu snapshots_installed=%llu conf_changes=%llu "
        "partitions=%llu pauses=%llu messages=%llu liveness_ticks=%llu%s",
        (unsigned long long)s->o.seed, s->o.nodes,
        (unsigned long long)s->o.steps, (unsigned long long)st->leaders,
        (unsigned long long)st->writes_acked,
        (unsigned long long)st->writes_failed,
        (unsigned long long)st->reads_checked,
        (unsigned long long)st->lease_reads, (unsigned long long)st->crashes,
        (unsigned long long)st->snapshots_taken,
        (unsigned long long)st->snapshots_installed,
        (unsigned long long)st->conf_changes,
        (unsigned long long)st->partitions, (unsigned long long)st->pauses,
        (unsigned long long)st->messages, (unsigned long long)live_ticks,
        s->rk != NULL ? "" : "\n");
    if (s->rk != NULL) {
        sim_rkv_print_summary(s);
    }
}

void sim_close(struct sim* s) {
    sim_rkv_close(s);
    sim_nodes_close(s);
    sim_net_close(&s->net);
    sim_check_close(s);
    free(s);
}

int sim_run(const struct sim_opts* opts) {
    struct sim* s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "skein-sim: out of memory\n");
        return 1;
    }
    s->o = *opts;
    sim_rng_seed(&s->rng, opts->seed);
    sim_draw_params(s);
    if (opts->real_kv) {
        sim_rkv_params(s);
    }
    if (!opts->quiet) {
        sim_print_params(s);
    }
    if (setjmp(s->fail_jmp) != 0) {
        fflush(stdout);
        sim_close(s);
        return 1;
    }
    if (s->rk != NULL) {
        sim_rkv_init(s);
    }
    sim_nodes_init(s);
    while (s->now < s->o.steps) {
        sim_step(s);
    }
    uint64_t live_ticks = sim_liveness(s);
    if (s->rk != NULL) {
        sim_rkv_final_check(s);
    }
    sim_print_summary(s, live_ticks);
    fflush(stdout);
    sim_close(s);
    return 0;
}
