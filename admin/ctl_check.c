/*
 * ctl_check.c - per-key linearizability checking of a recorded history.
 *
 * The model (README-skeinctl.md, "History checking"): each entry id is an
 * independent register, so the history is checked one id at a time
 * (linearizability is compositional: Herlihy & Wing 1990, "locality").
 * The register is absent, or present with a value and a seq. create
 * writes it (it must be absent), update writes it (compare-and-swap when
 * the operation carries if_match), delete removes it, get reads it; a 404
 * or a 412 answer is a read of absence or of the current seq. An ok write
 * must return a seq above the one it replaced (seq is a cluster-wide
 * counter), a read must return the value and seq of the register.
 *
 * The search is Wing & Gong's (1993) with Lowe's memoization ("Testing
 * for linearizability", 2017): walk the events in time order; at a call,
 * try to linearize that operation now (if the model allows it and the pair
 * (set of linearized operations, register state) was not explored yet);
 * at a return of an operation not linearized yet, backtrack. An
 * indeterminate write has a call and no return: it may be linearized at
 * any point after its call, or never, so it never forces a backtrack; the
 * search succeeds once every determinate operation is linearized.
 *
 * When a key fails, a smallest offending sub-history is found by removing
 * operations (blocks first, then one at a time, ddmin-style) while the
 * rest still fails. An operation is not removed while a remaining one
 * depends on it (reads its value or its seq, or the id it created), so the
 * result still explains itself: e.g. a stale read keeps the write it
 * missed and the write it saw. The result is 1-minimal under that rule.
 */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Default search budget per key, and the memo memory limit. */
#define CTL_CHECK_BUDGET_DEFAULT 20000000ULL
#define CTL_CHECK_MEMO_BYTES_MAX ((size_t)1 << 30)

/* The register. When !seq_known, seq is a strict lower bound. */
struct ctl_reg {
    uint8_t present;   /* the entry exists */
    uint8_t seq_known; /* seq is exact, not a bound */
    int32_t value;     /* interned value, -1 when absent */
    uint64_t seq;      /* seq, or lower bound */
};

/* One operation of one key, compiled for the search. */
struct ctl_kop {
    size_t hidx;              /* index in the history */
    enum ctl_fn fn;           /* what it did */
    bool determinate;         /* ok outcome: must be linearized */
    enum ctl_result_kind res; /* ok only */
    int32_t value;            /* value written, -1 none */
    int32_t res_value;        /* value read, -1 not returned */
    uint64_t res_seq;         /* seq returned / current_seq */
    bool has_if_match;        /* conditional */
    uint64_t if_match;        /* expected seq */
    int64_t invoke;           /* call time */
    int64_t complete;         /* return time (determinate only) */
};

/* ---- the model ----------------------------------------------------------- */

static bool ctl_reg_eq(const struct ctl_reg* a, const struct ctl_reg* b) {
    return a->present == b->present && a->seq_known == b->seq_known &&
           a->value == b->value && a->seq == b->seq;
}

static void ctl_reg_absent(struct ctl_reg* r) {
    memset(r, 0, sizeof *r);
    r->value = -1;
}

/* Accepts the seq `seen` as the register's current seq (refining an
 * unknown one). */
static bool ctl_reg_seq_is(struct ctl_reg* r, uint64_t seen) {
    if (r->seq_known) {
        return r->seq == seen;
    }
    if (seen <= r->seq) {
        return false;
    }
    r->seq = seen;
    r->seq_known = 1;
    return true;
}

/* A conditional write's precondition: the register's seq is if_match. */
static bool ctl_reg_cas_ok(struct ctl_reg* r, const struct ctl_kop* op) {
    return !op->has_if_match || ctl_reg_seq_is(r, op->if_match);
}

static bool ctl_step_determinate(const struct ctl_kop* op,
                                 const struct ctl_reg* s,
                                 struct ctl_reg* out) {
    *out = *s;
    if (op->res == CTL_RES_NOT_FOUND) {
        return op->fn != CTL_F_CREATE && !s->present;
    }
    if (op->res == CTL_RES_CAS_MISMATCH) {
        return op->fn != CTL_F_CREATE && op->fn != CTL_F_GET && s->present &&
               op->has_if_match && op->res_seq != op->if_match &&
               ctl_reg_seq_is(out, op->res_seq);
    }
    switch (op->fn) {
        case CTL_F_CREATE:
            if (s->present || op->res != CTL_RES_ENTRY) {
                return false;
            }
            out->present = 1;
            out->value = op->value;
            out->seq = op->res_seq;
            out->seq_known = 1;
            return op->res_value < 0 || op->res_value == op->value;
        case CTL_F_GET:
            if (!s->present || op->res != CTL_RES_ENTRY) {
                return false;
            }
            if (op->res_value >= 0 && op->res_value != s->value) {
                return false;
            }
            return ctl_reg_seq_is(out, op->res_seq);
        case CTL_F_UPDATE:
            if (!s->present || op->res != CTL_RES_ENTRY ||
                !ctl_reg_cas_ok(out, op)) {
                return false;
            }
            if (op->res_seq <= out->seq ||
                (op->res_value >= 0 && op->res_value != op->value)) {
                return false;
            }
            out->value = op->value;
            out->seq = op->res_seq;
            out->seq_known = 1;
            return true;
        case CTL_F_DELETE:
            if (!s->present || !ctl_reg_cas_ok(out, op)) {
                return false;
            }
            ctl_reg_absent(out);
            return true;
    }
    return false;
}

/* An indeterminate write, taking effect now. */
static bool ctl_step_indeterminate(const struct ctl_kop* op,
                                   const struct ctl_reg* s,
                                   struct ctl_reg* out) {
    *out = *s;
    switch (op->fn) {
        case CTL_F_CREATE:
            if (s->present) {
                return false;
            }
            out->present = 1;
            out->value = op->value;
            out->seq = 0;
            out->seq_known = 0;
            return true;
        case CTL_F_UPDATE:
            if (!s->present || !ctl_reg_cas_ok(out, op)) {
                return false;
            }
            out->value = op->value;
            out->seq_known = 0; /* seq stays a lower bound */
            return true;
        case CTL_F_DELETE:
            if (!s->present || !ctl_reg_cas_ok(out, op)) {
                return false;
            }
            ctl_reg_absent(out);
            return true;
        default:
            return false;
    }
}

static bool ctl_step(const struct ctl_kop* op,
                     const struct ctl_reg* s,
                     struct ctl_reg* out) {
    return op->determinate ? ctl_step_determinate(op, s, out)
                           : ctl_step_indeterminate(op, s, out);
}

/* ---- memo: a hash set of (linearized set, register) ---------------------- */

struct ctl_memo {
    size_t words;     /* u64 words per bitset */
    size_t rec_words; /* words per record: bitset + 2 for the register */
    uint64_t* recs;   /* records, rec_words each */
    size_t used;      /* records stored */
    size_t cap;       /* records allocated */
    uint32_t* slots;  /* open addressing: record index + 1, 0 = empty */
    size_t nslots;    /* power of two */
    bool full;        /* the memory limit was hit */
};

static uint64_t ctl_hash_words(const uint64_t* w, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= w[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

static void ctl_memo_pack(const struct ctl_memo* m,
                          const uint64_t* bits,
                          const struct ctl_reg* r,
                          uint64_t* rec) {
    memcpy(rec, bits, m->words * sizeof *rec);
    rec[m->words] = (uint64_t)r->present | ((uint64_t)r->seq_known << 1) |
                    ((uint64_t)(uint32_t)r->value << 32);
    rec[m->words + 1] = r->seq;
}

static int ctl_memo_grow(struct ctl_memo* m) {
    size_t nslots = m->nslots ? m->nslots * 2 : 1024;
    uint32_t* slots = calloc(nslots, sizeof *slots);
    if (slots == NULL) {
        return -1;
    }
    for (size_t i = 0; i < m->used; i++) {
        const uint64_t* rec = m->recs + i * m->rec_words;
        size_t j = ctl_hash_words(rec, m->rec_words) & (nslots - 1);
        while (slots[j] != 0) {
            j = (j + 1) & (nslots - 1);
        }
        slots[j] = (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = nslots;
    return 0;
}

/* Inserts; returns 1 if new, 0 if present, -1 when out of memory. */
static int ctl_memo_insert(struct ctl_memo* m,
                           const uint64_t* bits,
                           const struct ctl_reg* r) {
    if ((m->used + 1) * 2 > m->nslots && ctl_memo_grow(m) != 0) {
        m->full = true;
        return -1;
    }
    if (m->used == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        if (cap * m->rec_words * sizeof(uint64_t) > CTL_CHECK_MEMO_BYTES_MAX ||
            cap >= UINT32_MAX) {
            m->full = true;
            return -1;
        }
        uint64_t* recs = realloc(m->recs, cap * m->rec_words * sizeof *recs);
        if (recs == NULL) {
            m->full = true;
            return -1;
        }
        m->recs = recs;
        m->cap = cap;
    }
    uint64_t* cand = m->recs + m->used * m->rec_words;
    ctl_memo_pack(m, bits, r, cand);
    size_t j = ctl_hash_words(cand, m->rec_words) & (m->nslots - 1);
    while (m->slots[j] != 0) {
        const uint64_t* old =
            m->recs + (size_t)(m->slots[j] - 1) * m->rec_words;
        if (memcmp(old, cand, m->rec_words * sizeof *old) == 0) {
            return 0;
        }
        j = (j + 1) & (m->nslots - 1);
    }
    m->slots[j] = (uint32_t)(m->used + 1);
    m->used++;
    return 1;
}

static void ctl_memo_free(struct ctl_memo* m) {
    free(m->recs);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- the search ---------------------------------------------------------- */

/* One event of the doubly linked list. */
struct ctl_ev {
    size_t op;           /* index into the key's ops */
    bool call;           /* call or return */
    int64_t t;           /* when */
    struct ctl_ev* prev; /* list links (lift/unlift) */
    struct ctl_ev* next;
    struct ctl_ev* ret; /* call: its return, or NULL (indeterminate) */
};

static int ctl_ev_cmp(const void* a, const void* b) {
    const struct ctl_ev* x = a;
    const struct ctl_ev* y = b;
    if (x->t != y->t) {
        return x->t < y->t ? -1 : 1;
    }
    /* At equal times calls go first: the operations count as concurrent,
     * the permissive reading of a tie. */
    if (x->call != y->call) {
        return x->call ? -1 : 1;
    }
    return x->op < y->op ? -1 : (x->op > y->op ? 1 : 0);
}

static void ctl_lift(struct ctl_ev* call) {
    call->prev->next = call->next;
    if (call->next != NULL) {
        call->next->prev = call->prev;
    }
    struct ctl_ev* r = call->ret;
    if (r != NULL) {
        r->prev->next = r->next;
        if (r->next != NULL) {
            r->next->prev = r->prev;
        }
    }
}

static void ctl_unlift(struct ctl_ev* call) {
    struct ctl_ev* r = call->ret;
    if (r != NULL) {
        r->prev->next = r;
        if (r->next != NULL) {
            r->next->prev = r;
        }
    }
    call->prev->next = call;
    if (call->next != NULL) {
        call->next->prev = call;
    }
}

/* A stack frame: the call linearized and the state before it. */
struct ctl_frame {
    struct ctl_ev* call;
    struct ctl_reg before;
    bool forced; /* a state-preserving op: no alternative to try */
};

/*
 * Checks the ops selected by `sel` (NULL: all) of one key. Adds the steps
 * taken to *steps. Returns the verdict.
 */
static enum ctl_verdict ctl_search(const struct ctl_kop* ops,
                                   size_t n,
                                   const bool* sel,
                                   uint64_t budget,
                                   uint64_t* steps) {
    size_t m = 0;
    size_t remaining = 0;
    for (size_t i = 0; i < n; i++) {
        if (sel == NULL || sel[i]) {
            m++;
            remaining += ops[i].determinate;
        }
    }
    if (remaining == 0) {
        return CTL_LINEARIZABLE;
    }
    enum ctl_verdict verdict = CTL_UNDECIDED;
    struct ctl_ev* evs = calloc(2 * m + 1, sizeof *evs);
    struct ctl_frame* stack = calloc(m + 1, sizeof *stack);
    size_t words = (n + 63) / 64;
    uint64_t* bits = calloc(words, sizeof *bits);
    struct ctl_memo memo = {.words = words, .rec_words = words + 2};
    if (evs == NULL || stack == NULL || bits == NULL) {
        goto out;
    }
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        if (sel != NULL && !sel[i]) {
            continue;
        }
        evs[ne++] = (struct ctl_ev){.op = i, .call = true, .t = ops[i].invoke};
        if (ops[i].determinate) {
            evs[ne++] =
                (struct ctl_ev){.op = i, .call = false, .t = ops[i].complete};
        }
    }
    qsort(evs, ne, sizeof *evs, ctl_ev_cmp);
    /* Link the list behind a head sentinel (evs[ne]), and calls to their
     * returns (after sorting, pointers are stable). */
    struct ctl_ev* head = &evs[ne];
    head->prev = NULL;
    head->next = ne > 0 ? &evs[0] : NULL;
    for (size_t i = 0; i < ne; i++) {
        evs[i].prev = i == 0 ? head : &evs[i - 1];
        evs[i].next = i + 1 < ne ? &evs[i + 1] : NULL;
    }
    {
        struct ctl_ev** call_of = calloc(n, sizeof *call_of);
        if (call_of == NULL) {
            goto out;
        }
        for (size_t i = 0; i < ne; i++) {
            if (evs[i].call) {
                call_of[evs[i].op] = &evs[i];
            }
        }
        for (size_t i = 0; i < ne; i++) {
            if (!evs[i].call) {
                call_of[evs[i].op]->ret = &evs[i];
            }
        }
        free(call_of);
    }
    struct ctl_reg state;
    ctl_reg_absent(&state);
    size_t depth = 0;
    struct ctl_ev* e = head->next;
    while (remaining > 0) {
        if (++*steps, --budget == 0) {
            goto out;
        }
        if (e != NULL && e->call) {
            struct ctl_reg next;
            size_t op = e->op;
            if (ctl_step(&ops[op], &state, &next)) {
                bits[op / 64] |= (uint64_t)1 << (op % 64);
                int fresh = ctl_memo_insert(&memo, bits, &next);
                if (fresh < 0) {
                    goto out;
                }
                /* An operation that leaves the register as it is (a read,
                 * a 404, a 412 that learns nothing) and is legal now can
                 * always go first: it commutes with whatever would come
                 * before it, and every operation that must precede it is
                 * linearized already. So skipping it is never needed,
                 * which keeps k concurrent reads from costing 2^k
                 * configurations; and if going first was explored
                 * already, this configuration has no solution at all. */
                bool forced = ctl_reg_eq(&next, &state);
                if (fresh == 1) {
                    stack[depth++] = (struct ctl_frame){e, state, forced};
                    state = next;
                    ctl_lift(e);
                    remaining -= ops[op].determinate;
                    e = head->next;
                    continue;
                }
                bits[op / 64] &= ~((uint64_t)1 << (op % 64));
                if (!forced) {
                    e = e->next;
                    continue;
                }
                /* fall through to backtrack */
            } else {
                e = e->next;
                continue;
            }
        }
        /* A return of an operation not linearized yet (or the end): undo
         * the last choice and try the next candidate after it. */
        struct ctl_frame f;
        do {
            if (depth == 0) {
                verdict = CTL_NOT_LINEARIZABLE;
                goto out;
            }
            f = stack[--depth];
            size_t op = f.call->op;
            bits[op / 64] &= ~((uint64_t)1 << (op % 64));
            state = f.before;
            ctl_unlift(f.call);
            remaining += ops[op].determinate;
        } while (f.forced);
        e = f.call->next;
    }
    verdict = CTL_LINEARIZABLE;
out:
    ctl_memo_free(&memo);
    free(bits);
    free(stack);
    free(evs);
    return verdict;
}

/* ---- per-key compilation ---------------------------------------------------
 */

/* Interned values of one key (linear: a key has few distinct values). */
struct ctl_values {
    const char** v;
    size_t count;
    size_t cap;
};

static int32_t ctl_intern(struct ctl_values* vals, const char* s) {
    if (s == NULL) {
        return -1;
    }
    for (size_t i = 0; i < vals->count; i++) {
        if (strcmp(vals->v[i], s) == 0) {
            return (int32_t)i;
        }
    }
    if (vals->count == vals->cap) {
        size_t cap = vals->cap ? vals->cap * 2 : 16;
        const char** v = realloc(vals->v, cap * sizeof *v);
        if (v == NULL) {
            return -2;
        }
        vals->v = v;
        vals->cap = cap;
    }
    vals->v[vals->count] = s;
    return (int32_t)vals->count++;
}

static bool ctl_is_write(enum ctl_fn fn) {
    return fn == CTL_F_CREATE || fn == CTL_F_UPDATE || fn == CTL_F_DELETE;
}

/* Compiles op h of the history into *k. Returns false if it is ignored. */
static bool ctl_compile(const struct ctl_hop* h,
                        size_t hidx,
                        struct ctl_values* vals,
                        struct ctl_kop* k) {
    if (h->outcome == CTL_OUT_FAIL ||
        (h->outcome == CTL_OUT_INDETERMINATE && !ctl_is_write(h->fn))) {
        return false;
    }
    memset(k, 0, sizeof *k);
    k->hidx = hidx;
    k->fn = h->fn;
    k->determinate = h->outcome == CTL_OUT_OK;
    k->res = h->res;
    k->value = ctl_intern(vals, h->value);
    k->res_value = ctl_intern(vals, h->res_value);
    k->res_seq = h->res_seq;
    k->has_if_match = h->has_if_match;
    k->if_match = h->if_match;
    k->invoke = h->invoke_us;
    k->complete = k->determinate ? h->complete_us : INT64_MAX;
    return k->value >= -1 && k->res_value >= -1;
}

/* deps[i*n + j]: op j depends on op i (reads what i wrote, or i created
 * the id). Returns a malloc'd n*n matrix or NULL. */
static bool* ctl_deps(const struct ctl_kop* ops, size_t n) {
    bool* d = calloc(n * n + 1, sizeof *d);
    if (d == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct ctl_kop* w = &ops[i];
        if (w->fn != CTL_F_CREATE && w->fn != CTL_F_UPDATE) {
            continue;
        }
        bool w_seq = w->determinate && w->res == CTL_RES_ENTRY;
        for (size_t j = 0; j < n; j++) {
            const struct ctl_kop* r = &ops[j];
            if (j == i) {
                continue;
            }
            bool dep = w->fn == CTL_F_CREATE && w->determinate;
            dep = dep || (r->fn != CTL_F_UPDATE && r->res == CTL_RES_ENTRY &&
                          r->res_value >= 0 && r->res_value == w->value);
            dep =
                dep || (w_seq && r->has_if_match && r->if_match == w->res_seq);
            dep = dep || (w_seq && r->res == CTL_RES_CAS_MISMATCH &&
                          r->res_seq == w->res_seq);
            dep = dep || (w_seq && r->fn == CTL_F_GET &&
                          r->res == CTL_RES_ENTRY && r->res_seq == w->res_seq);
            d[i * n + j] = dep;
        }
    }
    return d;
}

/* May the ops in `drop` leave `keep` (keep excludes them already)? */
static bool ctl_can_drop(const bool* deps,
                         size_t n,
                         const bool* keep,
                         const size_t* drop,
                         size_t ndrop) {
    for (size_t a = 0; a < ndrop; a++) {
        size_t i = drop[a];
        for (size_t j = 0; j < n; j++) {
            if (keep[j] && deps[i * n + j]) {
                return false;
            }
        }
    }
    return true;
}

/*
 * Shrinks the failing selection `keep` of ops[0..n) to a smallest failing
 * one (ddmin over blocks, then single ops). Returns true if the result is
 * 1-minimal (the budget did not run out).
 */
static bool ctl_minimize(const struct ctl_kop* ops,
                         size_t n,
                         bool* keep,
                         uint64_t budget,
                         uint64_t* steps) {
    bool* deps = ctl_deps(ops, n);
    size_t* order = calloc(n + 1, sizeof *order);
    size_t* block = calloc(n + 1, sizeof *block);
    bool minimal = false;
    if (deps == NULL || order == NULL || block == NULL) {
        goto out;
    }
    uint64_t spent = 0;
    size_t kept = n;
    for (size_t chunk = n / 2 > 0 ? n / 2 : 1;; chunk /= 2) {
        if (chunk == 0) {
            chunk = 1;
        }
        bool changed = true;
        while (changed) {
            changed = false;
            /* Later operations first: they are the likeliest bystanders. */
            size_t m = 0;
            for (size_t i = n; i-- > 0;) {
                if (keep[i]) {
                    order[m++] = i;
                }
            }
            for (size_t s = 0; s < m; s += chunk) {
                size_t nb = 0;
                for (size_t t = s; t < s + chunk && t < m; t++) {
                    if (keep[order[t]]) {
                        block[nb++] = order[t];
                    }
                }
                if (nb == 0 || nb >= kept) {
                    continue;
                }
                for (size_t b = 0; b < nb; b++) {
                    keep[block[b]] = false;
                }
                uint64_t before = *steps;
                enum ctl_verdict v = CTL_LINEARIZABLE;
                if (ctl_can_drop(deps, n, keep, block, nb)) {
                    v = ctl_search(ops, n, keep, budget, steps);
                }
                spent += *steps - before;
                if (v == CTL_NOT_LINEARIZABLE) {
                    kept -= nb;
                    changed = true;
                } else {
                    for (size_t b = 0; b < nb; b++) {
                        keep[block[b]] = true;
                    }
                }
                if (spent > budget) {
                    goto out;
                }
            }
        }
        if (chunk == 1) {
            break;
        }
    }
    minimal = true;
out:
    free(block);
    free(order);
    free(deps);
    return minimal;
}

/* ---- the whole history -----------------------------------------------------
 */

/* Sorts history indices by id, then invoke time (qsort has no context
 * argument; ctl_check is not reentrant). */
static const struct ctl_history* ctl_sort_h;

static int ctl_idx_cmp(const void* a, const void* b) {
    const struct ctl_hop* x = &ctl_sort_h->ops[*(const size_t*)a];
    const struct ctl_hop* y = &ctl_sort_h->ops[*(const size_t*)b];
    int c = strcmp(x->id, y->id);
    if (c != 0) {
        return c;
    }
    if (x->invoke_us != y->invoke_us) {
        return x->invoke_us < y->invoke_us ? -1 : 1;
    }
    return x->op < y->op ? -1 : (x->op > y->op ? 1 : 0);
}

static void ctl_note_bad(struct ctl_check_result* res,
                         const char* id,
                         const struct ctl_kop* ops,
                         size_t n,
                         const bool* keep,
                         bool minimal) {
    struct ctl_check_bad* bad =
        realloc(res->bad, (res->bad_count + 1) * sizeof *bad);
    if (bad == NULL) {
        return;
    }
    res->bad = bad;
    struct ctl_check_bad* b = &bad[res->bad_count++];
    memset(b, 0, sizeof *b);
    b->id = strdup(id);
    b->ops = calloc(n + 1, sizeof *b->ops);
    b->key_ops = n;
    b->minimal = minimal;
    for (size_t i = 0; b->ops != NULL && i < n; i++) {
        if (keep[i]) {
            b->ops[b->count++] = ops[i].hidx;
        }
    }
}

/* Checks the ops idx[0..n) (all of one id). */
static void ctl_check_key(const struct ctl_history* h,
                          const size_t* idx,
                          size_t n,
                          const struct ctl_check_opts* opts,
                          struct ctl_check_result* res) {
    struct ctl_values vals = {0};
    struct ctl_kop* ops = calloc(n + 1, sizeof *ops);
    bool* keep = calloc(n + 1, sizeof *keep);
    size_t m = 0;
    if (ops == NULL || keep == NULL) {
        res->undecided_keys++;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ctl_compile(&h->ops[idx[i]], idx[i], &vals, &ops[m])) {
            res->indeterminate += !ops[m].determinate;
            m++;
        } else {
            res->ops_ignored++;
        }
    }
    res->keys++;
    res->ops_checked += m;
    uint64_t budget =
        opts->step_budget ? opts->step_budget : CTL_CHECK_BUDGET_DEFAULT;
    enum ctl_verdict v = ctl_search(ops, m, NULL, budget, &res->steps);
    if (v == CTL_UNDECIDED) {
        res->undecided_keys++;
    } else if (v == CTL_NOT_LINEARIZABLE) {
        for (size_t i = 0; i < m; i++) {
            keep[i] = true;
        }
        bool minimal =
            opts->minimize && ctl_minimize(ops, m, keep, budget, &res->steps);
        ctl_note_bad(res, h->ops[idx[0]].id, ops, m, keep, minimal);
    }
out:
    free(vals.v);
    free(keep);
    free(ops);
}

enum ctl_verdict ctl_check(const struct ctl_history* h,
                           const struct ctl_check_opts* opts,
                           struct ctl_check_result* res) {
    memset(res, 0, sizeof *res);
    size_t* idx = calloc(h->count + 1, sizeof *idx);
    size_t n = 0;
    if (idx == NULL) {
        res->verdict = CTL_UNDECIDED;
        return res->verdict;
    }
    for (size_t i = 0; i < h->count; i++) {
        if (h->ops[i].id != NULL) {
            idx[n++] = i;
        } else {
            res->ops_ignored++;
        }
    }
    ctl_sort_h = h;
    qsort(idx, n, sizeof *idx, ctl_idx_cmp);
    for (size_t s = 0; s < n;) {
        size_t e = s + 1;
        while (e < n && strcmp(h->ops[idx[e]].id, h->ops[idx[s]].id) == 0) {
            e++;
        }
        ctl_check_key(h, idx + s, e - s, opts, res);
        s = e;
    }
    free(idx);
    res->verdict = res->bad_count > 0        ? CTL_NOT_LINEARIZABLE
                   : res->undecided_keys > 0 ? CTL_UNDECIDED
                                             : CTL_LINEARIZABLE;
    return res->verdict;
}

void ctl_check_result_free(struct ctl_check_result* res) {
    for (size_t i = 0; i < res->bad_count; i++) {
        free(res->bad[i].id);
        free(res->bad[i].ops);
    }
    free(res->bad);
    memset(res, 0, sizeof *res);
}

/* One operation, readable: "update(v3, if_match 2) -> ok seq 7". */
static void ctl_print_op(FILE* out, const struct ctl_hop* op) {
    fprintf(out, "    line %-5zu proc %-3llu op %-6llu %s(", op->line,
            (unsigned long long)op->proc, (unsigned long long)op->op,
            ctl_fn_name(op->fn));
    if (op->value != NULL) {
        fprintf(out, "%s", op->value);
    }
    if (op->has_if_match) {
        fprintf(out, "%sif_match %llu", op->value != NULL ? ", " : "",
                (unsigned long long)op->if_match);
    }
    fprintf(out, ") ");
    if (op->outcome == CTL_OUT_INDETERMINATE) {
        fprintf(out, "-> indeterminate   [%lld us .. never]\n",
                (long long)op->invoke_us);
        return;
    }
    switch (op->res) {
        case CTL_RES_ENTRY:
            fprintf(out, "-> %s seq %llu", op->res_value ? op->res_value : "?",
                    (unsigned long long)op->res_seq);
            break;
        case CTL_RES_NOT_FOUND:
            fprintf(out, "-> not found");
            break;
        case CTL_RES_CAS_MISMATCH:
            fprintf(out, "-> 412 current seq %llu",
                    (unsigned long long)op->res_seq);
            break;
        case CTL_RES_DELETED:
            fprintf(out, "-> deleted");
            break;
    }
    fprintf(out, "   [%lld us .. %lld us]\n", (long long)op->invoke_us,
            (long long)op->complete_us);
}

void ctl_check_print(FILE* out,
                     const struct ctl_history* h,
                     const struct ctl_check_result* res) {
    fprintf(out,
            "checked %zu keys, %zu operations (%zu indeterminate writes), "
            "%zu ignored (failed, or reads without an answer), %llu search "
            "steps\n",
            res->keys, res->ops_checked, res->indeterminate, res->ops_ignored,
            (unsigned long long)res->steps);
    for (size_t i = 0; i < res->bad_count; i++) {
        const struct ctl_check_bad* b = &res->bad[i];
        fprintf(out,
                "NOT LINEARIZABLE: key %s (%zu operations); %s offending "
                "sub-history, %zu operations, in invocation order:\n",
                b->id, b->key_ops,
                b->minimal ? "smallest (1-minimal)" : "a reduced", b->count);
        for (size_t j = 0; j < b->count; j++) {
            ctl_print_op(out, &h->ops[b->ops[j]]);
        }
        for (size_t j = 0; j < b->count; j++) {
            json_t* o = ctl_hop_json(&h->ops[b->ops[j]]);
            char* s = json_dumps(o, JSON_COMPACT);
            fprintf(out, "    %s\n", s != NULL ? s : "");
            free(s);
            json_decref(o);
        }
    }
    if (res->undecided_keys > 0) {
        fprintf(out, "UNDECIDED: %zu keys ran out of search budget\n",
                res->undecided_keys);
    }
    fprintf(out, "%s\n",
            res->verdict == CTL_LINEARIZABLE ? "history is linearizable"
            : res->verdict == CTL_NOT_LINEARIZABLE
                ? "history is NOT linearizable"
                : "history is undecided");
}

int ctl_cmd_check(int argc, char** argv) {
    bool help = false;
    bool quick = false;
    long budget = 0;
    char* pos[1];
    size_t npos = 0;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"no-minimize", CTL_OPT_FLAG, &quick},
        {"budget", CTL_OPT_LONG, &budget},
    };
    if (ctl_parse_opts("check", argc - 1, argv + 1, opts,
                       sizeof opts / sizeof opts[0], pos, 1, &npos) != 0) {
        return 2;
    }
    if (help || npos != 1) {
        fprintf(help ? stdout : stderr,
                "usage: skeinctl check FILE [--no-minimize] [--budget STEPS]\n"
                "Checks a history recorded with --history for per-key "
                "linearizability.\nExit 0: linearizable; 1: not (the "
                "smallest offending sub-history is printed);\n2: bad input; "
                "3: undecided (search budget exhausted).\n");
        return help ? 0 : 2;
    }
    struct ctl_history h;
    char err[256];
    ctl_history_init(&h);
    if (ctl_history_load(pos[0], &h, err, sizeof err) != 0) {
        fprintf(stderr, "skeinctl check: %s\n", err);
        ctl_history_free(&h);
        return 2;
    }
    struct ctl_check_opts co = {
        .step_budget = budget > 0 ? (uint64_t)budget : 0, .minimize = !quick};
    struct ctl_check_result res;
    enum ctl_verdict v = ctl_check(&h, &co, &res);
    ctl_check_print(stdout, &h, &res);
    ctl_check_result_free(&res);
    ctl_history_free(&h);
    return (int)v;
}
