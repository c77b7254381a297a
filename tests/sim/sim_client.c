/*
 * sim_client.c - what clients and operators do to the cluster: writes
 * (proposals whose outcome is learned when the proposing node applies that
 * index), linearizable reads (ReadIndex, checked against the acknowledged
 * writes), leader transfers and membership changes (remove a voter, add it
 * back as a learner, promote it).
 *
 * Read check: a read of key k invoked at tick t must return the latest
 * write to k acknowledged before t, or a later one: the register's log
 * index must be >= that write's index. Values are write ids, so a value
 * nobody wrote cannot pass the history check of sim_check.c.
 */
#include <string.h>

#include "sim.h"

struct sim_node* sim_leader(struct sim* s) {
    struct sim_node* best = NULL;
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        if (!sim_node_is_live(n) || n->paused ||
            raft_role(n->core) != RAFT_LEADER) {
            continue;
        }
        if (best == NULL ||
            raft_current_term(n->core) > raft_current_term(best->core)) {
            best = n;
        }
    }
    return best;
}

/* A random node that can take requests now, or NULL. */
static struct sim_node* sim_random_node(struct sim* s) {
    uint32_t start = (uint32_t)sim_rng_below(&s->rng, s->o.nodes);
    for (uint32_t k = 0; k < s->o.nodes; k++) {
        struct sim_node* n = &s->node[1 + (start + k) % s->o.nodes];
        if (sim_node_is_live(n) && !n->paused) {
            return n;
        }
    }
    return NULL;
}

int sim_client_write(struct sim* s, struct sim_node* n, size_t count) {
    if (s->rk != NULL) {
        return sim_rkv_client_write(s, n, count);
    }
    uint8_t bufs[4][SIM_WRITE_HDR + SIM_PAD_MAX];
    const uint8_t* data[4] = {NULL, NULL, NULL, NULL};
    uint32_t lens[4] = {0, 0, 0, 0};
    struct sim_write_data w[4];
    if (count > 4) {
        count = 4;
    }
    if (count == 0) {
        count = 1;
    }
    for (size_t i = 0; i < count; i++) {
        w[i].write_id = ++s->next_write_id;
        w[i].key = (uint32_t)sim_rng_below(&s->rng, s->p.keys);
        uint32_t pad = sim_rng_chance(&s->rng, 1000)
                           ? (uint32_t)sim_rng_below(&s->rng, SIM_PAD_MAX)
                           : (uint32_t)sim_rng_below(&s->rng, 16);
        lens[i] = sim_kv_encode(&w[i], pad, bufs[i]);
        data[i] = bufs[i];
    }
    raft_index first;
    raft_term term;
    int rv = raft_propose(n->core, RAFT_ENTRY_NORMAL, data, lens, count, &first,
                          &term);
    sim_trace(s, "n%llu client write id=%llu n=%zu: %s index=%llu term=%llu",
              (unsigned long long)n->id, (unsigned long long)w[0].write_id,
              count, raft_strerror(rv),
              (unsigned long long)(rv == RAFT_OK ? first : 0),
              (unsigned long long)(rv == RAFT_OK ? term : 0));
    if (rv != RAFT_OK) {
        return rv;
    }
    for (size_t i = 0; i < count && s->n_writes < SIM_MAX_WRITES; i++) {
        s->writes[s->n_writes++] = (struct sim_write){
            .write_id = w[i].write_id,
            .key = w[i].key,
            .node = n->id,
            .incarnation = n->incarnation,
            .index = first + i,
            .term = term,
        };
    }
    sim_node_pump(s, n);
    return RAFT_OK;
}

/* The write `w` was applied at its index with its term: acknowledged. */
static void sim_client_ack(struct sim* s,
                           struct sim_node* n,
                           const struct sim_write* w,
                           const struct raft_entry* e) {
    struct sim_write_data d;
    if (e->type != RAFT_ENTRY_NORMAL || !sim_kv_decode(e->data, e->len, &d) ||
        d.write_id != w->write_id) {
        sim_fail(s, "proposal-mismatch",
                 "n%llu applied %llu/%llu, which is not write %llu proposed "
                 "there",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)w->write_id);
    }
    s->stats.writes_acked++;
    if (e->index > s->acked_max[w->key]) {
        s->acked_max[w->key] = e->index;
    }
    sim_trace(s, "n%llu ack write id=%llu key=%u index=%llu",
              (unsigned long long)n->id, (unsigned long long)w->write_id,
              w->key, (unsigned long long)e->index);
    sim_check_acked(s, e->index, raft_current_term(n->core));
}

void sim_clients_applied(struct sim* s,
                         struct sim_node* n,
                         const struct raft_entry* e) {
    for (size_t i = 0; i < s->n_writes;) {
        struct sim_write* w = &s->writes[i];
        if (w->node != n->id || w->incarnation != n->incarnation ||
            w->index != e->index) {
            i++;
            continue;
        }
        if (w->term == e->term) {
            sim_client_ack(s, n, w, e);
        } else {
            s->stats.writes_failed++;
        }
        *w = s->writes[--s->n_writes];
    }
}

void sim_clients_forget(struct sim* s, struct sim_node* n, bool crashed) {
    for (size_t i = 0; i < s->n_writes;) {
        struct sim_write* w = &s->writes[i];
        if (w->node == n->id && (crashed || w->index <= n->applied)) {
            *w = s->writes[--s->n_writes];
        } else {
            i++;
        }
    }
    for (size_t i = 0; crashed && i < s->n_reads;) {
        if (s->reads[i].node == n->id) {
            s->reads[i] = s->reads[--s->n_reads];
        } else {
            i++;
        }
    }
}

static void sim_client_read(struct sim* s, struct sim_node* n) {
    if (s->n_reads == SIM_MAX_READS) {
        return;
    }
    struct sim_read r = {
        .node = n->id,
        .incarnation = n->incarnation,
        .invoked_at = s->now,
    };
    if (s->rk != NULL) {
        if (!sim_rkv_read_pick(s, &r)) {
            return; /* no entry was ever proposed */
        }
    } else {
        r.key = (uint32_t)sim_rng_below(&s->rng, s->p.keys);
        r.min_index = s->acked_max[r.key];
    }
    r.context = ++s->next_read_ctx;
    if (raft_role(n->core) == RAFT_LEADER &&
        sim_rng_chance(&s->rng, s->p.lease_bp) && raft_lease_valid(n->core)) {
        /* Lease read (thesis §6.4.1): no round trip, the commit index. */
        r.has_index = true;
        r.index = raft_commit_index(n->core);
        sim_trace(s,
                  "n%llu client lease read ctx=%llu key=%u min=%llu "
                  "index=%llu",
                  (unsigned long long)n->id, (unsigned long long)r.context,
                  r.key, (unsigned long long)r.min_index,
                  (unsigned long long)r.index);
        s->reads[s->n_reads++] = r;
        s->stats.lease_reads++;
        sim_clients_serve(s, n);
        return;
    }
    int rv = raft_read_index(n->core, r.context);
    sim_trace(s, "n%llu client read ctx=%llu key=%u min=%llu: %s",
              (unsigned long long)n->id, (unsigned long long)r.context, r.key,
              (unsigned long long)r.min_index, raft_strerror(rv));
    if (rv != RAFT_OK) {
        return;
    }
    s->reads[s->n_reads++] = r;
    sim_node_pump(s, n);
}

void sim_clients_read_ready(struct sim* s,
                            struct sim_node* n,
                            const struct raft_read_state* rs) {
    for (size_t i = 0; i < s->n_reads; i++) {
        struct sim_read* r = &s->reads[i];
        if (r->context != rs->context || r->node != n->id ||
            r->incarnation != n->incarnation) {
            continue;
        }
        sim_trace(s, "n%llu read ctx=%llu index=%llu failed=%d",
                  (unsigned long long)n->id, (unsigned long long)rs->context,
                  (unsigned long long)rs->index, rs->failed);
        if (rs->failed) {
            s->reads[i] = s->reads[--s->n_reads];
        } else {
            r->has_index = true;
            r->index = rs->index;
        }
        return;
    }
    sim_trace(s, "n%llu read ctx=%llu: unknown context, ignored",
              (unsigned long long)n->id, (unsigned long long)rs->context);
}

/* Serves read r from n's state machine and checks the value. */
static void sim_client_serve(struct sim* s,
                             struct sim_node* n,
                             const struct sim_read* r) {
    if (s->rk != NULL) {
        sim_rkv_serve(s, n, r);
        return;
    }
    const struct sim_kv_slot* sl = &n->kv.slot[r->key];
    if (sl->index < r->min_index) {
        sim_fail(
            s, "stale-read",
            "n%llu served key %u (read index %llu, invoked at tick "
            "%llu, applied %llu) with the write at index %llu, but the "
            "write at index %llu was acknowledged before",
            (unsigned long long)n->id, r->key, (unsigned long long)r->index,
            (unsigned long long)r->invoked_at, (unsigned long long)n->applied,
            (unsigned long long)sl->index, (unsigned long long)r->min_index);
    }
    if (sl->write_id != 0) {
        const struct sim_hist_ent* h = sim_hist(s, sl->index);
        if (!h->applied || sl->index > n->applied) {
            sim_fail(s, "read-unwritten",
                     "n%llu served key %u with write %llu at index %llu "
                     "outside the history",
                     (unsigned long long)n->id, r->key,
                     (unsigned long long)sl->write_id,
                     (unsigned long long)sl->index);
        }
    }
    s->stats.reads_checked++;
    sim_trace(s, "n%llu serve read ctx=%llu key=%u -> write %llu @%llu",
              (unsigned long long)n->id, (unsigned long long)r->context, r->key,
              (unsigned long long)sl->write_id, (unsigned long long)sl->index);
}

void sim_clients_serve(struct sim* s, struct sim_node* n) {
    for (size_t i = 0; i < s->n_reads;) {
        struct sim_read* r = &s->reads[i];
        if (r->node == n->id && r->has_index && n->applied >= r->index) {
            sim_client_serve(s, n, r);
            s->reads[i] = s->reads[--s->n_reads];
        } else {
            i++;
        }
    }
}

static int sim_conf_propose(struct sim* s,
                            struct sim_node* l,
                            int change,
                            raft_node_id id) {
    raft_index index = 0;
    int rv = raft_change_conf(l->core, change, id, &index);
    static const char* const names[] = {"?", "add-learner", "promote",
                                        "remove"};
    sim_trace(s, "n%llu conf %s n%llu: %s index=%llu",
              (unsigned long long)l->id, names[change], (unsigned long long)id,
              raft_strerror(rv), (unsigned long long)index);
    if (rv == RAFT_OK) {
        sim_node_pump(s, l);
    }
    return rv;
}

/* Phase 0: maybe start removing a voter other than the leader. */
static void sim_conf_start(struct sim* s,
                           struct sim_node* l,
                           const struct raft_conf* c) {
    if (s->liveness) {
        for (uint32_t i = 1; i <= s->o.nodes; i++) {
            if (raft_conf_role(c, i) != RAFT_VOTER) {
                s->conf.target = i;
                s->conf.phase = 3;
                return;
            }
        }
        return;
    }
    if (s->o.nodes < 4 || !sim_rng_chance(&s->rng, s->p.conf_bp) ||
        raft_conf_voter_count(c) <= 3) {
        return;
    }
    raft_node_id id = 1 + sim_rng_below(&s->rng, s->o.nodes);
    if (raft_conf_role(c, id) != RAFT_VOTER) { /* the leader may go too */
        return;
    }
    s->conf.target = id;
    s->conf.phase = 1;
    sim_trace(s, "conf: remove n%llu", (unsigned long long)id);
}

void sim_conf_step(struct sim* s) {
    struct sim_node* l = sim_leader(s);
    if (l == NULL) {
        return;
    }
    const struct raft_conf* c = raft_conf(l->core);
    raft_node_id id = s->conf.target;
    int role = id ? raft_conf_role(c, id) : -1;
    switch (s->conf.phase) {
        case 0:
            sim_conf_start(s, l, c);
            return;
        case 1:
            if (role < 0 || s->liveness) {
                s->conf.phase = role < 0 ? 2 : 3;
                s->conf.until = s->now + sim_rng_range(&s->rng, 20, 300);
                s->stats.conf_changes += role < 0;
            } else if (sim_rng_chance(&s->rng, 2000) &&
                       sim_conf_propose(s, l, RAFT_CONF_REMOVE, id) ==
                           RAFT_EINVAL &&
                       id == l->id) {
                /* If the core refuses to remove its own leader, hand over
                 * leadership first. */
                (void)raft_transfer_leader(l->core, 1 + id % s->o.nodes);
                sim_node_pump(s, l);
            }
            return;
        case 2:
            if (s->now >= s->conf.until || s->liveness) {
                s->conf.phase = 3;
            }
            return;
        default:
            if (role == RAFT_VOTER) {
                s->conf.phase = 0;
                s->conf.target = 0;
                s->stats.conf_changes++;
            } else if (s->liveness || sim_rng_chance(&s->rng, 2000)) {
                sim_conf_propose(
                    s, l, role < 0 ? RAFT_CONF_ADD_LEARNER : RAFT_CONF_PROMOTE,
                    id);
            }
            return;
    }
}

static void sim_client_transfer(struct sim* s) {
    struct sim_node* l = sim_leader(s);
    if (l == NULL) {
        return;
    }
    raft_node_id to = 1 + sim_rng_below(&s->rng, s->o.nodes);
    int rv = raft_transfer_leader(l->core, to);
    sim_trace(s, "n%llu transfer leadership to n%llu: %s",
              (unsigned long long)l->id, (unsigned long long)to,
              raft_strerror(rv));
    sim_node_pump(s, l);
}

void sim_clients_step(struct sim* s) {
    if (s->liveness) {
        sim_conf_step(s);
        return;
    }
    if (sim_rng_chance(&s->rng, s->p.write_bp)) {
        struct sim_node* n = sim_leader(s);
        if (n == NULL || sim_rng_chance(&s->rng, 2000)) {
            n = sim_random_node(s);
        }
        size_t count = sim_rng_chance(&s->rng, 2500)
                           ? 1 + (size_t)sim_rng_below(&s->rng, 4)
                           : 1;
        if (n != NULL) {
            (void)sim_client_write(s, n, count);
        }
    }
    if (sim_rng_chance(&s->rng, s->p.read_bp)) {
        struct sim_node* n = sim_leader(s);
        if (n == NULL || sim_rng_chance(&s->rng, 5000)) {
            n = sim_random_node(s);
        }
        if (n != NULL) {
            sim_client_read(s, n);
        }
    }
    if (sim_rng_chance(&s->rng, s->p.transfer_bp)) {
        sim_client_transfer(s);
    }
    sim_conf_step(s);
}
