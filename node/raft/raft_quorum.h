/*
 * raft_quorum.h - majority arithmetic, separate so it can be tested alone.
 */
#ifndef SKEIN_RAFT_QUORUM_H
#define SKEIN_RAFT_QUORUM_H

#include "raft.h"

/** Smallest number of votes that is a majority of `voters` (0 -> 0). */
uint32_t raft_quorum_size(uint32_t voters);

/**
 * Returns the largest index that at least a majority of the `n` voter
 * match indexes reach (the commit candidate, Raft §5.3). `matches` is not
 * modified. n == 0 returns 0. n <= RAFT_MAX_NODES.
 */
raft_index raft_quorum_committed_index(const raft_index* matches, uint32_t n);

enum raft_vote_result {
    RAFT_VOTE_PENDING = 0, /* not decided yet */
    RAFT_VOTE_WON,         /* a majority granted */
    RAFT_VOTE_LOST,        /* a majority can no longer be reached */
};

/**
 * Tallies an election among `voters` voters of which `granted` granted
 * and `rejected` rejected (the rest have not answered).
 */
enum raft_vote_result raft_quorum_vote_result(uint32_t voters,
                                              uint32_t granted,
                                              uint32_t rejected);

#endif
