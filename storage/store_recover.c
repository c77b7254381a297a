/*
 * store_recover.c - recovery, replay and compaction planning (see
 * store_recover.h).
 */
#include "store_recover.h"

#include <stdlib.h>
#include <string.h>

#define STORE_REPLAY_BYTES   ((size_t)4 << 20)
#define STORE_REPLAY_ENTRIES 1024

/* True if the log holds entry `index` with term `term`. */
static bool store_log_has(struct store_lmdb* log,
                          raft_index index,
                          raft_term term) {
    struct store st;
    struct raft_storage v;
    raft_term t = 0;

    store_lmdb_store(log, &st);
    st.ops->storage(st.ctx, &v);
    if (index + 1 < v.first_index(v.ctx) || index > v.last_index(v.ctx)) {
        return false;
    }
    return v.term(v.ctx, index, &t) == RAFT_OK && t == term;
}

/* Resets the log to the state's snapshot (applied index, term, conf). */
static int store_reset_log(struct store_lmdb* log,
                           struct kv_state* kv,
                           const struct raft_conf* bootstrap,
                           struct raft_snapshot_meta* meta,
                           char* errmsg) {
    struct store st;
    int rv = kv_snapshot_meta(kv, bootstrap, meta);

    if (rv != STORE_OK) {
        store_errf(errmsg, "%s: membership stored in the state is damaged",
                   kv_dir(kv));
        return rv;
    }
    store_lmdb_store(log, &st);
    if (st.ops->install_snapshot(st.ctx, meta) != RAFT_OK) {
        store_errf(errmsg, "%s", store_lmdb_errmsg(log));
        return store_lmdb_last_error(log);
    }
    return STORE_OK;
}

int store_recover(struct store_lmdb* log,
                  struct kv_state* kv,
                  const struct raft_conf* bootstrap,
                  struct store_recovery* out,
                  char* errmsg) {
    struct store st;
    raft_index applied = kv_applied_index(kv);
    raft_term applied_term = kv_applied_term(kv);

    memset(out, 0, sizeof(*out));
    store_lmdb_store(log, &st);
    if (st.ops->load(st.ctx, &out->start) != RAFT_OK) {
        store_errf(errmsg, "%s", store_lmdb_errmsg(log));
        return STORE_ECORRUPT;
    }
    raft_index first = store_lmdb_first_index(log);
    if (applied + 1 < first) {
        store_errf(errmsg,
                   "%s: state applied index %llu is below the log's first "
                   "index %llu: the state lost entries the log no longer "
                   "holds; a snapshot from the leader is needed",
                   kv_dir(kv), (unsigned long long)applied,
                   (unsigned long long)first);
        return STORE_ECORRUPT;
    }
    if (applied > 0 && !store_log_has(log, applied, applied_term)) {
        int rv =
            store_reset_log(log, kv, bootstrap, &out->start.snapshot, errmsg);
        if (rv != STORE_OK) {
            return rv;
        }
        out->log_reset = true;
    } else if (out->start.snapshot.index > applied) {
        /* The state is behind the recorded snapshot but the log still
         * holds what follows it: start from the state itself. */
        int rv = kv_snapshot_meta(kv, bootstrap, &out->start.snapshot);
        if (rv != STORE_OK) {
            store_errf(errmsg, "%s: state membership damaged", kv_dir(kv));
            return rv;
        }
    }
    if (bootstrap != NULL) {
        out->start.bootstrap = *bootstrap;
    }
    out->start.applied = applied;
    if (out->start.hard_state.commit < applied) {
        out->start.hard_state.commit = applied;
    }
    raft_index last = store_lmdb_last_index(log);
    out->replay_from = applied + 1;
    out->replay_to = out->start.hard_state.commit < last
                         ? out->start.hard_state.commit
                         : last;
    return STORE_OK;
}

int store_replay(struct store_lmdb* log,
                 struct kv_state* kv,
                 raft_index to,
                 size_t batch_bytes,
                 char* errmsg) {
    struct store st;
    struct raft_storage v;
    struct raft_entry* ents = calloc(STORE_REPLAY_ENTRIES, sizeof(*ents));
    int rv = STORE_OK;

    if (ents == NULL) {
        return STORE_ENOMEM;
    }
    if (batch_bytes == 0) {
        batch_bytes = STORE_REPLAY_BYTES;
    }
    store_lmdb_store(log, &st);
    st.ops->storage(st.ctx, &v);
    if (to > v.last_index(v.ctx)) {
        to = v.last_index(v.ctx);
    }
    while (rv == STORE_OK && kv_applied_index(kv) < to) {
        raft_index lo = kv_applied_index(kv) + 1;
        raft_index hi = to + 1;
        size_t n = 0;
        if (hi - lo > STORE_REPLAY_ENTRIES) {
            hi = lo + STORE_REPLAY_ENTRIES;
        }
        int rrv = v.entries(v.ctx, lo, hi, batch_bytes, ents, &n);
        if (rrv != RAFT_OK || n == 0) {
            store_errf(errmsg, "replay %llu..%llu: %s", (unsigned long long)lo,
                       (unsigned long long)to, store_lmdb_errmsg(log));
            rv = rrv == RAFT_ECOMPACTED ? STORE_ECOMPACTED
                                        : store_lmdb_last_error(log);
            if (rv == STORE_OK) {
                rv = STORE_EIO;
            }
            break;
        }
        rv = kv_apply_batch(kv, ents, n, NULL);
        if (rv != STORE_OK) {
            store_errf(errmsg, "%s", kv_errmsg(kv));
        }
    }
    free(ents);
    return rv;
}

void store_plan_compaction(raft_index log_first,
                           raft_index durable_applied,
                           uint64_t retain,
                           uint64_t threshold,
                           struct store_compaction* out) {
    memset(out, 0, sizeof(*out));
    if (threshold == 0) {
        threshold = 1;
    }
    if (durable_applied < retain) {
        return;
    }
    raft_index upto = durable_applied - retain;
    if (upto + 1 < log_first || upto + 1 - log_first < threshold) {
        return;
    }
    out->due = true;
    out->snapshot_index = durable_applied;
    out->compact_index = upto;
}

int store_compact_below(struct store_lmdb* log,
                        struct kv_state* kv,
                        const struct raft_snapshot_meta* meta,
                        uint64_t retain) {
    struct store st;

    if (meta == NULL || meta->index > kv_durable_applied(kv)) {
        return STORE_EINVAL;
    }
    raft_index first = store_lmdb_first_index(log);
    raft_index upto = meta->index > retain ? meta->index - retain : 0;
    if (upto + 1 < first) {
        upto = first - 1;
    }
    store_lmdb_store(log, &st);
    if (st.ops->compact(st.ctx, meta, upto) != RAFT_OK) {
        return store_lmdb_last_error(log);
    }
    return STORE_OK;
}
