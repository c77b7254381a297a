/*
 * node.h - one Skein node: the raft core, its LMDB stores and the nng
 * transport, driven by a single loop thread.
 *
 * One thread owns the core and both LMDB environments. nng callbacks only
 * queue events; the loop drains them, steps the core, then handles one
 * ready batch: persist (one transaction, one sync), send, apply, answer
 * waiting clients (see the DRIVER CONTRACT in node/raft/raft.h).
 */
#ifndef SKEIN_NODE_H
#define SKEIN_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_MAX_PEERS 16
#define NODE_URL_MAX   256

/** A member known at start: id, nng URL, optional REST address. */
struct node_peer_config {
    uint64_t id;
    char url[NODE_URL_MAX];  /* tcp://HOST:PORT */
    char http[NODE_URL_MAX]; /* HOST:PORT, or empty */
};

/** Everything skein-node is configured with (see skein-node --help). */
struct node_config {
    uint64_t id;                   /* this node's id */
    uint64_t cluster_id;           /* shared by all members */
    char data_dir[NODE_URL_MAX];   /* holds log/ and state/ */
    char listen_url[NODE_URL_MAX]; /* nng URL peers and clients use */
    char http_addr[NODE_URL_MAX];  /* REST HOST:PORT, empty = none */
    struct node_peer_config peers[NODE_MAX_PEERS];
    uint32_t n_peers;            /* other members at bootstrap */
    uint32_t tick_ms;            /* one raft tick */
    uint32_t election_ticks;     /* election timeout in ticks */
    uint32_t heartbeat_ticks;    /* heartbeat interval in ticks */
    int durability;              /* enum store_durability */
    uint32_t state_commit_ms;    /* applied batches are committed to the
                                    state together at most this often
                                    (one flush); 0 = each batch */
    uint32_t batch_linger_us;    /* a loop round with few events waits
                                    this long for more while clients are
                                    waiting at this node; 0 = never */
    size_t map_size;             /* LMDB map size, bytes */
    uint64_t log_retain;         /* entries kept when compacting */
    uint64_t snapshot_threshold; /* compactable entries before a
                                    snapshot is taken */
    uint32_t write_timeout_ms;   /* a write's deadline */
    uint32_t read_timeout_ms;    /* a read's deadline */
    uint32_t http_threads;       /* gateway threads */
    bool fault_injection;        /* accept fault-inject requests */
    bool pre_vote;               /* raft PreVote (default on) */
    bool check_quorum;           /* raft CheckQuorum (default on) */
    bool join;                   /* start without a bootstrap conf:
                                    wait to be added by the leader */
};

/** Fills `cfg` with defaults for node `id`. */
void node_config_default(struct node_config* cfg, uint64_t id);

struct node;

/**
 * Opens the stores (recovering and replaying as needed), starts the
 * transport and the loop thread. Returns 0 and sets *out, or -1 with a
 * message in errbuf (nothing left running).
 */
int node_start(const struct node_config* cfg,
               struct node** out,
               char* errbuf,
               size_t errlen);

/**
 * Asks the node to stop: a leader first hands leadership to the most
 * up-to-date voter (bounded wait), then the stores are synced. Safe from
 * any thread, including a signal-watching one. Returns immediately.
 */
void node_request_stop(struct node* n);

/**
 * Asks a leader to hand leadership to its most up-to-date voter now and
 * go on serving as a follower: the first step of a graceful stop, taken
 * while the HTTP gateway drains (which takes civetweb up to 2 s), so the
 * cluster does not wait for that with a leader about to leave. Does
 * nothing on a follower. Safe from any thread. Returns immediately.
 */
void node_request_handoff(struct node* n);

/** Waits for the loop to end, then frees everything. */
void node_join(struct node* n);

/** The inproc URL the embedded gateway uses to reach this node. */
const char* node_inproc_url(const struct node* n);

/**
 * Hands a packed client or admin request Envelope to this node from the
 * calling thread and waits up to timeout_ms for the answer (see
 * transport_call_local, whose result it returns). On success *reply is the
 * packed answer, malloc'd, owned by the caller (NULL when empty). Any
 * thread; `arg` is the node (the signature fits gw_local_call_fn).
 */
int node_call_local(void* arg,
                    const uint8_t* data,
                    size_t len,
                    uint32_t timeout_ms,
                    uint8_t** reply,
                    size_t* reply_len);

#endif
