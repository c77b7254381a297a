/*
 * transport.h - nng request/reply transport for one node.
 *
 * One REP socket listens (tcp for peers and remote clients, inproc for the
 * embedded gateway) with a pool of contexts, each a small state machine.
 * Peers are reached through REQ sockets, one per peer and purpose
 * ("channel"), each with its own pool of contexts and a bounded queue.
 * Automatic resend is disabled: Raft and the client layer retry themselves,
 * so a duplicate never reaches a peer behind our back (NOTES.md).
 *
 * Raft RPCs are one-way messages, but their REQ/REP reply is not wasted:
 * a raft RPC (or batch) is handed to the node with a reply handle, and the
 * node answers it with its own raft messages to the sender when its loop
 * round produces some (transport_reply_bytes; the sender hands them to its
 * node like requests), else with an empty reply. Messages that find no
 * held reply travel as requests of their own. A follower's one-way
 * ForwardBatch and the leader's ForwardResults travel the same way, alone
 * or inside an EnvelopeBatch (codec_is_stream_body). Client, admin and
 * snapshot requests are handed to the node with a reply handle; the node
 * answers through transport_reply() when it is done. Every handle must be
 * answered.
 *
 * Threads: callbacks run on nng's threads and only call `deliver`. Every
 * other function may be called from any thread.
 */
#ifndef SKEIN_TRANSPORT_H
#define SKEIN_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "skein.pb-c.h"

struct transport;
struct transport_server_ctx; /* a pending request awaiting a reply */

enum transport_channel {
    TRANSPORT_RAFT = 0, /* raft RPCs, acknowledged at once */
    TRANSPORT_BULK,     /* forwarded client requests, snapshot chunks */
    TRANSPORT_CHANNELS
};

enum transport_event_type {
    TRANSPORT_EV_REQUEST = 1, /* an envelope arrived (reply handle maybe) */
    TRANSPORT_EV_REPLY,       /* a peer answered one of our requests */
    TRANSPORT_EV_FAILED,      /* one of our requests failed or timed out */
};

/** Something for the node loop. Owned by the receiver of `deliver`. */
struct transport_event {
    int type;                           /* enum transport_event_type */
    Skein__Envelope* env;               /* REQUEST/REPLY: unpacked */
    struct transport_server_ctx* reply; /* REQUEST needing an answer */
    uint64_t peer;                      /* REPLY/FAILED: peer node id */
    int channel;                        /* REPLY/FAILED */
    uint64_t cookie;                    /* REPLY/FAILED: caller's tag */
    uint64_t rtt_us;                    /* REPLY: round trip time */
    int error;                          /* FAILED: nng error code */
    bool delivered; /* FAILED: the peer may have got it (reply lost) */
};

/** Called from nng threads; takes ownership of `ev` (malloc'd). */
typedef void (*transport_deliver_fn)(void* arg, struct transport_event* ev);

struct transport_config {
    uint64_t cluster_id;         /* envelopes with another id are dropped */
    const char* listen_url;      /* tcp://HOST:PORT for peers and clients */
    const char* inproc_url;      /* inproc://... for the embedded gateway */
    size_t recv_max_bytes;       /* largest message accepted */
    uint32_t server_contexts;    /* concurrent incoming requests */
    uint32_t raft_timeout_ms;    /* per raft RPC (send + ack) */
    uint32_t bulk_timeout_ms;    /* per forwarded request / snapshot chunk */
    uint32_t connect_timeout_ms; /* a send waiting this long for a
                                    connection fails undelivered */
    transport_deliver_fn deliver;
    void* deliver_arg;
};

/** Counters, read with transport_stats(). */
struct transport_stats {
    uint64_t received;        /* envelopes received */
    uint64_t decode_errors;   /* dropped: did not decode */
    uint64_t foreign_cluster; /* dropped: another cluster id */
    uint64_t sent;            /* requests sent to peers */
    uint64_t send_failures;   /* requests that failed or timed out */
    uint64_t queue_drops;     /* dropped: a peer's queue was full */
    uint64_t fault_drops;     /* dropped by fault injection */
    uint64_t fault_dups;      /* sent twice by fault injection */
    uint64_t coalesced;       /* raft RPCs sent inside another's batch */
};

/**
 * Creates the transport and starts listening. Returns 0 and sets *out, or
 * a negative value with a message in errbuf (nothing left open).
 */
int transport_start(const struct transport_config* cfg,
                    struct transport** out,
                    char* errbuf,
                    size_t errlen);

/** Stops every context and closes every socket, then frees. */
void transport_stop(struct transport* t);

/**
 * Registers peer `id` reachable at `url` (dialled in the background).
 * Re-adding with another URL redials. Returns 0 or -1.
 */
int transport_add_peer(struct transport* t, uint64_t id, const char* url);

/** Forgets a peer; queued requests to it fail. */
void transport_remove_peer(struct transport* t, uint64_t id);

/**
 * Queues `len` bytes (a packed Envelope, copied) to `peer` on `channel`.
 * If `want_reply`, the peer's reply arrives as TRANSPORT_EV_REPLY with
 * `cookie`; a failure arrives as TRANSPORT_EV_FAILED either way. Returns 0
 * if queued, -1 if the peer is unknown or its queue is full.
 */
int transport_send(struct transport* t,
                   uint64_t peer,
                   int channel,
                   const uint8_t* data,
                   size_t len,
                   uint64_t cookie,
                   bool want_reply);

/**
 * Answers a request handed over with a reply handle. `env` is packed and
 * not kept; NULL sends an empty reply. The handle is invalid afterwards.
 */
void transport_reply(struct transport_server_ctx* ctx,
                     const Skein__Envelope* env);

/** Outcomes of transport_call_local. */
enum transport_local_result {
    TRANSPORT_LOCAL_OK = 0,           /* *reply set */
    TRANSPORT_LOCAL_UNAVAILABLE = -1, /* not delivered (closing, memory) */
    TRANSPORT_LOCAL_INVALID = -2,     /* not a client/admin request of ours */
    TRANSPORT_LOCAL_TIMEOUT = -3,     /* delivered, no answer in time */
};

/**
 * A request from this process, without a socket: the embedded gateway's
 * path to its own node. `data` is a packed Envelope (client or admin
 * request); it is decoded on the calling thread and handed to the node like
 * a request from the network, and the calling thread sleeps until the node
 * answers or `timeout_ms` passes (a later answer is dropped). Saves the
 * four thread hand-offs of a request/reply over nng inproc://. Returns an
 * enum transport_local_result; on TRANSPORT_LOCAL_OK *reply is the packed
 * reply (malloc'd, caller frees; NULL with *reply_len 0 for an empty one).
 */
int transport_call_local(struct transport* t,
                         const uint8_t* data,
                         size_t len,
                         uint32_t timeout_ms,
                         uint8_t** reply,
                         size_t* reply_len);

/** How many transport_call_local callers are waiting for an answer now:
 * the embedded gateway's clients in flight at this node. */
uint32_t transport_local_waiting(struct transport* t);

/**
 * Answers a request handed over with a reply handle with `len` packed
 * bytes (copied): for a raft RPC, an Envelope (raft message or batch) for
 * the sender; 0 bytes is an empty reply. The handle is invalid afterwards.
 */
void transport_reply_bytes(struct transport_server_ctx* ctx,
                           const uint8_t* data,
                           size_t len);

/**
 * Splits a request's reply handle into n handles, one per part of a
 * ForwardBatch: each is answered (transport_reply) on its own, and once the
 * last is, the parts' answers go back in one ForwardBatchResponse through
 * the original handle. Returns the first handle (transport_split_part gives
 * the others), or NULL (the original handle is still to be answered) if
 * memory runs out or the handle cannot be split. The split frees itself.
 */
struct transport_server_ctx* transport_split_reply(
    struct transport_server_ctx* parent,
    size_t n);

/** The i-th handle of a split (i < n), or NULL. */
struct transport_server_ctx* transport_split_part(
    struct transport_server_ctx* first,
    size_t i);

/**
 * Receives the answer given through a collector handle: a packed Envelope
 * (`len` 0: an empty answer), valid during the call only. Called on the
 * thread that answered.
 */
typedef void (*transport_collect_fn)(void* arg,
                                     uint64_t peer,
                                     uint64_t tag,
                                     const uint8_t* data,
                                     size_t len);

/**
 * A reply handle with no request behind it: whatever answers it
 * (transport_reply, transport_reply_bytes) goes to fn(arg, peer, tag, ...)
 * instead of a socket, and the handle frees itself. The node uses it for
 * the writes of a one-way ForwardBatch, whose answers travel back in a
 * ForwardResults message. transport_collector_drop frees one unanswered.
 * Returns NULL if memory runs out.
 */
struct transport_server_ctx* transport_collector(struct transport* t,
                                                 transport_collect_fn fn,
                                                 void* arg,
                                                 uint64_t peer,
                                                 uint64_t tag);

/** Whether `c` is a collector handle (transport_collector). */
bool transport_is_collector(const struct transport_server_ctx* c);

/** Frees a collector handle without answering it. */
void transport_collector_drop(struct transport_server_ctx* c);

/** Whether fault injection is set for `peer` (its messages must then go
 * through transport_send, where faults apply). */
bool transport_peer_faulty(struct transport* t, uint64_t peer);

/** How a peer answered our requests lately (all channels). */
struct transport_peer_health {
    uint64_t last_rtt_us;          /* round trip of the last answer */
    uint64_t last_ok_ms;           /* CLOCK_MONOTONIC ms of it, 0 = none */
    uint64_t consecutive_failures; /* failed requests since then */
};

/**
 * Fills *out for `peer`. Raft RPC acknowledgements are not delivered as
 * events; this is where their round trip times go. Returns 0, or -1 (out
 * zeroed) for an unknown peer.
 */
int transport_peer_health(struct transport* t,
                          uint64_t peer,
                          struct transport_peer_health* out);

/** Copies the counters. */
void transport_stats(struct transport* t, struct transport_stats* out);

/** transport_set_fault's `peer` for every peer (node ids start at 0). */
#define TRANSPORT_ALL_PEERS UINT64_MAX

/**
 * Transport fault injection (chaos tests): messages to node `peer`
 * (TRANSPORT_ALL_PEERS: to every peer) are dropped with probability drop
 * (0..1), raft messages sent twice with probability dup (0..1), and every
 * message delayed by delay_ms plus a random jitter_ms. clear removes all
 * faults. Only used when the node was started with --enable-fault-injection.
 */
void transport_set_fault(struct transport* t,
                         uint64_t peer,
                         double drop,
                         double dup,
                         uint32_t delay_ms,
                         uint32_t jitter_ms,
                         bool clear);

/** Frees an event and the envelope it carries. */
void transport_event_free(struct transport_event* ev);

#endif
