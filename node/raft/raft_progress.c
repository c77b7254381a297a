/*
 * raft_progress.c - the leader's per-follower replication tracker.
 * See raft_progress.h for the state diagram.
 */
#include "raft_progress.h"

#include <assert.h>
#include <string.h>

void raft_inflights_init(struct raft_inflights* in, uint32_t cap) {
    memset(in, 0, sizeof(*in));
    if (cap == 0) {
        cap = 1;
    }
    in->cap = cap > RAFT_MAX_INFLIGHT ? RAFT_MAX_INFLIGHT : cap;
}

bool raft_inflights_full(const struct raft_inflights* in) {
    return in->count >= in->cap;
}

void raft_inflights_add(struct raft_inflights* in, raft_index last) {
    assert(!raft_inflights_full(in));
    in->last[(in->start + in->count) % RAFT_MAX_INFLIGHT] = last;
    in->count++;
}

void raft_inflights_free_to(struct raft_inflights* in, raft_index index) {
    while (in->count > 0 && in->last[in->start] <= index) {
        in->start = (in->start + 1) % RAFT_MAX_INFLIGHT;
        in->count--;
    }
    if (in->count == 0) {
        in->start = 0;
    }
}

void raft_inflights_reset(struct raft_inflights* in) {
    in->start = 0;
    in->count = 0;
}

void raft_progress_init(struct raft_progress* p,
                        raft_node_id id,
                        raft_index last,
                        uint32_t max_inflight) {
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->next = last + 1;
    p->state = RAFT_PROGRESS_PROBE;
    raft_inflights_init(&p->inflights, max_inflight);
}

static void progress_reset_state(struct raft_progress* p, uint8_t state) {
    p->state = state;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    p->snapshot_ticks = 0;
    raft_inflights_reset(&p->inflights);
}

void raft_progress_become_probe(struct raft_progress* p) {
    /* Coming back from a snapshot, the follower holds at least the
     * snapshot, so probing resumes right after it. */
    raft_index from_snapshot = p->pending_snapshot;
    bool was_snapshot = p->state == RAFT_PROGRESS_SNAPSHOT;

    progress_reset_state(p, RAFT_PROGRESS_PROBE);
    p->next = p->match + 1;
    if (was_snapshot && from_snapshot + 1 > p->next) {
        p->next = from_snapshot + 1;
    }
}

void raft_progress_become_replicate(struct raft_progress* p) {
    progress_reset_state(p, RAFT_PROGRESS_REPLICATE);
    p->next = p->match + 1;
}

void raft_progress_become_snapshot(struct raft_progress* p, raft_index index) {
    progress_reset_state(p, RAFT_PROGRESS_SNAPSHOT);
    p->pending_snapshot = index;
}

bool raft_progress_maybe_update(struct raft_progress* p, raft_index index) {
    bool updated = false;

    if (p->match < index) {
        p->match = index;
        updated = true;
        p->probe_sent = false;
    }
    if (p->next < index + 1) {
        p->next = index + 1;
    }
    return updated;
}

void raft_progress_sent(struct raft_progress* p, raft_index last) {
    switch (p->state) {
        case RAFT_PROGRESS_REPLICATE:
            if (last + 1 > p->next) {
                p->next = last + 1;
            }
            raft_inflights_add(&p->inflights, last);
            break;
        case RAFT_PROGRESS_PROBE:
            p->probe_sent = true;
            break;
        default:
            break;
    }
}

bool raft_progress_maybe_decrease(struct raft_progress* p,
                                  raft_index rejected,
                                  raft_index hint) {
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        /* A rejection of something already matched is stale. */
        if (rejected <= p->match) {
            return false;
        }
        p->next = p->match + 1;
        return true;
    }
    /* In PROBE only the answer to the probe we sent (next - 1) counts. */
    if (p->next == 0 || p->next - 1 != rejected) {
        return false;
    }
    if (rejected <= p->match) {
        /* The follower refuses an entry it acknowledged: it lost its log
         * (a replaced disk, a wiped data directory). Forgetting its match
         * can only delay commits, never hasten one. */
        p->match = hint < rejected ? hint : rejected - 1;
    }
    {
        raft_index n = hint + 1 < rejected ? hint + 1 : rejected;
        if (n < p->match + 1) {
            n = p->match + 1;
        }
        p->next = n;
    }
    p->probe_sent = false;
    return true;
}

bool raft_progress_is_paused(const struct raft_progress* p) {
    switch (p->state) {
        case RAFT_PROGRESS_PROBE:
            return p->probe_sent;
        case RAFT_PROGRESS_REPLICATE:
            return raft_inflights_full(&p->inflights);
        default:
            return true;
    }
}
