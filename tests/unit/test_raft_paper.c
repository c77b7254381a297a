/*
 * test_raft_paper.c - the consensus core against the rules of the Raft
 * paper ("In Search of an Understandable Consensus Algorithm", extended
 * version) and of Ongaro's thesis ("Consensus: Bridging Theory and
 * Practice"). Each test is named after the section whose rule it checks and
 * quotes that rule, in the manner of etcd's raft_paper_test.go.
 *
 * THE HARNESS
 * -----------
 * A few real cores (ids 1..N) run over a deterministic, in-process message
 * queue. Each node has a trivial in-memory raft_storage. The harness is the
 * driver of raft.h, and follows its DRIVER CONTRACT to the letter for every
 * ready batch: install the snapshot, write the hard state, write the
 * entries (replacing the suffix from entries[0].index), queue the messages,
 * apply the committed entries, record the reads, raft_advance(), then make
 * the entries durable and step RAFT_EVENT_PERSISTED for the last one. A node
 * can delay that last part (h_set_delay_persist) to model a slow disk.
 *
 * The network is a FIFO queue delivered one message at a time
 * (h_deliver_one) or until quiet (h_stabilize). Links are cut per
 * direction (drop[from][to]); h_isolate cuts a node from everyone. A test
 * may install a filter that sees (and may alter or drop) every message at
 * delivery. Nothing is random except the cores' own seeded PRNGs, whose
 * seeds are fixed per test.
 *
 * After every step the harness checks, besides raft_check_invariants():
 *  - term and commit index never go back; at most one leader per term;
 *  - log terms never decrease along the log and never exceed the term;
 *  - the driver contract as seen from outside: a term or vote change is
 *    marked must_sync; no message carries a term that is not in the hard
 *    state of its batch; a granted vote is in that hard state; an append is
 *    acknowledged only up to entries already durable; only durable entries
 *    are handed out as committed; storage is never asked for an index it
 *    does not hold;
 *  - State Machine Safety: all nodes apply the same entry (term and data)
 *    at each index, each node in order without gaps.
 * A violation fails the test with the node and the rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

#define H_MAX_NODES       8      /* node ids 1..H_MAX_NODES */
#define H_ET              10     /* election timeout in ticks */
#define H_HB              1      /* heartbeat interval in ticks */
#define H_MAX_DELIVER     200000 /* messages per stabilize before giving up */
#define H_MAX_PENDING     512  /* ready batches awaiting persistence per node */
#define H_MAX_READS       64   /* read results remembered per node */
#define H_MAX_TERM        4096 /* terms tracked by the one-leader check */
#define H_MAX_LOG_CHECK   4096 /* longest log scanned by the log check */
#define H_MAX_ENTRY_BYTES 1024 /* max_entry_bytes of every core */

/* ---- harness data ----------------------------------------------------- */

struct h_store {
    raft_index snap_index;   /* compaction boundary */
    raft_term snap_term;     /* term at snap_index */
    struct raft_entry* ents; /* ents[i].index == snap_index + 1 + i */
    size_t n;                /* entries held */
    size_t cap;              /* entries allocated */
    unsigned bad_requests;   /* calls for indexes beyond the log */
};

struct h_batch {
    struct raft_entry* ents; /* owned copies, data included */
    size_t n;
};

struct h_node {
    raft_node_id id;
    struct raft* r; /* NULL when the slot is unused */
    struct h_store store;
    struct raft_storage storage;
    struct raft_hard_state hs; /* hard state as last written */
    bool delay_persist;        /* keep entries pending until h_persist */
    struct h_batch pending[H_MAX_PENDING];
    size_t n_pending;
    raft_index applied; /* last index applied by the harness */
    struct raft_read_state reads[H_MAX_READS];
    size_t n_reads;
    raft_term max_term;    /* highest term observed, for monotonicity */
    raft_index max_commit; /* highest commit observed */
    unsigned must_sync;    /* ready batches with must_sync */
    unsigned step_errors;  /* non-OK returns on delivered messages */
    unsigned snapshots;    /* snapshots installed */
};

struct h_msg {
    struct raft_message m;
    struct raft_entry* ents; /* owned copies */
    size_t n_ents;           /* allocated length of ents */
};

struct harness;
/* Sees every message at delivery; return false to drop it. */
typedef bool (*h_filter_fn)(struct harness* h, struct raft_message* m);

struct h_committed {
    raft_term term;
    uint64_t hash; /* FNV-1a of type and data */
    bool set;
};

struct h_opts {
    size_t n;          /* nodes 1..n, all voters */
    bool pre_vote;     /* thesis §9.6 */
    bool check_quorum; /* thesis §6.2 */
    uint64_t seed;     /* base of the per-node PRNG seeds */
};

struct harness {
    struct h_opts opts;
    struct h_node nodes[H_MAX_NODES + 1];
    struct h_msg* q; /* FIFO: q[q_head .. q_len) */
    size_t q_head;
    size_t q_len;
    size_t q_cap;
    bool drop[H_MAX_NODES + 1][H_MAX_NODES + 1]; /* [from][to] */
    h_filter_fn filter;
    raft_node_id filter_node; /* parameter of the filter */
    unsigned filter_budget;   /* messages a one-shot filter may drop */
    raft_index filter_index;  /* parameter of the filter */
    /* Called with every ready batch before the driver handles it. */
    void (*ready_hook)(struct harness* h,
                       struct h_node* nd,
                       const struct raft_ready* rd);
    struct raft_ready last_grant; /* copy of the batch of the last grant */
    raft_node_id last_grant_by;   /* node that sent it, 0 = none */
    /* delivered[from][to][type] and rejected appends, for round counting */
    unsigned delivered[H_MAX_NODES + 1][H_MAX_NODES + 1][RAFT_MSG_TYPE_MAX];
    unsigned append_rejects[H_MAX_NODES + 1][H_MAX_NODES + 1];
    raft_node_id leader_of_term[H_MAX_TERM];
    struct h_committed* committed; /* by index, State Machine Safety */
    size_t committed_cap;
};

static bool h_verbose;
static int h_mutant; /* H_MUTANT=n runs every core with a planted bug */

/* ---- small utilities -------------------------------------------------- */

static void h_fail(const char* fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void h_fail(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fail_msg("harness: %s", buf);
    abort(); /* not reached: fail_msg leaves the test */
}

static void* h_alloc(size_t n) {
    void* p = calloc(1, n ? n : 1);
    if (p == NULL) {
        h_fail("out of memory");
    }
    return p;
}

static uint64_t h_hash(uint32_t type, const uint8_t* data, uint32_t len) {
    uint64_t x = 1469598103934665603ULL ^ type;
    for (uint32_t i = 0; i < len; i++) {
        x = (x ^ data[i]) * 1099511628211ULL;
    }
    return x;
}

static void h_entry_copy(struct raft_entry* dst, const struct raft_entry* src) {
    *dst = *src;
    if (src->len > 0) {
        uint8_t* d = h_alloc(src->len);
        memcpy(d, src->data, src->len);
        dst->data = d;
    } else {
        dst->data = NULL;
    }
}

static void h_entry_free(struct raft_entry* e) {
    free((void*)(uintptr_t)e->data);
    e->data = NULL;
}

static struct h_node* h_node(struct harness* h, raft_node_id id) {
    if (id == 0 || id > H_MAX_NODES || h->nodes[id].r == NULL) {
        h_fail("no node %llu", (unsigned long long)id);
    }
    return &h->nodes[id];
}

static struct raft* h_r(struct harness* h, raft_node_id id) {
    return h_node(h, id)->r;
}

/* ---- in-memory storage ------------------------------------------------ */

static raft_index st_first_index(void* ctx) {
    struct h_store* s = ctx;
    return s->snap_index + 1;
}

static raft_index st_last_index(void* ctx) {
    struct h_store* s = ctx;
    return s->snap_index + s->n;
}

static int st_term(void* ctx, raft_index index, raft_term* out) {
    struct h_store* s = ctx;
    if (index < s->snap_index) {
        return RAFT_ECOMPACTED;
    }
    if (index == s->snap_index) {
        *out = s->snap_term;
        return RAFT_OK;
    }
    if (index > st_last_index(s)) {
        s->bad_requests++;
        return RAFT_EINVAL;
    }
    *out = s->ents[index - s->snap_index - 1].term;
    return RAFT_OK;
}

static int st_entries(void* ctx,
                      raft_index lo,
                      raft_index hi,
                      size_t max_bytes,
                      struct raft_entry* out,
                      size_t* n) {
    struct h_store* s = ctx;
    if (lo <= s->snap_index) {
        return RAFT_ECOMPACTED;
    }
    if (hi <= lo || hi > st_last_index(s) + 1) {
        s->bad_requests++;
        return RAFT_EINVAL;
    }
    size_t k = 0;
    size_t bytes = 0;
    for (raft_index i = lo; i < hi; i++) {
        const struct raft_entry* e = &s->ents[i - s->snap_index - 1];
        if (k > 0 && bytes + e->len > max_bytes) {
            break;
        }
        out[k++] = *e;
        bytes += e->len;
    }
    *n = k;
    return RAFT_OK;
}

static void st_truncate(struct h_store* s, raft_index from) {
    while (s->n > 0 && st_last_index(s) >= from) {
        h_entry_free(&s->ents[--s->n]);
    }
}

/* Step 3 of the contract: replace the suffix from ents[0].index. */
static void st_write(struct h_store* s,
                     const struct raft_entry* ents,
                     size_t n) {
    if (n == 0) {
        return;
    }
    if (ents[0].index <= s->snap_index ||
        ents[0].index > st_last_index(s) + 1) {
        h_fail("write at %llu into log [%llu, %llu]",
               (unsigned long long)ents[0].index,
               (unsigned long long)s->snap_index + 1,
               (unsigned long long)st_last_index(s));
    }
    st_truncate(s, ents[0].index);
    if (s->n + n > s->cap) {
        size_t cap = (s->n + n) * 2;
        struct raft_entry* p = realloc(s->ents, cap * sizeof(*p));
        if (p == NULL) {
            h_fail("out of memory");
        }
        s->ents = p;
        s->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        if (ents[i].index != ents[0].index + i) {
            h_fail("entries batch not contiguous at %zu", i);
        }
        h_entry_copy(&s->ents[s->n++], &ents[i]);
    }
}

/* Drops entries up to `index` (a snapshot covers them). */
static void st_compact(struct h_store* s, raft_index index, raft_term term) {
    if (index <= s->snap_index || index > st_last_index(s)) {
        h_fail("compact to %llu", (unsigned long long)index);
    }
    size_t drop = (size_t)(index - s->snap_index);
    for (size_t i = 0; i < drop; i++) {
        h_entry_free(&s->ents[i]);
    }
    memmove(s->ents, s->ents + drop, (s->n - drop) * sizeof(*s->ents));
    s->n -= drop;
    s->snap_index = index;
    s->snap_term = term;
}

/* Step 1 of the contract: the snapshot replaces the whole log. */
static void st_install(struct h_store* s, raft_index index, raft_term term) {
    st_truncate(s, s->snap_index + 1);
    s->snap_index = index;
    s->snap_term = term;
}

static void st_free(struct h_store* s) {
    st_truncate(s, s->snap_index + 1);
    free(s->ents);
    memset(s, 0, sizeof(*s));
}

/* Term at `index` in the durable log, 0 if absent. */
static raft_term st_term_or_zero(struct h_store* s, raft_index index) {
    if (index < s->snap_index || index > st_last_index(s)) {
        return 0;
    }
    raft_term t = 0;
    unsigned bad = s->bad_requests;
    st_term(s, index, &t);
    s->bad_requests = bad;
    return t;
}

/* ---- checks ----------------------------------------------------------- */

static void h_check_log(struct h_node* nd) {
    raft_index first = raft_first_index(nd->r);
    raft_index last = raft_last_index(nd->r);
    raft_term cur = raft_current_term(nd->r);
    if (last + 1 < first) {
        h_fail("node %llu: first %llu > last %llu + 1",
               (unsigned long long)nd->id, (unsigned long long)first,
               (unsigned long long)last);
    }
    if (last - first > H_MAX_LOG_CHECK) {
        first = last - H_MAX_LOG_CHECK;
    }
    raft_term prev = 0;
    for (raft_index i = first; i <= last && i != 0; i++) {
        raft_term t = 0;
        int rc = raft_term_at(nd->r, i, &t);
        if (rc != RAFT_OK) {
            h_fail("node %llu: term_at(%llu) = %s", (unsigned long long)nd->id,
                   (unsigned long long)i, raft_strerror(rc));
        }
        if (t < prev || t > cur || t == 0) {
            h_fail(
                "node %llu: entry %llu has term %llu (previous %llu, "
                "current term %llu)",
                (unsigned long long)nd->id, (unsigned long long)i,
                (unsigned long long)t, (unsigned long long)prev,
                (unsigned long long)cur);
        }
        prev = t;
    }
}

/* Checks run after every raft_step and raft_advance. */
static void h_check_node(struct harness* h, struct h_node* nd) {
    const char* bad = raft_check_invariants(nd->r);
    if (bad != NULL) {
        h_fail("node %llu: raft_check_invariants: %s",
               (unsigned long long)nd->id, bad);
    }
    raft_term term = raft_current_term(nd->r);
    raft_index commit = raft_commit_index(nd->r);
    if (term < nd->max_term) {
        h_fail("node %llu: term went back", (unsigned long long)nd->id);
    }
    if (commit < nd->max_commit) {
        h_fail("node %llu: commit went back from %llu to %llu",
               (unsigned long long)nd->id, (unsigned long long)nd->max_commit,
               (unsigned long long)commit);
    }
    nd->max_term = term;
    nd->max_commit = commit;
    if (raft_role(nd->r) == RAFT_LEADER && term < H_MAX_TERM) {
        raft_node_id* who = &h->leader_of_term[term];
        if (*who != 0 && *who != nd->id) {
            h_fail("Election Safety: nodes %llu and %llu both lead term %llu",
                   (unsigned long long)*who, (unsigned long long)nd->id,
                   (unsigned long long)term);
        }
        *who = nd->id;
    }
    if (nd->store.bad_requests != 0) {
        h_fail("node %llu: storage asked for an index it does not hold",
               (unsigned long long)nd->id);
    }
    h_check_log(nd);
}

static void h_step(struct harness* h,
                   struct h_node* nd,
                   const struct raft_event* ev,
                   int* rc_out) {
    int rc = raft_step(nd->r, ev);
    if (rc_out != NULL) {
        *rc_out = rc;
    }
    h_check_node(h, nd);
}

/* The contract seen from outside, checked on each ready batch. */
static void h_check_ready(struct h_node* nd, const struct raft_ready* rd) {
    unsigned long long id = nd->id;
    const struct raft_hard_state* after =
        rd->hard_state_changed ? &rd->hard_state : &nd->hs;
    if (rd->hard_state_changed && (rd->hard_state.term != nd->hs.term ||
                                   rd->hard_state.vote != nd->hs.vote)) {
        if (!rd->must_sync) {
            h_fail("node %llu: term/vote changed without must_sync", id);
        }
    }
    if (rd->snapshot != NULL && !rd->must_sync) {
        h_fail("node %llu: snapshot without must_sync", id);
    }
    if (rd->hard_state_changed && rd->hard_state.term < nd->hs.term) {
        h_fail("node %llu: hard state term went back", id);
    }
    for (size_t i = 0; i < rd->n_messages; i++) {
        const struct raft_message* m = &rd->messages[i];
        if (m->from != nd->id) {
            h_fail("node %llu: message from %llu", id,
                   (unsigned long long)m->from);
        }
        if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_PREVOTE_RESP) {
            continue; /* pre-votes carry a future term by design (§9.6) */
        }
        if (m->term > after->term) {
            h_fail("node %llu: %s carries term %llu, hard state has %llu", id,
                   raft_msg_type_name((int)m->type),
                   (unsigned long long)m->term,
                   (unsigned long long)after->term);
        }
        if (m->type == RAFT_MSG_VOTE_RESP && !m->reject &&
            (after->vote != m->to || after->term != m->term)) {
            h_fail("node %llu: vote for %llu not in its hard state", id,
                   (unsigned long long)m->to);
        }
    }
}

/* A follower's acknowledgement covers only durable entries (contract 4). */
static void h_check_acks(struct h_node* nd, const struct raft_ready* rd) {
    for (size_t i = 0; i < rd->n_messages; i++) {
        const struct raft_message* m = &rd->messages[i];
        if (m->type != RAFT_MSG_APPEND_RESP || m->reject) {
            continue;
        }
        raft_term view = 0;
        if (raft_term_at(nd->r, m->index, &view) != RAFT_OK) {
            continue; /* compacted: covered by a durable snapshot */
        }
        if (m->index > st_last_index(&nd->store) ||
            (m->index > nd->store.snap_index &&
             st_term_or_zero(&nd->store, m->index) != view)) {
            h_fail("node %llu: acknowledges index %llu before it is durable",
                   (unsigned long long)nd->id, (unsigned long long)m->index);
        }
    }
}

/* ---- the driver ------------------------------------------------------- */

static void h_enqueue(struct harness* h, const struct raft_message* m) {
    if (h->q_len == h->q_cap) {
        if (h->q_head > 0) {
            memmove(h->q, h->q + h->q_head,
                    (h->q_len - h->q_head) * sizeof(*h->q));
            h->q_len -= h->q_head;
            h->q_head = 0;
        }
        if (h->q_len == h->q_cap) {
            size_t cap = h->q_cap ? h->q_cap * 2 : 64;
            struct h_msg* p = realloc(h->q, cap * sizeof(*p));
            if (p == NULL) {
                h_fail("out of memory");
            }
            h->q = p;
            h->q_cap = cap;
        }
    }
    struct h_msg* hm = &h->q[h->q_len++];
    hm->m = *m;
    hm->n_ents = m->n_entries;
    hm->ents = NULL;
    if (m->n_entries > 0) {
        hm->ents = h_alloc(m->n_entries * sizeof(*hm->ents));
        for (uint32_t i = 0; i < m->n_entries; i++) {
            h_entry_copy(&hm->ents[i], &m->entries[i]);
        }
    }
    hm->m.entries = hm->ents;
}

static void h_msg_free(struct h_msg* hm) {
    for (size_t i = 0; i < hm->n_ents; i++) {
        h_entry_free(&hm->ents[i]);
    }
    free(hm->ents);
    hm->ents = NULL;
    hm->n_ents = 0;
}

static void h_apply(struct harness* h,
                    struct h_node* nd,
                    const struct raft_entry* e) {
    if (e->index != nd->applied + 1) {
        h_fail("node %llu: applies %llu after %llu", (unsigned long long)nd->id,
               (unsigned long long)e->index, (unsigned long long)nd->applied);
    }
    if (st_term_or_zero(&nd->store, e->index) != e->term) {
        h_fail("node %llu: committed entry %llu handed out before durable",
               (unsigned long long)nd->id, (unsigned long long)e->index);
    }
    if (e->index >= h->committed_cap) {
        size_t cap = (size_t)e->index * 2 + 64;
        struct h_committed* p = realloc(h->committed, cap * sizeof(*p));
        if (p == NULL) {
            h_fail("out of memory");
        }
        memset(p + h->committed_cap, 0, (cap - h->committed_cap) * sizeof(*p));
        h->committed = p;
        h->committed_cap = cap;
    }
    struct h_committed* c = &h->committed[e->index];
    uint64_t hash = h_hash(e->type, e->data, e->len);
    if (c->set && (c->term != e->term || c->hash != hash)) {
        h_fail(
            "State Machine Safety: node %llu applies term %llu at %llu, "
            "another node applied term %llu there",
            (unsigned long long)nd->id, (unsigned long long)e->term,
            (unsigned long long)e->index, (unsigned long long)c->term);
    }
    c->set = true;
    c->term = e->term;
    c->hash = hash;
    nd->applied = e->index;
}

static void h_install_snapshot(struct h_node* nd,
                               const struct raft_snapshot_meta* s) {
    if (s->index < nd->applied) {
        h_fail("node %llu: snapshot %llu older than applied %llu",
               (unsigned long long)nd->id, (unsigned long long)s->index,
               (unsigned long long)nd->applied);
    }
    st_install(&nd->store, s->index, s->term);
    nd->applied = s->index;
    nd->snapshots++;
}

/* Makes the pending entries durable and tells the core (contract 6). */
static void h_persist(struct harness* h, raft_node_id id) {
    struct h_node* nd = h_node(h, id);
    if (nd->n_pending == 0) {
        return;
    }
    struct raft_event ev = {.type = RAFT_EVENT_PERSISTED};
    for (size_t i = 0; i < nd->n_pending; i++) {
        struct h_batch* b = &nd->pending[i];
        st_write(&nd->store, b->ents, b->n);
        ev.index = b->ents[b->n - 1].index;
        ev.term = b->ents[b->n - 1].term;
        for (size_t j = 0; j < b->n; j++) {
            h_entry_free(&b->ents[j]);
        }
        free(b->ents);
    }
    nd->n_pending = 0;
    int rc;
    h_step(h, nd, &ev, &rc);
    if (rc != RAFT_OK) {
        h_fail("node %llu: PERSISTED %llu returned %s", (unsigned long long)id,
               (unsigned long long)ev.index, raft_strerror(rc));
    }
}

static void h_take_ready(struct harness* h, struct h_node* nd) {
    struct raft_ready rd;
    memset(&rd, 0, sizeof(rd));
    raft_ready(nd->r, &rd);
    if (h->ready_hook != NULL) {
        h->ready_hook(h, nd, &rd);
    }
    h_check_ready(nd, &rd);
    if (rd.must_sync) {
        nd->must_sync++;
    }
    if (rd.snapshot != NULL) {
        h_install_snapshot(nd, rd.snapshot);
    }
    if (rd.hard_state_changed) {
        nd->hs = rd.hard_state;
    }
    if (rd.n_entries > 0) {
        if (nd->n_pending == H_MAX_PENDING) {
            h_fail("node %llu: too many pending batches",
                   (unsigned long long)nd->id);
        }
        struct h_batch* b = &nd->pending[nd->n_pending++];
        b->n = rd.n_entries;
        b->ents = h_alloc(rd.n_entries * sizeof(*b->ents));
        for (size_t i = 0; i < rd.n_entries; i++) {
            h_entry_copy(&b->ents[i], &rd.entries[i]);
        }
    }
    h_check_acks(nd, &rd);
    for (size_t i = 0; i < rd.n_messages; i++) {
        h_enqueue(h, &rd.messages[i]);
    }
    for (size_t i = 0; i < rd.n_committed; i++) {
        h_apply(h, nd, &rd.committed[i]);
    }
    for (size_t i = 0; i < rd.n_reads; i++) {
        if (nd->n_reads < H_MAX_READS) {
            nd->reads[nd->n_reads++] = rd.reads[i];
        }
    }
    raft_advance(nd->r);
    h_check_node(h, nd);
}

/* Runs the driver loop on one node until it has nothing more to hand out. */
static void h_process(struct harness* h, raft_node_id id) {
    struct h_node* nd = h_node(h, id);
    for (int guard = 0; guard < 1000; guard++) {
        if (raft_has_ready(nd->r)) {
            h_take_ready(h, nd);
        }
        if (!nd->delay_persist && nd->n_pending > 0) {
            h_persist(h, id);
            continue;
        }
        if (!raft_has_ready(nd->r)) {
            return;
        }
    }
    h_fail("node %llu: ready never drains", (unsigned long long)id);
}

static void h_process_all(struct harness* h) {
    for (raft_node_id id = 1; id <= H_MAX_NODES; id++) {
        if (h->nodes[id].r != NULL) {
            h_process(h, id);
        }
    }
}

/* ---- building clusters ------------------------------------------------ */

static void h_conf_voters(struct raft_conf* c, size_t n) {
    memset(c, 0, sizeof(*c));
    c->count = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        c->ids[i] = i + 1;
        c->roles[i] = RAFT_VOTER;
    }
}

/* A node's starting log: entry 1 is the conf, then `terms[i]` for index
 * i + 1 (terms[0] is the conf entry's term). */
struct h_preload {
    const raft_term* terms;
    size_t n;
    struct raft_hard_state hs;
};

static void h_preload_store(struct h_node* nd,
                            const struct raft_conf* conf,
                            const struct h_preload* pre) {
    for (size_t i = 0; i < pre->n; i++) {
        uint8_t buf[RAFT_CONF_ENCODED_MAX];
        char text[48];
        struct raft_entry e = {.term = pre->terms[i], .index = i + 1};
        if (i == 0) {
            e.type = RAFT_ENTRY_CONF;
            e.len = (uint32_t)raft_conf_encode(conf, buf);
            e.data = buf;
        } else {
            e.type = RAFT_ENTRY_NORMAL;
            e.len =
                (uint32_t)snprintf(text, sizeof(text), "pre-%zu-t%llu", i + 1,
                                   (unsigned long long)pre->terms[i]);
            e.data = (const uint8_t*)text;
        }
        st_write(&nd->store, &e, 1);
    }
}

static void h_config(struct harness* h,
                     raft_node_id id,
                     struct raft_config* cfg) {
    raft_config_default(cfg, id);
    cfg->election_ticks = H_ET;
    cfg->heartbeat_ticks = H_HB;
    cfg->seed = h->opts.seed * 1000003ULL + id * 7919ULL + 1;
    cfg->pre_vote = h->opts.pre_vote;
    cfg->check_quorum = h->opts.check_quorum;
    cfg->max_entry_bytes = H_MAX_ENTRY_BYTES;
    cfg->learner_catchup_gap = 2;
    cfg->mutant = h_mutant;
}

/* Starts node `id` with the given bootstrap conf and optional log. */
static void h_start_node(struct harness* h,
                         raft_node_id id,
                         const struct raft_conf* conf,
                         const struct h_preload* pre) {
    assert_true(id >= 1 && id <= H_MAX_NODES);
    struct h_node* nd = &h->nodes[id];
    assert_null(nd->r);
    nd->id = id;
    nd->storage = (struct raft_storage){
        .ctx = &nd->store,
        .first_index = st_first_index,
        .last_index = st_last_index,
        .term = st_term,
        .entries = st_entries,
    };
    struct raft_start_state start;
    memset(&start, 0, sizeof(start));
    start.bootstrap = *conf;
    if (pre != NULL) {
        h_preload_store(nd, conf, pre);
        start.hard_state = pre->hs;
        nd->hs = pre->hs;
    }
    struct raft_config cfg;
    h_config(h, id, &cfg);
    int rc = raft_init(&cfg, &nd->storage, &start, &nd->r);
    if (rc != RAFT_OK) {
        h_fail("raft_init(%llu): %s", (unsigned long long)id,
               raft_strerror(rc));
    }
    h_check_node(h, nd);
}

static void h_free(struct harness* h) {
    if (h == NULL) {
        return;
    }
    for (size_t i = h->q_head; i < h->q_len; i++) {
        h_msg_free(&h->q[i]);
    }
    free(h->q);
    for (raft_node_id id = 1; id <= H_MAX_NODES; id++) {
        struct h_node* nd = &h->nodes[id];
        raft_close(nd->r);
        for (size_t i = 0; i < nd->n_pending; i++) {
            for (size_t j = 0; j < nd->pending[i].n; j++) {
                h_entry_free(&nd->pending[i].ents[j]);
            }
            free(nd->pending[i].ents);
        }
        st_free(&nd->store);
    }
    free(h->committed);
    free(h);
}

/* A harness with no node yet; freed by the test's teardown. */
static struct harness* h_new_empty(void** state, const struct h_opts* o) {
    h_free(*state);
    struct harness* h = h_alloc(sizeof(*h));
    *state = h;
    h->opts = *o;
    return h;
}

/* A cluster of nodes 1..o->n, all voters, empty logs. */
static struct harness* h_new(void** state, const struct h_opts* o) {
    struct harness* h = h_new_empty(state, o);
    struct raft_conf conf;
    h_conf_voters(&conf, o->n);
    for (raft_node_id id = 1; id <= o->n; id++) {
        h_start_node(h, id, &conf, NULL);
    }
    h_process_all(h);
    return h;
}

static int h_teardown(void** state) {
    h_free(*state);
    *state = NULL;
    return 0;
}

/* ---- network ---------------------------------------------------------- */

static bool h_dropped(struct harness* h, const struct raft_message* m) {
    if (m->from > H_MAX_NODES || m->to > H_MAX_NODES) {
        return true;
    }
    return h->drop[m->from][m->to];
}

static void h_report_snapshot(struct harness* h,
                              const struct raft_message* m,
                              bool ok) {
    if (m->type != RAFT_MSG_SNAPSHOT || m->from > H_MAX_NODES ||
        h->nodes[m->from].r == NULL) {
        return;
    }
    struct raft_event ev = {
        .type = RAFT_EVENT_SNAPSHOT_DONE, .peer = m->to, .ok = ok};
    h_step(h, &h->nodes[m->from], &ev, NULL);
    h_process(h, m->from);
}

/* Delivers the oldest queued message. Returns false if the queue is empty. */
static bool h_deliver_one(struct harness* h) {
    if (h->q_head == h->q_len) {
        return false;
    }
    struct h_msg hm = h->q[h->q_head++];
    struct raft_message* m = &hm.m;
    bool deliver = !h_dropped(h, m) && h->nodes[m->to].r != NULL;
    if (deliver && h->filter != NULL) {
        deliver = h->filter(h, m);
    }
    if (h_verbose) {
        fprintf(stderr, "  %s %llu->%llu t%llu i%llu lt%llu n%u c%llu%s%s\n",
                raft_msg_type_name((int)m->type), (unsigned long long)m->from,
                (unsigned long long)m->to, (unsigned long long)m->term,
                (unsigned long long)m->index, (unsigned long long)m->log_term,
                m->n_entries, (unsigned long long)m->commit,
                m->reject ? " reject" : "", deliver ? "" : " DROPPED");
    }
    if (!deliver) {
        h_report_snapshot(h, m, false);
        h_msg_free(&hm);
        return true;
    }
    if (m->type < RAFT_MSG_TYPE_MAX) {
        h->delivered[m->from][m->to][m->type]++;
        if (m->type == RAFT_MSG_APPEND_RESP && m->reject) {
            h->append_rejects[m->from][m->to]++;
        }
    }
    struct h_node* nd = &h->nodes[m->to];
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = m};
    int rc;
    h_step(h, nd, &ev, &rc);
    if (rc != RAFT_OK) {
        nd->step_errors++;
    }
    h_process(h, m->to);
    h_report_snapshot(h, m, true);
    h_msg_free(&hm);
    return true;
}

/* Delivers until no message is in flight and no node has work. */
static void h_stabilize(struct harness* h) {
    h_process_all(h);
    for (int i = 0; i < H_MAX_DELIVER; i++) {
        if (!h_deliver_one(h)) {
            return;
        }
    }
    h_fail("no quiescence after %d messages", H_MAX_DELIVER);
}

/* Forgets every message in flight. */
static void h_drop_queued(struct harness* h) {
    while (h->q_head < h->q_len) {
        struct h_msg* hm = &h->q[h->q_head++];
        h_report_snapshot(h, &hm->m, false);
        h_msg_free(hm);
    }
}

static void h_cut(struct harness* h, raft_node_id a, raft_node_id b) {
    h->drop[a][b] = true;
    h->drop[b][a] = true;
}

static void h_isolate(struct harness* h, raft_node_id id) {
    for (raft_node_id o = 1; o <= H_MAX_NODES; o++) {
        if (o != id) {
            h_cut(h, id, o);
        }
    }
}

static void h_recover(struct harness* h) {
    memset(h->drop, 0, sizeof(h->drop));
    h->filter = NULL;
}

/* Finds the newest queued message matching type/from/to (0 = any). */
static const struct raft_message* h_find_msg(struct harness* h,
                                             uint32_t type,
                                             raft_node_id from,
                                             raft_node_id to) {
    for (size_t i = h->q_len; i > h->q_head; i--) {
        const struct raft_message* m = &h->q[i - 1].m;
        if ((type == 0 || m->type == type) && (from == 0 || m->from == from) &&
            (to == 0 || m->to == to)) {
            return m;
        }
    }
    return NULL;
}

static size_t h_count_msgs(struct harness* h,
                           uint32_t type,
                           raft_node_id from) {
    size_t n = 0;
    for (size_t i = h->q_head; i < h->q_len; i++) {
        const struct raft_message* m = &h->q[i].m;
        if (m->type == type && (from == 0 || m->from == from)) {
            n++;
        }
    }
    return n;
}

/* ---- driving nodes ---------------------------------------------------- */

static void h_tick(struct harness* h, raft_node_id id, unsigned n) {
    struct h_node* nd = h_node(h, id);
    struct raft_event ev = {.type = RAFT_EVENT_TICK};
    for (unsigned i = 0; i < n; i++) {
        int rc;
        h_step(h, nd, &ev, &rc);
        assert_int_equal(rc, RAFT_OK);
        h_process(h, id);
    }
}

/* `rounds` times: every node ticks once, then the network settles. */
static void h_tick_all(struct harness* h, unsigned rounds) {
    for (unsigned r = 0; r < rounds; r++) {
        for (raft_node_id id = 1; id <= H_MAX_NODES; id++) {
            if (h->nodes[id].r != NULL) {
                h_tick(h, id, 1);
            }
        }
        h_stabilize(h);
    }
}

static void h_campaign(struct harness* h, raft_node_id id) {
    struct raft_event ev = {.type = RAFT_EVENT_CAMPAIGN};
    h_step(h, h_node(h, id), &ev, NULL);
    h_process(h, id);
}

/* Steps one message straight into a node. Returns raft_step's result. */
static int h_inject(struct harness* h,
                    raft_node_id to,
                    const struct raft_message* m) {
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = m};
    int rc;
    h_step(h, h_node(h, to), &ev, &rc);
    h_process(h, to);
    return rc;
}

static int h_propose(struct harness* h,
                     raft_node_id id,
                     const char* text,
                     raft_index* index) {
    const uint8_t* data = (const uint8_t*)text;
    uint32_t len = (uint32_t)strlen(text);
    raft_index first = 0;
    raft_term term = 0;
    int rc = raft_propose(h_r(h, id), RAFT_ENTRY_NORMAL, &data, &len, 1, &first,
                          &term);
    h_check_node(h, h_node(h, id));
    if (rc == RAFT_OK) {
        assert_int_equal(term, raft_current_term(h_r(h, id)));
        assert_int_equal(first, raft_last_index(h_r(h, id)));
    }
    if (index != NULL) {
        *index = first;
    }
    h_process(h, id);
    return rc;
}

/* The node that leads the highest term, 0 if none. */
static raft_node_id h_leader(struct harness* h) {
    raft_node_id best = 0;
    raft_term best_term = 0;
    for (raft_node_id id = 1; id <= H_MAX_NODES; id++) {
        struct raft* r = h->nodes[id].r;
        if (r != NULL && raft_role(r) == RAFT_LEADER &&
            raft_current_term(r) >= best_term) {
            best = id;
            best_term = raft_current_term(r);
        }
    }
    return best;
}

/* Campaigns `id` and runs the network until it leads and its first entry
 * (the no-op) is committed and known to every reachable follower. */
static void h_elect(struct harness* h, raft_node_id id) {
    h_campaign(h, id);
    h_stabilize(h);
    if (raft_role(h_r(h, id)) != RAFT_LEADER) {
        h_fail("node %llu did not win (role %s)", (unsigned long long)id,
               raft_role_name(raft_role(h_r(h, id))));
    }
    h_tick(h, id, H_HB); /* a heartbeat carries the new commit index */
    h_stabilize(h);
}

static void h_set_delay_persist(struct harness* h, raft_node_id id, bool on) {
    h_node(h, id)->delay_persist = on;
    if (!on) {
        h_persist(h, id);
        h_process(h, id);
    }
}

static raft_term h_term_at(struct harness* h,
                           raft_node_id id,
                           raft_index index) {
    raft_term t = 0;
    int rc = raft_term_at(h_r(h, id), index, &t);
    if (rc != RAFT_OK) {
        h_fail("node %llu: term_at(%llu): %s", (unsigned long long)id,
               (unsigned long long)index, raft_strerror(rc));
    }
    return t;
}

static const struct raft_read_state* h_read(struct harness* h,
                                            raft_node_id id,
                                            uint64_t ctx) {
    struct h_node* nd = h_node(h, id);
    for (size_t i = 0; i < nd->n_reads; i++) {
        if (nd->reads[i].context == ctx) {
            return &nd->reads[i];
        }
    }
    return NULL;
}

static bool h_progress_of(struct harness* h,
                          raft_node_id leader,
                          raft_node_id peer,
                          struct raft_progress_info* out) {
    struct raft_progress_info info[RAFT_MAX_NODES];
    size_t n = raft_progress(h_r(h, leader), info, RAFT_MAX_NODES);
    for (size_t i = 0; i < n; i++) {
        if (info[i].id == peer) {
            *out = info[i];
            return true;
        }
    }
    return false;
}

/* Message for injection, stamped with `from`, `to` and `term`. */
static struct raft_message h_mkmsg(uint32_t type,
                                   raft_node_id from,
                                   raft_node_id to,
                                   raft_term term) {
    struct raft_message m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.from = from;
    m.to = to;
    m.term = term;
    return m;
}

/* The candidate-side log position of `id`, for vote requests. */
static void h_last(struct harness* h,
                   raft_node_id id,
                   raft_index* index,
                   raft_term* term) {
    *index = raft_last_index(h_r(h, id));
    *term = *index ? h_term_at(h, id, *index) : 0;
}

/* Two-node-or-more default options, no pre-vote, no check quorum (as in
 * etcd's paper tests: the plain algorithm of the paper). */
static struct h_opts h_plain(size_t n, uint64_t seed) {
    struct h_opts o = {.n = n, .seed = seed};
    return o;
}

static raft_term h_term(struct harness* h, raft_node_id id) {
    return raft_current_term(h_r(h, id));
}

static enum raft_role h_role(struct harness* h, raft_node_id id) {
    return raft_role(h_r(h, id));
}

/* Proposes and requires success. */
static raft_index h_must_propose(struct harness* h,
                                 raft_node_id id,
                                 const char* text) {
    raft_index index = 0;
    int rc = h_propose(h, id, text, &index);
    if (rc != RAFT_OK) {
        h_fail("propose on %llu: %s", (unsigned long long)id,
               raft_strerror(rc));
    }
    return index;
}

/* Lets the leader spread its commit index and repair what was lost: an
 * election timeout of heartbeat rounds (the time a follower would wait
 * before giving up on the leader). */
static void h_settle(struct harness* h, raft_node_id leader) {
    for (unsigned i = 0; i < H_ET; i++) {
        h_tick(h, leader, 1);
        h_stabilize(h);
    }
}

/* Every live node's log equals the leader's from first_index on. */
static void h_assert_logs_match(struct harness* h, raft_node_id leader) {
    raft_index last = raft_last_index(h_r(h, leader));
    for (raft_node_id id = 1; id <= H_MAX_NODES; id++) {
        if (h->nodes[id].r == NULL || id == leader) {
            continue;
        }
        if (raft_last_index(h_r(h, id)) != last) {
            h_fail("node %llu ends at %llu, leader at %llu",
                   (unsigned long long)id,
                   (unsigned long long)raft_last_index(h_r(h, id)),
                   (unsigned long long)last);
        }
        raft_index first = raft_first_index(h_r(h, id));
        raft_index lfirst = raft_first_index(h_r(h, leader));
        for (raft_index i = first > lfirst ? first : lfirst; i <= last; i++) {
            if (h_term_at(h, id, i) != h_term_at(h, leader, i)) {
                h_fail("Log Matching: node %llu differs at %llu",
                       (unsigned long long)id, (unsigned long long)i);
            }
        }
    }
}

/* A vote request from `from` as a candidate of `term` with its own log. */
static struct raft_message h_vote_req(struct harness* h,
                                      raft_node_id from,
                                      raft_node_id to,
                                      raft_term term) {
    struct raft_message m = h_mkmsg(RAFT_MSG_VOTE, from, to, term);
    h_last(h, from, &m.index, &m.log_term);
    return m;
}

/* ====================================================================== */
/* §5.1 Raft basics                                                        */
/* ====================================================================== */

/*
 * Figure 2, Rules for Servers, All Servers: "If RPC request or response
 * contains term T > currentTerm: set currentTerm = T, convert to follower
 * (§5.1)." Checked from every role, with requests and with responses.
 */
static void test_5_1_higher_term_converts_to_follower(void** state) {
    struct h_opts o = h_plain(3, 11);

    /* Follower, response of a higher term. */
    struct harness* h = h_new(state, &o);
    struct raft_message m = h_mkmsg(RAFT_MSG_VOTE_RESP, 3, 2, 4);
    m.reject = true;
    h_inject(h, 2, &m);
    assert_int_equal(h_role(h, 2), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 2), 4);
    assert_int_equal(h_node(h, 2)->hs.term, 4); /* and it is durable */

    /* Candidate, response of a higher term. */
    h = h_new(state, &o);
    h_isolate(h, 3);
    h_campaign(h, 3);
    assert_int_equal(h_role(h, 3), RAFT_CANDIDATE);
    raft_term t = h_term(h, 3);
    m = h_mkmsg(RAFT_MSG_VOTE_RESP, 1, 3, t + 1);
    m.reject = true;
    h_inject(h, 3, &m);
    assert_int_equal(h_role(h, 3), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 3), t + 1);

    /* Leader, request (a heartbeat) of a higher term. */
    h = h_new(state, &o);
    h_elect(h, 1);
    t = h_term(h, 1);
    m = h_mkmsg(RAFT_MSG_HEARTBEAT, 2, 1, t + 1);
    h_inject(h, 1, &m);
    assert_int_equal(h_role(h, 1), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 1), t + 1);
    assert_int_equal(raft_leader(h_r(h, 1)), 2);

    /* Leader, a vote request of a higher term: it steps down whether or
     * not it grants the vote. */
    h = h_new(state, &o);
    h_elect(h, 3);
    t = h_term(h, 3);
    m = h_vote_req(h, 2, 3, t + 1);
    h_inject(h, 3, &m);
    assert_int_equal(h_role(h, 3), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 3), t + 1);

    /* Pre-candidate (thesis §9.6): a heartbeat of a higher term. */
    o.pre_vote = true;
    h = h_new(state, &o);
    h_isolate(h, 2);
    h_campaign(h, 2);
    assert_int_equal(h_role(h, 2), RAFT_PRE_CANDIDATE);
    t = h_term(h, 2);
    m = h_mkmsg(RAFT_MSG_HEARTBEAT, 1, 2, t + 3);
    h_inject(h, 2, &m);
    assert_int_equal(h_role(h, 2), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 2), t + 3);
}

/*
 * §5.1: "If a server receives a request with a stale term number, it
 * rejects the request." Figure 2, AppendEntries and RequestVote: "1. Reply
 * false if term < currentTerm (§5.1)".
 */
static void test_5_1_stale_term_request_rejected(void** state) {
    struct h_opts o = h_plain(3, 12);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_elect(h, 2); /* term 2, node 3 follows 2 */
    raft_term t = h_term(h, 3);
    assert_int_equal(t, 2);
    raft_index last = raft_last_index(h_r(h, 3));
    raft_index commit = raft_commit_index(h_r(h, 3));

    /* An append of the old leader of term 1. */
    struct raft_entry e = {
        .term = 1, .index = last + 1, .len = 3, .data = (const uint8_t*)"old"};
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 3, 1);
    h_last(h, 3, &m.index, &m.log_term);
    m.entries = &e;
    m.n_entries = 1;
    m.commit = last + 1;
    h_inject(h, 3, &m);
    assert_int_equal(raft_last_index(h_r(h, 3)), last);
    assert_int_equal(raft_commit_index(h_r(h, 3)), commit);
    assert_int_equal(raft_leader(h_r(h, 3)), 2);
    assert_int_equal(h_term(h, 3), t);
    const struct raft_message* resp = h_find_msg(h, 0, 3, 1);
    if (resp != NULL) { /* answering is optional, accepting is not */
        assert_true(resp->term == t);
        assert_false(resp->type == RAFT_MSG_APPEND_RESP && !resp->reject);
    }
    h_drop_queued(h);

    /* A vote request of the old term. */
    m = h_vote_req(h, 1, 3, 1);
    m.index += 100; /* even with a longer log */
    h_inject(h, 3, &m);
    assert_int_equal(raft_voted_for(h_r(h, 3)), 2);
    resp = h_find_msg(h, RAFT_MSG_VOTE_RESP, 3, 1);
    assert_true(resp == NULL || resp->reject);
    h_drop_queued(h);
}

/*
 * Hardening, not the paper: a term or an index no real cluster reaches
 * (RAFT_VALUE_LIMIT) is corruption or forgery. Taking a term of 2^64 - 1
 * once left a whole cluster unable to elect a leader ever again (found by
 * integration_raft_fuzz): such messages are refused and change nothing.
 */
static void test_absurd_terms_and_indexes_refused(void** state) {
    struct h_opts o = h_plain(3, 13);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_settle(h, 1);
    raft_term t = h_term(h, 2);
    raft_index last = raft_last_index(h_r(h, 2));
    raft_index commit = raft_commit_index(h_r(h, 2));
    const raft_term absurd[] = {UINT64_MAX, UINT64_MAX - 1, RAFT_VALUE_LIMIT};

    for (size_t i = 0; i < sizeof(absurd) / sizeof(absurd[0]); i++) {
        struct raft_message m = h_mkmsg(RAFT_MSG_HEARTBEAT, 3, 2, absurd[i]);
        assert_int_equal(h_inject(h, 2, &m), RAFT_EINVAL);
        m = h_vote_req(h, 3, 2, absurd[i]);
        assert_int_equal(h_inject(h, 2, &m), RAFT_EINVAL);
        /* A current term with an absurd commit or previous index. */
        m = h_mkmsg(RAFT_MSG_APPEND, 1, 2, t);
        h_last(h, 2, &m.index, &m.log_term);
        m.commit = absurd[i];
        assert_int_equal(h_inject(h, 2, &m), RAFT_EINVAL);
        m = h_mkmsg(RAFT_MSG_APPEND_RESP, 2, 1, t);
        m.index = absurd[i];
        assert_int_equal(h_inject(h, 1, &m), RAFT_EINVAL);
    }
    h_drop_queued(h);
    assert_int_equal(h_term(h, 2), t);
    assert_int_equal(raft_last_index(h_r(h, 2)), last);
    assert_int_equal(raft_commit_index(h_r(h, 2)), commit);
    assert_int_equal(raft_leader(h_r(h, 2)), 1);
    /* A term just below the limit is still a term. */
    struct raft_message hb =
        h_mkmsg(RAFT_MSG_HEARTBEAT, 3, 2, RAFT_VALUE_LIMIT - 1);
    assert_int_equal(h_inject(h, 2, &hb), RAFT_OK);
    assert_int_equal(h_term(h, 2), RAFT_VALUE_LIMIT - 1);
    h_drop_queued(h);
}

/* ====================================================================== */
/* §5.2 Leader election                                                    */
/* ====================================================================== */

/* Ticks `id` alone until it leaves the follower role; returns the ticks. */
static unsigned h_ticks_to_campaign(struct harness* h,
                                    raft_node_id id,
                                    unsigned max) {
    unsigned ticks = 0;
    while (h_role(h, id) == RAFT_FOLLOWER && ticks < max) {
        h_tick(h, id, 1);
        ticks++;
    }
    return ticks;
}

/*
 * §5.2: "If a follower receives no communication over a period of time
 * called the election timeout, then it assumes there is no viable leader
 * and begins an election to choose a new leader. To begin an election, a
 * follower increments its current term and transitions to candidate state.
 * It then votes for itself and issues RequestVote RPCs in parallel to each
 * of the other servers in the cluster." And: "Leaders send periodic
 * heartbeats [...] to all followers in order to maintain their authority."
 */
static void test_5_2_follower_starts_election_after_timeout(void** state) {
    struct h_opts o = h_plain(3, 21);
    struct harness* h = h_new(state, &o);
    raft_index li;
    raft_term lt;
    h_last(h, 1, &li, &lt);
    unsigned ticks = h_ticks_to_campaign(h, 1, 2 * H_ET);
    assert_int_equal(h_role(h, 1), RAFT_CANDIDATE);
    assert_true(ticks >= H_ET && ticks < 2 * H_ET);
    assert_int_equal(h_term(h, 1), 1);
    assert_int_equal(raft_voted_for(h_r(h, 1)), 1);
    assert_int_equal(h_node(h, 1)->hs.term, 1);
    assert_int_equal(h_node(h, 1)->hs.vote, 1);
    for (raft_node_id to = 2; to <= 3; to++) {
        const struct raft_message* m = h_find_msg(h, RAFT_MSG_VOTE, 1, to);
        assert_non_null(m);
        assert_int_equal(m->term, 1);
        assert_int_equal(m->index, li);
        assert_int_equal(m->log_term, lt);
    }
    h_stabilize(h);
    assert_int_equal(h_role(h, 1), RAFT_LEADER);

    /* With heartbeats flowing nobody times out, however long it runs. */
    h_tick_all(h, 10 * H_ET);
    assert_int_equal(h_leader(h), 1);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_int_equal(h_term(h, id), 1);
        assert_int_equal(raft_leader(h_r(h, id)), 1);
    }
}

/*
 * §5.2: "A candidate wins an election if it receives votes from a majority
 * of the servers in the full cluster for the same term." Votes that do not
 * make a majority leave it a candidate; a majority of rejections means it
 * lost.
 */
static void test_5_2_candidate_wins_with_majority(void** state) {
    static const struct {
        size_t n;
        unsigned grants;
        unsigned rejects;
        int expect; /* RAFT_LEADER, RAFT_CANDIDATE, or -1 = not leader */
    } cases[] = {
        {1, 0, 0, RAFT_LEADER},
        {3, 1, 0, RAFT_LEADER},
        {3, 0, 1, RAFT_CANDIDATE},
        {3, 0, 2, -1},
        {4, 1, 0, RAFT_CANDIDATE},
        {4, 2, 0, RAFT_LEADER},
        {4, 1, 2, -1},
        {5, 1, 0, RAFT_CANDIDATE},
        {5, 2, 0, RAFT_LEADER},
        {5, 1, 2, RAFT_CANDIDATE},
        {5, 1, 3, -1},
        {5, 0, 4, -1},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct h_opts o = h_plain(cases[c].n, 22 + c);
        struct harness* h = h_new(state, &o);
        h_campaign(h, 1);
        h_drop_queued(h);
        raft_term t = h_term(h, 1);
        raft_node_id voter = 2;
        for (unsigned i = 0; i < cases[c].grants; i++, voter++) {
            struct raft_message m = h_mkmsg(RAFT_MSG_VOTE_RESP, voter, 1, t);
            h_inject(h, 1, &m);
        }
        for (unsigned i = 0; i < cases[c].rejects; i++, voter++) {
            struct raft_message m = h_mkmsg(RAFT_MSG_VOTE_RESP, voter, 1, t);
            m.reject = true;
            h_inject(h, 1, &m);
        }
        int role = (int)h_role(h, 1);
        bool ok =
            cases[c].expect < 0 ? role != RAFT_LEADER : role == cases[c].expect;
        if (!ok) {
            fail_msg("case %zu: %zu nodes, %u granted, %u rejected: %s", c,
                     cases[c].n, cases[c].grants, cases[c].rejects,
                     raft_role_name((enum raft_role)role));
        }
        assert_int_equal(h_term(h, 1), t); /* no term change either way */
    }
}

/*
 * §5.2: "While waiting for votes, a candidate may receive an AppendEntries
 * RPC from another server claiming to be leader. If the leader's term
 * (included in its RPC) is at least as large as the candidate's current
 * term, then the candidate recognizes the leader as legitimate and returns
 * to follower state. If the term in the RPC is smaller than the
 * candidate's current term, then the candidate rejects the RPC and
 * continues in candidate state."
 */
static void test_5_2_candidate_steps_down_on_leader_append(void** state) {
    struct h_opts o = h_plain(3, 23);
    struct harness* h = h_new(state, &o);
    h_isolate(h, 3);
    h_campaign(h, 3);
    h_campaign(h, 3); /* term 2 */
    assert_int_equal(h_role(h, 3), RAFT_CANDIDATE);
    raft_term t = h_term(h, 3);
    assert_int_equal(t, 2);
    h_drop_queued(h);

    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 3, t - 1);
    h_last(h, 3, &m.index, &m.log_term);
    h_inject(h, 3, &m);
    assert_int_equal(h_role(h, 3), RAFT_CANDIDATE);
    assert_int_equal(h_term(h, 3), t);
    h_drop_queued(h);

    m.term = t;
    h_inject(h, 3, &m);
    assert_int_equal(h_role(h, 3), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 3), t);
    assert_int_equal(raft_leader(h_r(h, 3)), 1);
    h_drop_queued(h);
}

/*
 * §5.2: "When this happens [a split vote], each candidate will time out
 * and start a new election by incrementing its term and initiating another
 * round of RequestVote RPCs."
 */
static void test_5_2_candidate_restarts_election_after_timeout(void** state) {
    struct h_opts o = h_plain(3, 24);
    struct harness* h = h_new(state, &o);
    h_isolate(h, 1);
    h_campaign(h, 1);
    assert_int_equal(h_term(h, 1), 1);
    h_drop_queued(h);
    h_tick(h, 1, 2 * H_ET);
    assert_int_equal(h_role(h, 1), RAFT_CANDIDATE);
    raft_term t = h_term(h, 1);
    assert_true(t >= 2);
    const struct raft_message* m = h_find_msg(h, RAFT_MSG_VOTE, 1, 2);
    assert_non_null(m);
    assert_int_equal(m->term, t);
    assert_int_equal(raft_voted_for(h_r(h, 1)), 1);
}

/*
 * §5.2: "Raft uses randomized election timeouts to ensure that split votes
 * are rare [...] election timeouts are chosen randomly from a fixed
 * interval (e.g., 150-300ms)." Here the interval is [et, 2et) ticks, drawn
 * from the seeded PRNG: different seeds spread over it, the same seed
 * gives the same timeout.
 */
static void test_5_2_election_timeouts_randomized(void** state) {
    bool seen[2 * H_ET] = {false};
    unsigned distinct = 0;
    for (uint64_t seed = 1; seed <= 32; seed++) {
        struct h_opts o = h_plain(3, seed);
        struct harness* h = h_new(state, &o);
        unsigned ticks = h_ticks_to_campaign(h, 1, 3 * H_ET);
        if (ticks < H_ET || ticks >= 2 * H_ET) {
            fail_msg("seed %llu: timeout %u outside [%u, %u)",
                     (unsigned long long)seed, ticks, H_ET, 2 * H_ET);
        }
        if (!seen[ticks]) {
            seen[ticks] = true;
            distinct++;
        }
        h = h_new(state, &o);
        assert_int_equal(h_ticks_to_campaign(h, 1, 3 * H_ET), ticks);
    }
    /* 32 draws from 10 values: fewer than 4 distinct is not random. */
    assert_true(distinct >= 4);
}

/*
 * §5.2: "Each server will vote for at most one candidate in a given term,
 * on a first-come-first-served basis". Figure 2, RequestVote: "If votedFor
 * is null or candidateId, and candidate's log is at least as up-to-date as
 * receiver's log, grant vote".
 */
static void test_5_2_one_vote_per_term(void** state) {
    struct h_opts o = h_plain(3, 25);
    struct harness* h = h_new(state, &o);
    struct raft_message m = h_vote_req(h, 2, 1, 1);
    h_inject(h, 1, &m);
    const struct raft_message* r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 1, 2);
    assert_non_null(r);
    assert_false(r->reject);
    assert_int_equal(raft_voted_for(h_r(h, 1)), 2);
    h_drop_queued(h);

    m = h_vote_req(h, 3, 1, 1);
    h_inject(h, 1, &m);
    r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 1, 3);
    assert_non_null(r);
    assert_true(r->reject);
    assert_int_equal(raft_voted_for(h_r(h, 1)), 2);
    h_drop_queued(h);

    /* The same candidate asking again (a retry) gets the same answer. */
    m = h_vote_req(h, 2, 1, 1);
    h_inject(h, 1, &m);
    r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 1, 2);
    assert_non_null(r);
    assert_false(r->reject);
    h_drop_queued(h);

    /* A new term is a new vote. */
    m = h_vote_req(h, 3, 1, 2);
    h_inject(h, 1, &m);
    r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 1, 3);
    assert_non_null(r);
    assert_false(r->reject);
    assert_int_equal(raft_voted_for(h_r(h, 1)), 3);
    assert_int_equal(h_node(h, 1)->hs.vote, 3);
    h_drop_queued(h);
}

/* ====================================================================== */
/* §5.3 Log replication                                                    */
/* ====================================================================== */

/*
 * §5.3: "The leader appends the command to its log as a new entry, then
 * issues AppendEntries RPCs in parallel to each of the other servers to
 * replicate the entry. When the entry has been safely replicated, the
 * leader applies the entry to its state machine [...] Once a follower
 * learns that a log entry is committed, it applies the entry to its local
 * state machine (in log order)." §8: "Raft handles this by having each
 * leader commit a blank no-op entry into the log at the start of its term."
 */
static void test_5_3_leader_appends_noop_and_replicates(void** state) {
    struct h_opts o = h_plain(3, 31);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_term t = h_term(h, 1);
    raft_index noop = raft_last_index(h_r(h, 1));
    assert_true(noop >= 1);
    assert_int_equal(h_term_at(h, 1, noop), t);
    struct h_store* s = &h_node(h, 1)->store;
    assert_int_equal(st_last_index(s), noop);
    assert_int_equal(s->ents[noop - s->snap_index - 1].type, RAFT_ENTRY_NOOP);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_int_equal(raft_commit_index(h_r(h, id)), noop);
        assert_int_equal(h_node(h, id)->applied, noop);
    }

    raft_index x = h_must_propose(h, 1, "x=1");
    assert_int_equal(x, noop + 1);
    raft_index y = h_must_propose(h, 1, "y=2");
    assert_int_equal(y, noop + 2);
    h_stabilize(h);
    assert_int_equal(raft_commit_index(h_r(h, 1)), y);
    h_settle(h, 1);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_int_equal(raft_commit_index(h_r(h, id)), y);
        assert_int_equal(h_node(h, id)->applied, y);
        assert_int_equal(h_term_at(h, id, x), t);
    }
    assert_true(h->committed[x].hash ==
                h_hash(RAFT_ENTRY_NORMAL, (const uint8_t*)"x=1", 3));
    assert_true(h->committed[y].hash ==
                h_hash(RAFT_ENTRY_NORMAL, (const uint8_t*)"y=2", 3));
    h_assert_logs_match(h, 1);
}

/*
 * Figure 2, AppendEntries receiver: "2. Reply false if log doesn't contain
 * an entry at prevLogIndex whose term matches prevLogTerm (§5.3)". This is
 * the consistency check behind the Log Matching Property.
 */
static void test_5_3_log_matching_rejects_mismatched_prev(void** state) {
    struct h_opts o = h_plain(3, 32);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_must_propose(h, 1, "a");
    h_stabilize(h);
    h_elect(h, 2); /* its no-op is the last entry, term 2 */
    h_settle(h, 2);
    raft_term t = h_term(h, 2);
    raft_index last = raft_last_index(h_r(h, 3));
    assert_int_equal(h_term_at(h, 3, last), t);
    assert_int_equal(t, 2);

    /* Right index, wrong term. */
    struct raft_entry e = {
        .term = t, .index = last + 1, .len = 1, .data = (const uint8_t*)"z"};
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 2, 3, t);
    m.index = last;
    m.log_term = t - 1;
    m.entries = &e;
    m.n_entries = 1;
    h_inject(h, 3, &m);
    const struct raft_message* r = h_find_msg(h, RAFT_MSG_APPEND_RESP, 3, 2);
    assert_non_null(r);
    assert_true(r->reject);
    assert_int_equal(r->index, last); /* the rejected previous index */
    assert_int_equal(raft_last_index(h_r(h, 3)), last);
    assert_int_equal(h_term_at(h, 3, last), t);
    h_drop_queued(h);

    /* Previous index beyond the log. */
    m.index = last + 5;
    m.log_term = t;
    e.index = last + 6;
    h_inject(h, 3, &m);
    r = h_find_msg(h, RAFT_MSG_APPEND_RESP, 3, 2);
    assert_non_null(r);
    assert_true(r->reject);
    assert_int_equal(r->index, last + 5);
    assert_true(r->reject_hint <= last + 1); /* the hint points into its log */
    assert_int_equal(raft_last_index(h_r(h, 3)), last);
    h_drop_queued(h);

    h_settle(h, 2);
    h_assert_logs_match(h, 2);
}

/* Drops, while filter_budget lasts, successful acknowledgements sent by
 * filter_node that cover filter_index. */
static bool drop_acks_from(struct harness* h, struct raft_message* m) {
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject &&
        m->from == h->filter_node && m->index >= h->filter_index &&
        h->filter_budget > 0) {
        h->filter_budget--;
        return false;
    }
    return true;
}

/* Drops, while filter_budget lasts, appends with entries to filter_node. */
static bool drop_appends_to(struct harness* h, struct raft_message* m) {
    if (m->type == RAFT_MSG_APPEND && m->n_entries > 0 &&
        m->to == h->filter_node && h->filter_budget > 0) {
        h->filter_budget--;
        return false;
    }
    return true;
}

/*
 * Figure 2, AppendEntries RPC, Results: "success: true if follower
 * contained entry matching prevLogIndex and prevLogTerm". Every request
 * gets an answer, also one that brings nothing new, such as a retry after
 * a lost response; §5.3: "If followers crash or run slowly, or if network
 * packets are lost, the leader retries AppendEntries RPCs indefinitely".
 * See FINDINGS.md U3 (tests/sim F3).
 */
static void test_5_3_matching_append_always_answered(void** state) {
    struct h_opts o = h_plain(3, 36);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_must_propose(h, 1, "a");
    h_settle(h, 1);
    raft_term t = h_term(h, 1);
    raft_index last = raft_last_index(h_r(h, 3));

    /* A replayed append: the previous entry matches, nothing is new. */
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 3, t);
    m.index = last;
    m.log_term = h_term_at(h, 3, last);
    m.commit = raft_commit_index(h_r(h, 1));
    h_inject(h, 3, &m);
    const struct raft_message* r = h_find_msg(h, RAFT_MSG_APPEND_RESP, 3, 1);
    assert_non_null(r);
    assert_false(r->reject);
    assert_int_equal(r->index, last);
    h_drop_queued(h);

    /* What depends on it: one lost acknowledgement must not stall commit
     * (node 3 is away, so node 2's acknowledgement is needed). */
    h_isolate(h, 3);
    h->filter = drop_acks_from;
    h->filter_node = 2;
    h->filter_budget = 1;
    h->filter_index = raft_last_index(h_r(h, 1)) + 1;
    raft_index x = h_must_propose(h, 1, "b");
    assert_int_equal(x, h->filter_index);
    h_stabilize(h);
    assert_int_equal(h->filter_budget, 0); /* the scenario happened */
    assert_true(raft_commit_index(h_r(h, 1)) < x);
    for (int i = 0; i < 2 * H_ET; i++) {
        h_tick(h, 1, 1);
        h_stabilize(h);
    }
    assert_true(raft_commit_index(h_r(h, 1)) >= x);
}

/*
 * §5.3: "If followers crash or run slowly, or if network packets are lost,
 * the leader retries AppendEntries RPCs indefinitely (even after it has
 * responded to the client) until all followers eventually store all log
 * entries." One append lost while the follower's progress is in REPLICATE
 * must be sent again. See FINDINGS.md U4 (tests/sim F2).
 */
static void test_5_3_leader_retries_lost_append(void** state) {
    struct h_opts o = h_plain(3, 37);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_isolate(h, 3);
    struct raft_progress_info p2;
    assert_true(h_progress_of(h, 1, 2, &p2));
    assert_int_equal(p2.state, RAFT_PROGRESS_REPLICATE);
    h->filter = drop_appends_to;
    h->filter_node = 2;
    h->filter_budget = 1;
    raft_index x = h_must_propose(h, 1, "lost once");
    h_stabilize(h);
    assert_int_equal(h->filter_budget, 0);
    assert_true(raft_commit_index(h_r(h, 1)) < x);
    for (int i = 0; i < 2 * H_ET; i++) {
        h_tick(h, 1, 1);
        h_stabilize(h);
    }
    assert_true(raft_last_index(h_r(h, 2)) >= x);
    assert_true(raft_commit_index(h_r(h, 1)) >= x);
}

/* Preloaded terms: node 1 and 3 [1 1 3], node 2 [1 1 2 2]. */
static struct harness* h_new_divergent(void** state, uint64_t seed) {
    static const raft_term good[] = {1, 1, 3};
    static const raft_term bad[] = {1, 1, 2, 2};
    struct h_opts o = h_plain(3, seed);
    struct harness* h = h_new_empty(state, &o);
    struct raft_conf conf;
    h_conf_voters(&conf, 3);
    struct h_preload p1 = {.terms = good, .n = 3, .hs = {3, 0, 2}};
    struct h_preload p2 = {.terms = bad, .n = 4, .hs = {2, 0, 2}};
    h_start_node(h, 1, &conf, &p1);
    h_start_node(h, 2, &conf, &p2);
    h_start_node(h, 3, &conf, &p1);
    h_process_all(h);
    return h;
}

/*
 * Figure 2, AppendEntries receiver: "3. If an existing entry conflicts
 * with a new one (same index but different terms), delete the existing
 * entry and all that follow it (§5.3) 4. Append any new entries not
 * already in the log". An append that brings nothing new (a delayed
 * duplicate) must not truncate anything.
 */
static void test_5_3_follower_truncates_conflicting_suffix(void** state) {
    struct harness* h = h_new_divergent(state, 33);
    assert_int_equal(raft_last_index(h_r(h, 2)), 4);
    h_elect(h, 1); /* term 4, no-op at index 4 */
    assert_int_equal(h_term(h, 1), 4);
    static const raft_term want[] = {0, 1, 1, 3, 4};
    assert_int_equal(raft_last_index(h_r(h, 2)), 4);
    struct h_store* s = &h_node(h, 2)->store;
    for (raft_index i = 1; i <= 4; i++) {
        assert_int_equal(h_term_at(h, 2, i), want[i]);
        assert_int_equal(st_term_or_zero(s, i), want[i]);
    }

    /* A stale duplicate of entry 2 arrives late. */
    struct raft_entry e = {.term = 1,
                           .index = 2,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = 8,
                           .data = (const uint8_t*)"pre-2-t1"};
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 2, 4);
    m.index = 1;
    m.log_term = 1;
    m.entries = &e;
    m.n_entries = 1;
    h_inject(h, 2, &m);
    const struct raft_message* r = h_find_msg(h, RAFT_MSG_APPEND_RESP, 2, 1);
    assert_non_null(r);
    assert_false(r->reject);
    assert_int_equal(raft_last_index(h_r(h, 2)), 4);
    assert_int_equal(h_term_at(h, 2, 3), 3);
    assert_int_equal(h_term_at(h, 2, 4), 4);
    assert_int_equal(st_last_index(s), 4);
    h_drop_queued(h);
    h_settle(h, 1);
    h_assert_logs_match(h, 1);
}

/* Preload: node 1 and 3 have 10 entries of term 1 then `lead` of term 3;
 * node 2 has the same 10 then `follow` of term 2 (a deposed leader's
 * uncommitted entries) or nothing more. */
static struct harness* h_new_lagging(void** state,
                                     uint64_t seed,
                                     size_t lead,
                                     size_t follow) {
    raft_term* a = h_alloc((10 + lead) * sizeof(*a));
    raft_term* b = h_alloc((10 + follow) * sizeof(*b));
    for (size_t i = 0; i < 10 + lead; i++) {
        a[i] = i < 10 ? 1 : 3;
    }
    for (size_t i = 0; i < 10 + follow; i++) {
        b[i] = i < 10 ? 1 : 2;
    }
    struct h_opts o = h_plain(3, seed);
    struct harness* h = h_new_empty(state, &o);
    struct raft_conf conf;
    h_conf_voters(&conf, 3);
    struct h_preload pa = {.terms = a, .n = 10 + lead, .hs = {3, 0, 10}};
    struct h_preload pb = {.terms = b, .n = 10 + follow, .hs = {2, 0, 10}};
    h_start_node(h, 1, &conf, &pa);
    h_start_node(h, 2, &conf, &pb);
    h_start_node(h, 3, &conf, &pa);
    free(a);
    free(b);
    h_process_all(h);
    return h;
}

/*
 * §5.3: "If desired, the protocol can be optimized to reduce the number of
 * rejected AppendEntries RPCs. For example, when rejecting an
 * AppendEntries request, the follower can include the term of the
 * conflicting entry and the first index it stores for that term. With this
 * information, the leader can decrement nextIndex to bypass all of the
 * conflicting entries in that term; one AppendEntries RPC will be required
 * for each term with conflicting entries, rather than one RPC per entry."
 * Node 2 holds 100 conflicting entries of term 2 past a common prefix of
 * 10, the leader 40 entries of term 3: one entry at a time would take 40
 * rejections, the hint needs at most one per conflicting term (+1).
 */
static void test_5_3_fast_backtracking_with_conflict_hint(void** state) {
    struct harness* h = h_new_lagging(state, 34, 40, 100);
    assert_int_equal(raft_last_index(h_r(h, 2)), 110);
    h_elect(h, 1);
    h_settle(h, 1);
    unsigned rejects = h->append_rejects[2][1];
    print_message("divergent follower: %u rejections, %u appends\n", rejects,
                  h->delivered[1][2][RAFT_MSG_APPEND]);
    assert_true(rejects >= 1);
    assert_true(rejects <= 3);
    assert_int_equal(raft_last_index(h_r(h, 2)), 51);
    h_assert_logs_match(h, 1);
    assert_int_equal(raft_commit_index(h_r(h, 2)), 51);

    /* A follower far behind (short log) needs one rejection. */
    h = h_new_lagging(state, 35, 40, 0);
    h_elect(h, 1);
    h_settle(h, 1);
    rejects = h->append_rejects[2][1];
    print_message("short follower: %u rejections, %u appends\n", rejects,
                  h->delivered[1][2][RAFT_MSG_APPEND]);
    assert_true(rejects <= 1);
    h_assert_logs_match(h, 1);
}

/* ====================================================================== */
/* §5.4 Safety                                                             */
/* ====================================================================== */

/*
 * §5.4.1: "the voter denies its vote if its own log is more up-to-date
 * than that of the candidate. Raft determines which of two logs is more
 * up-to-date by comparing the index and term of the last entries in the
 * logs. If the logs have last entries with different terms, then the log
 * with the later term is more up-to-date. If the logs end with the same
 * term, then whichever log is longer is more up-to-date."
 */
/*
 * Driver cost, not a paper rule: every message is a network round trip
 * for the driver, so appends that a round produces for one follower go
 * as one message carrying them all (and the follower's cumulative
 * acknowledgements as one), with the same outcome.
 */
static void test_5_3_round_sends_one_append_per_follower(void** state) {
    struct h_opts o = h_plain(3, 644);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_stabilize(h);

    /* Two proposals in one round, as a driver makes when writes arrive
     * between its steps: without folding, each gets its own append. */
    raft_index first = 0, last = 0;
    raft_term term = 0;
    for (int i = 0; i < 2; i++) {
        const uint8_t* data = (const uint8_t*)"ab" + i;
        uint32_t len = 1;
        assert_int_equal(raft_propose(h_r(h, 1), RAFT_ENTRY_NORMAL, &data, &len,
                                      1, &last, &term),
                         RAFT_OK);
        first = i == 0 ? last : first;
    }
    h_process(h, 1);
    assert_int_equal(h_count_msgs(h, RAFT_MSG_APPEND, 1), 2);
    const struct raft_message* m = h_find_msg(h, RAFT_MSG_APPEND, 1, 2);
    assert_non_null(m);
    assert_int_equal(m->index, first - 1);
    assert_int_equal(m->n_entries, 2);
    h_stabilize(h);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_true(raft_commit_index(h_r(h, id)) >= last);
    }

    /* Two appends reaching a follower in one round: one acknowledgement
     * (each alone is answered, test_5_3_matching_append_always_answered). */
    struct raft_message hb = {.type = RAFT_MSG_APPEND,
                              .from = 1,
                              .to = 2,
                              .term = raft_current_term(h_r(h, 1)),
                              .index = last,
                              .log_term = raft_current_term(h_r(h, 1)),
                              .commit = last};
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &hb};
    h_step(h, h_node(h, 2), &ev, NULL);
    h_step(h, h_node(h, 2), &ev, NULL);
    h_process(h, 2);
    assert_int_equal(h_count_msgs(h, RAFT_MSG_APPEND_RESP, 2), 1);
    h_stabilize(h);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_true(raft_commit_index(h_r(h, id)) >= last);
    }
}

static void test_5_4_1_election_restriction(void** state) {
    static const raft_term voter_log[] = {1, 1, 2}; /* ends (3, term 2) */
    static const struct {
        raft_term log_term;
        raft_index index;
        bool grant;
    } cases[] = {
        {1, 10, false},                /* longer but older term */
        {1, 3, false},  {2, 2, false}, /* same term, shorter */
        {2, 3, true},                  /* identical */
        {2, 4, true},                  /* same term, longer */
        {3, 1, true},                  /* later term, shorter */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct h_opts o = h_plain(3, 41);
        struct harness* h = h_new_empty(state, &o);
        struct raft_conf conf;
        h_conf_voters(&conf, 3);
        struct h_preload p = {.terms = voter_log, .n = 3, .hs = {2, 0, 1}};
        h_start_node(h, 1, &conf, &p);
        h_process_all(h);
        struct raft_message m = h_mkmsg(RAFT_MSG_VOTE, 2, 1, 3);
        m.log_term = cases[c].log_term;
        m.index = cases[c].index;
        h_inject(h, 1, &m);
        const struct raft_message* r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 1, 2);
        assert_non_null(r);
        if (r->reject == cases[c].grant) {
            fail_msg("case %zu: candidate (term %llu, index %llu): %s", c,
                     (unsigned long long)cases[c].log_term,
                     (unsigned long long)cases[c].index,
                     r->reject ? "rejected" : "granted");
        }
        assert_int_equal(h_term(h, 1), 3);
        assert_int_equal(raft_voted_for(h_r(h, 1)), cases[c].grant ? 2 : 0);
    }

    /* In a cluster: a server that missed committed entries cannot win,
     * and the one that wins holds them (Leader Completeness, §5.4.3). */
    struct h_opts o = h_plain(3, 42);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_isolate(h, 3);
    raft_index a = h_must_propose(h, 1, "a");
    raft_index b = h_must_propose(h, 1, "b");
    h_stabilize(h);
    assert_int_equal(raft_commit_index(h_r(h, 1)), b);
    h_recover(h);
    h_isolate(h, 1);
    for (int i = 0; i < 3; i++) {
        h_campaign(h, 3);
        h_stabilize(h);
        assert_true(h_role(h, 3) != RAFT_LEADER);
    }
    h_campaign(h, 2);
    h_stabilize(h);
    assert_int_equal(h_role(h, 2), RAFT_LEADER);
    assert_int_equal(h_term_at(h, 2, a), h_term_at(h, 1, a));
    assert_int_equal(h_term_at(h, 2, b), h_term_at(h, 1, b));
    h_settle(h, 2);
    assert_true(raft_commit_index(h_r(h, 3)) >= b);
}

/* Figure 8 of the paper, state (b): S1 [1 2], S2 [1 2], S3 [1],
 * S4 [1], S5 [1 3]; S5 led term 3 with the votes of S3, S4 and itself. */
static struct harness* h_new_figure8(void** state, uint64_t seed) {
    static const raft_term t12[] = {1, 2};
    static const raft_term t1[] = {1};
    static const raft_term t13[] = {1, 3};
    struct h_opts o = h_plain(5, seed);
    struct harness* h = h_new_empty(state, &o);
    struct raft_conf conf;
    h_conf_voters(&conf, 5);
    struct h_preload s1 = {.terms = t12, .n = 2, .hs = {2, 0, 1}};
    struct h_preload s3 = {.terms = t1, .n = 1, .hs = {3, 5, 1}};
    struct h_preload s4 = {.terms = t1, .n = 1, .hs = {3, 5, 1}};
    struct h_preload s5 = {.terms = t13, .n = 2, .hs = {3, 5, 1}};
    h_start_node(h, 1, &conf, &s1);
    h_start_node(h, 2, &conf, &s1);
    h_start_node(h, 3, &conf, &s3);
    h_start_node(h, 4, &conf, &s4);
    h_start_node(h, 5, &conf, &s5);
    h_process_all(h);
    return h;
}

/* Figure 8 (c): S1 leads term 4 and replicates index 2 (term 2) to S2 and
 * S3, but its own index 3 (term 4) to nobody; S4 hears no appends. */
static bool figure8_filter(struct harness* h, struct raft_message* m) {
    (void)h;
    if (m->from != 1 || m->type != RAFT_MSG_APPEND) {
        return true;
    }
    if (m->to == 4) {
        return false;
    }
    uint32_t keep = 0;
    while (keep < m->n_entries && m->entries[keep].index < 3) {
        keep++;
    }
    m->n_entries = keep;
    return true;
}

/* Campaigns `id` until it wins, at most `tries` elections. */
static bool h_campaign_until_leader(struct harness* h,
                                    raft_node_id id,
                                    int tries) {
    for (int i = 0; i < tries && h_role(h, id) != RAFT_LEADER; i++) {
        h_campaign(h, id);
        h_stabilize(h);
    }
    return h_role(h, id) == RAFT_LEADER;
}

/*
 * §5.4.2: "Raft never commits log entries from previous terms by counting
 * replicas. Only log entries from the leader's current term are committed
 * by counting replicas". Figure 8: index 2 (term 2) sits on S1, S2 and S3,
 * a majority, yet S5 can still be elected and overwrite it; so S1 must not
 * have committed it.
 */
static void test_5_4_2_no_commit_of_old_term_by_counting(void** state) {
    struct harness* h = h_new_figure8(state, 51);
    h_isolate(h, 5);
    h->filter = figure8_filter;
    /* Term 3 is lost (S3 and S4 voted for S5 in it), term 4 is won. */
    assert_true(h_campaign_until_leader(h, 1, 2));
    h_tick(h, 1, H_HB);
    h_stabilize(h);
    assert_int_equal(h_role(h, 1), RAFT_LEADER);
    assert_int_equal(h_term(h, 1), 4);
    assert_int_equal(raft_last_index(h_r(h, 1)), 3);
    /* The scenario holds: the leader knows index 2 is on a majority. */
    struct raft_progress_info p2, p3;
    assert_true(h_progress_of(h, 1, 2, &p2));
    assert_true(h_progress_of(h, 1, 3, &p3));
    assert_int_equal(p2.match, 2);
    assert_int_equal(p3.match, 2);
    assert_int_equal(h_term_at(h, 3, 2), 2);
    /* ... and still has not committed it. */
    assert_int_equal(raft_commit_index(h_r(h, 1)), 1);

    /* Figure 8 (d): S1 crashes, S5 wins with S2, S3, S4 and overwrites. */
    h_recover(h);
    h_isolate(h, 1);
    assert_true(h_campaign_until_leader(h, 5, 4));
    h_settle(h, 5);
    assert_true(raft_commit_index(h_r(h, 5)) >= 3);
    for (raft_node_id id = 2; id <= 5; id++) {
        assert_int_equal(h_term_at(h, id, 2), 3);
    }
    /* S1 comes back and is brought in line. */
    h_recover(h);
    h_settle(h, 5);
    assert_int_equal(h_role(h, 1), RAFT_FOLLOWER);
    assert_int_equal(h_term_at(h, 1, 2), 3);
    h_assert_logs_match(h, 5);
}

/*
 * §5.4.2: "once an entry from the current term has been committed in this
 * way, then all prior entries are committed indirectly because of the Log
 * Matching Property." Figure 8 (e): S1 replicates its term-4 entry to a
 * majority before crashing; then S5 cannot win, and index 2 is safe.
 */
static bool figure8e_filter(struct harness* h, struct raft_message* m) {
    (void)h;
    return !(m->from == 1 && m->to == 4 && m->type == RAFT_MSG_APPEND);
}

static void test_5_4_2_commit_after_current_term_entry(void** state) {
    struct harness* h = h_new_figure8(state, 52);
    h_isolate(h, 5);
    h->filter = figure8e_filter;
    assert_true(h_campaign_until_leader(h, 1, 2));
    assert_int_equal(h_term(h, 1), 4);
    /* Index 3 (term 4) on S1, S2, S3 commits it and index 2 with it. */
    assert_int_equal(raft_commit_index(h_r(h, 1)), 3);
    assert_int_equal(h_node(h, 1)->applied, 3);
    h_tick(h, 1, H_HB);
    h_stabilize(h);
    assert_int_equal(raft_commit_index(h_r(h, 2)), 3);
    assert_int_equal(raft_commit_index(h_r(h, 3)), 3);

    h_recover(h);
    h_isolate(h, 1);
    assert_false(h_campaign_until_leader(h, 5, 4));
    /* Whoever wins instead holds the committed entries. */
    assert_true(h_campaign_until_leader(h, 2, 2));
    assert_int_equal(h_term_at(h, 2, 2), 2);
    assert_int_equal(h_term_at(h, 2, 3), 4);
    h_settle(h, 2);
    assert_int_equal(h_term_at(h, 5, 2), 2);
    h_recover(h);
    h_settle(h, 2);
    h_assert_logs_match(h, 2);
}

/* ====================================================================== */
/* Thesis §9.6 PreVote, §6.2 CheckQuorum                                  */
/* ====================================================================== */

/*
 * Thesis §9.6: "In the Pre-Vote algorithm, a candidate only increments its
 * term if it first learns from a majority of the cluster that they would
 * be willing to grant the candidate their votes [...] This prevents a
 * server that has been partitioned from disrupting the cluster when it
 * rejoins." A node cut off for many election timeouts keeps its term, and
 * when it comes back the leader keeps leading in the same term.
 */
static void test_9_6_prevote_does_not_increase_term(void** state) {
    struct h_opts o = {
        .n = 3, .pre_vote = true, .check_quorum = true, .seed = 96};
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_term t = h_term(h, 1);
    h_isolate(h, 3);
    for (int i = 0; i < 5; i++) {
        char text[16];
        snprintf(text, sizeof(text), "w%d", i);
        h_must_propose(h, 1, text);
    }
    h_tick_all(h, 10 * H_ET);
    assert_int_equal(h_term(h, 3), t);
    assert_true(h_role(h, 3) == RAFT_FOLLOWER ||
                h_role(h, 3) == RAFT_PRE_CANDIDATE);
    assert_int_equal(h_leader(h), 1);
    assert_int_equal(h_term(h, 1), t);

    h_recover(h);
    h_tick_all(h, 3 * H_ET);
    assert_int_equal(h_leader(h), 1);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_int_equal(h_term(h, id), t);
        assert_int_equal(raft_leader(h_r(h, id)), 1);
    }
    assert_int_equal(h_role(h, 3), RAFT_FOLLOWER);
    h_assert_logs_match(h, 1);
}

/*
 * Thesis §6.2: "each leader [...] steps down if an election timeout
 * elapses without a successful round of heartbeats to a majority of its
 * cluster; this allows clients to retry their requests with another
 * server." A leader that hears from a majority keeps leading.
 */
static void test_6_2_check_quorum_leader_steps_down(void** state) {
    struct h_opts o = {.n = 3, .check_quorum = true, .seed = 62};
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_tick_all(h, 5 * H_ET);
    assert_int_equal(h_leader(h), 1);
    assert_true(raft_lease_valid(h_r(h, 1)));
    raft_term t = h_term(h, 1);

    h_isolate(h, 1);
    unsigned ticks = 0;
    while (h_role(h, 1) == RAFT_LEADER && ticks < 4 * H_ET) {
        h_tick(h, 1, 1);
        ticks++;
    }
    print_message("isolated leader stepped down after %u ticks\n", ticks);
    assert_true(h_role(h, 1) != RAFT_LEADER);
    assert_true(ticks >= H_ET);     /* not before a full timeout of silence */
    assert_true(ticks <= 2 * H_ET); /* and soon after one */
    assert_false(raft_lease_valid(h_r(h, 1)));
    assert_int_equal(h_term(h, 1), t); /* stepping down changes no term */

    /* The majority elects a new leader by itself. */
    h_tick_all(h, 4 * H_ET);
    raft_node_id ld = h_leader(h);
    assert_true(ld == 2 || ld == 3);
    assert_true(h_term(h, ld) > t);
}

/* ====================================================================== */
/* Thesis §6.4 linearizable reads                                          */
/* ====================================================================== */

/*
 * Thesis §6.4: "2. The leader needs to make sure it hasn't been superseded
 * by a newer leader of which it is unaware. It issues a new round of
 * heartbeats and waits for their acknowledgments from a majority of the
 * cluster. Once these acknowledgments are received, the leader knows that
 * there could not have existed a leader for a greater term at the moment
 * it sent the heartbeats. Thus, the readIndex was, at the time, the
 * largest commit index ever seen by any server in the cluster."
 */
static void test_6_4_read_index_requires_heartbeat_round(void** state) {
    struct h_opts o = {.n = 5, .check_quorum = true, .seed = 641};
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_index commit = raft_commit_index(h_r(h, 1));
    assert_int_equal(commit, raft_last_index(h_r(h, 1)));

    /* Only node 2 can answer: with the leader that is 2 of 5. */
    h_cut(h, 1, 3);
    h_cut(h, 1, 4);
    h_cut(h, 1, 5);
    assert_int_equal(raft_read_index(h_r(h, 1), 42), RAFT_OK);
    h_process(h, 1);
    assert_null(h_read(h, 1, 42)); /* never before a heartbeat round */
    assert_true(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1) >= 1);
    h_stabilize(h);
    assert_null(h_read(h, 1, 42));

    /* A majority answers the next round: the read is released at the
     * commit index of the moment it was asked. */
    h_recover(h);
    h_tick(h, 1, H_HB);
    h_stabilize(h);
    const struct raft_read_state* rs = h_read(h, 1, 42);
    assert_non_null(rs);
    assert_false(rs->failed);
    assert_int_equal(rs->index, commit);

    /* A leader cut off from everyone never confirms; when it steps down
     * the read is reported failed. */
    h_isolate(h, 1);
    assert_int_equal(raft_read_index(h_r(h, 1), 43), RAFT_OK);
    h_stabilize(h);
    unsigned ticks = 0;
    while (h_role(h, 1) == RAFT_LEADER && ticks < 4 * H_ET) {
        assert_true(h_read(h, 1, 43) == NULL || h_read(h, 1, 43)->failed);
        h_tick(h, 1, 1);
        h_stabilize(h);
        ticks++;
    }
    assert_true(h_role(h, 1) != RAFT_LEADER);
    rs = h_read(h, 1, 43);
    assert_non_null(rs);
    assert_true(rs->failed);
}

/*
 * Batching (ours, on top of §6.4 step 3): while a confirmation round is out,
 * new reads send no round of their own; once it is answered, one round
 * confirms all of them. A read registered during a round is never released
 * by that round's answers: they may predate it.
 */
static void test_6_4_reads_during_a_round_share_the_next(void** state) {
    struct h_opts o = h_plain(3, 643);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_stabilize(h);

    assert_int_equal(raft_read_index(h_r(h, 1), 50), RAFT_OK);
    h_process(h, 1);
    /* one follower makes a quorum with the leader (send_read_round) */
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 1);
    /* Three more reads while that round is out: no new heartbeats. */
    for (uint64_t ctx = 51; ctx <= 53; ctx++) {
        assert_int_equal(raft_read_index(h_r(h, 1), ctx), RAFT_OK);
        h_process(h, 1);
    }
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 1);
    assert_null(h_read(h, 1, 50));

    /* Answer the first round only (its heartbeat, then the answer). */
    for (int i = 0; i < 2; i++) {
        assert_true(h_deliver_one(h));
    }
    assert_non_null(h_read(h, 1, 50));
    for (uint64_t ctx = 51; ctx <= 53; ctx++) {
        assert_null(h_read(h, 1, ctx)); /* not by the old round */
    }
    /* Its answer let exactly one new round go, for the three. */
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 1);
    h_stabilize(h);
    for (uint64_t ctx = 51; ctx <= 53; ctx++) {
        const struct raft_read_state* rs = h_read(h, 1, ctx);
        assert_non_null(rs);
        assert_false(rs->failed);
    }
}

/*
 * Thesis §6.4: "Followers [...] could also help offload the processing of
 * read-only queries [...] the follower issues a request to the leader just
 * to learn the current readIndex (the leader would execute steps 1-3
 * above); the follower can then execute steps 4 and 5 on its own state
 * machine for the read."
 */
static void test_6_4_read_index_on_follower(void** state) {
    struct h_opts o = h_plain(3, 642);
    struct harness* h = h_new(state, &o);
    assert_int_equal(raft_read_index(h_r(h, 2), 7), RAFT_ENOLEADER);
    h_elect(h, 1);
    h_must_propose(h, 1, "v=1");
    h_stabilize(h);
    raft_index commit = raft_commit_index(h_r(h, 1));

    assert_int_equal(raft_read_index(h_r(h, 2), 8), RAFT_OK);
    h_process(h, 2);
    assert_non_null(h_find_msg(h, RAFT_MSG_READ_INDEX, 2, 1));
    h_stabilize(h);
    const struct raft_read_state* rs = h_read(h, 2, 8);
    assert_non_null(rs);
    assert_false(rs->failed);
    assert_int_equal(rs->index, commit);
    /* The follower serves it once it has applied that far. */
    h_settle(h, 1);
    assert_true(h_node(h, 2)->applied >= rs->index);
}

/*
 * The requester's ReadIndex request acknowledges the leader for its own
 * reads (raft.c, read_requester): in a 3-node cluster the leader and the
 * requester are a majority, so a follower's read is answered without a
 * heartbeat round; in a 5-node cluster one more voter must answer a round.
 * A read the leader registers afterwards still waits for its own round.
 */
static void test_6_4_follower_request_counts_as_ack(void** state) {
    struct h_opts o = h_plain(3, 644);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_must_propose(h, 1, "v=1");
    h_stabilize(h);
    raft_index commit = raft_commit_index(h_r(h, 1));

    assert_int_equal(raft_read_index(h_r(h, 2), 9), RAFT_OK);
    h_process(h, 2);
    assert_true(h_deliver_one(h)); /* the READ_INDEX, to the leader */
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 0);
    const struct raft_message* resp =
        h_find_msg(h, RAFT_MSG_READ_INDEX_RESP, 1, 2);
    assert_non_null(resp);
    assert_false(resp->reject);
    assert_int_equal(resp->index, commit);
    h_stabilize(h);
    const struct raft_read_state* rs = h_read(h, 2, 9);
    assert_non_null(rs);
    assert_false(rs->failed);
    assert_int_equal(rs->index, commit);

    /* The leader's own read is not confirmed by that request. */
    assert_int_equal(raft_read_index(h_r(h, 1), 10), RAFT_OK);
    h_process(h, 1);
    assert_null(h_read(h, 1, 10));
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 1);
    h_stabilize(h);
    assert_non_null(h_read(h, 1, 10));

    /* 5 nodes: leader + requester are 2 of 5; a round must confirm. */
    struct h_opts o5 = h_plain(5, 645);
    struct harness* h5 = h_new(state, &o5);
    h_elect(h5, 1);
    h_must_propose(h5, 1, "v=1");
    h_stabilize(h5);
    h_cut(h5, 1, 3);
    h_cut(h5, 1, 4);
    h_cut(h5, 1, 5);
    assert_int_equal(raft_read_index(h_r(h5, 2), 11), RAFT_OK);
    h_stabilize(h5);
    assert_null(h_read(h5, 2, 11));
    h_recover(h5);
    h_tick(h5, 1, H_HB);
    h_stabilize(h5);
    rs = h_read(h5, 2, 11);
    assert_non_null(rs);
    assert_false(rs->failed);
}

/*
 * A round that only confirms reads goes to quorum - 1 voters (raft.c,
 * send_read_round); should the chosen one not answer, the periodic
 * heartbeat, sent to everyone, confirms the reads.
 */
static void test_6_4_read_round_goes_to_a_quorum(void** state) {
    struct h_opts o = h_plain(3, 646);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_must_propose(h, 1, "v=1");
    h_stabilize(h);

    assert_int_equal(raft_read_index(h_r(h, 1), 70), RAFT_OK);
    h_process(h, 1);
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 1);
    const struct raft_message* hb = h_find_msg(h, RAFT_MSG_HEARTBEAT, 1, 0);
    assert_non_null(hb);
    raft_node_id chosen = hb->to;
    h_cut(h, 1, chosen);
    h_stabilize(h);
    assert_null(h_read(h, 1, 70));
    h_tick(h, 1, H_HB);
    assert_int_equal(h_count_msgs(h, RAFT_MSG_HEARTBEAT, 1), 2);
    h_stabilize(h);
    const struct raft_read_state* rs = h_read(h, 1, 70);
    assert_non_null(rs);
    assert_false(rs->failed);

    /* 5 nodes: two followers make the quorum. */
    struct h_opts o5 = h_plain(5, 647);
    struct harness* h5 = h_new(state, &o5);
    h_elect(h5, 1);
    h_must_propose(h5, 1, "v=1");
    h_stabilize(h5);
    assert_int_equal(raft_read_index(h_r(h5, 1), 71), RAFT_OK);
    h_process(h5, 1);
    assert_int_equal(h_count_msgs(h5, RAFT_MSG_HEARTBEAT, 1), 2);
    h_stabilize(h5);
    assert_non_null(h_read(h5, 1, 71));
}

static bool drop_appends_from(struct harness* h, struct raft_message* m) {
    return !(m->type == RAFT_MSG_APPEND && m->from == h->filter_node);
}

/*
 * Thesis §6.4: "1. If the leader has not yet marked an entry from its
 * current term committed, it waits until it has done so. The Leader
 * Completeness Property guarantees that a leader has all committed
 * entries, but at the start of its term, it may not know which those are."
 */
static void test_6_4_read_index_waits_for_leader_commit_in_term(void** state) {
    struct h_opts o = h_plain(3, 643);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_must_propose(h, 1, "v=1");
    h_stabilize(h);
    h->filter = drop_appends_from;
    h->filter_node = 2;
    h_campaign(h, 2);
    h_stabilize(h);
    assert_int_equal(h_role(h, 2), RAFT_LEADER);
    raft_index noop = raft_last_index(h_r(h, 2));
    assert_true(raft_commit_index(h_r(h, 2)) < noop);

    assert_int_equal(raft_read_index(h_r(h, 2), 11), RAFT_OK);
    for (int i = 0; i < 3; i++) { /* heartbeat rounds succeed meanwhile */
        h_tick(h, 2, H_HB);
        h_stabilize(h);
    }
    assert_null(h_read(h, 2, 11));

    h->filter = NULL;
    for (int i = 0; i < 3 && h_read(h, 2, 11) == NULL; i++) {
        h_tick(h, 2, H_HB);
        h_stabilize(h);
    }
    assert_int_equal(raft_commit_index(h_r(h, 2)), noop);
    const struct raft_read_state* rs = h_read(h, 2, 11);
    assert_non_null(rs);
    assert_false(rs->failed);
    assert_true(rs->index >= noop);
}

/* ====================================================================== */
/* Thesis §3.10 leadership transfer                                        */
/* ====================================================================== */

/*
 * Thesis §3.10: "1. The prior leader stops accepting new client requests.
 * 2. The prior leader fully updates the target server's log to match its
 * own [...] 3. The prior leader sends a TimeoutNow request to the target
 * server. This request has the same effect as the target server's
 * election timer firing". And: "If the transfer does not complete within
 * an election timeout, the prior leader aborts the transfer and resumes
 * accepting client requests."
 */
static void test_3_10_leader_transfer(void** state) {
    struct h_opts o = {
        .n = 3, .pre_vote = true, .check_quorum = true, .seed = 310};
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_term t = h_term(h, 1);
    assert_int_equal(raft_transfer_leader(h_r(h, 1), 1), RAFT_EINVAL);
    assert_int_equal(raft_transfer_leader(h_r(h, 1), 9), RAFT_EINVAL);
    assert_int_equal(raft_transfer_leader(h_r(h, 2), 3), RAFT_ENOTLEADER);

    /* A lagging target is first brought up to date, then told to run. */
    h_isolate(h, 2);
    raft_index last = h_must_propose(h, 1, "before");
    h_stabilize(h);
    h_recover(h);
    assert_int_equal(raft_transfer_leader(h_r(h, 1), 2), RAFT_OK);
    assert_int_equal(raft_transferee(h_r(h, 1)), 2);
    assert_int_equal(h_propose(h, 1, "refused", NULL), RAFT_ETRANSFER);
    h_stabilize(h);
    /* Heartbeats find the lagging target; it must catch up and run before
     * the transfer times out (an election timeout). */
    for (unsigned i = 0; i + 1 < H_ET && h_role(h, 2) != RAFT_LEADER; i++) {
        h_tick(h, 1, 1);
        h_stabilize(h);
    }
    assert_true(h->delivered[1][2][RAFT_MSG_TIMEOUT_NOW] >= 1);
    assert_int_equal(h_role(h, 2), RAFT_LEADER);
    /* One election, won even though node 3 still had a live leader (the
     * CheckQuorum lease is overridden by a transfer). */
    assert_int_equal(h_term(h, 2), t + 1);
    assert_int_equal(h_role(h, 1), RAFT_FOLLOWER);
    assert_int_equal(raft_transferee(h_r(h, 1)), 0);
    assert_true(raft_last_index(h_r(h, 2)) > last);
    h_settle(h, 2);

    /* An unreachable target: aborted after an election timeout. */
    h_isolate(h, 3);
    assert_int_equal(raft_transfer_leader(h_r(h, 2), 3), RAFT_OK);
    h_process(h, 2);
    assert_int_equal(h_propose(h, 2, "refused", NULL), RAFT_ETRANSFER);
    unsigned ticks = 0;
    while (raft_transferee(h_r(h, 2)) != 0 && ticks < 3 * H_ET) {
        h_tick(h, 2, 1);
        h_tick(h, 1, 1);
        h_stabilize(h);
        ticks++;
    }
    print_message("transfer aborted after %u ticks\n", ticks);
    assert_int_equal(raft_transferee(h_r(h, 2)), 0);
    assert_true(ticks >= H_ET - 1 && ticks <= H_ET + 1);
    assert_int_equal(h_role(h, 2), RAFT_LEADER);
    assert_int_equal(h_term(h, 2), t + 1);
    h_must_propose(h, 2, "accepted again");
}

/* ====================================================================== */
/* Thesis §4 membership changes                                            */
/* ====================================================================== */

static int h_change(struct harness* h,
                    raft_node_id leader,
                    int change,
                    raft_node_id id) {
    raft_index index = 0;
    int rc = raft_change_conf(h_r(h, leader), change, id, &index);
    h_check_node(h, h_node(h, leader));
    h_process(h, leader);
    return rc;
}

static int h_conf_role_of(struct harness* h, raft_node_id on, raft_node_id id) {
    return raft_conf_role(raft_conf(h_r(h, on)), id);
}

/*
 * Thesis §4.1: "cluster membership changes [...] adding or removing a
 * single server at a time [...] a leader [...] must not begin a new
 * configuration change until the previous one has committed" and the
 * leader may only change the configuration once it has "committed an
 * entry in its current term". Thesis §4.2.1: "the new server joins the
 * cluster as a non-voting member. The leader replicates log entries to
 * it, but it is not yet counted towards majorities for voting or
 * commitment purposes. Once the new server has caught up [...] the
 * reconfiguration can proceed".
 */
static void test_4_1_add_learner_promote_remove(void** state) {
    struct h_opts o = h_plain(3, 41);
    struct harness* h = h_new(state, &o);
    h->filter = drop_appends_from;
    h->filter_node = 1;
    h_campaign(h, 1);
    h_stabilize(h);
    assert_int_equal(h_role(h, 1), RAFT_LEADER);
    assert_int_equal(h_change(h, 1, RAFT_CONF_ADD_LEARNER, 4), RAFT_ENOTREADY);
    h->filter = NULL;
    h_settle(h, 1);

    /* Node 4 starts empty, knowing no configuration, and lags. */
    struct raft_conf none;
    memset(&none, 0, sizeof(none));
    h_start_node(h, 4, &none, NULL);
    h_isolate(h, 4);
    assert_int_equal(h_change(h, 1, RAFT_CONF_ADD_LEARNER, 4), RAFT_OK);
    assert_int_equal(h_change(h, 1, RAFT_CONF_ADD_LEARNER, 5),
                     RAFT_ECONFPENDING);
    assert_int_equal(h_change(h, 1, RAFT_CONF_PROMOTE, 4), RAFT_ECONFPENDING);
    assert_int_equal(h_change(h, 1, RAFT_CONF_REMOVE, 3), RAFT_ECONFPENDING);
    h_settle(h, 1); /* commits without the learner */
    assert_int_equal(h_conf_role_of(h, 1, 4), RAFT_LEARNER);
    assert_int_equal(raft_conf_voter_count(raft_conf(h_r(h, 1))), 3);
    assert_int_equal(raft_commit_index(h_r(h, 1)), raft_last_index(h_r(h, 1)));
    assert_int_equal(h_change(h, 1, RAFT_CONF_ADD_LEARNER, 2), RAFT_EEXIST);
    assert_int_equal(h_change(h, 1, RAFT_CONF_REMOVE, 9), RAFT_ENOTFOUND);

    /* Lagging: promotion refused. */
    for (int i = 0; i < 5; i++) {
        h_must_propose(h, 1, "more");
    }
    h_stabilize(h);
    assert_int_equal(h_change(h, 1, RAFT_CONF_PROMOTE, 4), RAFT_ENOTCAUGHTUP);

    /* A learner never campaigns, however long it hears nothing. */
    raft_term t4 = h_term(h, 4);
    h_tick(h, 4, 5 * H_ET);
    assert_int_equal(h_role(h, 4), RAFT_FOLLOWER);
    assert_int_equal(h_term(h, 4), t4);

    /* The learner catches up but does not count towards commitment. */
    h_recover(h);
    h_settle(h, 1);
    assert_int_equal(raft_last_index(h_r(h, 4)), raft_last_index(h_r(h, 1)));
    assert_int_equal(h_conf_role_of(h, 4, 4), RAFT_LEARNER);
    h_cut(h, 1, 2);
    h_cut(h, 1, 3);
    raft_index lone = h_must_propose(h, 1, "leader and learner only");
    h_settle(h, 1);
    assert_true(raft_last_index(h_r(h, 4)) >= lone);
    assert_true(raft_commit_index(h_r(h, 1)) < lone);
    h_recover(h);
    h_settle(h, 1);
    assert_true(raft_commit_index(h_r(h, 1)) >= lone);

    /* Nor in elections: no vote request goes to it, its grant is no vote. */
    h_isolate(h, 2);
    h_campaign(h, 2);
    assert_null(h_find_msg(h, RAFT_MSG_VOTE, 2, 4));
    h_drop_queued(h);
    struct raft_message m = h_mkmsg(RAFT_MSG_VOTE_RESP, 4, 2, h_term(h, 2));
    h_inject(h, 2, &m);
    assert_int_equal(h_role(h, 2), RAFT_CANDIDATE);
    h_drop_queued(h);
    h_recover(h);
    assert_true(h_campaign_until_leader(h, 2, 3));
    raft_node_id ld = 2;
    h_settle(h, ld);

    /* Caught up: promoted, it now votes and counts. */
    assert_int_equal(h_change(h, ld, RAFT_CONF_PROMOTE, 4), RAFT_OK);
    h_settle(h, ld);
    assert_int_equal(raft_conf_voter_count(raft_conf(h_r(h, ld))), 4);
    assert_int_equal(h_conf_role_of(h, 4, 4), RAFT_VOTER);
    h_isolate(h, 3);
    raft_index four = h_must_propose(h, ld, "needs 3 of 4");
    h_cut(h, ld, 4);
    h_settle(h, ld);
    assert_true(raft_commit_index(h_r(h, ld)) < four); /* 2 of 4 */
    h_recover(h);
    h_settle(h, ld);
    assert_true(raft_commit_index(h_r(h, ld)) >= four);

    /* And removed again. */
    assert_int_equal(h_change(h, ld, RAFT_CONF_REMOVE, 4), RAFT_OK);
    h_settle(h, ld);
    assert_int_equal(h_conf_role_of(h, ld, 4), -1);
    assert_int_equal(raft_conf_voter_count(raft_conf(h_r(h, ld))), 3);
    assert_int_equal(h_change(h, ld, RAFT_CONF_REMOVE, 4), RAFT_ENOTFOUND);
}

/*
 * Thesis §4.2.2: "a leader that is removed from the configuration steps
 * down once the Cnew entry is committed." The remaining servers go on
 * without it.
 */
static void test_4_2_2_removed_leader_steps_down(void** state) {
    struct h_opts o = h_plain(3, 422);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_index index = 0;
    assert_int_equal(raft_change_conf(h_r(h, 1), RAFT_CONF_REMOVE, 1, &index),
                     RAFT_OK);
    h_process(h, 1);
    h_stabilize(h);
    assert_true(h->committed_cap > index && h->committed[index].set);
    assert_true(h_role(h, 1) != RAFT_LEADER);
    assert_int_equal(h_conf_role_of(h, 1, 1), -1);

    h_tick_all(h, 6 * H_ET);
    assert_int_equal(h_conf_role_of(h, 2, 1), -1);
    assert_int_equal(h_conf_role_of(h, 3, 1), -1);
    raft_node_id ld = h_leader(h);
    assert_true(ld == 2 || ld == 3);
    assert_true(h_role(h, 1) != RAFT_LEADER);
    raft_index x = h_must_propose(h, ld, "two voters");
    h_settle(h, ld);
    assert_true(raft_commit_index(h_r(h, 2)) >= x);
    assert_true(raft_commit_index(h_r(h, 3)) >= x);
}

/* ====================================================================== */
/* Snapshots (§7) and the durability contract                              */
/* ====================================================================== */

/*
 * §7: "the leader must occasionally send snapshots to followers that lag
 * behind. This happens when the leader has already discarded the next log
 * entry that it needs to send to a follower." And: "If instead the
 * follower receives a snapshot that describes a prefix of its log [...]
 * Usually the snapshot will contain new information not already in the
 * recipient's log. In this case, the follower discards its entire log".
 */
static void test_snapshot_sent_to_follower_behind_compaction(void** state) {
    struct h_opts o = h_plain(3, 70);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_isolate(h, 3);
    for (int i = 0; i < 10; i++) {
        h_must_propose(h, 1, "compact me");
    }
    h_settle(h, 1);
    /* Node 2 leads; its no-op stays above the snapshot (a snapshot past
     * the leader's no-op is test_snapshot_leader_compacts_past_its_noop). */
    h_elect(h, 2);
    h_settle(h, 2);
    raft_index applied = raft_applied_index(h_r(h, 2));
    assert_int_equal(applied, raft_last_index(h_r(h, 2)));
    assert_int_equal(applied, h_node(h, 2)->applied);

    struct raft_snapshot_meta meta;
    assert_int_equal(raft_snapshot_taken(h_r(h, 2), applied + 1, &meta),
                     RAFT_EINVAL);
    assert_int_equal(raft_snapshot_taken(h_r(h, 2), applied - 1, &meta),
                     RAFT_OK);
    assert_int_equal(meta.index, applied - 1);
    assert_int_equal(meta.term, h_term_at(h, 2, applied - 1));
    assert_int_equal(raft_conf_voter_count(&meta.conf), 3);
    h_check_node(h, h_node(h, 2));
    struct raft_snapshot_meta older;
    assert_int_equal(raft_snapshot_taken(h_r(h, 2), applied - 2, &older),
                     RAFT_EINVAL);
    /* The driver may now drop the log up to the snapshot. */
    st_compact(&h_node(h, 2)->store, meta.index, meta.term);
    h_check_node(h, h_node(h, 2));

    h_recover(h);
    h_settle(h, 2);
    h_settle(h, 2);
    assert_true(h->delivered[2][3][RAFT_MSG_SNAPSHOT] >= 1);
    assert_int_equal(h_node(h, 3)->snapshots, 1);
    assert_int_equal(raft_snapshot(h_r(h, 3))->index, meta.index);
    assert_int_equal(raft_snapshot(h_r(h, 3))->term, meta.term);
    assert_int_equal(raft_first_index(h_r(h, 3)), meta.index + 1);
    assert_int_equal(raft_conf_voter_count(raft_conf(h_r(h, 3))), 3);
    struct raft_progress_info p3;
    assert_true(h_progress_of(h, 2, 3, &p3));
    assert_int_equal(p3.match, applied);
    assert_true(p3.state != RAFT_PROGRESS_SNAPSHOT);
    assert_int_equal(raft_commit_index(h_r(h, 3)), applied);
    assert_int_equal(h_node(h, 3)->applied, applied);

    /* Replication resumes after the snapshot. */
    raft_index x = h_must_propose(h, 2, "after snapshot");
    h_settle(h, 2);
    assert_int_equal(h_node(h, 3)->applied, x);
    h_assert_logs_match(h, 2);
}

/*
 * raft.h, raft_snapshot_taken: the driver "saved a snapshot of the state
 * machine at `index` (<= applied) and may compact the log up to there".
 * A leader's no-op is applied soon after it is elected, so a leader's
 * snapshot usually covers its own no-op. See FINDINGS.md U5 (tests/sim F1).
 */
static void test_snapshot_leader_compacts_past_its_noop(void** state) {
    struct h_opts o = h_plain(3, 71);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    raft_index noop = raft_last_index(h_r(h, 1));
    h_must_propose(h, 1, "a");
    h_must_propose(h, 1, "b");
    h_settle(h, 1);
    raft_index applied = raft_applied_index(h_r(h, 1));
    assert_true(applied > noop);
    struct raft_snapshot_meta meta;
    assert_int_equal(raft_snapshot_taken(h_r(h, 1), applied, &meta), RAFT_OK);
    st_compact(&h_node(h, 1)->store, meta.index, meta.term);
    h_check_node(h, h_node(h, 1));
    assert_int_equal(h_role(h, 1), RAFT_LEADER);
    raft_index x = h_must_propose(h, 1, "after");
    h_settle(h, 1);
    assert_int_equal(raft_commit_index(h_r(h, 3)), x);
}

/*
 * Figure 2, Rules for Servers: servers must update their persistent state
 * "on stable storage before responding to RPCs". raft.h: "the core never
 * acknowledges an entry, to a leader or to its own commit count, until the
 * driver reports it durable". Thesis §10.2.1: the leader may write its log
 * in parallel with replication, counting itself once its write is done.
 */
static void test_durability_ack_only_after_persisted(void** state) {
    struct h_opts o = h_plain(3, 80);
    struct harness* h = h_new(state, &o);
    h_elect(h, 1);
    h_isolate(h, 3); /* commitment now needs node 2 */

    /* A follower with a slow disk. */
    h_set_delay_persist(h, 2, true);
    raft_index i = h_must_propose(h, 1, "d1");
    h_stabilize(h);
    assert_true(raft_last_index(h_r(h, 2)) >= i); /* it has it in memory */
    struct raft_progress_info p2;
    assert_true(h_progress_of(h, 1, 2, &p2));
    assert_true(p2.match < i);
    assert_true(raft_commit_index(h_r(h, 1)) < i);
    h_set_delay_persist(h, 2, false); /* durable: PERSISTED is stepped */
    h_stabilize(h);
    assert_true(h_progress_of(h, 1, 2, &p2));
    assert_true(p2.match >= i);
    assert_true(raft_commit_index(h_r(h, 1)) >= i);

    /* A leader with a slow disk: its own copy does not count until then. */
    h_set_delay_persist(h, 1, true);
    raft_index j = h_must_propose(h, 1, "d2");
    h_stabilize(h);
    assert_true(h_progress_of(h, 1, 2, &p2));
    /* Sending before its own fsync is allowed, not required; when it
     * does, node 2's acknowledgement alone is 1 of 3, not a majority. */
    print_message("leader sent before its fsync: %s\n",
                  p2.match >= j ? "yes" : "no");
    assert_true(raft_persisted_index(h_r(h, 1)) < j);
    assert_true(raft_commit_index(h_r(h, 1)) < j);
    h_set_delay_persist(h, 1, false);
    h_stabilize(h);
    assert_true(raft_persisted_index(h_r(h, 1)) >= j);
    assert_true(raft_commit_index(h_r(h, 1)) >= j);
}

/* Remembers the batch that carried the latest granted vote. */
static void record_grants(struct harness* h,
                          struct h_node* nd,
                          const struct raft_ready* rd) {
    for (size_t i = 0; i < rd->n_messages; i++) {
        if (rd->messages[i].type == RAFT_MSG_VOTE_RESP &&
            !rd->messages[i].reject) {
            h->last_grant = *rd; /* flags and hard state only are used */
            h->last_grant_by = nd->id;
        }
    }
}

/*
 * Figure 2, "Persistent state on all servers: (Updated on stable storage
 * before responding to RPCs) currentTerm, votedFor". raft.h: "a vote or a
 * term is never announced before it survives a crash" (must_sync). The
 * harness checks this on every batch of every test; here both cases are
 * driven explicitly: a vote that comes with a new term, and a vote in a
 * term the voter already knew (only votedFor changes).
 */
static void test_vote_requires_sync(void** state) {
    struct h_opts o = h_plain(3, 90);
    struct harness* h = h_new(state, &o);
    h->ready_hook = record_grants;
    unsigned before = h_node(h, 1)->must_sync;
    h_campaign(h, 1);
    assert_true(h_node(h, 1)->must_sync > before);
    assert_int_equal(h_node(h, 1)->hs.term, 1);
    assert_int_equal(h_node(h, 1)->hs.vote, 1);
    h_stabilize(h);
    assert_int_equal(h_role(h, 1), RAFT_LEADER);
    assert_true(h->last_grant_by == 2 || h->last_grant_by == 3);
    assert_true(h->last_grant.hard_state_changed);
    assert_true(h->last_grant.must_sync);
    assert_int_equal(h->last_grant.hard_state.vote, 1);

    /* Node 2 learns term t2 first, without voting... */
    h_isolate(h, 3);
    h_campaign(h, 3);
    h_drop_queued(h);
    raft_term t2 = h_term(h, 3);
    struct raft_message bump = h_mkmsg(RAFT_MSG_VOTE_RESP, 1, 2, t2);
    bump.reject = true;
    h_inject(h, 2, &bump);
    h_drop_queued(h);
    assert_int_equal(h_term(h, 2), t2);
    assert_int_equal(raft_voted_for(h_r(h, 2)), 0);
    /* ... then grants node 3 its vote in that same term. */
    h->last_grant_by = 0;
    struct raft_message req = h_vote_req(h, 3, 2, t2);
    h_inject(h, 2, &req);
    assert_int_equal(h->last_grant_by, 2);
    assert_true(h->last_grant.hard_state_changed);
    assert_int_equal(h->last_grant.hard_state.term, t2);
    assert_int_equal(h->last_grant.hard_state.vote, 3);
    assert_true(h->last_grant.must_sync);
    h->ready_hook = NULL;
    h_recover(h);
    h_stabilize(h);
}

/* ====================================================================== */
/* Input robustness: whatever a peer sends, the core returns an error or  */
/* ignores it; it never crashes and its invariants hold (checked by the   */
/* harness after every step). Then the cluster must still work.           */
/* ====================================================================== */

struct h_view {
    raft_term term;
    enum raft_role role;
    raft_node_id leader;
    raft_node_id vote;
    raft_index commit;
    raft_index last;
};

static struct h_view h_view_of(struct harness* h, raft_node_id id) {
    struct raft* r = h_r(h, id);
    struct h_view v = {raft_current_term(r), raft_role(r),
                       raft_leader(r),       raft_voted_for(r),
                       raft_commit_index(r), raft_last_index(r)};
    return v;
}

static void h_assert_view(struct harness* h,
                          raft_node_id id,
                          const struct h_view* want,
                          const char* what) {
    struct h_view v = h_view_of(h, id);
    if (v.term != want->term || v.role != want->role ||
        v.leader != want->leader || v.vote != want->vote ||
        v.commit != want->commit || v.last != want->last) {
        h_fail(
            "node %llu changed state on %s: term %llu->%llu role %s->%s "
            "commit %llu->%llu last %llu->%llu",
            (unsigned long long)id, what, (unsigned long long)want->term,
            (unsigned long long)v.term, raft_role_name(want->role),
            raft_role_name(v.role), (unsigned long long)want->commit,
            (unsigned long long)v.commit, (unsigned long long)want->last,
            (unsigned long long)v.last);
    }
}

/* Leader 1 in term 2 over 3 nodes, with a few committed entries. */
static struct harness* h_new_term2(void** state, uint64_t seed) {
    struct h_opts o = h_plain(3, seed);
    struct harness* h = h_new(state, &o);
    h_isolate(h, 1);
    h_campaign(h, 1);
    h_drop_queued(h);
    h_recover(h);
    h_elect(h, 1);
    assert_int_equal(h_term(h, 1), 2);
    h_must_propose(h, 1, "a");
    h_must_propose(h, 1, "b");
    h_settle(h, 1);
    return h;
}

/* The cluster still replicates and commits a new entry everywhere. */
static void h_assert_cluster_works(struct harness* h) {
    h_drop_queued(h);
    h_recover(h);
    raft_node_id ld = h_leader(h);
    if (ld == 0) {
        h_tick_all(h, 4 * H_ET);
        ld = h_leader(h);
    }
    assert_true(ld != 0);
    raft_index x = h_must_propose(h, ld, "still works");
    h_settle(h, ld);
    for (raft_node_id id = 1; id <= 3; id++) {
        assert_true(raft_commit_index(h_r(h, id)) >= x);
    }
    h_assert_logs_match(h, ld);
}

static void h_check_progress_bounds(struct harness* h, raft_node_id leader) {
    struct raft_progress_info info[RAFT_MAX_NODES];
    size_t n = raft_progress(h_r(h, leader), info, RAFT_MAX_NODES);
    raft_index last = raft_last_index(h_r(h, leader));
    for (size_t i = 0; i < n; i++) {
        if (info[i].match > last || info[i].next > last + 1 ||
            info[i].next <= info[i].match || info[i].next == 0) {
            h_fail("progress of %llu: match %llu next %llu, leader last %llu",
                   (unsigned long long)info[i].id,
                   (unsigned long long)info[i].match,
                   (unsigned long long)info[i].next, (unsigned long long)last);
        }
    }
}

static void test_input_unknown_message_type(void** state) {
    struct harness* h = h_new_term2(state, 101);
    static const uint32_t types[] = {
        0, RAFT_MSG_TYPE_MAX, RAFT_MSG_TYPE_MAX + 7, 0x7fffffff, 0xffffffff};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        for (raft_node_id to = 1; to <= 2; to++) {
            raft_node_id from = to == 1 ? 2 : 1;
            struct h_view v = h_view_of(h, to);
            struct raft_message m = h_mkmsg(types[i], from, to, v.term + 1);
            m.index = 1;
            m.commit = v.last;
            h_inject(h, to, &m);
            h_assert_view(h, to, &v, "unknown message type");
            h_drop_queued(h);
        }
    }
    h_assert_cluster_works(h);
}

static void test_input_unknown_node_ids(void** state) {
    struct h_opts o = h_plain(3, 102);
    struct harness* h = h_new(state, &o);
    /* A candidate counts only the votes of voters: strangers, id 0 and
     * itself do not make a majority. */
    h_isolate(h, 1);
    h_campaign(h, 1);
    h_drop_queued(h);
    raft_term t = h_term(h, 1);
    static const raft_node_id strangers[] = {77, 88, 0, 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof(strangers) / sizeof(strangers[0]); i++) {
        struct raft_message m = h_mkmsg(RAFT_MSG_VOTE_RESP, strangers[i], 1, t);
        h_inject(h, 1, &m);
        h_inject(h, 1, &m); /* and a duplicate */
        assert_int_equal(h_role(h, 1), RAFT_CANDIDATE);
    }
    h_drop_queued(h);
    h_recover(h);
    h_elect(h, 1);
    t = h_term(h, 1);

    /* A leader ignores responses and requests of strangers. */
    static const uint32_t types[] = {
        RAFT_MSG_APPEND_RESP,     RAFT_MSG_APPEND_RESP,    RAFT_MSG_VOTE_RESP,
        RAFT_MSG_PREVOTE_RESP,    RAFT_MSG_HEARTBEAT_RESP, RAFT_MSG_READ_INDEX,
        RAFT_MSG_READ_INDEX_RESP, RAFT_MSG_TIMEOUT_NOW,
    };
    for (size_t s = 0; s < sizeof(strangers) / sizeof(strangers[0]); s++) {
        if (strangers[s] == 1) {
            continue;
        }
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            struct h_view v = h_view_of(h, 1);
            struct raft_message m = h_mkmsg(types[i], strangers[s], 1, t);
            m.index = raft_last_index(h_r(h, 1)) + (i == 0 ? 1000 : 0);
            m.reject = i == 1;
            m.reject_hint = 1;
            m.context = 5;
            h_inject(h, 1, &m);
            h_check_progress_bounds(h, 1);
            h_assert_view(h, 1, &v, raft_msg_type_name((int)types[i]));
            h_drop_queued(h);
        }
        struct raft_event ev = {
            .type = RAFT_EVENT_SNAPSHOT_DONE, .peer = strangers[s], .ok = true};
        h_step(h, h_node(h, 1), &ev, NULL);
        ev.type = RAFT_EVENT_UNREACHABLE;
        h_step(h, h_node(h, 1), &ev, NULL);
        h_process(h, 1);
        assert_int_equal(h_role(h, 1), RAFT_LEADER);
    }
    size_t n = 0;
    struct raft_progress_info info[RAFT_MAX_NODES];
    n = raft_progress(h_r(h, 1), info, RAFT_MAX_NODES);
    assert_int_equal(n, 3); /* no progress made up for a stranger */
    h_assert_cluster_works(h);
}

static void test_input_term_zero(void** state) {
    struct harness* h = h_new_term2(state, 103);
    raft_index last = raft_last_index(h_r(h, 3));
    raft_term lt = h_term_at(h, 3, last);
    struct raft_entry e = {
        .term = 2, .index = last + 1, .len = 4, .data = (const uint8_t*)"zero"};
    static const uint32_t types[] = {RAFT_MSG_APPEND,   RAFT_MSG_HEARTBEAT,
                                     RAFT_MSG_VOTE,     RAFT_MSG_PREVOTE,
                                     RAFT_MSG_SNAPSHOT, RAFT_MSG_TIMEOUT_NOW};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct h_view v = h_view_of(h, 3);
        struct raft_message m = h_mkmsg(types[i], 1, 3, 0);
        m.index = types[i] == RAFT_MSG_VOTE ? last + 100 : last;
        m.log_term = types[i] == RAFT_MSG_VOTE ? 2 : lt;
        m.commit = last + 1;
        m.entries = &e;
        m.n_entries = types[i] == RAFT_MSG_APPEND ? 1 : 0;
        m.snapshot.index = last + 50;
        m.snapshot.term = 2;
        h_inject(h, 3, &m);
        h_assert_view(h, 3, &v, raft_msg_type_name((int)types[i]));
        const struct raft_message* r = h_find_msg(h, RAFT_MSG_VOTE_RESP, 3, 1);
        assert_true(r == NULL || r->reject);
        h_drop_queued(h);
    }
    /* And the leader: a term-0 response is no acknowledgement. */
    struct h_view v = h_view_of(h, 1);
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND_RESP, 2, 1, 0);
    m.index = v.last;
    h_inject(h, 1, &m);
    h_assert_view(h, 1, &v, "term-0 append response");
    h_assert_cluster_works(h);
}

/*
 * An append from the real leader whose entries do not follow its previous
 * entry: gaps, repeats, terms above the message's term, terms going back,
 * term 0. Whatever the core keeps, its log must stay a log (contiguous,
 * terms not decreasing and not above its term), which the harness checks.
 * Entries a lenient core might keep carry the data the leader will later
 * propose at those indexes, so they cannot be told apart from the real
 * ones.
 */
static void test_input_entries_not_following_prev(void** state) {
    struct harness* h = h_new_term2(state, 104);
    raft_index L = raft_last_index(h_r(h, 3));
    raft_term t = h_term(h, 3);
    raft_term lt = h_term_at(h, 3, L);
    assert_int_equal(lt, 2);
    char d1[32], d2[32], d3[32];
    snprintf(d1, sizeof(d1), "future-%llu", (unsigned long long)L + 1);
    snprintf(d2, sizeof(d2), "future-%llu", (unsigned long long)L + 2);
    snprintf(d3, sizeof(d3), "future-%llu", (unsigned long long)L + 3);
#define E(i, tm, d)                                             \
    {                                                           \
        .term = (tm), .index = (i), .type = RAFT_ENTRY_NORMAL,  \
        .len = (uint32_t)strlen(d), .data = (const uint8_t*)(d) \
    }
    const struct raft_entry gap[] = {E(L + 2, t, d2)};
    const struct raft_entry repeat[] = {E(L + 1, t, d1), E(L + 1, t, d1)};
    const struct raft_entry inner_gap[] = {E(L + 1, t, d1), E(L + 3, t, d3)};
    const struct raft_entry above[] = {E(L + 1, t + 5, d1)};
    const struct raft_entry back[] = {E(L + 1, 1, d1)};
    const struct raft_entry back2[] = {E(L + 1, t, d1), E(L + 2, 1, d2)};
    const struct raft_entry zero[] = {E(L + 1, 0, d1)};
    const struct raft_entry overlap[] = {E(L, t, d1)};
    const struct raft_entry reverse[] = {E(L + 2, t, d2), E(L + 1, t, d1)};
#undef E
    const struct {
        const struct raft_entry* e;
        uint32_t n;
        const char* what;
    } cases[] = {
        {gap, 1, "gap after prev"},
        {repeat, 2, "repeated index"},
        {inner_gap, 2, "gap inside"},
        {above, 1, "entry term above message term"},
        {back, 1, "entry term below prev term"},
        {back2, 2, "terms going back"},
        {zero, 1, "entry term 0"},
        {overlap, 1, "entry at prev index"},
        {reverse, 2, "indexes going back"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 3, t);
        m.index = L;
        m.log_term = lt;
        m.entries = cases[c].e;
        m.n_entries = cases[c].n;
        m.commit = raft_commit_index(h_r(h, 1));
        print_message("case: %s\n", cases[c].what);
        h_inject(h, 3, &m);
        if (raft_last_index(h_r(h, 3)) > L + 1) {
            h_fail("%s: follower log grew to %llu", cases[c].what,
                   (unsigned long long)raft_last_index(h_r(h, 3)));
        }
        h_drop_queued(h);
    }
    /* The leader now proposes exactly those future entries. */
    assert_int_equal(h_must_propose(h, 1, d1), L + 1);
    assert_int_equal(h_must_propose(h, 1, d2), L + 2);
    assert_int_equal(h_must_propose(h, 1, d3), L + 3);
    h_assert_cluster_works(h);
}

static void test_input_absurd_indexes(void** state) {
    struct harness* h = h_new_term2(state, 105);
    raft_term t = h_term(h, 1);
    raft_index L = raft_last_index(h_r(h, 3));
    raft_term lt = h_term_at(h, 3, L);
    const raft_index big = UINT64_MAX;

    /* To a follower. */
    struct raft_entry e = {
        .term = t, .index = big, .len = 1, .data = (const uint8_t*)"x"};
    struct raft_message m = h_mkmsg(RAFT_MSG_APPEND, 1, 3, t);
    m.index = big; /* previous entry far beyond the log */
    m.log_term = t;
    h_inject(h, 3, &m);
    m.index = big - 1; /* an entry at UINT64_MAX */
    m.entries = &e;
    m.n_entries = 1;
    h_inject(h, 3, &m);
    m.index = big; /* an entry index that wraps to 0 */
    e.index = 0;
    h_inject(h, 3, &m);
    assert_int_equal(raft_last_index(h_r(h, 3)), L);
    m.index = L; /* a valid append claiming an absurd commit */
    m.log_term = lt;
    m.n_entries = 0;
    m.entries = NULL;
    m.commit = big;
    h_inject(h, 3, &m);
    assert_true(raft_commit_index(h_r(h, 3)) <= L);
    m = h_mkmsg(RAFT_MSG_HEARTBEAT, 1, 3, t);
    m.commit = big;
    h_inject(h, 3, &m);
    assert_true(raft_commit_index(h_r(h, 3)) <= L);
    h_drop_queued(h);

    /* To the leader. */
    raft_index last = raft_last_index(h_r(h, 1));
    m = h_mkmsg(RAFT_MSG_APPEND_RESP, 2, 1, t);
    m.index = big; /* acknowledges entries the leader never had */
    h_inject(h, 1, &m);
    h_check_progress_bounds(h, 1);
    assert_true(raft_commit_index(h_r(h, 1)) <= last);
    m.reject = true;
    m.reject_hint = big;
    m.log_term = big;
    h_inject(h, 1, &m);
    h_check_progress_bounds(h, 1);
    m.index = 0;
    m.reject_hint = 0;
    m.log_term = 0;
    h_inject(h, 1, &m);
    h_check_progress_bounds(h, 1);
    m = h_mkmsg(RAFT_MSG_HEARTBEAT_RESP, 2, 1, t);
    m.context = big;
    h_inject(h, 1, &m);
    h_check_progress_bounds(h, 1);
    h_drop_queued(h);

    /* Driver events out of range. */
    struct raft_event ev = {
        .type = RAFT_EVENT_PERSISTED, .index = big, .term = t};
    h_step(h, h_node(h, 1), &ev, NULL);
    assert_true(raft_persisted_index(h_r(h, 1)) <= last);
    ev.index = last;
    ev.term = t + 7; /* not the term of that entry */
    h_step(h, h_node(h, 1), &ev, NULL);
    assert_true(raft_persisted_index(h_r(h, 1)) <= last);
    static const uint32_t bad_types[] = {0, 99, 0xffffffff};
    for (size_t i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++) {
        struct h_view v = h_view_of(h, 1);
        struct raft_event bad = {.type = bad_types[i]};
        int rc;
        h_step(h, h_node(h, 1), &bad, &rc);
        assert_int_not_equal(rc, RAFT_OK);
        h_assert_view(h, 1, &v, "unknown event type");
    }
    h_process_all(h);
    h_assert_cluster_works(h);
}

/*
 * Thesis §6.4 (reads on followers): the follower "issues a request to the
 * leader just to learn the current readIndex". A response it did not ask
 * for (a duplicate, or one for another node's request) is no read of its
 * own: handing it to the driver would release a request id the driver
 * never gave, or release one twice. See FINDINGS.md U2.
 */
static void test_input_unsolicited_read_index_response(void** state) {
    struct harness* h = h_new_term2(state, 107);
    raft_term t = h_term(h, 1);
    struct raft_message m = h_mkmsg(RAFT_MSG_READ_INDEX_RESP, 1, 3, t);
    m.index = UINT64_MAX;
    m.context = 999; /* a read nobody asked for */
    h_inject(h, 3, &m);
    assert_null(h_read(h, 3, 999));

    /* A duplicate of a real answer. */
    assert_int_equal(raft_read_index(h_r(h, 3), 5), RAFT_OK);
    h_stabilize(h);
    assert_non_null(h_read(h, 3, 5));
    size_t before = h_node(h, 3)->n_reads;
    m.index = raft_commit_index(h_r(h, 1));
    m.context = 5;
    h_inject(h, 3, &m);
    assert_int_equal(h_node(h, 3)->n_reads, before);
    h_assert_cluster_works(h);
}

static void test_input_bad_api_calls(void** state) {
    struct h_opts o = h_plain(3, 106);
    struct harness* h = h_new(state, &o);
    raft_index index;
    assert_int_equal(h_propose(h, 2, "x", NULL), RAFT_ENOTLEADER);
    assert_int_not_equal(
        raft_change_conf(h_r(h, 2), RAFT_CONF_ADD_LEARNER, 5, &index), RAFT_OK);
    assert_int_equal(raft_transfer_leader(h_r(h, 2), 1), RAFT_ENOTLEADER);
    h_elect(h, 1);
    struct raft* r = h_r(h, 1);

    const uint8_t* data = (const uint8_t*)"x";
    uint32_t len = 1;
    raft_index first;
    raft_term term;
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_NORMAL, &data, &len, 0, &first, &term),
        RAFT_EINVAL);
    assert_int_equal(
        raft_propose(r, RAFT_ENTRY_CONF, &data, &len, 1, &first, &term),
        RAFT_EINVAL);
    assert_int_equal(raft_propose(r, 99, &data, &len, 1, &first, &term),
                     RAFT_EINVAL);
    uint8_t* huge = h_alloc(H_MAX_ENTRY_BYTES + 1);
    const uint8_t* hp = huge;
    uint32_t hlen = H_MAX_ENTRY_BYTES + 1;
    int rc = raft_propose(r, RAFT_ENTRY_NORMAL, &hp, &hlen, 1, &first, &term);
    free(huge);
    assert_int_equal(rc, RAFT_ETOOBIG);
    h_check_node(h, h_node(h, 1));
    assert_int_not_equal(raft_change_conf(r, 0, 4, &index), RAFT_OK);
    assert_int_not_equal(raft_change_conf(r, 99, 4, &index), RAFT_OK);
    assert_int_not_equal(raft_change_conf(r, RAFT_CONF_ADD_LEARNER, 0, &index),
                         RAFT_OK);
    struct raft_snapshot_meta meta;
    assert_int_equal(raft_snapshot_taken(r, raft_applied_index(r) + 1, &meta),
                     RAFT_EINVAL);
    h_check_node(h, h_node(h, 1));

    /* Reads are bounded: an isolated leader fills up and says EBUSY. */
    h_isolate(h, 1);
    rc = RAFT_OK;
    uint64_t ctx = 1;
    for (; ctx <= RAFT_MAX_READS + 1 && rc == RAFT_OK; ctx++) {
        rc = raft_read_index(r, 1000 + ctx);
    }
    assert_int_equal(rc, RAFT_EBUSY);
    h_check_node(h, h_node(h, 1));
    h_stabilize(h);
    h_recover(h);
    h_settle(h, 1);
    h_assert_cluster_works(h);
}

int main(void) {
    h_verbose = getenv("H_VERBOSE") != NULL;
    h_mutant = getenv("H_MUTANT") ? atoi(getenv("H_MUTANT")) : 0;
#define T(f) cmocka_unit_test_teardown(f, h_teardown)
    const struct CMUnitTest tests[] = {
        T(test_5_1_higher_term_converts_to_follower),
        T(test_5_1_stale_term_request_rejected),
        T(test_absurd_terms_and_indexes_refused),
        T(test_5_2_follower_starts_election_after_timeout),
        T(test_5_2_candidate_wins_with_majority),
        T(test_5_2_candidate_steps_down_on_leader_append),
        T(test_5_2_candidate_restarts_election_after_timeout),
        T(test_5_2_election_timeouts_randomized),
        T(test_5_2_one_vote_per_term),
        T(test_5_3_leader_appends_noop_and_replicates),
        T(test_5_3_log_matching_rejects_mismatched_prev),
        T(test_5_3_matching_append_always_answered),
        T(test_5_3_leader_retries_lost_append),
        T(test_5_3_follower_truncates_conflicting_suffix),
        T(test_5_3_fast_backtracking_with_conflict_hint),
        T(test_5_4_1_election_restriction),
        T(test_5_4_2_no_commit_of_old_term_by_counting),
        T(test_5_4_2_commit_after_current_term_entry),
        T(test_9_6_prevote_does_not_increase_term),
        T(test_6_2_check_quorum_leader_steps_down),
        T(test_6_4_read_index_requires_heartbeat_round),
        T(test_5_3_round_sends_one_append_per_follower),
        T(test_6_4_reads_during_a_round_share_the_next),
        T(test_6_4_read_index_on_follower),
        T(test_6_4_follower_request_counts_as_ack),
        T(test_6_4_read_round_goes_to_a_quorum),
        T(test_6_4_read_index_waits_for_leader_commit_in_term),
        T(test_3_10_leader_transfer),
        T(test_4_1_add_learner_promote_remove),
        T(test_4_2_2_removed_leader_steps_down),
        T(test_snapshot_sent_to_follower_behind_compaction),
        T(test_snapshot_leader_compacts_past_its_noop),
        T(test_durability_ack_only_after_persisted),
        T(test_vote_requires_sync),
        T(test_input_unknown_message_type),
        T(test_input_unknown_node_ids),
        T(test_input_term_zero),
        T(test_input_entries_not_following_prev),
        T(test_input_absurd_indexes),
        T(test_input_unsolicited_read_index_response),
        T(test_input_bad_api_calls),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
