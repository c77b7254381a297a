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
 * Raft RPCs are one-way: the receiver acknowledges with an empty reply at
 * once and the answer travels as a request of its own. Client, admin and
 * snapshot requests are handed to the node with a reply handle; the node
 * answers through transport_reply() when it is done.
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

/** Copies the counters. */
void transport_stats(struct transport* t, struct transport_stats* out);

/**
 * Transport fault injection (chaos tests): messages to `peer` (0 = all)
 * are dropped with probability drop (0..1), or delayed by delay_ms plus a
 * random jitter_ms. clear removes all faults. Only used when the node was
 * started with --enable-fault-injection.
 */
void transport_set_fault(struct transport* t,
                         uint64_t peer,
                         double drop,
                         uint32_t delay_ms,
                         uint32_t jitter_ms,
                         bool clear);

/** Frees an event and the envelope it carries. */
void transport_event_free(struct transport_event* ev);

#endif
