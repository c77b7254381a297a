/*
 * node_restore.h - POST /_raft/snapshot: a backup restored into the
 * running cluster, in log order (node_restore.c has the design).
 *
 * Everything here belongs to the loop thread.
 */
#ifndef SKEIN_NODE_RESTORE_H
#define SKEIN_NODE_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_snapshot.h"
#include "kv_state.h"
#include "node.h"
#include "raft.h"
#include "skein.pb-c.h"

#define NODE_RESTORE_IDLE_MS                   \
    30000 /* a staged upload idle this long is \
             discarded */
#define NODE_RESTORE_WINDOW                   \
    8 /* restore entries proposed and not yet \
         applied, at most */

struct node;
struct transport_server_ctx;

/** The leader's restore: an upload being staged, then replicated. */
struct node_restore {
    /* Staging (leader only, a local file). */
    uint64_t upload_id;           /* staged upload, 0 = none */
    uint64_t received;            /* bytes staged, in order */
    uint64_t total_size;          /* announced size, 0 = unknown */
    uint64_t used_ms;             /* monotonic ms of the last chunk */
    char path[NODE_URL_MAX + 64]; /* <data>/restore/upload-<id>.mdb */
    /* Verification, on `done` (a child process, polled every tick). */
    struct kv_snapshot_verifier* verifier; /* running check, or NULL */
    /* Replication through the log, once the file was verified. */
    bool running;            /* chunks are being proposed */
    raft_term term;          /* the leader term proposing them */
    uint64_t checksum;       /* XXH64 of the file */
    uint64_t proposed;       /* bytes proposed so far */
    bool commit_proposed;    /* the commit entry is in the log */
    raft_index commit_index; /* its index */
    raft_index inflight[NODE_RESTORE_WINDOW]; /* proposed, not applied */
    size_t n_inflight;                        /* used slots of inflight */
    struct transport_server_ctx* reply;       /* the `done` request, or NULL */
    uint64_t deadline_ms; /* answer it by then, at the latest */
    /* Cleanup of a restore some leader gave up (node_restore_tick). */
    uint64_t abort_upload; /* upload an abort entry was proposed for */
    uint64_t abort_ms;     /* when */
};

/**
 * Handles one SnapshotWriteRequest (stage a chunk, abort, or verify and
 * start replicating on `done`). Answers `reply` now, or, for a `done`
 * that starts replicating, once the commit entry is applied (or the
 * restore fails). Only the leader stages: others answer NOT_LEADER.
 */
void node_restore_handle(struct node* n,
                         struct transport_server_ctx* reply,
                         const Skein__SnapshotWriteRequest* req);

/**
 * Every tick: collects the verification's verdict, proposes the next
 * chunks, notices a lost leadership or a deadline, and discards an upload
 * idle for NODE_RESTORE_IDLE_MS. A leader with no restore running that
 * finds chunks staged in its state (a restore given up before its commit
 * entry, here or by an earlier leader) proposes an abort entry for them.
 */
void node_restore_tick(struct node* n);

/** After an apply batch: answers the restore whose commit entry applied. */
void node_restore_applied(struct node* n,
                          const struct raft_entry* entries,
                          const struct kv_result* results,
                          size_t count);

/** At shutdown: answers a waiting restore and removes the staged file. */
void node_restore_close(struct node* n);

#endif
