/*
 * node_internal.h - state shared by the node's source files. Everything
 * here is owned by the loop thread unless a field says otherwise.
 */
#ifndef SKEIN_NODE_INTERNAL_H
#define SKEIN_NODE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "kv_snapshot.h"
#include "kv_state.h"
#include "node.h"
#include "node_restore.h"
#include "raft.h"
#include "skein.pb-c.h"
#include "store_lmdb.h"
#include "transport.h"

#define NODE_EVENT_QUEUE_MAX 65536 /* events waiting for the loop */
#define NODE_PENDING_MAX     65536 /* client requests waiting at once */
#define NODE_SNAPSHOT_CHUNK  (1024 * 1024)
#define NODE_PROPOSAL_BATCH  4096 /* writes proposed in one round */

/* What the node knows about another member. */
struct node_peer {
    uint64_t id;
    char url[NODE_URL_MAX];
    char http[NODE_URL_MAX];
    bool known;           /* dialled */
    uint64_t last_rtt_us; /* last acknowledged request */
    uint64_t consecutive_failures;
    uint64_t last_ok_ms; /* monotonic ms of the last reply */
    /* Outgoing snapshot. */
    bool snap_active;
    struct kv_snapshot_reader* snap_reader;
    struct raft_snapshot_meta snap_meta;
    uint64_t snap_offset;
    uint64_t snap_started_ms;
    bool snap_waiting; /* for the snapshot being built (snap_send_build) */
};

/* A snapshot file made off the loop thread (kv_snapshot_create may run
 * beside kv_apply_batch): a large state takes seconds to copy, and the
 * loop must keep its heartbeats going meanwhile. */
struct node_snap_build {
    pthread_t thread;
    bool running;     /* loop thread's view: started, not joined yet */
    atomic_bool done; /* set by the builder when the file is made */
    struct kv_state* kv;
    char path[NODE_URL_MAX + 64];
    int rv;
    struct kv_snapshot_info info;
    char err[STORE_ERRMSG_SIZE];
};

/* GET /_raft/snapshot requests waiting for their backup to be made. */
#define NODE_BACKUP_WAITERS 8
struct node_backup_waiter {
    struct transport_server_ctx* reply;
    uint32_t max_bytes;
};

/* A write proposed by this node and waiting to be applied. */
struct node_write {
    raft_index index;
    raft_term term;
    struct transport_server_ctx* reply;
    uint64_t deadline_ms;
    bool is_create;
};

/* A write waiting to be proposed with the others of its loop round. */
struct node_proposal {
    uint8_t* data; /* packed Command, owned */
    size_t len;
    struct transport_server_ctx* reply;
};

/* A read waiting for its read index and the apply to reach it. */
struct node_read {
    uint64_t context;
    raft_index index; /* valid once known */
    bool known;
    Skein__Envelope* env; /* owns the request */
    struct transport_server_ctx* reply;
    uint64_t deadline_ms;
};

/* A request forwarded to the leader, waiting for its answer. A client
 * write travels in a one-way ForwardBatch and is answered when this node
 * applies its entry (tag), or by the leader's ForwardResults; an admin
 * request waits for the reply to its own request (cookie). */
struct node_forward {
    uint64_t cookie; /* of the request that carries it (0 = not sent yet) */
    struct transport_server_ctx* reply;
    uint64_t deadline_ms;
    bool used;
    bool admin;      /* an admin request: answered with an AdminResponse */
    uint64_t tag;    /* a one-way write: its forward_tag, else 0 */
    uint64_t leader; /* raft id of the leader it went to (one-way) */
    uint64_t term;   /* our term when it was sent (one-way writes) */
};

/* A one-way ForwardBatch packed for the leader, sent with this round's
 * raft messages to it (node.c), or alone at the end of the round. */
struct node_forward_out {
    uint64_t peer; /* 0: none waiting */
    uint8_t* data; /* packed Envelope, owned */
    size_t len;
    uint64_t cookie; /* the forwards it carries */
};

/* The leader's answer to a one-way forwarded write it did not propose,
 * waiting for the end of the loop round (ForwardResults). */
struct node_forward_result {
    uint64_t peer;
    uint64_t tag;
    uint8_t* data; /* packed Envelope with a ClientResponse, owned */
    size_t len;
};

/* Client writes gathered this loop round for the leader (ForwardBatch). */
#define NODE_FORWARD_BATCH_MAX 256
struct node_forward_batch {
    struct node_forward* fwd[NODE_FORWARD_BATCH_MAX];
    ProtobufCBinaryData req[NODE_FORWARD_BATCH_MAX]; /* packed, owned */
    size_t count;
    size_t bytes;
};

/* Log writes waiting for disk space, in log order. */
struct node_backlog {
    struct raft_entry* e; /* owned copies */
    size_t n;
    size_t cap;
    struct raft_hard_state hs;
    bool has_hs;
};

struct node_counters {
    uint64_t fsync_count;
    uint64_t fsync_us_sum;
    uint64_t fsync_us_max;
    uint64_t snapshots_created;
    uint64_t snapshot_send_attempts;
    uint64_t snapshot_send_successes;
    uint64_t snapshot_send_failures;
    uint64_t snapshots_received;
    uint64_t snapshots_applied;
    uint64_t proposals;
    uint64_t reads;
    uint64_t forwarded_writes;
    uint64_t forward_requests;
    uint64_t raft_sent;
    uint64_t raft_piggybacked;
    uint64_t read_index_requests;
    uint64_t forwards_applied;          /* one-way writes answered here */
    uint64_t forward_results_sent;      /* leader: writes answered in
                                           ForwardResults (not proposed) */
    uint64_t forward_results_unmatched; /* answers matching no waiter */
    uint64_t lingered_rounds;           /* rounds that waited for more */
};

/* A raft RPC's reply handle kept until this loop round has messages for
 * its sender (transport.h: they ride in the reply). */
struct node_held_reply {
    uint64_t peer; /* sender's node id */
    struct transport_server_ctx* ctx;
};

#define NODE_HELD_MAX 64

struct node {
    struct node_config cfg;
    char inproc_url[NODE_URL_MAX];
    char snap_dir[NODE_URL_MAX + 32];
    uint64_t start_ms;

    struct raft* raft;
    struct store_lmdb* log;
    struct store store;
    struct raft_storage view;
    struct kv_state* kv;
    struct transport* tr;

    /* Event queue: written by nng threads, read by the loop. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct transport_event** events;
    size_t ev_head;
    size_t ev_count;
    bool stop_requested;
    bool handoff_requested; /* atomic: node_request_handoff */
    bool handed_off;        /* loop: the hand-off was started */
    uint64_t events_dropped;

    pthread_t thread;
    bool thread_started;
    bool stopping; /* loop saw the stop request */
    uint64_t stop_deadline_ms;

    struct node_peer peers[NODE_MAX_PEERS];
    uint32_t n_peers;
    struct node_held_reply held[NODE_HELD_MAX]; /* this loop round's */
    size_t n_held;

    struct node_write* writes; /* FIFO by index */
    size_t w_head;
    size_t w_count;
    struct node_proposal props[NODE_PROPOSAL_BATCH]; /* this round's */
    size_t n_props;
    struct node_read* reads; /* FIFO by context */
    size_t r_head;
    size_t r_count;
    uint64_t next_read_ctx;
    uint64_t read_batch_ctx;    /* context of the reads gathered, not yet
                                   asked for, 0 = none (node_flush_reads) */
    uint64_t read_inflight_ctx; /* follower: ReadIndex asked, unanswered */
    uint64_t read_inflight_ms;  /* when it was asked */
    struct node_forward* forwards;
    size_t n_forwards;
    struct node_forward_batch fwd_batch;
    uint64_t next_cookie;
    uint64_t next_forward_tag;
    struct node_forward_out fwd_out;
    struct node_forward_result* fwd_results; /* leader: this round's */
    size_t n_fwd_results;
    size_t cap_fwd_results;
    uint64_t fwd_seen_leader; /* leader and term when the one-way forwards */
    uint64_t fwd_seen_term;   /* were last checked (node_check_forwards) */

    /* Incoming snapshot. */
    struct kv_snapshot_writer* snap_writer;
    uint64_t snap_from;
    raft_index snap_index;
    struct transport_server_ctx* snap_reply; /* last chunk, after install */
    bool snap_finished;
    struct kv_snapshot_info snap_info;
    Skein__InstallSnapshotChunk* snap_last_chunk; /* its metadata */
    Skein__Envelope* snap_last_env;

    /* The last snapshot made for sending, reused while new enough. */
    char snap_cache_path[NODE_URL_MAX + 64];
    struct kv_snapshot_info snap_cache_info;
    bool snap_cache_valid;
    struct node_snap_build snap_send_build;

    /* Pinned snapshot for backups (GET /_raft/snapshot). */
    uint64_t backup_id;
    struct kv_snapshot_reader* backup_reader;
    struct kv_snapshot_info backup_info;
    uint64_t backup_used_ms;
    struct node_snap_build backup_build;
    struct node_backup_waiter backup_waiters[NODE_BACKUP_WAITERS];
    size_t n_backup_waiters;

    /* Restore (POST /_raft/snapshot): node_restore.c. */
    struct node_restore restore;

    struct node_backlog backlog;
    bool disk_full;    /* log writes wait in the backlog */
    bool apply_behind; /* the state machine missed entries (disk full) */

    bool was_leader;
    enum raft_role logged_role; /* last leadership state logged */
    raft_term logged_term;
    raft_node_id logged_leader;
    uint64_t rng;
    uint64_t tick_due_ms;
    raft_index last_compaction_check;
    bool keep_learner[NODE_MAX_PEERS]; /* ids (by peer slot) to keep */
    struct node_counters counters;
};

/* node.c */
uint64_t node_now_ms(void);
uint64_t node_wall_ms(void);
struct node_peer* node_peer_of(struct node* n, uint64_t id);
struct node_peer* node_add_peer(struct node* n,
                                uint64_t id,
                                const char* url,
                                const char* http);
void node_send_envelope(struct node* n,
                        uint64_t peer,
                        int channel,
                        const Skein__Envelope* env,
                        uint64_t cookie,
                        bool want_reply);
void node_reply_client(struct transport_server_ctx* reply,
                       Skein__ClientResponse* resp);
void node_reply_admin(struct transport_server_ctx* reply,
                      Skein__AdminResponse* resp);
void node_fill_leader_hint(struct node* n, Skein__ClientResponse* resp);
/** The voter a stopping leader hands leadership to, from `count` entries
 * of raft_progress (self included: its last_contact_tick is "now"). Only
 * other voters that are recent_active qualify; among them those heard from
 * within `fresh_ticks` come first (a member that died a moment ago still
 * counts as recent_active), then the longest log, then the latest contact.
 * Returns its id, or 0 if none qualifies. */
raft_node_id node_pick_handoff(const struct raft_progress_info* prs,
                               size_t count,
                               raft_node_id self,
                               uint64_t fresh_ticks);

/** Keeps a member's request handle until the end of the loop round, so
 * that our raft messages for `peer` ride in its reply (else it is
 * answered empty then). Takes the handle. */
void node_hold_reply(struct node* n,
                     uint64_t peer,
                     struct transport_server_ctx* ctx);
/** Sends the one-way ForwardBatch waiting in n->fwd_out (if any) on its
 * own: in a reply the leader left us, or as a request. */
void node_send_forward_out(struct node* n);

/* node_client.c */
void node_handle_client(struct node* n, struct transport_event* ev);
void node_handle_forward_reply(struct node* n, struct transport_event* ev);
/** Relays a client write or admin change to the leader; answers it. */
void node_forward_to_leader(struct node* n, struct transport_event* ev);
/** Packs the client writes gathered this round into one one-way
 * ForwardBatch for the leader (n->fwd_out), which rides with the round's
 * raft messages to it (or goes alone at the end of the round). */
void node_flush_forwards(struct node* n);
/** The leader's side of a ForwardBatch: each request is handled as if it
 * came alone; one reply answers them all, or (one-way) the writes it
 * does not propose are answered in ForwardResults. */
void node_handle_forward_batch(struct node* n, struct transport_event* ev);
/** A follower's side of ForwardResults: answers the writes they name. */
void node_handle_forward_results(struct node* n, struct transport_event* ev);
/** A request carrying one-way forwards (`cookie`) failed; if it was not
 * delivered, they are answered (503, retry). */
void node_forward_out_failed(struct node* n, uint64_t cookie, bool delivered);
/** Answers "outcome unknown" to one-way forwards sent to another leader or
 * in another term than the current ones (checked when they change). */
void node_check_forwards(struct node* n);
/** Answers "outcome unknown" (`why`) to every one-way forward this node
 * sent and still waits for: used when a snapshot replaced the log, so
 * their entries may never be applied here one by one and their answers
 * cannot come from this node's apply. */
void node_fail_unapplied_forwards(struct node* n, const char* why);
void node_apply_results(struct node* n,
                        const struct raft_entry* entries,
                        const struct kv_result* results,
                        size_t count);
void node_read_states(struct node* n,
                      const struct raft_read_state* reads,
                      size_t count);
void node_serve_reads(struct node* n);
void node_expire_requests(struct node* n);
void node_fail_writes(struct node* n, int status, const char* why);
/** Proposes the writes gathered this round in one batch; answers them on
 * failure. */
void node_flush_proposals(struct node* n);
/** Asks for one ReadIndex confirmation covering every read gathered so
 * far, unless a follower's previous one is still unanswered; answers them
 * (503) if it cannot be asked. Returns true if it asked. */
bool node_flush_reads(struct node* n);
void node_fail_all(struct node* n);

/* node_admin.c */
/** Answers an admin request with a status (and the leader, if known). */
void node_reply_admin_status(struct node* n,
                             struct transport_server_ctx* reply,
                             int status,
                             const char* error);
void node_learn_addresses(struct node* n, const uint8_t* data, size_t len);
void node_handle_admin(struct node* n, struct transport_event* ev);
/** Answers the GET /_raft/snapshot requests that waited for the backup
 * file node_admin.c asked for (n->backup_build). */
void node_admin_backup_built(struct node* n);
void node_maybe_promote(struct node* n);

/* node_snapshot.c */
void node_snapshot_start_send(struct node* n, const struct raft_message* m);
void node_snapshot_on_reply(struct node* n, struct transport_event* ev);
void node_snapshot_on_chunk(struct node* n, struct transport_event* ev);
int node_snapshot_install(struct node* n,
                          const struct raft_snapshot_meta* meta);
void node_snapshot_after_ready(struct node* n);
void node_maybe_compact(struct node* n);

/**
 * Commits the state's pending transaction (deferred commit) if it is older
 * than state_commit_ms, or whenever one is pending if `force`. A failed
 * commit sets apply_behind so the log is replayed. Loop thread only.
 */
void node_state_commit(struct node* n, bool force);
void node_snapshot_close_all(struct node* n);
/** Starts making a snapshot file of the state at `path` on a thread of
 * its own. Returns 0, or -1 (nothing started) if b is busy or no thread
 * could be made. */
int node_snapshot_build_start(struct node* n,
                              struct node_snap_build* b,
                              const char* path);
/** Whether b's build ended since the last call (then b->rv, b->info and
 * b->err tell how, and the thread is joined). Never blocks. */
bool node_snapshot_build_finished(struct node_snap_build* b);
/** Takes the results of finished builds: streams to the waiting peers,
 * answers waiting backups. Called by the loop every round. */
void node_snapshot_poll_builds(struct node* n);
/** Waits for every running build (before the state is closed or swapped). */
void node_snapshot_wait_builds(struct node* n);
void node_fill_configuration(struct node* n,
                             const struct raft_conf* conf,
                             Skein__Configuration* out);

#endif
