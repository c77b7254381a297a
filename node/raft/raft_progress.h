/*
 * raft_progress.h - the leader's per-follower replication tracker.
 *
 *                      +--------------------------------------------+
 *                      |                 response >= snapshot index |
 *                      v                                            |
 *   +---------+  match found  +-----------+  needs compacted  +----------+
 *   |  PROBE  | ------------> | REPLICATE | ----------------> | SNAPSHOT |
 *   +---------+ <------------ +-----------+   entries         +----------+
 *        ^        rejection or                                     |
 *        |        unreachable                                      |
 *        +---------------- snapshot failed / timed out ------------+
 *
 * PROBE sends one AppendEntries and waits for the answer (or a heartbeat
 * response) before sending the next; REPLICATE streams optimistically with
 * at most `max_inflight` messages outstanding, tracked in a ring of the last
 * index each message carried.
 */
#ifndef SKEIN_RAFT_PROGRESS_H
#define SKEIN_RAFT_PROGRESS_H

#include "raft.h"

/** Ring buffer of the last index of each append in flight. */
struct raft_inflights {
    uint32_t start;                     /* slot of the oldest entry */
    uint32_t count;                     /* messages in flight */
    uint32_t cap;                       /* limit, <= RAFT_MAX_INFLIGHT */
    raft_index last[RAFT_MAX_INFLIGHT]; /* last index per message */
};

/** Resets `in` to empty with capacity `cap` (clamped to the maximum). */
void raft_inflights_init(struct raft_inflights* in, uint32_t cap);
/** True when no more messages may be sent. */
bool raft_inflights_full(const struct raft_inflights* in);
/** Records a message whose last entry is `last`. Must not be full. */
void raft_inflights_add(struct raft_inflights* in, raft_index last);
/** Frees every slot whose last index is <= `index` (acknowledged). */
void raft_inflights_free_to(struct raft_inflights* in, raft_index index);
/** Empties the ring. */
void raft_inflights_reset(struct raft_inflights* in);

struct raft_progress {
    raft_node_id id;
    raft_index match;            /* highest index known to be replicated */
    raft_index next;             /* next index to send */
    uint8_t state;               /* enum raft_progress_state */
    bool probe_sent;             /* PROBE: an append is outstanding */
    bool recent_active;          /* heard from since the last quorum check */
    raft_index pending_snapshot; /* SNAPSHOT: index being sent */
    uint32_t snapshot_ticks;     /* SNAPSHOT: ticks waited so far */
    uint64_t last_contact_tick;  /* tick of the last response */
    uint64_t lease_tick;         /* send tick of the newest heartbeat
                                    round it answered (leader lease) */
    raft_index stall_match;      /* match when the stall count started */
    uint32_t stall_ticks;        /* ticks lagging without match moving */
    struct raft_inflights inflights;
};

/** Starts tracking a follower whose log is assumed to end at `last`. */
void raft_progress_init(struct raft_progress* p,
                        raft_node_id id,
                        raft_index last,
                        uint32_t max_inflight);
/** Switches to PROBE: next = match + 1, nothing in flight. */
void raft_progress_become_probe(struct raft_progress* p);
/** Switches to REPLICATE: next = match + 1, streaming. */
void raft_progress_become_replicate(struct raft_progress* p);
/** Switches to SNAPSHOT, waiting for a snapshot at `index`. */
void raft_progress_become_snapshot(struct raft_progress* p, raft_index index);
/**
 * Records a successful response up to `index`. Returns true if match
 * advanced (and unpauses a probe).
 */
bool raft_progress_maybe_update(struct raft_progress* p, raft_index index);
/** Records that entries up to `last` were just sent. */
void raft_progress_sent(struct raft_progress* p, raft_index last);
/**
 * Handles a rejection of the append whose previous index was `rejected`;
 * `hint` is the highest index at which the two logs may still match (from
 * the follower's conflict hint). In PROBE, a rejection of an index at or
 * below match means the follower lost its log: match drops to the hint.
 * Returns false if the
 * rejection is stale and was ignored.
 */
bool raft_progress_maybe_decrease(struct raft_progress* p,
                                  raft_index rejected,
                                  raft_index hint);
/** True when no append may be sent now (probe outstanding, ring full,
 * or waiting for a snapshot). */
bool raft_progress_is_paused(const struct raft_progress* p);

#endif
