/*
 * sim_check.c - the safety invariants, checked as the run goes:
 *  - election safety: at most one leader per term, ever (Raft §5.2);
 *  - log matching: entries with the same index and term hold the same data
 *    and follow the same previous term, in every store, ever (§5.3);
 *  - leader completeness: a leader of term T holds every entry seen
 *    committed in a term before T (§5.4.1);
 *  - state machine safety: every node applies a prefix of one history
 *    (index -> term, data, resulting state), snapshots included (§5.4.3);
 *  - a node's term never goes back (not even across a restart: see
 *    sim_node.c), its commit index never goes back within one incarnation;
 *  - no acknowledged write is lost;
 *  - a leader's commit index only advances onto an entry of its own term
 *    (§5.4.2);
 *  - while a leader's lease is valid no later leader has committed in its
 *    term (thesis §6.4.1);
 *  - raft_check_invariants() on every live core after every step.
 * The read checks live in sim_client.c; the durability checks of the
 * driver contract (no vote, term or append ack leaves before it is
 * durable) in sim_node.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

void sim_fail(struct sim* s, const char* invariant, const char* fmt, ...) {
    va_list ap;
    printf("FAIL seed=%llu step=%llu invariant=%s: ",
           (unsigned long long)s->o.seed, (unsigned long long)s->now,
           invariant);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    s->failed = true;
    longjmp(s->fail_jmp, 1);
}

void sim_trace(struct sim* s, const char* fmt, ...) {
    if (!s->o.trace) {
        return;
    }
    va_list ap;
    printf("t=%llu ", (unsigned long long)s->now);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void* sim_grow(struct sim* s,
                      void* p,
                      size_t* cap,
                      size_t need,
                      size_t size) {
    if (need <= *cap) {
        return p;
    }
    size_t cap2 = *cap ? *cap : 1024;
    while (cap2 < need) {
        cap2 *= 2;
    }
    uint8_t* q = realloc(p, cap2 * size);
    if (q == NULL) {
        sim_fail(s, "sim-internal", "out of memory");
    }
    memset(q + *cap * size, 0, (cap2 - *cap) * size);
    *cap = cap2;
    return q;
}

struct sim_hist_ent* sim_hist(struct sim* s, raft_index index) {
    s->hist =
        sim_grow(s, s->hist, &s->hist_cap, (size_t)index + 1, sizeof(*s->hist));
    if (index > s->hist_max) {
        s->hist_max = index;
    }
    return &s->hist[index];
}

void sim_check_close(struct sim* s) {
    free(s->hist);
    free(s->lm);
    free(s->term_leader);
    free(s->acked);
    s->hist = NULL;
    s->lm = NULL;
    s->term_leader = NULL;
    s->acked = NULL;
}

/* --- log matching -------------------------------------------------------- */

static size_t sim_lm_slot(const struct sim* s,
                          raft_index index,
                          raft_term term) {
    uint64_t h = index * 0x9e3779b97f4a7c15ULL ^ term * 0xc2b2ae3d27d4eb4fULL;
    h ^= h >> 29;
    return (size_t)h & (s->lm_cap - 1);
}

static void sim_lm_grow(struct sim* s) {
    size_t old_cap = s->lm_cap;
    struct sim_lm_ent* old = s->lm;
    s->lm_cap = old_cap ? old_cap * 2 : 4096;
    s->lm = calloc(s->lm_cap, sizeof(*s->lm));
    if (s->lm == NULL) {
        sim_fail(s, "sim-internal", "out of memory");
    }
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].index == 0) {
            continue;
        }
        size_t j = sim_lm_slot(s, old[i].index, old[i].term);
        while (s->lm[j].index != 0) {
            j = (j + 1) & (s->lm_cap - 1);
        }
        s->lm[j] = old[i];
    }
    free(old);
}

/* Finds or inserts the (index, term) slot; *fresh says which. */
static struct sim_lm_ent* sim_lm_get(struct sim* s,
                                     raft_index index,
                                     raft_term term,
                                     bool* fresh) {
    if ((s->lm_count + 1) * 10 > s->lm_cap * 7) {
        sim_lm_grow(s);
    }
    size_t j = sim_lm_slot(s, index, term);
    while (s->lm[j].index != 0) {
        if (s->lm[j].index == index && s->lm[j].term == term) {
            *fresh = false;
            return &s->lm[j];
        }
        j = (j + 1) & (s->lm_cap - 1);
    }
    s->lm[j].index = index;
    s->lm[j].term = term;
    s->lm_count++;
    *fresh = true;
    return &s->lm[j];
}

/* Term of n's entry before `index` in its store, false if unknown. */
static bool sim_prev_term(struct sim_node* n,
                          raft_index index,
                          raft_term* out) {
    if (index <= 1) {
        *out = 0;
        return true;
    }
    struct raft_entry e;
    if (store_mem_entry(n->mem, index - 1, &e)) {
        *out = e.term;
        return true;
    }
    if (index == store_mem_first_index(n->mem)) {
        return n->view.term(n->view.ctx, index - 1, out) == RAFT_OK;
    }
    return false;
}

void sim_check_written(struct sim* s,
                       struct sim_node* n,
                       const struct raft_entry* ents,
                       size_t count) {
    raft_term prev = 0;
    bool known = sim_prev_term(n, ents[0].index, &prev);
    for (size_t k = 0; k < count; k++) {
        const struct raft_entry* e = &ents[k];
        if (k > 0) {
            prev = ents[k - 1].term;
            known = true;
        }
        if (known && e->term < prev) {
            sim_fail(s, "log-matching",
                     "n%llu writes %llu/%llu after an entry of term %llu",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)e->term, (unsigned long long)prev);
        }
        bool fresh;
        uint64_t h = sim_entry_hash(e);
        struct sim_lm_ent* l = sim_lm_get(s, e->index, e->term, &fresh);
        if (fresh) {
            l->data_hash = h;
            l->prev_term = known ? prev : UINT64_MAX;
            continue;
        }
        if (l->data_hash != h) {
            sim_fail(s, "log-matching",
                     "n%llu writes %llu/%llu with other data than before",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)e->term);
        }
        if (known && l->prev_term != UINT64_MAX && l->prev_term != prev) {
            sim_fail(s, "log-matching",
                     "n%llu writes %llu/%llu after term %llu, elsewhere "
                     "after term %llu",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)e->term, (unsigned long long)prev,
                     (unsigned long long)l->prev_term);
        }
        if (l->prev_term == UINT64_MAX && known) {
            l->prev_term = prev;
        }
    }
}

/* --- state machine safety ----------------------------------------------- */

void sim_check_applied(struct sim* s,
                       struct sim_node* n,
                       const struct raft_entry* e) {
    struct sim_hist_ent* h = sim_hist(s, e->index);
    uint64_t dh = sim_entry_hash(e);
    uint64_t sh = sim_kv_hash(&n->kv);
    if (h->term != 0 && h->term != e->term) {
        sim_fail(s, "state-machine-safety",
                 "n%llu applies %llu/%llu, history has term %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)h->term);
    }
    if (h->applied && (h->data_hash != dh || h->state_hash != sh)) {
        sim_fail(s, "state-machine-safety",
                 "n%llu applies %llu/%llu: %s differs from the history",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term,
                 h->data_hash != dh ? "data" : "resulting state");
    }
    if (!h->applied) {
        h->term = e->term;
        h->data_hash = dh;
        h->state_hash = sh;
        h->applied = true;
    }
}

void sim_check_snapshot(struct sim* s,
                        struct sim_node* n,
                        const struct sim_snap* snap,
                        const char* what) {
    struct sim_hist_ent* h = sim_hist(s, snap->meta.index);
    if (!h->applied) {
        sim_fail(s, "state-machine-safety",
                 "n%llu: snapshot %llu %s, but nobody applied that index",
                 (unsigned long long)n->id,
                 (unsigned long long)snap->meta.index, what);
    }
    if (h->term != snap->meta.term || h->state_hash != sim_kv_hash(&snap->kv)) {
        sim_fail(s, "state-machine-safety",
                 "n%llu: snapshot %llu/%llu %s differs from the history "
                 "(term %llu)",
                 (unsigned long long)n->id,
                 (unsigned long long)snap->meta.index,
                 (unsigned long long)snap->meta.term, what,
                 (unsigned long long)h->term);
    }
    if (s->rk != NULL) {
        sim_rkv_check_snapshot(s, n, snap, what);
    }
}

/* --- leaders -------------------------------------------------------------- */

/* Fails unless leader L holds entry (index, term) or compacted it. */
static void sim_check_leader_has(struct sim* s,
                                 struct sim_node* l,
                                 raft_index index,
                                 raft_term term,
                                 const char* invariant,
                                 const char* what,
                                 raft_term since) {
    raft_term t = 0;
    int rv = raft_term_at(l->core, index, &t);
    if (rv == RAFT_ECOMPACTED || (rv == RAFT_OK && t == term)) {
        return;
    }
    sim_fail(s, invariant,
             "leader n%llu of term %llu lacks %s entry %llu/%llu (%s in "
             "term %llu; it has %s term %llu)",
             (unsigned long long)l->id,
             (unsigned long long)raft_current_term(l->core), what,
             (unsigned long long)index, (unsigned long long)term, what,
             (unsigned long long)since,
             rv == RAFT_OK ? "an entry of" : "no entry, error",
             (unsigned long long)(rv == RAFT_OK ? t : (raft_term)rv));
}

/* Checks one committed or acked index against every current leader. */
static void sim_check_leaders_hold(struct sim* s, raft_index index) {
    const struct sim_hist_ent* h = &s->hist[index];
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* l = &s->node[i];
        if (!sim_node_is_live(l) || raft_role(l->core) != RAFT_LEADER) {
            continue;
        }
        raft_term lt = raft_current_term(l->core);
        if (h->committed && h->commit_term < lt) {
            sim_check_leader_has(s, l, index, h->term, "leader-completeness",
                                 "committed", h->commit_term);
        }
        if (h->ack_term != 0 && h->ack_term < lt) {
            sim_check_leader_has(s, l, index, h->term, "acked-write-lost",
                                 "acknowledged", h->ack_term);
        }
    }
}

/* A node just became leader (or leader of a new term): full check. */
static void sim_check_new_leader(struct sim* s, struct sim_node* l) {
    raft_term lt = raft_current_term(l->core);
    if (lt >= s->term_leader_cap) {
        s->term_leader = sim_grow(s, s->term_leader, &s->term_leader_cap,
                                  (size_t)lt + 1, sizeof(*s->term_leader));
    }
    raft_node_id other = s->term_leader[lt];
    if (other != 0 && other != l->id) {
        sim_fail(s, "election-safety", "n%llu and n%llu both led term %llu",
                 (unsigned long long)other, (unsigned long long)l->id,
                 (unsigned long long)lt);
    }
    if (other == 0) {
        s->term_leader[lt] = l->id;
        s->stats.leaders++;
        sim_trace(s, "n%llu leader of term %llu", (unsigned long long)l->id,
                  (unsigned long long)lt);
    }
    raft_index first = raft_first_index(l->core);
    for (raft_index i = first > 0 ? first : 1; i <= s->hist_max; i++) {
        const struct sim_hist_ent* h = &s->hist[i];
        if (h->committed && h->commit_term < lt) {
            sim_check_leader_has(s, l, i, h->term, "leader-completeness",
                                 "committed", h->commit_term);
        }
    }
    for (size_t k = 0; k < s->acked_count; k++) {
        const struct sim_hist_ent* h = &s->hist[s->acked[k]];
        if (s->acked[k] >= first && h->ack_term < lt) {
            sim_check_leader_has(s, l, s->acked[k], h->term, "acked-write-lost",
                                 "acknowledged", h->ack_term);
        }
    }
}

/* n's commit index moved from `from` to `to` while n was in `term`. */
static void sim_check_commits(struct sim* s,
                              struct sim_node* n,
                              raft_index from,
                              raft_index to,
                              raft_term term) {
    for (raft_index i = from + 1; i <= to; i++) {
        raft_term t = 0;
        int rv = raft_term_at(n->core, i, &t);
        if (rv == RAFT_ECOMPACTED) {
            continue; /* under a snapshot, checked with it */
        }
        if (rv != RAFT_OK) {
            sim_fail(s, "commit-beyond-log",
                     "n%llu committed %llu but has no such entry (%s)",
                     (unsigned long long)n->id, (unsigned long long)i,
                     raft_strerror(rv));
        }
        struct sim_hist_ent* h = sim_hist(s, i);
        if (h->term != 0 && h->term != t) {
            sim_fail(s, "state-machine-safety",
                     "n%llu committed %llu/%llu, history has term %llu",
                     (unsigned long long)n->id, (unsigned long long)i,
                     (unsigned long long)t, (unsigned long long)h->term);
        }
        h->term = t;
        if (!h->committed || term < h->commit_term) {
            h->committed = true;
            h->commit_term = term;
            sim_check_leaders_hold(s, i);
        }
    }
}

/*
 * Raft §5.4.2: a leader commits by counting replicas of entries of its own
 * term only, so each advance of its commit index ends on such an entry.
 */
static void sim_check_leader_commit(struct sim* s,
                                    struct sim_node* n,
                                    raft_index commit,
                                    raft_term term) {
    raft_term t = 0;
    int rv = raft_term_at(n->core, commit, &t);
    if (rv == RAFT_OK && t != term) {
        sim_fail(s, "commit-current-term",
                 "leader n%llu of term %llu advanced its commit index to "
                 "%llu, an entry of term %llu",
                 (unsigned long long)n->id, (unsigned long long)term,
                 (unsigned long long)commit, (unsigned long long)t);
    }
}

void sim_check_node(struct sim* s, struct sim_node* n) {
    if (!sim_node_is_live(n)) {
        return;
    }
    raft_term term = raft_current_term(n->core);
    raft_index commit = raft_commit_index(n->core);
    bool leader = raft_role(n->core) == RAFT_LEADER;
    if (term < n->seen_term) {
        sim_fail(s, "term-monotonic", "n%llu went from term %llu to %llu",
                 (unsigned long long)n->id, (unsigned long long)n->seen_term,
                 (unsigned long long)term);
    }
    if (commit < n->seen_commit) {
        sim_fail(s, "commit-monotonic", "n%llu commit went from %llu to %llu",
                 (unsigned long long)n->id, (unsigned long long)n->seen_commit,
                 (unsigned long long)commit);
    }
    raft_index from = n->seen_commit;
    bool new_leader = leader && (!n->seen_leader || term != n->seen_term);
    n->seen_term = term;
    n->seen_commit = commit;
    n->seen_leader = leader;
    if (commit > from) {
        sim_check_commits(s, n, from, commit, term);
        if (leader && !new_leader) {
            sim_check_leader_commit(s, n, commit, term);
        }
    }
    if (new_leader) {
        sim_check_new_leader(s, n);
    }
}

void sim_check_acked(struct sim* s, raft_index index, raft_term term) {
    struct sim_hist_ent* h = sim_hist(s, index);
    if (h->ack_term != 0 && h->ack_term <= term) {
        return;
    }
    if (h->ack_term == 0) {
        s->acked = sim_grow(s, s->acked, &s->acked_cap, s->acked_count + 1,
                            sizeof(*s->acked));
        s->acked[s->acked_count++] = index;
    }
    h->ack_term = term;
    sim_check_leaders_hold(s, index);
}

/*
 * Thesis §6.4.1: a leader whose lease is valid may answer reads alone, which
 * is only safe if no newer leader can have committed anything meanwhile.
 * A paused leader is skipped: it serves nothing until its clock catches up.
 */
static void sim_check_lease(struct sim* s, struct sim_node* l) {
    raft_term lt = raft_current_term(l->core);
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* o = &s->node[i];
        if (o == l || !sim_node_is_live(o) ||
            raft_role(o->core) != RAFT_LEADER ||
            raft_current_term(o->core) <= lt) {
            continue;
        }
        raft_term t = 0;
        raft_index c = raft_commit_index(o->core);
        if (raft_term_at(o->core, c, &t) == RAFT_OK &&
            t == raft_current_term(o->core)) {
            sim_fail(s, "lease-safety",
                     "n%llu holds a leader lease in term %llu (commit %llu) "
                     "while n%llu leads term %llu and committed %llu in it",
                     (unsigned long long)l->id, (unsigned long long)lt,
                     (unsigned long long)raft_commit_index(l->core),
                     (unsigned long long)o->id, (unsigned long long)t,
                     (unsigned long long)c);
        }
    }
}

void sim_check_step(struct sim* s) {
    for (uint32_t i = 1; i <= s->o.nodes; i++) {
        struct sim_node* n = &s->node[i];
        if (!sim_node_is_live(n)) {
            continue;
        }
        if (!n->paused && raft_role(n->core) == RAFT_LEADER &&
            raft_lease_valid(n->core)) {
            sim_check_lease(s, n);
        }
        const char* bad = raft_check_invariants(n->core);
        if (bad != NULL) {
            sim_fail(s, "core-invariant", "n%llu: %s",
                     (unsigned long long)n->id, bad);
        }
    }
}
