/*
 * sim_scenario.c - directed scenarios: fault sequences too precise for the
 * random search to hit often, scripted on the simulator (same driver, same
 * checks after every step). Each scenario ends with the usual FAIL line
 * when a check fails.
 *
 *   sim-scenarios NAME   runs one scenario; exit 0 clean, 1 on a failure
 *   sim-scenarios        lists the scenarios
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* Creates a quiet 3-node simulation with fixed, fault-free parameters. */
static struct sim* sim_scenario_new(uint32_t election_ticks) {
    struct sim* s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->o.seed = 1;
    s->o.nodes = 3;
    s->o.trace = getenv("SIM_TRACE") != NULL;
    s->liveness = true; /* no random faults and no random clients */
    sim_rng_seed(&s->rng, 1);
    s->p.election_ticks = election_ticks;
    s->p.heartbeat_ticks = 2;
    s->p.delay_min = 1;
    s->p.delay_max = 1;
    s->p.max_inflight = 8;
    s->p.max_msg_bytes = 4096;
    s->p.max_uncommitted = 1000;
    s->p.pre_vote = true;
    s->p.check_quorum = true;
    s->p.snapshot_every = 100000;
    s->p.keys = 1;
    return s;
}

static void sim_scenario_ticks(struct sim* s, int n) {
    for (int i = 0; i < n; i++) {
        sim_step(s);
    }
}

/*
 * Thesis §6.4.1 leases rely on followers not voting within an election
 * timeout of hearing from the leader. A follower that restarts forgets it
 * heard from the leader: if it votes for a candidate at once, the new
 * leader commits while the old one still believes its lease (FINDINGS F5).
 * Leader L; B cut off from L; A answers L, crashes, restarts one tick later
 * without hearing from L, and B campaigns. The lease-safety check fails if
 * B commits while L's lease is valid.
 */
static void sim_scenario_lease_restart(struct sim* s) {
    sim_nodes_init(s);
    while (sim_leader(s) == NULL && s->now < 1000) {
        sim_step(s);
    }
    sim_scenario_ticks(s, 30);
    struct sim_node* l = sim_leader(s);
    if (l == NULL) {
        sim_fail(s, "scenario", "no leader elected");
    }
    raft_node_id a = l->id % 3 + 1;
    raft_node_id b = a % 3 + 1;
    (void)sim_client_write(s, l, 1);
    sim_scenario_ticks(s, 10);
    s->net.cut[l->id][b] = s->net.cut[b][l->id] = true;
    sim_scenario_ticks(s, 5);
    s->net.cut[l->id][a] = true; /* A stops hearing from L */
    sim_node_crash(s, &s->node[a]);
    sim_scenario_ticks(s, 1);
    sim_node_start(s, &s->node[a]);
    struct raft_event ev = {.type = RAFT_EVENT_CAMPAIGN};
    sim_node_step(s, &s->node[b], &ev);
    uint64_t acked = s->stats.writes_acked;
    for (int i = 0; i < 40; i++) {
        sim_step(s);
        struct sim_node* nb = &s->node[b];
        if (raft_role(nb->core) == RAFT_LEADER &&
            s->stats.writes_acked == acked && s->n_writes == 0) {
            (void)sim_client_write(s, nb, 1);
        }
    }
}

/* One scripted scenario. */
struct sim_scenario {
    const char* name;           /* command-line name */
    uint32_t election_ticks;    /* core config */
    void (*run)(struct sim* s); /* the script */
};

static const struct sim_scenario sim_scenarios[] = {
    {"lease-restart", 30, sim_scenario_lease_restart},
};

static int sim_scenario_run(const struct sim_scenario* sc) {
    struct sim* s = sim_scenario_new(sc->election_ticks);
    if (s == NULL) {
        return 1;
    }
    if (setjmp(s->fail_jmp) != 0) {
        sim_close(s);
        return 1;
    }
    sc->run(s);
    printf("scenario %s: ok (%llu ticks)\n", sc->name,
           (unsigned long long)s->now);
    sim_close(s);
    return 0;
}

int main(int argc, char** argv) {
    size_t count = sizeof(sim_scenarios) / sizeof(sim_scenarios[0]);
    for (size_t i = 0; i < count; i++) {
        if (argc < 2) {
            printf("%s\n", sim_scenarios[i].name);
        } else if (strcmp(argv[1], sim_scenarios[i].name) == 0) {
            return sim_scenario_run(&sim_scenarios[i]);
        }
    }
    if (argc < 2) {
        return 0;
    }
    fprintf(stderr, "sim-scenarios: unknown scenario '%s'\n", argv[1]);
    return 2;
}
