/*
 * raft_quorum.c - majority arithmetic (Raft §5.2, §5.3).
 */
#include "raft_quorum.h"

uint32_t raft_quorum_size(uint32_t voters) {
    return voters == 0 ? 0 : voters / 2 + 1;
}

raft_index raft_quorum_committed_index(const raft_index* matches, uint32_t n) {
    raft_index sorted[RAFT_MAX_NODES];
    uint32_t i, j;

    if (n == 0 || n > RAFT_MAX_NODES) {
        return 0;
    }
    /* Insertion sort, descending: n is tiny. */
    for (i = 0; i < n; i++) {
        raft_index v = matches[i];
        for (j = i; j > 0 && sorted[j - 1] < v; j--) {
            sorted[j] = sorted[j - 1];
        }
        sorted[j] = v;
    }
    /* The quorum-th largest value is held by at least a quorum. */
    return sorted[raft_quorum_size(n) - 1];
}

enum raft_vote_result raft_quorum_vote_result(uint32_t voters,
                                              uint32_t granted,
                                              uint32_t rejected) {
    uint32_t q = raft_quorum_size(voters);

    if (granted >= q) {
        return RAFT_VOTE_WON;
    }
    if (voters - (rejected < voters ? rejected : voters) < q) {
        return RAFT_VOTE_LOST;
    }
    return RAFT_VOTE_PENDING;
}
