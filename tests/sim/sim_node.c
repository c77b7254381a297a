/*
 * sim_node.c - the driver of one simulated server, following the DRIVER
 * CONTRACT of raft.h step by step: install a snapshot, write the hard state
 * (durable before sending when must_sync), write entries (volatile), send
 * messages, apply committed entries, answer reads, advance; later, when
 * the simulated disk completes a sync, step PERSISTED with the index and
 * term of the last durable entry.
 *
 * The disk is store_mem: each batch of entries gets a completion tick
 * (random latency, completions in order); a crash loses whatever did not
 * complete. On restart the state machine is the saved snapshot and the core
 * re-delivers the committed log after it (applied = snapshot index).
 * With --real-kv the state machine is a kv_state that survives a crash
 * (sim_rkv.c): the core restarts from the state's applied index.
 */
#include <stdio.h>
#include <string.h>

#include "sim.h"

static const struct store_ops* sim_ops(const struct sim_node* n) {
    return n->st.ops;
}

bool sim_node_is_live(const struct sim_node* n) {
    return n->up && n->core != NULL;
}

static void sim_node_config(struct sim* s,
                            struct sim_node* n,
                            struct raft_config* cfg) {
    raft_config_default(cfg, n->id);
    cfg->election_ticks = s->p.election_ticks;
    cfg->heartbeat_ticks = s->p.heartbeat_ticks;
    cfg->seed = sim_rng_next(&s->rng);
    cfg->max_inflight = s->p.max_inflight;
    cfg->max_msg_bytes = s->p.max_msg_bytes;
    if (s->p.max_uncommitted > 0) {
        cfg->max_uncommitted_entries = s->p.max_uncommitted;
    }
    cfg->pre_vote = s->p.pre_vote;
    cfg->check_quorum = s->p.check_quorum;
    cfg->mutant = s->o.mutant;
}

/* Checks what a restarted core believes against what it announced. */
static void sim_node_check_restart(struct sim* s, struct sim_node* n) {
    raft_term term = raft_current_term(n->core);
    if (term < n->term_floor) {
        sim_fail(s, "term-regressed",
                 "n%llu restarted at term %llu after announcing term %llu",
                 (unsigned long long)n->id, (unsigned long long)term,
                 (unsigned long long)n->term_floor);
    }
    if (term == n->vote_term && raft_voted_for(n->core) != n->vote_for) {
        sim_fail(s, "vote-lost",
                 "n%llu restarted in term %llu voting for n%llu, but it "
                 "granted its vote to n%llu",
                 (unsigned long long)n->id, (unsigned long long)term,
                 (unsigned long long)raft_voted_for(n->core),
                 (unsigned long long)n->vote_for);
    }
}

void sim_node_start(struct sim* s, struct sim_node* n) {
    struct raft_start_state start;
    memset(&start, 0, sizeof(start));
    if (sim_ops(n)->load(n->st.ctx, &start) != RAFT_OK) {
        sim_fail(s, "storage", "n%llu: load failed", (unsigned long long)n->id);
    }
    if (start.snapshot.index != n->snap.meta.index) {
        sim_fail(s, "sim-internal", "n%llu: store snapshot %llu, saved %llu",
                 (unsigned long long)n->id,
                 (unsigned long long)start.snapshot.index,
                 (unsigned long long)n->snap.meta.index);
    }
    start.bootstrap.count = s->o.nodes;
    for (uint32_t i = 0; i < s->o.nodes; i++) {
        start.bootstrap.ids[i] = i + 1;
        start.bootstrap.roles[i] = RAFT_VOTER;
    }
    if (s->rk != NULL) {
        sim_rkv_node_open(s, n, &start);
    }
    struct raft_config cfg;
    sim_node_config(s, n, &cfg);
    sim_ops(n)->storage(n->st.ctx, &n->view);
    int rv = raft_init(&cfg, &n->view, &start, &n->core);
    if (rv != RAFT_OK) {
        sim_fail(s, "core-error", "n%llu: raft_init: %s",
                 (unsigned long long)n->id, raft_strerror(rv));
    }
    if (s->rk == NULL) {
        n->kv = n->snap.kv;
        n->applied = start.snapshot.index;
    }
    n->incarnation++;
    n->up = true;
    n->paused = false;
    n->has_incoming = false;
    n->sync_head = n->sync_count = 0;
    n->reported_index = store_mem_durable_index(n->mem);
    raft_term t = 0;
    (void)n->view.term(n->view.ctx, n->reported_index, &t);
    n->reported_term = t;
    sim_trace(s,
              "n%llu start incarnation=%llu term=%llu vote=n%llu "
              "commit=%llu snapshot=%llu durable=%llu",
              (unsigned long long)n->id, (unsigned long long)n->incarnation,
              (unsigned long long)start.hard_state.term,
              (unsigned long long)start.hard_state.vote,
              (unsigned long long)start.hard_state.commit,
              (unsigned long long)start.snapshot.index,
              (unsigned long long)n->reported_index);
    sim_node_check_restart(s, n);
    n->seen_term = raft_current_term(n->core);
    n->seen_commit = raft_commit_index(n->core);
    n->seen_leader = false;
    sim_node_pump(s, n);
}

void sim_node_crash(struct sim* s, struct sim_node* n) {
    sim_trace(s, "n%llu crash (durable=%llu written=%llu)",
              (unsigned long long)n->id,
              (unsigned long long)store_mem_durable_index(n->mem),
              (unsigned long long)store_mem_last_index(n->mem));
    raft_close(n->core);
    n->core = NULL;
    n->up = false;
    n->paused = false;
    store_mem_crash(n->mem);
    n->sync_count = 0;
    n->has_incoming = false;
    sim_blob_release(n->incoming.blob);
    n->incoming.blob = NULL;
    if (s->rk != NULL) {
        sim_rkv_node_crash(s, n);
    }
    sim_clients_forget(s, n, true);
    s->stats.crashes++;
}

void sim_nodes_init(struct sim* s) {
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        n->id = i;
        if (store_mem_init(0, &n->mem) != RAFT_OK) {
            sim_fail(s, "sim-internal", "out of memory");
        }
        store_mem_store(n->mem, &n->st);
    }
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        sim_node_start(s, &s->node[i]);
    }
}

void sim_nodes_close(struct sim* s) {
    for (uint32_t i = 1; i <= SIM_MAX_NODES; i++) {
        raft_close(s->node[i].core);
        s->node[i].core = NULL;
        store_mem_close(s->node[i].mem);
        s->node[i].mem = NULL;
        sim_blob_release(s->node[i].snap.blob);
        s->node[i].snap.blob = NULL;
        sim_blob_release(s->node[i].incoming.blob);
        s->node[i].incoming.blob = NULL;
    }
}

void sim_node_step(struct sim* s,
                   struct sim_node* n,
                   const struct raft_event* ev) {
    int rv = raft_step(n->core, ev);
    if (rv != RAFT_OK) {
        sim_trace(s, "n%llu step type=%u: %s", (unsigned long long)n->id,
                  ev->type, raft_strerror(rv));
        if (rv == RAFT_ESTORAGE || rv == RAFT_ENOMEM) {
            sim_fail(s, "core-error", "n%llu: raft_step(type %u): %s",
                     (unsigned long long)n->id, ev->type, raft_strerror(rv));
        }
    }
    sim_node_pump(s, n);
}

/* Step 1: a snapshot from the leader replaces state machine and log. */
static void sim_node_install(struct sim* s,
                             struct sim_node* n,
                             const struct raft_snapshot_meta* meta) {
    if (!n->has_incoming || n->incoming.meta.index != meta->index ||
        n->incoming.meta.term != meta->term) {
        sim_fail(
            s, "snapshot-data",
            "n%llu must install snapshot %llu/%llu but received %llu",
            (unsigned long long)n->id, (unsigned long long)meta->index,
            (unsigned long long)meta->term,
            (unsigned long long)(n->has_incoming ? n->incoming.meta.index : 0));
    }
    if (meta->index <= n->applied) {
        sim_fail(s, "snapshot-regress",
                 "n%llu installs snapshot %llu with applied %llu",
                 (unsigned long long)n->id, (unsigned long long)meta->index,
                 (unsigned long long)n->applied);
    }
    sim_check_snapshot(s, n, &n->incoming, "installed");
    if (s->rk != NULL) {
        sim_rkv_install(s, n, meta);
    }
    if (sim_ops(n)->install_snapshot(n->st.ctx, meta) != RAFT_OK) {
        sim_fail(s, "storage", "n%llu: install_snapshot %llu refused",
                 (unsigned long long)n->id, (unsigned long long)meta->index);
    }
    n->snap.meta = *meta;
    n->snap.kv = n->incoming.kv;
    sim_blob_release(n->snap.blob);
    n->snap.blob = n->incoming.blob; /* the reference moves */
    n->incoming.blob = NULL;
    n->snap.rk = n->incoming.rk;
    n->kv = n->incoming.kv;
    n->applied = meta->index;
    n->handed = meta->index;
    n->has_incoming = false;
    n->reported_index = meta->index;
    n->reported_term = meta->term;
    sim_clients_forget(s, n, false);
    s->stats.snapshots_installed++;
    sim_trace(s, "n%llu install snapshot %llu/%llu", (unsigned long long)n->id,
              (unsigned long long)meta->index, (unsigned long long)meta->term);
}

/* Step 3: entries go to the disk now, durable after a latency. */
static void sim_node_write(struct sim* s,
                           struct sim_node* n,
                           const struct raft_entry* ents,
                           size_t count) {
    if (!s->bench) {
        sim_check_written(s, n, ents, count);
    }
    int rv = sim_ops(n)->append(n->st.ctx, ents, count);
    if (rv != RAFT_OK) {
        sim_fail(s, "storage", "n%llu: append %llu..%llu: %s",
                 (unsigned long long)n->id, (unsigned long long)ents[0].index,
                 (unsigned long long)ents[count - 1].index, raft_strerror(rv));
    }
    uint64_t at = s->now + sim_rng_range(&s->rng, s->p.disk_min, s->p.disk_max);
    if (n->sync_count > 0) {
        const struct sim_sync* last =
            &n->syncs[(n->sync_head + n->sync_count - 1) % SIM_MAX_SYNCS];
        if (at < last->at) {
            at = last->at; /* the disk completes in order */
        }
    }
    if (n->sync_count == SIM_MAX_SYNCS) {
        struct sim_sync* last =
            &n->syncs[(n->sync_head + n->sync_count - 1) % SIM_MAX_SYNCS];
        last->upto = ents[count - 1].index;
        return;
    }
    struct sim_sync* sy =
        &n->syncs[(n->sync_head + n->sync_count) % SIM_MAX_SYNCS];
    sy->at = at;
    sy->upto = ents[count - 1].index;
    n->sync_count++;
}

/* The contract's durability point: what may leave before a sync. */
static void sim_node_check_send(struct sim* s,
                                struct sim_node* n,
                                const struct raft_message* m) {
    if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_PREVOTE_RESP) {
        return; /* pre-votes announce a prospective term (thesis 9.6) */
    }
    struct raft_hard_state hs = store_mem_durable_hard_state(n->mem);
    if (m->term > hs.term) {
        sim_fail(s, "durable-before-send",
                 "n%llu sent %s in term %llu, durable term is %llu",
                 (unsigned long long)n->id, raft_msg_type_name((int)m->type),
                 (unsigned long long)m->term, (unsigned long long)hs.term);
    }
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject) {
        if (hs.term != m->term || hs.vote != m->to) {
            sim_fail(s, "durable-before-send",
                     "n%llu granted its vote to n%llu in term %llu, durable "
                     "vote is n%llu in term %llu",
                     (unsigned long long)n->id, (unsigned long long)m->to,
                     (unsigned long long)m->term, (unsigned long long)hs.vote,
                     (unsigned long long)hs.term);
        }
        n->vote_term = m->term;
        n->vote_for = m->to;
    }
    raft_index durable = store_mem_durable_index(n->mem);
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index > durable) {
        sim_fail(s, "durable-before-send",
                 "n%llu acknowledged entries up to %llu, durable only to %llu",
                 (unsigned long long)n->id, (unsigned long long)m->index,
                 (unsigned long long)durable);
    }
    if (m->term > n->term_floor) {
        n->term_floor = m->term;
    }
}

/* Step 4: send; a snapshot message carries the saved snapshot. */
static void sim_node_send(struct sim* s,
                          struct sim_node* n,
                          const struct raft_message* m) {
    sim_node_check_send(s, n, m);
    sim_trace(s,
              "n%llu send %s to n%llu term=%llu log=%llu/%llu commit=%llu "
              "n=%u reject=%d hint=%llu ctx=%llu",
              (unsigned long long)n->id, raft_msg_type_name((int)m->type),
              (unsigned long long)m->to, (unsigned long long)m->term,
              (unsigned long long)m->index, (unsigned long long)m->log_term,
              (unsigned long long)m->commit, m->n_entries, m->reject,
              (unsigned long long)m->reject_hint,
              (unsigned long long)m->context);
    const struct sim_snap* snap = NULL;
    if (m->type == RAFT_MSG_SNAPSHOT) {
        if (m->snapshot.index != n->snap.meta.index ||
            m->snapshot.term != n->snap.meta.term) {
            sim_fail(s, "snapshot-data",
                     "n%llu sends snapshot %llu/%llu but saved %llu/%llu",
                     (unsigned long long)n->id,
                     (unsigned long long)m->snapshot.index,
                     (unsigned long long)m->snapshot.term,
                     (unsigned long long)n->snap.meta.index,
                     (unsigned long long)n->snap.meta.term);
        }
        snap = &n->snap;
        if (s->rk != NULL && snap->blob == NULL) {
            sim_fail(s, "snapshot-data",
                     "n%llu sends snapshot %llu without data",
                     (unsigned long long)n->id,
                     (unsigned long long)m->snapshot.index);
        }
    }
    sim_net_send(s, m, snap);
}

/* Step 5: apply committed entries in order. */
static void sim_node_apply(struct sim* s,
                           struct sim_node* n,
                           const struct raft_entry* e) {
    if (e->index != n->applied + 1) {
        sim_fail(s, "apply-order", "n%llu applies %llu after %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)n->applied);
    }
    if (e->index > store_mem_durable_index(n->mem)) {
        sim_fail(s, "apply-not-durable",
                 "n%llu applies %llu, durable only to %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)store_mem_durable_index(n->mem));
    }
    if (s->bench) {
        n->applied = e->index;
        return;
    }
    if (!sim_kv_apply(&n->kv, e)) {
        sim_fail(s, "bad-entry", "n%llu applies malformed entry %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index);
    }
    n->applied = e->index;
    sim_check_applied(s, n, e);
    sim_clients_applied(s, n, e);
}

/* After applying: save a snapshot every `snapshot_every` entries. */
static void sim_node_maybe_snapshot(struct sim* s, struct sim_node* n) {
    if (n->applied < n->snap.meta.index + s->p.snapshot_every) {
        return;
    }
    if (s->rk != NULL && n->handed < n->applied) {
        return; /* the core re-hands entries the state holds: wait */
    }
    struct raft_snapshot_meta meta;
    int rv = raft_snapshot_taken(n->core, n->applied, &meta);
    if (rv != RAFT_OK) {
        sim_fail(s, "core-error", "n%llu: raft_snapshot_taken(%llu): %s",
                 (unsigned long long)n->id, (unsigned long long)n->applied,
                 raft_strerror(rv));
    }
    struct sim_snap snap = {.meta = meta, .kv = n->kv};
    if (meta.index != n->applied) {
        sim_fail(s, "core-error", "n%llu: snapshot at %llu has index %llu",
                 (unsigned long long)n->id, (unsigned long long)n->applied,
                 (unsigned long long)meta.index);
    }
    if (s->rk != NULL) {
        sim_rkv_snapshot(s, n, &snap); /* snap owns a blob reference */
    }
    if (!s->bench) {
        sim_check_snapshot(s, n, &snap, "taken");
    }
    raft_index keep = sim_rng_below(&s->rng, 9);
    raft_index upto = meta.index > keep ? meta.index - keep : 0;
    raft_index first = store_mem_first_index(n->mem);
    if (upto + 1 < first) {
        upto = first - 1;
    }
    sim_blob_release(n->snap.blob);
    n->snap = snap;
    rv = sim_ops(n)->compact(n->st.ctx, &meta, upto);
    if (rv != RAFT_OK) {
        sim_fail(s, "storage", "n%llu: compact to %llu (snapshot %llu): %s",
                 (unsigned long long)n->id, (unsigned long long)upto,
                 (unsigned long long)meta.index, raft_strerror(rv));
    }
    s->stats.snapshots_taken++;
    sim_trace(s, "n%llu snapshot %llu/%llu compact to %llu",
              (unsigned long long)n->id, (unsigned long long)meta.index,
              (unsigned long long)meta.term, (unsigned long long)upto);
}

static void sim_node_trace_ready(struct sim* s,
                                 struct sim_node* n,
                                 const struct raft_ready* rd) {
    if (!s->o.trace) {
        return;
    }
    sim_trace(
        s,
        "n%llu ready hs=%d(%llu/n%llu/%llu) sync=%d snap=%llu "
        "ents=%zu(%llu..) msgs=%zu committed=%zu(%llu..) reads=%zu",
        (unsigned long long)n->id, rd->hard_state_changed,
        (unsigned long long)rd->hard_state.term,
        (unsigned long long)rd->hard_state.vote,
        (unsigned long long)rd->hard_state.commit, rd->must_sync,
        (unsigned long long)(rd->snapshot ? rd->snapshot->index : 0),
        rd->n_entries,
        (unsigned long long)(rd->n_entries ? rd->entries[0].index : 0),
        rd->n_messages, rd->n_committed,
        (unsigned long long)(rd->n_committed ? rd->committed[0].index : 0),
        rd->n_reads);
}

/* One ready batch, in the order of the driver contract. */
static void sim_node_ready(struct sim* s, struct sim_node* n) {
    struct raft_ready rd;
    raft_ready(n->core, &rd);
    sim_node_trace_ready(s, n, &rd);
    if (rd.snapshot != NULL) {
        sim_node_install(s, n, rd.snapshot);
    }
    if (rd.hard_state_changed) {
        sim_ops(n)->save_hard_state(n->st.ctx, &rd.hard_state);
        if (rd.must_sync) {
            store_mem_sync_hard_state(n->mem);
        }
    }
    if (rd.n_entries > 0) {
        sim_node_write(s, n, rd.entries, rd.n_entries);
    }
    for (size_t i = 0; i < rd.n_messages; i++) {
        sim_node_send(s, n, &rd.messages[i]);
    }
    if (s->rk != NULL) {
        sim_rkv_apply(s, n, rd.committed, rd.n_committed);
    } else {
        for (size_t i = 0; i < rd.n_committed; i++) {
            sim_node_apply(s, n, &rd.committed[i]);
        }
    }
    for (size_t i = 0; i < rd.n_reads; i++) {
        sim_clients_read_ready(s, n, &rd.reads[i]);
    }
    raft_advance(n->core);
    sim_node_maybe_snapshot(s, n);
    sim_clients_serve(s, n);
}

/* Step 6: a sync completed; report the last durable entry. */
static void sim_node_sync(struct sim* s, struct sim_node* n) {
    struct sim_sync sy = n->syncs[n->sync_head];
    n->sync_head = (n->sync_head + 1) % SIM_MAX_SYNCS;
    n->sync_count--;
    raft_index di;
    raft_term dt;
    store_mem_sync_to(n->mem, sy.upto, &di, &dt);
    if (di == n->reported_index && dt == n->reported_term) {
        return;
    }
    n->reported_index = di;
    n->reported_term = dt;
    sim_trace(s, "n%llu persisted %llu/%llu", (unsigned long long)n->id,
              (unsigned long long)di, (unsigned long long)dt);
    struct raft_event ev = {
        .type = RAFT_EVENT_PERSISTED, .index = di, .term = dt};
    int rv = raft_step(n->core, &ev);
    if (rv != RAFT_OK) {
        sim_trace(s, "n%llu persisted: %s", (unsigned long long)n->id,
                  raft_strerror(rv));
        if (rv == RAFT_ESTORAGE || rv == RAFT_ENOMEM) {
            sim_fail(s, "core-error", "n%llu: PERSISTED %llu/%llu: %s",
                     (unsigned long long)n->id, (unsigned long long)di,
                     (unsigned long long)dt, raft_strerror(rv));
        }
    }
}

void sim_node_pump(struct sim* s, struct sim_node* n) {
    for (;;) {
        if (!sim_node_is_live(n)) {
            return;
        }
        if (raft_has_ready(n->core)) {
            sim_node_ready(s, n);
        } else if (n->sync_count > 0 && n->syncs[n->sync_head].at <= s->now) {
            sim_node_sync(s, n);
        } else {
            break;
        }
        if (!s->bench) {
            sim_check_node(s, n);
        }
    }
    if (!s->bench) {
        sim_check_node(s, n);
    }
}
