/*
 * sim_net.c - the simulated network. Messages are deep-copied when a core
 * sends them (the core's buffers are borrowed only until raft_advance) and
 * wait in a min-heap ordered by (delivery tick, send order). Drops,
 * duplicates and delays are drawn from the seed's rates; cuts (partitions)
 * are checked both at send and at delivery. A paused node's incoming
 * messages wait until it resumes. Snapshot transfers and send failures are
 * reported back to the sender as SNAPSHOT_DONE / UNREACHABLE events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static void* sim_xmalloc(size_t size) {
    void* p = malloc(size);
    if (p == NULL) {
        fprintf(stderr, "skein-sim: out of memory\n");
        abort();
    }
    return p;
}

/* Deep copy of `m`: one allocation for the message, entries and data. */
static struct sim_msg* sim_msg_copy(const struct raft_message* m) {
    size_t data = 0;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        data += m->entries[i].len;
    }
    size_t ents = (size_t)m->n_entries * sizeof(struct raft_entry);
    struct sim_msg* c = sim_xmalloc(sizeof(*c) + ents + data);
    memset(c, 0, sizeof(*c));
    c->m = *m;
    uint8_t* p = (uint8_t*)c->ents + ents;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        c->ents[i] = m->entries[i];
        if (m->entries[i].len > 0) {
            memcpy(p, m->entries[i].data, m->entries[i].len);
        }
        c->ents[i].data = p;
        p += m->entries[i].len;
    }
    c->m.entries = m->n_entries > 0 ? c->ents : NULL;
    return c;
}

/* Frees a message and its reference to a snapshot's bytes. */
static void sim_msg_free(struct sim_msg* c) {
    if (c != NULL) {
        sim_blob_release(c->snap.blob);
        free(c);
    }
}

static bool sim_msg_before(const struct sim_msg* a, const struct sim_msg* b) {
    if (a->deliver_at != b->deliver_at) {
        return a->deliver_at < b->deliver_at;
    }
    return a->seq < b->seq;
}

static void sim_heap_push(struct sim_net* net, struct sim_msg* msg) {
    if (net->n == net->cap) {
        size_t cap = net->cap ? net->cap * 2 : 256;
        struct sim_msg** h = realloc(net->heap, cap * sizeof(*h));
        if (h == NULL) {
            abort();
        }
        net->heap = h;
        net->cap = cap;
    }
    size_t i = net->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!sim_msg_before(msg, net->heap[parent])) {
            break;
        }
        net->heap[i] = net->heap[parent];
        i = parent;
    }
    net->heap[i] = msg;
}

static struct sim_msg* sim_heap_pop(struct sim_net* net) {
    struct sim_msg* top = net->heap[0];
    struct sim_msg* last = net->heap[--net->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= net->n) {
            break;
        }
        if (child + 1 < net->n &&
            sim_msg_before(net->heap[child + 1], net->heap[child])) {
            child++;
        }
        if (!sim_msg_before(net->heap[child], last)) {
            break;
        }
        net->heap[i] = net->heap[child];
        i = child;
    }
    if (net->n > 0) {
        net->heap[i] = last;
    }
    return top;
}

void sim_net_close(struct sim_net* net) {
    for (size_t i = 0; i < net->n; i++) {
        sim_msg_free(net->heap[i]);
    }
    for (size_t i = 0; i < net->n_held; i++) {
        sim_msg_free(net->held[i]);
    }
    sim_msg_free(net->current);
    free(net->heap);
    free(net->held);
    memset(net, 0, sizeof(*net));
}

void sim_net_heal(struct sim_net* net) {
    memset(net->cut, 0, sizeof(net->cut));
}

bool sim_net_is_cut(const struct sim_net* net) {
    for (size_t a = 0; a <= SIM_MAX_NODES; a++) {
        for (size_t b = 0; b <= SIM_MAX_NODES; b++) {
            if (net->cut[a][b]) {
                return true;
            }
        }
    }
    return false;
}

/* Queues a report for node `to` about `peer`, delivered next tick. */
static void sim_net_report(struct sim* s,
                           uint32_t type,
                           raft_node_id to,
                           raft_node_id peer,
                           bool failed) {
    struct sim_msg* r = sim_xmalloc(sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->m.type = type;
    r->m.to = to;
    r->m.from = peer;
    r->m.reject = failed;
    r->incarnation = s->node[to].incarnation;
    r->deliver_at = s->now + 1;
    r->seq = s->net.seq++;
    sim_heap_push(&s->net, r);
}

/* A message is lost: a snapshot transfer reports its failure. */
static void sim_net_lost(struct sim* s,
                         const struct raft_message* m,
                         const char* why) {
    sim_trace(s, "net %s n%llu->n%llu %s term=%llu", why,
              (unsigned long long)m->from, (unsigned long long)m->to,
              raft_msg_type_name((int)m->type), (unsigned long long)m->term);
    if (m->type == RAFT_MSG_SNAPSHOT) {
        sim_net_report(s, SIM_REPORT_SNAPSHOT_DONE, m->from, m->to, true);
    }
}

static void sim_net_enqueue(struct sim* s,
                            const struct raft_message* m,
                            const struct sim_snap* snap) {
    if (s->net.n >= SIM_MAX_MSGS) {
        sim_net_lost(s, m, "overflow");
        return;
    }
    struct sim_msg* c = sim_msg_copy(m);
    if (snap != NULL) {
        c->has_snap = true;
        c->snap = *snap;
        sim_blob_retain(c->snap.blob);
    }
    c->deliver_at =
        s->now + sim_rng_range(&s->rng, s->p.delay_min, s->p.delay_max);
    c->seq = s->net.seq++;
    sim_heap_push(&s->net, c);
}

void sim_net_send(struct sim* s,
                  const struct raft_message* m,
                  const struct sim_snap* snap) {
    if (m->to == 0 || m->to > s->o.nodes || m->from == m->to) {
        sim_fail(s, "bad-message", "n%llu sent %s to n%llu",
                 (unsigned long long)m->from, raft_msg_type_name((int)m->type),
                 (unsigned long long)m->to);
    }
    const struct sim_node* dst = &s->node[m->to];
    if (!dst->up && sim_rng_chance(&s->rng, 5000)) {
        sim_net_report(s, SIM_REPORT_UNREACHABLE, m->from, m->to, true);
    }
    if (!s->liveness && sim_rng_chance(&s->rng, s->p.drop_bp)) {
        sim_net_lost(s, m, "drop");
        return;
    }
    if (s->net.cut[m->from][m->to]) {
        sim_net_lost(s, m, "cut");
        return;
    }
    sim_net_enqueue(s, m, snap);
    if (!s->liveness && sim_rng_chance(&s->rng, s->p.dup_bp)) {
        sim_trace(s, "net dup n%llu->n%llu %s", (unsigned long long)m->from,
                  (unsigned long long)m->to, raft_msg_type_name((int)m->type));
        sim_net_enqueue(s, m, snap);
    }
}

/* Steps an internal report into its target, if it still runs. */
static void sim_net_deliver_report(struct sim* s, const struct sim_msg* r) {
    struct sim_node* n = &s->node[r->m.to];
    if (!sim_node_is_live(n) || n->incarnation != r->incarnation) {
        return;
    }
    struct raft_event ev = {.peer = r->m.from, .ok = !r->m.reject};
    ev.type = r->m.type == SIM_REPORT_SNAPSHOT_DONE ? RAFT_EVENT_SNAPSHOT_DONE
                                                    : RAFT_EVENT_UNREACHABLE;
    sim_trace(
        s, "n%llu event %s peer=n%llu ok=%d", (unsigned long long)n->id,
        ev.type == RAFT_EVENT_SNAPSHOT_DONE ? "snapshot-done" : "unreachable",
        (unsigned long long)ev.peer, ev.ok);
    sim_node_step(s, n, &ev);
}

/* Delivers one raft message; returns false if it must wait (paused). */
static bool sim_net_deliver_one(struct sim* s, struct sim_msg* c) {
    struct sim_node* n = &s->node[c->m.to];
    if (!n->up) {
        sim_net_lost(s, &c->m, "down");
        return true;
    }
    if (n->paused) {
        return false;
    }
    if (s->net.cut[c->m.from][c->m.to]) {
        sim_net_lost(s, &c->m, "cut");
        return true;
    }
    if (c->m.type == RAFT_MSG_SNAPSHOT && c->has_snap) {
        sim_blob_release(n->incoming.blob);
        n->incoming = c->snap;
        sim_blob_retain(n->incoming.blob);
        n->has_incoming = true;
    }
    sim_trace(s,
              "n%llu recv %s from n%llu term=%llu log=%llu/%llu commit=%llu "
              "n=%u reject=%d hint=%llu ctx=%llu",
              (unsigned long long)n->id, raft_msg_type_name((int)c->m.type),
              (unsigned long long)c->m.from, (unsigned long long)c->m.term,
              (unsigned long long)c->m.index, (unsigned long long)c->m.log_term,
              (unsigned long long)c->m.commit, c->m.n_entries, c->m.reject,
              (unsigned long long)c->m.reject_hint,
              (unsigned long long)c->m.context);
    s->stats.messages++;
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &c->m};
    sim_node_step(s, n, &ev);
    if (c->m.type == RAFT_MSG_SNAPSHOT) {
        sim_net_report(s, SIM_REPORT_SNAPSHOT_DONE, c->m.from, c->m.to, false);
    }
    return true;
}

/* Keeps a message for a paused node until the next tick. */
static void sim_net_hold(struct sim_net* net, struct sim_msg* c) {
    if (net->n_held == net->held_cap) {
        size_t cap = net->held_cap ? net->held_cap * 2 : 64;
        struct sim_msg** l = realloc(net->held, cap * sizeof(*l));
        if (l == NULL) {
            abort();
        }
        net->held = l;
        net->held_cap = cap;
    }
    net->held[net->n_held++] = c;
}

void sim_net_deliver(struct sim* s) {
    struct sim_net* net = &s->net;
    while (net->n > 0 && net->heap[0]->deliver_at <= s->now) {
        struct sim_msg* c = sim_heap_pop(net);
        net->current = c; /* freed by sim_net_close if a check fails */
        bool done = true;
        if (c->m.type >= SIM_REPORT_SNAPSHOT_DONE) {
            sim_net_deliver_report(s, c);
        } else {
            done = sim_net_deliver_one(s, c);
        }
        net->current = NULL;
        if (done) {
            sim_msg_free(c);
        } else {
            sim_net_hold(net, c);
        }
    }
    for (size_t i = 0; i < net->n_held; i++) {
        net->held[i]->deliver_at = s->now + 1;
        sim_heap_push(net, net->held[i]);
    }
    net->n_held = 0;
}
