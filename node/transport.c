/*
 * transport.c - nng request/reply transport (see transport.h).
 */
#include "transport.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

#define TRANSPORT_MAX_PEERS   32
#define TRANSPORT_QUEUE_MAX   1024 /* queued requests per peer channel */
#define TRANSPORT_URL_MAX     256
#define TRANSPORT_BATCH_MAX   256        /* raft RPCs per request */
#define TRANSPORT_BATCH_BYTES (8u << 20) /* bytes per request */

static const uint32_t channel_slots[TRANSPORT_CHANNELS] = {8, 64};

enum slot_state { SLOT_IDLE = 0, SLOT_DELAY, SLOT_SEND, SLOT_RECV };
enum server_state { SERVER_RECV = 0, SERVER_WAIT, SERVER_SEND };

struct queued {
    nng_msg* msg;
    uint64_t cookie;
    bool want_reply;
};

struct channel;

struct slot {
    struct channel* ch;
    nng_ctx ctx;
    nng_aio* aio;      /* delay and send (a timed send) */
    nng_aio* recv_aio; /* the reply: its own aio, because nng 1.5.2 may fail
                          the operation after a timed one on the same aio
                          at once with a stale ETIMEDOUT */
    int state;         /* enum slot_state */
    nng_msg* delayed;  /* SLOT_DELAY: the message to send after the wait */
    uint64_t cookie;   /* caller's tag for the request in this slot */
    bool want_reply;   /* deliver the peer's reply */
    uint64_t start_us; /* when the request was sent */
};

struct channel {
    struct peer* peer;
    int kind; /* enum transport_channel */
    nng_socket sock;
    nng_dialer dialer;
    bool open; /* socket opened */
    struct slot* slots;
    uint32_t n_slots;
    struct queued* queue; /* ring of TRANSPORT_QUEUE_MAX */
    uint32_t q_head;
    uint32_t q_count;
};

struct peer {
    struct transport* t;
    uint64_t id;
    bool active;                 /* false once removed */
    char url[TRANSPORT_URL_MAX]; /* where it is dialled */
    struct channel ch[TRANSPORT_CHANNELS];
    uint64_t last_rtt_us;          /* last answered request */
    uint64_t last_ok_ms;           /* monotonic ms of the last answer */
    uint64_t consecutive_failures; /* failed requests since an answer */
    double fault_drop;             /* probability a request is dropped */
    double fault_dup;              /* probability a raft RPC goes twice */
    uint32_t fault_delay_ms;       /* added to each request */
    uint32_t fault_jitter_ms;      /* random extra delay */
};

/* A request from this process (transport_call_local), answered by a
 * function call instead of a socket. Shared by the caller and the node;
 * the last of the two to let go frees it. */
struct local_call {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int refs;          /* under mu: caller + node */
    bool answered;     /* under mu */
    uint8_t* reply;    /* under mu: packed reply (malloc'd), NULL = empty */
    size_t reply_len;
};

/* One reply handle answered by many (transport_split_reply). */
struct split_reply {
    pthread_mutex_t mu;
    struct transport_server_ctx* parent;
    size_t n;
    size_t remaining;                  /* under mu */
    ProtobufCBinaryData* answers;      /* under mu: packed Envelopes */
    struct transport_server_ctx* subs; /* n handles */
};

struct transport_server_ctx {
    struct transport* t;
    nng_ctx ctx;
    nng_aio* aio;
    int state;                 /* enum server_state */
    struct local_call* local;  /* set on the handle of a local call */
    struct split_reply* split; /* set on a part of a split handle */
    size_t split_index;
    transport_collect_fn collect; /* set on a collector handle */
    void* collect_arg;
    uint64_t collect_peer;
    uint64_t collect_tag;
};

struct transport {
    struct transport_config cfg;
    char listen_url[TRANSPORT_URL_MAX];
    char inproc_url[TRANSPORT_URL_MAX];
    pthread_mutex_t mu; /* recursive: nng may complete an aio inline */
    bool closing;
    uint32_t local_waiting; /* atomic: transport_call_local callers asleep */
    nng_socket rep;
    struct transport_server_ctx* servers;
    uint32_t n_servers;
    struct peer peers[TRANSPORT_MAX_PEERS];
    uint32_t n_peers;
    struct transport_stats stats;
    uint64_t rng; /* fault injection randomness */
};

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double fault_random(struct transport* t) {
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static bool deliver_batch(struct transport* t,
                          const Skein__EnvelopeBatch* b,
                          struct transport_server_ctx* reply);
static void deliver_piggybacked(struct transport* t, nng_msg* msg);

static void deliver(struct transport* t, struct transport_event* ev) {
    t->cfg.deliver(t->cfg.deliver_arg, ev);
}

static struct transport_event* new_event(int type) {
    struct transport_event* ev = calloc(1, sizeof(*ev));
    if (ev != NULL) {
        ev->type = type;
    }
    return ev;
}

void transport_event_free(struct transport_event* ev) {
    if (ev == NULL) {
        return;
    }
    if (ev->env != NULL) {
        skein__envelope__free_unpacked(ev->env, NULL);
    }
    free(ev);
}

/* ---------------------------------------------------------------- */
/* Outgoing requests                                                 */

static void slot_fail(struct slot* s, int error, bool delivered) {
    struct transport* t = s->ch->peer->t;
    struct transport_event* ev;

    t->stats.send_failures++;
    s->ch->peer->consecutive_failures++;
    if (t->closing) {
        return;
    }
    ev = new_event(TRANSPORT_EV_FAILED);
    if (ev == NULL) {
        return;
    }
    ev->peer = s->ch->peer->id;
    ev->channel = s->ch->kind;
    ev->cookie = s->cookie;
    ev->error = error;
    ev->delivered = delivered;
    deliver(t, ev);
}

/* Handing a request to a connected pipe is quick: a send that waits
 * long means the peer is down, and nothing was delivered. The answer may
 * take as long as the peer's own work (a write's commit). */
static uint32_t slot_timeout(const struct slot* s, bool sending) {
    const struct transport* t = s->ch->peer->t;
    uint32_t timeout = s->ch->kind == TRANSPORT_RAFT ? t->cfg.raft_timeout_ms
                                                     : t->cfg.bulk_timeout_ms;
    if (sending && t->cfg.connect_timeout_ms > 0 &&
        timeout > t->cfg.connect_timeout_ms) {
        timeout = t->cfg.connect_timeout_ms;
    }
    return timeout;
}

static void slot_send_now(struct slot* s, nng_msg* msg) {
    struct transport* t = s->ch->peer->t;
    uint32_t timeout = slot_timeout(s, true);
    s->state = SLOT_SEND;
    s->start_us = now_us();
    t->stats.sent++;
    nng_aio_set_msg(s->aio, msg);
    nng_aio_set_timeout(s->aio, (nng_duration)timeout);
    nng_ctx_send(s->ctx, s->aio);
}

/* Packs `first` and what else waits for the peer (raft RPCs only, which
 * need no individual answer) into one EnvelopeBatch request: one round
 * trip and one hand-off between threads instead of one per RPC. A queued
 * message with a cookie starts a request of its own, so that a failure is
 * reported with its cookie. Returns the message to send; the ones taken
 * are freed. Locked. */
static nng_msg* coalesce(struct channel* ch, nng_msg* first) {
    struct transport* t = ch->peer->t;
    nng_msg* parts[TRANSPORT_BATCH_MAX];
    ProtobufCBinaryData bins[TRANSPORT_BATCH_MAX];
    Skein__EnvelopeBatch batch = SKEIN__ENVELOPE_BATCH__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    size_t n = 0;
    size_t bytes = nng_msg_len(first);
    nng_msg* out;

    parts[n++] = first;
    while (ch->q_count > 0 && n < TRANSPORT_BATCH_MAX) {
        struct queued* q = &ch->queue[ch->q_head];
        if (q->want_reply || q->cookie != 0 ||
            bytes + nng_msg_len(q->msg) > TRANSPORT_BATCH_BYTES) {
            break;
        }
        bytes += nng_msg_len(q->msg);
        parts[n++] = q->msg;
        ch->q_head = (ch->q_head + 1) % TRANSPORT_QUEUE_MAX;
        ch->q_count--;
    }
    if (n == 1) {
        return first;
    }
    for (size_t i = 0; i < n; i++) {
        bins[i].data = nng_msg_body(parts[i]);
        bins[i].len = nng_msg_len(parts[i]);
    }
    batch.n_envelopes = n;
    batch.envelopes = bins;
    env.has_cluster_id = 1;
    env.cluster_id = t->cfg.cluster_id;
    env.body_case = SKEIN__ENVELOPE__BODY_BATCH;
    env.batch = &batch;
    if (nng_msg_alloc(&out, skein__envelope__get_packed_size(&env)) != 0) {
        /* Send them one by one after all: put the rest back in front. */
        for (size_t i = n; i > 1; i--) {
            ch->q_head =
                (ch->q_head + TRANSPORT_QUEUE_MAX - 1) % TRANSPORT_QUEUE_MAX;
            ch->queue[ch->q_head] = (struct queued){parts[i - 1], 0, false};
            ch->q_count++;
        }
        return first;
    }
    skein__envelope__pack(&env, nng_msg_body(out));
    for (size_t i = 0; i < n; i++) {
        nng_msg_free(parts[i]);
    }
    t->stats.coalesced += n - 1;
    return out;
}

/* Starts the next queued request on an idle slot, if any. Locked. */
static void slot_next(struct slot* s) {
    struct channel* ch = s->ch;
    struct peer* p = ch->peer;
    struct transport* t = p->t;

    while (ch->q_count > 0 && !t->closing) {
        struct queued q = ch->queue[ch->q_head];
        ch->q_head = (ch->q_head + 1) % TRANSPORT_QUEUE_MAX;
        ch->q_count--;
        s->cookie = q.cookie;
        s->want_reply = q.want_reply;
        if (p->fault_drop > 0 && fault_random(t) < p->fault_drop) {
            t->stats.fault_drops++;
            nng_msg_free(q.msg);
            continue; /* lost on the wire: nobody is told */
        }
        /* A message with a cookie carries forwarded client writes, which
         * must never be proposed twice: it is not duplicated. */
        if (ch->kind == TRANSPORT_RAFT && q.cookie == 0 && p->fault_dup > 0 &&
            ch->q_count < TRANSPORT_QUEUE_MAX &&
            fault_random(t) < p->fault_dup) {
            /* Duplicated on the wire: a copy follows (raft RPCs only; they
             * need no answer, and raft must shrug duplicates off). */
            nng_msg* copy;
            if (nng_msg_dup(&copy, q.msg) == 0) {
                ch->queue[(ch->q_head + ch->q_count) % TRANSPORT_QUEUE_MAX] =
                    (struct queued){copy, 0, false};
                ch->q_count++;
                t->stats.fault_dups++;
            }
        }
        if (ch->kind == TRANSPORT_RAFT && ch->q_count > 0) {
            q.msg = coalesce(ch, q.msg);
        }
        if (p->fault_delay_ms > 0 || p->fault_jitter_ms > 0) {
            uint32_t delay = p->fault_delay_ms;
            if (p->fault_jitter_ms > 0) {
                delay += (uint32_t)(fault_random(t) * p->fault_jitter_ms);
            }
            s->state = SLOT_DELAY;
            s->delayed = q.msg;
            nng_sleep_aio((nng_duration)delay, s->aio);
            return;
        }
        slot_send_now(s, q.msg);
        return;
    }
    s->state = SLOT_IDLE;
}

static void slot_cb_common(struct slot* s, int rv);

static void slot_cb(void* arg) {
    struct slot* s = arg;
    slot_cb_common(s, nng_aio_result(s->aio));
}

static void slot_recv_cb(void* arg) {
    struct slot* s = arg;
    slot_cb_common(s, nng_aio_result(s->recv_aio));
}

static void slot_cb_common(struct slot* s, int rv) {
    struct transport* t = s->ch->peer->t;
    nng_msg* msg;

    pthread_mutex_lock(&t->mu);
    switch (s->state) {
        case SLOT_DELAY:
            msg = s->delayed;
            s->delayed = NULL;
            if (t->closing) {
                nng_msg_free(msg);
                s->state = SLOT_IDLE;
                break;
            }
            slot_send_now(s, msg);
            break;
        case SLOT_SEND:
            if (rv != 0) {
                /* On a failed send the message is still ours. */
                msg = nng_aio_get_msg(s->aio);
                if (msg != NULL) {
                    nng_msg_free(msg);
                }
                slot_fail(s, rv, false);
                slot_next(s);
                break;
            }
            s->state = SLOT_RECV;
            nng_aio_set_timeout(s->recv_aio,
                                (nng_duration)slot_timeout(s, false));
            nng_ctx_recv(s->ctx, s->recv_aio);
            break;
        case SLOT_RECV:
            if (rv != 0) {
                slot_fail(s, rv, true);
                slot_next(s);
                break;
            }
            msg = nng_aio_get_msg(s->recv_aio);
            {
                struct peer* p = s->ch->peer;
                uint64_t now = now_us();
                p->last_rtt_us = now - s->start_us;
                p->last_ok_ms = now / 1000u;
                p->consecutive_failures = 0;
            }
            /* A raft RPC's acknowledgement only feeds the health figures
             * above: waking the node loop for each would cost a thread
             * hand-off per message. */
            if (s->want_reply && !t->closing) {
                struct transport_event* ev = new_event(TRANSPORT_EV_REPLY);
                if (ev != NULL) {
                    ev->env = skein__envelope__unpack(NULL, nng_msg_len(msg),
                                                      nng_msg_body(msg));
                    ev->peer = s->ch->peer->id;
                    ev->channel = s->ch->kind;
                    ev->cookie = s->cookie;
                    ev->rtt_us = now_us() - s->start_us;
                    if (ev->env == NULL) {
                        t->stats.decode_errors++;
                        ev->type = TRANSPORT_EV_FAILED;
                    }
                    deliver(t, ev);
                }
            } else if (!t->closing && s->ch->kind == TRANSPORT_RAFT) {
                deliver_piggybacked(t, msg);
            }
            nng_msg_free(msg);
            slot_next(s);
            break;
        default:
            break;
    }
    pthread_mutex_unlock(&t->mu);
}

static int channel_open(struct channel* ch, const char* url) {
    struct transport* t = ch->peer->t;
    int rv = nng_req0_open(&ch->sock);

    if (rv != 0) {
        return rv;
    }
    ch->open = true;
    nng_socket_set_ms(ch->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(ch->sock, NNG_OPT_RECVMAXSZ, t->cfg.recv_max_bytes);
    nng_socket_set_ms(ch->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(ch->sock, NNG_OPT_RECONNMAXT, 500);
    ch->n_slots = channel_slots[ch->kind];
    ch->slots = calloc(ch->n_slots, sizeof(*ch->slots));
    ch->queue = calloc(TRANSPORT_QUEUE_MAX, sizeof(*ch->queue));
    if (ch->slots == NULL || ch->queue == NULL) {
        return NNG_ENOMEM;
    }
    for (uint32_t i = 0; i < ch->n_slots; i++) {
        struct slot* s = &ch->slots[i];
        s->ch = ch;
        if ((rv = nng_ctx_open(&s->ctx, ch->sock)) != 0 ||
            (rv = nng_aio_alloc(&s->aio, slot_cb, s)) != 0 ||
            (rv = nng_aio_alloc(&s->recv_aio, slot_recv_cb, s)) != 0) {
            return rv;
        }
    }
    return nng_dial(ch->sock, url, &ch->dialer, NNG_FLAG_NONBLOCK);
}

static void channel_close(struct channel* ch) {
    if (!ch->open) {
        return;
    }
    for (uint32_t i = 0; ch->slots != NULL && i < ch->n_slots; i++) {
        if (ch->slots[i].aio != NULL) {
            nng_aio_stop(ch->slots[i].aio);
        }
        if (ch->slots[i].recv_aio != NULL) {
            nng_aio_stop(ch->slots[i].recv_aio);
        }
    }
    nng_close(ch->sock);
    for (uint32_t i = 0; ch->slots != NULL && i < ch->n_slots; i++) {
        struct slot* s = &ch->slots[i];
        if (s->delayed != NULL) {
            nng_msg_free(s->delayed);
        }
        if (s->aio != NULL) {
            /* A send cancelled by the stop leaves its message with us. */
            nng_msg* m = nng_aio_get_msg(s->aio);
            if (m != NULL && s->state == SLOT_SEND) {
                nng_msg_free(m);
            }
            nng_aio_free(s->aio);
        }
        if (s->recv_aio != NULL) {
            nng_aio_free(s->recv_aio);
        }
    }
    while (ch->queue != NULL && ch->q_count > 0) {
        nng_msg_free(ch->queue[ch->q_head].msg);
        ch->q_head = (ch->q_head + 1) % TRANSPORT_QUEUE_MAX;
        ch->q_count--;
    }
    free(ch->slots);
    free(ch->queue);
    ch->slots = NULL;
    ch->queue = NULL;
    ch->open = false;
}

static struct peer* find_peer(struct transport* t, uint64_t id) {
    for (uint32_t i = 0; i < t->n_peers; i++) {
        if (t->peers[i].id == id && t->peers[i].active) {
            return &t->peers[i];
        }
    }
    return NULL;
}

int transport_add_peer(struct transport* t, uint64_t id, const char* url) {
    struct peer* p;
    int rv = 0;

    if (strlen(url) >= TRANSPORT_URL_MAX) {
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    p = find_peer(t, id);
    if (p != NULL && strcmp(p->url, url) == 0) {
        pthread_mutex_unlock(&t->mu);
        return 0;
    }
    if (p != NULL) {
        /* Same id, new address: redial on the open sockets. */
        snprintf(p->url, sizeof(p->url), "%s", url);
        for (int c = 0; c < TRANSPORT_CHANNELS; c++) {
            nng_dialer_close(p->ch[c].dialer);
            rv |= nng_dial(p->ch[c].sock, url, &p->ch[c].dialer,
                           NNG_FLAG_NONBLOCK);
        }
        pthread_mutex_unlock(&t->mu);
        return rv == 0 ? 0 : -1;
    }
    for (uint32_t i = 0; i < t->n_peers && p == NULL; i++) {
        if (t->peers[i].id == id) {
            p = &t->peers[i]; /* re-added after removal: reuse sockets */
            p->active = true;
            snprintf(p->url, sizeof(p->url), "%s", url);
            for (int c = 0; c < TRANSPORT_CHANNELS; c++) {
                rv |= nng_dial(p->ch[c].sock, url, &p->ch[c].dialer,
                               NNG_FLAG_NONBLOCK);
            }
            pthread_mutex_unlock(&t->mu);
            return rv == 0 ? 0 : -1;
        }
    }
    if (t->n_peers == TRANSPORT_MAX_PEERS) {
        pthread_mutex_unlock(&t->mu);
        return -1;
    }
    p = &t->peers[t->n_peers++];
    memset(p, 0, sizeof(*p));
    p->t = t;
    p->id = id;
    p->active = true;
    snprintf(p->url, sizeof(p->url), "%s", url);
    for (int c = 0; c < TRANSPORT_CHANNELS && rv == 0; c++) {
        p->ch[c].peer = p;
        p->ch[c].kind = c;
        rv = channel_open(&p->ch[c], url);
    }
    pthread_mutex_unlock(&t->mu);
    return rv == 0 ? 0 : -1;
}

void transport_remove_peer(struct transport* t, uint64_t id) {
    struct peer* p;

    pthread_mutex_lock(&t->mu);
    p = find_peer(t, id);
    if (p != NULL) {
        p->active = false;
        for (int c = 0; c < TRANSPORT_CHANNELS; c++) {
            nng_dialer_close(p->ch[c].dialer);
        }
    }
    pthread_mutex_unlock(&t->mu);
}

int transport_send(struct transport* t,
                   uint64_t peer,
                   int channel,
                   const uint8_t* data,
                   size_t len,
                   uint64_t cookie,
                   bool want_reply) {
    struct peer* p;
    struct channel* ch;
    nng_msg* msg;

    if (channel < 0 || channel >= TRANSPORT_CHANNELS) {
        return -1;
    }
    if (nng_msg_alloc(&msg, 0) != 0) {
        return -1;
    }
    if (nng_msg_append(msg, data, len) != 0) {
        nng_msg_free(msg);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    p = find_peer(t, peer);
    if (p == NULL || t->closing) {
        pthread_mutex_unlock(&t->mu);
        nng_msg_free(msg);
        return -1;
    }
    ch = &p->ch[channel];
    if (ch->q_count == TRANSPORT_QUEUE_MAX) {
        t->stats.queue_drops++;
        pthread_mutex_unlock(&t->mu);
        nng_msg_free(msg);
        return -1;
    }
    ch->queue[(ch->q_head + ch->q_count) % TRANSPORT_QUEUE_MAX] =
        (struct queued){msg, cookie, want_reply};
    ch->q_count++;
    for (uint32_t i = 0; i < ch->n_slots; i++) {
        if (ch->slots[i].state == SLOT_IDLE) {
            slot_next(&ch->slots[i]);
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int transport_peer_health(struct transport* t,
                          uint64_t peer,
                          struct transport_peer_health* out) {
    struct peer* p;
    int rv = -1;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&t->mu);
    p = find_peer(t, peer);
    if (p != NULL) {
        out->last_rtt_us = p->last_rtt_us;
        out->last_ok_ms = p->last_ok_ms;
        out->consecutive_failures = p->consecutive_failures;
        rv = 0;
    }
    pthread_mutex_unlock(&t->mu);
    return rv;
}

void transport_set_fault(struct transport* t,
                         uint64_t peer,
                         double drop,
                         double dup,
                         uint32_t delay_ms,
                         uint32_t jitter_ms,
                         bool clear) {
    pthread_mutex_lock(&t->mu);
    for (uint32_t i = 0; i < t->n_peers; i++) {
        struct peer* p = &t->peers[i];
        if (clear) {
            p->fault_drop = 0;
            p->fault_dup = 0;
            p->fault_delay_ms = 0;
            p->fault_jitter_ms = 0;
        }
        if ((peer != TRANSPORT_ALL_PEERS && p->id != peer) ||
            (clear && drop == 0 && dup == 0 && delay_ms == 0 &&
             jitter_ms == 0)) {
            continue;
        }
        p->fault_drop = drop < 0 ? 0 : drop > 1 ? 1 : drop;
        p->fault_dup = dup < 0 ? 0 : dup > 1 ? 1 : dup;
        p->fault_delay_ms = delay_ms;
        p->fault_jitter_ms = jitter_ms;
    }
    pthread_mutex_unlock(&t->mu);
}

/* ---------------------------------------------------------------- */
/* Incoming requests                                                 */

static void server_send(struct transport_server_ctx* c, nng_msg* msg) {
    c->state = SERVER_SEND;
    nng_aio_set_msg(c->aio, msg);
    nng_ctx_send(c->ctx, c->aio);
}

static void server_reply_empty(struct transport_server_ctx* c) {
    nng_msg* msg;
    if (nng_msg_alloc(&msg, 0) != 0) {
        c->state = SERVER_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    server_send(c, msg);
}

/* Hands over the raft messages of one batch part, in order, keeping the
 * latest back in *last (it may get the reply handle). A part may itself
 * be a batch (a node's batch for a peer, coalesced again by the queue
 * here): one level of nesting is opened, deeper ones are dropped. */
static void deliver_part(struct transport* t,
                         const ProtobufCBinaryData* part,
                         struct transport_event** last,
                         int depth) {
    Skein__Envelope* inner =
        skein__envelope__unpack(NULL, part->len, part->data);
    struct transport_event* ev;

    if (inner != NULL && depth == 0 &&
        inner->body_case == SKEIN__ENVELOPE__BODY_BATCH &&
        !(inner->has_cluster_id && inner->cluster_id != t->cfg.cluster_id)) {
        for (size_t i = 0; i < inner->batch->n_envelopes; i++) {
            deliver_part(t, &inner->batch->envelopes[i], last, depth + 1);
        }
        skein__envelope__free_unpacked(inner, NULL);
        return;
    }
    if (inner == NULL || !codec_is_stream_body(inner) ||
        (inner->has_cluster_id && inner->cluster_id != t->cfg.cluster_id)) {
        t->stats.decode_errors++;
        if (inner != NULL) {
            skein__envelope__free_unpacked(inner, NULL);
        }
        return;
    }
    ev = new_event(TRANSPORT_EV_REQUEST);
    if (ev == NULL) {
        skein__envelope__free_unpacked(inner, NULL);
        return;
    }
    ev->env = inner;
    if (*last != NULL) {
        deliver(t, *last);
    }
    *last = ev;
}

/* Hands each raft RPC of a batch to the node as if it came alone;
 * anything that is not a well-formed raft RPC of our cluster is dropped
 * and counted. `reply` (may be NULL) goes with the last RPC handed over.
 * Returns whether it was handed over. Locked. */
static bool deliver_batch(struct transport* t,
                          const Skein__EnvelopeBatch* b,
                          struct transport_server_ctx* reply) {
    struct transport_event* last = NULL;

    for (size_t i = 0; i < b->n_envelopes; i++) {
        deliver_part(t, &b->envelopes[i], &last, 0);
    }
    if (last == NULL) {
        return false;
    }
    if (reply != NULL) {
        reply->state = SERVER_WAIT;
        last->reply = reply;
    }
    deliver(t, last);
    return true;
}

/* A raft RPC's reply that carries the peer's own raft messages to us
 * (transport_reply_bytes): handed to the node like requests. Locked. */
static void deliver_piggybacked(struct transport* t, nng_msg* msg) {
    Skein__Envelope* env;
    struct transport_event* ev;

    if (nng_msg_len(msg) == 0) {
        return; /* a plain acknowledgement */
    }
    env = skein__envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    if (env == NULL ||
        (env->has_cluster_id && env->cluster_id != t->cfg.cluster_id)) {
        t->stats.decode_errors++;
        if (env != NULL) {
            skein__envelope__free_unpacked(env, NULL);
        }
        return;
    }
    t->stats.received++;
    if (env->body_case == SKEIN__ENVELOPE__BODY_BATCH) {
        (void)deliver_batch(t, env->batch, NULL);
        skein__envelope__free_unpacked(env, NULL);
        return;
    }
    if (!codec_is_stream_body(env) ||
        (ev = new_event(TRANSPORT_EV_REQUEST)) == NULL) {
        t->stats.decode_errors++;
        skein__envelope__free_unpacked(env, NULL);
        return;
    }
    ev->env = env;
    deliver(t, ev);
}

/* Takes a received request apart; returns with the next state set. */
static void server_received(struct transport_server_ctx* c, nng_msg* msg) {
    struct transport* t = c->t;
    Skein__Envelope* env;
    struct transport_event* ev;

    t->stats.received++;
    env = skein__envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    nng_msg_free(msg);
    if (env == NULL) {
        t->stats.decode_errors++;
        server_reply_empty(c);
        return;
    }
    if (env->has_cluster_id && env->cluster_id != t->cfg.cluster_id) {
        t->stats.foreign_cluster++;
        skein__envelope__free_unpacked(env, NULL);
        server_reply_empty(c);
        return;
    }
    if (env->body_case == SKEIN__ENVELOPE__BODY_BATCH) {
        /* The last RPC of the batch carries the reply handle: the node
         * answers with its own raft messages to the sender, if any. */
        if (!deliver_batch(t, env->batch, c)) {
            server_reply_empty(c);
        }
        skein__envelope__free_unpacked(env, NULL);
        return;
    }
    ev = new_event(TRANSPORT_EV_REQUEST);
    if (ev == NULL) {
        skein__envelope__free_unpacked(env, NULL);
        server_reply_empty(c);
        return;
    }
    ev->env = env;
    c->state = SERVER_WAIT;
    ev->reply = c; /* raft RPCs too: see transport_reply_bytes */
    deliver(t, ev);
}

static void server_cb(void* arg) {
    struct transport_server_ctx* c = arg;
    struct transport* t = c->t;
    int rv = nng_aio_result(c->aio);

    pthread_mutex_lock(&t->mu);
    if (rv == NNG_ECLOSED || t->closing) {
        if (c->state == SERVER_SEND && rv != 0) {
            nng_msg* m = nng_aio_get_msg(c->aio);
            if (m != NULL) {
                nng_msg_free(m);
            }
        }
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (c->state == SERVER_RECV) {
        if (rv == 0) {
            server_received(c, nng_aio_get_msg(c->aio));
        } else {
            nng_ctx_recv(c->ctx, c->aio);
        }
    } else if (c->state == SERVER_SEND) {
        if (rv != 0) {
            nng_msg* m = nng_aio_get_msg(c->aio);
            if (m != NULL) {
                nng_msg_free(m);
            }
        }
        c->state = SERVER_RECV;
        nng_ctx_recv(c->ctx, c->aio);
    }
    pthread_mutex_unlock(&t->mu);
}

static void local_call_release(struct transport_server_ctx* c) {
    struct local_call* lc = c->local;
    pthread_mutex_lock(&lc->mu);
    bool last = --lc->refs == 0;
    pthread_mutex_unlock(&lc->mu);
    if (last) {
        free(lc->reply);
        pthread_cond_destroy(&lc->cv);
        pthread_mutex_destroy(&lc->mu);
        free(c);
    }
}

/* Answers a local call: the reply is packed (the caller decodes it as it
 * would a socket's) and the waiting thread is woken. No global lock. */
static void local_reply(struct transport_server_ctx* c,
                        const Skein__Envelope* env) {
    struct local_call* lc = c->local;
    uint8_t* buf = NULL;
    size_t len = 0;

    if (env != NULL) {
        len = skein__envelope__get_packed_size(env);
        buf = malloc(len > 0 ? len : 1);
        if (buf != NULL) {
            skein__envelope__pack(env, buf);
        } else {
            len = 0;
        }
    }
    pthread_mutex_lock(&lc->mu);
    if (!lc->answered) {
        lc->answered = true;
        lc->reply = buf;
        lc->reply_len = len;
        buf = NULL;
        pthread_cond_signal(&lc->cv);
    }
    pthread_mutex_unlock(&lc->mu);
    free(buf);
    local_call_release(c);
}

int transport_call_local(struct transport* t,
                         const uint8_t* data,
                         size_t len,
                         uint32_t timeout_ms,
                         uint8_t** reply,
                         size_t* reply_len) {
    struct transport_server_ctx* c;
    struct local_call* lc;
    struct transport_event* ev;
    Skein__Envelope* env;
    struct timespec until;
    int rv = TRANSPORT_LOCAL_TIMEOUT;

    *reply = NULL;
    *reply_len = 0;
    if (__atomic_load_n(&t->closing, __ATOMIC_ACQUIRE)) {
        return TRANSPORT_LOCAL_UNAVAILABLE;
    }
    env = skein__envelope__unpack(NULL, len, data);
    if (env == NULL || codec_is_raft_body(env) ||
        env->body_case == SKEIN__ENVELOPE__BODY_BATCH ||
        env->body_case == SKEIN__ENVELOPE__BODY_FORWARD_BATCH ||
        env->body_case == SKEIN__ENVELOPE__BODY_FORWARD_RESULTS ||
        (env->has_cluster_id && env->cluster_id != t->cfg.cluster_id)) {
        /* Local callers send client and admin requests only. */
        if (env != NULL) {
            skein__envelope__free_unpacked(env, NULL);
        }
        return TRANSPORT_LOCAL_INVALID;
    }
    c = calloc(1, sizeof(*c) + sizeof(*lc));
    ev = new_event(TRANSPORT_EV_REQUEST);
    if (c == NULL || ev == NULL) {
        free(c);
        free(ev);
        skein__envelope__free_unpacked(env, NULL);
        return TRANSPORT_LOCAL_UNAVAILABLE;
    }
    lc = (struct local_call*)(c + 1);
    c->t = t;
    c->state = SERVER_WAIT;
    c->local = lc;
    lc->refs = 2;
    pthread_mutex_init(&lc->mu, NULL);
    {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&lc->cv, &attr);
        pthread_condattr_destroy(&attr);
    }
    ev->env = env;
    ev->reply = c;
    __atomic_add_fetch(&t->local_waiting, 1, __ATOMIC_RELAXED);
    deliver(t, ev); /* the node now owns one reference through ev->reply */

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000u);
    until.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lc->mu);
    while (!lc->answered) {
        if (pthread_cond_timedwait(&lc->cv, &lc->mu, &until) != 0 &&
            !lc->answered) {
            break;
        }
    }
    if (lc->answered) {
        *reply = lc->reply;
        *reply_len = lc->reply_len;
        lc->reply = NULL;
        rv = TRANSPORT_LOCAL_OK;
    } else {
        lc->answered = true; /* a late answer is dropped */
    }
    pthread_mutex_unlock(&lc->mu);
    __atomic_sub_fetch(&t->local_waiting, 1, __ATOMIC_RELAXED);
    local_call_release(c);
    return rv;
}

uint32_t transport_local_waiting(struct transport* t) {
    return __atomic_load_n(&t->local_waiting, __ATOMIC_RELAXED);
}

static void split_answer(struct transport_server_ctx* c,
                         const uint8_t* data,
                         size_t len);

struct transport_server_ctx* transport_collector(struct transport* t,
                                                 transport_collect_fn fn,
                                                 void* arg,
                                                 uint64_t peer,
                                                 uint64_t tag) {
    struct transport_server_ctx* c = calloc(1, sizeof(*c));

    if (c != NULL) {
        c->t = t;
        c->state = SERVER_WAIT;
        c->collect = fn;
        c->collect_arg = arg;
        c->collect_peer = peer;
        c->collect_tag = tag;
    }
    return c;
}

bool transport_is_collector(const struct transport_server_ctx* c) {
    return c != NULL && c->collect != NULL;
}

void transport_collector_drop(struct transport_server_ctx* c) {
    if (transport_is_collector(c)) {
        free(c);
    }
}

void transport_reply_bytes(struct transport_server_ctx* c,
                           const uint8_t* data,
                           size_t len) {
    struct transport* t = c->t;
    nng_msg* msg = NULL;

    if (c->collect != NULL) {
        c->collect(c->collect_arg, c->collect_peer, c->collect_tag, data, len);
        free(c);
        return;
    }
    if (c->split != NULL) {
        split_answer(c, data, len);
        return;
    }
    if (c->local != NULL) {
        /* Local calls are never raft RPCs; answer empty. */
        local_reply(c, NULL);
        return;
    }
    pthread_mutex_lock(&t->mu);
    if (t->closing || c->state != SERVER_WAIT) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (len > 0 && nng_msg_alloc(&msg, len) == 0) {
        memcpy(nng_msg_body(msg), data, len);
    }
    if (msg == NULL) {
        server_reply_empty(c);
    } else {
        server_send(c, msg);
    }
    pthread_mutex_unlock(&t->mu);
}

bool transport_peer_faulty(struct transport* t, uint64_t peer) {
    struct peer* p;
    bool faulty = false;

    pthread_mutex_lock(&t->mu);
    p = find_peer(t, peer);
    if (p != NULL) {
        faulty = p->fault_drop > 0 || p->fault_dup > 0 ||
                 p->fault_delay_ms > 0 || p->fault_jitter_ms > 0;
    }
    pthread_mutex_unlock(&t->mu);
    return faulty;
}

struct transport_server_ctx* transport_split_reply(
    struct transport_server_ctx* parent,
    size_t n) {
    struct split_reply* sp;

    if (n == 0 || parent->split != NULL || parent->local != NULL ||
        parent->collect != NULL) {
        return NULL;
    }
    sp = calloc(1, sizeof(*sp));
    if (sp == NULL) {
        return NULL;
    }
    sp->answers = calloc(n, sizeof(*sp->answers));
    sp->subs = calloc(n, sizeof(*sp->subs));
    if (sp->answers == NULL || sp->subs == NULL) {
        free(sp->answers);
        free(sp->subs);
        free(sp);
        return NULL;
    }
    pthread_mutex_init(&sp->mu, NULL);
    sp->parent = parent;
    sp->n = n;
    sp->remaining = n;
    for (size_t i = 0; i < n; i++) {
        sp->subs[i].t = parent->t;
        sp->subs[i].state = SERVER_WAIT;
        sp->subs[i].split = sp;
        sp->subs[i].split_index = i;
    }
    return sp->subs;
}

struct transport_server_ctx* transport_split_part(
    struct transport_server_ctx* first,
    size_t i) {
    return first->split != NULL && i < first->split->n ? &first->split->subs[i]
                                                       : NULL;
}

/* Keeps one part's answer; the last one sends them all (a
 * ForwardBatchResponse) through the parent handle and frees the split. */
static void split_answer(struct transport_server_ctx* c,
                         const uint8_t* data,
                         size_t len) {
    struct split_reply* sp = c->split;
    ProtobufCBinaryData* a = &sp->answers[c->split_index];
    uint8_t* copy = len > 0 ? malloc(len) : NULL;
    bool last = false;

    if (copy != NULL) {
        memcpy(copy, data, len);
    }
    pthread_mutex_lock(&sp->mu);
    if (c->state == SERVER_WAIT) {
        c->state = SERVER_RECV; /* answered: a second answer is ignored */
        a->data = copy;
        a->len = copy != NULL ? len : 0;
        copy = NULL;
        last = --sp->remaining == 0;
    }
    pthread_mutex_unlock(&sp->mu);
    free(copy);
    if (!last) {
        return;
    }
    {
        Skein__ForwardBatchResponse fb = SKEIN__FORWARD_BATCH_RESPONSE__INIT;
        Skein__Envelope env = SKEIN__ENVELOPE__INIT;
        fb.n_responses = sp->n;
        fb.responses = sp->answers;
        env.has_cluster_id = 1;
        env.cluster_id = c->t->cfg.cluster_id;
        env.body_case = SKEIN__ENVELOPE__BODY_FORWARD_BATCH_RESPONSE;
        env.forward_batch_response = &fb;
        transport_reply(sp->parent, &env);
    }
    for (size_t i = 0; i < sp->n; i++) {
        free(sp->answers[i].data);
    }
    pthread_mutex_destroy(&sp->mu);
    free(sp->answers);
    free(sp->subs);
    free(sp);
}

void transport_reply(struct transport_server_ctx* c,
                     const Skein__Envelope* env) {
    uint8_t* buf = NULL;
    size_t n = 0;

    if (c->local != NULL) {
        local_reply(c, env);
        return;
    }
    if (env != NULL) {
        n = skein__envelope__get_packed_size(env);
        buf = malloc(n > 0 ? n : 1);
        if (buf != NULL) {
            skein__envelope__pack(env, buf);
        } else {
            n = 0;
        }
    }
    transport_reply_bytes(c, buf, n);
    free(buf);
}

/* ---------------------------------------------------------------- */
/* Lifecycle                                                         */

int transport_start(const struct transport_config* cfg,
                    struct transport** out,
                    char* errbuf,
                    size_t errlen) {
    struct transport* t = calloc(1, sizeof(*t));
    pthread_mutexattr_t attr;
    int rv;

    *out = NULL;
    if (t == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    t->cfg = *cfg;
    t->rng = (uint64_t)now_us();
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&t->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    if ((rv = nng_rep0_open(&t->rep)) != 0) {
        snprintf(errbuf, errlen, "rep socket: %s", nng_strerror(rv));
        free(t);
        return -1;
    }
    nng_socket_set_size(t->rep, NNG_OPT_RECVMAXSZ, cfg->recv_max_bytes);
    t->n_servers = cfg->server_contexts;
    t->servers = calloc(t->n_servers, sizeof(*t->servers));
    if (t->servers == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        transport_stop(t);
        return -1;
    }
    for (uint32_t i = 0; i < t->n_servers; i++) {
        struct transport_server_ctx* c = &t->servers[i];
        c->t = t;
        if ((rv = nng_ctx_open(&c->ctx, t->rep)) != 0 ||
            (rv = nng_aio_alloc(&c->aio, server_cb, c)) != 0) {
            snprintf(errbuf, errlen, "rep context: %s", nng_strerror(rv));
            transport_stop(t);
            return -1;
        }
    }
    if (cfg->listen_url != NULL &&
        (rv = nng_listen(t->rep, cfg->listen_url, NULL, 0)) != 0) {
        snprintf(errbuf, errlen, "listen on %s: %s", cfg->listen_url,
                 nng_strerror(rv));
        transport_stop(t);
        return -1;
    }
    if (cfg->inproc_url != NULL &&
        (rv = nng_listen(t->rep, cfg->inproc_url, NULL, 0)) != 0) {
        snprintf(errbuf, errlen, "listen on %s: %s", cfg->inproc_url,
                 nng_strerror(rv));
        transport_stop(t);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    for (uint32_t i = 0; i < t->n_servers; i++) {
        t->servers[i].state = SERVER_RECV;
        nng_ctx_recv(t->servers[i].ctx, t->servers[i].aio);
    }
    pthread_mutex_unlock(&t->mu);
    *out = t;
    return 0;
}

void transport_stop(struct transport* t) {
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    __atomic_store_n(&t->closing, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&t->mu);
    for (uint32_t i = 0; t->servers != NULL && i < t->n_servers; i++) {
        if (t->servers[i].aio != NULL) {
            nng_aio_stop(t->servers[i].aio);
        }
    }
    for (uint32_t i = 0; i < t->n_peers; i++) {
        for (int c = 0; c < TRANSPORT_CHANNELS; c++) {
            channel_close(&t->peers[i].ch[c]);
        }
    }
    nng_close(t->rep);
    for (uint32_t i = 0; t->servers != NULL && i < t->n_servers; i++) {
        if (t->servers[i].aio != NULL) {
            nng_msg* m = nng_aio_get_msg(t->servers[i].aio);
            if (m != NULL && t->servers[i].state == SERVER_SEND) {
                nng_msg_free(m);
            }
            nng_aio_free(t->servers[i].aio);
        }
    }
    free(t->servers);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void transport_stats(struct transport* t, struct transport_stats* out) {
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    pthread_mutex_unlock(&t->mu);
}
