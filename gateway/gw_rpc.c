/*
 * gw_rpc.c - the gateway's nng client: one REQ socket per node, one nng
 * context per request, leader following and the status probe.
 *
 * Why one socket per node: REQ load-balances over every pipe of a socket,
 * so a socket dialled to several nodes would send a write to any of them
 * (NOTES.md, nng). Why our own retry loop: REQ's automatic resend is off
 * (NNG_OPT_REQ_RESENDTIME = infinite), because a resent write reaching a
 * second node is a duplicate we did not choose; we resend only when we
 * know why, with the same request_id, and only until the deadline.
 *
 * A request's fate is classified per attempt:
 *   - never sent (no pipe, or the send did not complete): safe to retry;
 *   - sent, then the connection dropped or no reply came in time: a write
 *     may have been applied ("maybe applied"); retrying it elsewhere is safe
 *     only because the node deduplicates by request_id;
 *   - a reply: its status decides (NOT_LEADER is followed, NO_QUORUM and
 *     UNKNOWN_OUTCOME are retried after a back-off, the rest is final).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_internal.h"

/* Attempts of one request, whatever happens (bounds the loop). */
#define GW_RPC_MAX_ATTEMPTS 64
/* Poll period while waiting for a reply, to notice a lost connection. */
#define GW_RPC_POLL_MS 20
/* Back-off between rounds while waiting for a leader or a connection. */
#define GW_RPC_BACKOFF_MIN_MS 10
#define GW_RPC_BACKOFF_MAX_MS 200
/* Timeout of one status probe. */
#define GW_PROBE_TIMEOUT_MS 1000

/* Result of one attempt at one node. */
enum gw_once {
    GW_ONCE_OK,          /* *reply set */
    GW_ONCE_UNREACHABLE, /* not sent */
    GW_ONCE_LOST,        /* sent; the connection dropped before a reply */
    GW_ONCE_TIMEOUT,     /* sent; no reply before the timeout */
    GW_ONCE_BAD,         /* a reply that does not decode or is foreign */
};

/* Completion of one aio, signalled from nng's callback thread. */
/*
 * One request in flight: the send completes in nng's callback, which
 * starts the receive right there, so the waiting thread wakes once per
 * request instead of twice (each wake-up is a context switch).
 */
struct gw_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* CLOCK_MONOTONIC */
    nng_aio* aio;        /* send, then receive */
    nng_ctx ctx;         /* the request's context */
    int64_t deadline_ms; /* of the receive (monotonic) */
    bool sent;           /* under mu: the send completed */
    bool receiving;      /* under mu: the receive was started */
    bool done;           /* under mu: nothing more in flight */
    bool cancel;         /* under mu: the waiter wants it stopped */
};

int64_t gw_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gw_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void gw_sleep_ms(int64_t ms) {
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Absolute CLOCK_MONOTONIC time `ms` from now, for timed waits. */
static struct timespec gw_abstime_in(int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static int gw_cond_init_monotonic(pthread_cond_t* cv) {
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        return -1;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rv = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rv == 0 ? 0 : -1;
}

/* ---- node sockets ------------------------------------------------------ */

/* Keeps gw_node.pipes and .disconnects current (nng's thread). */
static void gw_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void* arg) {
    struct gw_node* n = arg;
    (void)pipe;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(&n->pipes, 1);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        /* Never below zero, should nng report a removal without an add. */
        int cur = atomic_load(&n->pipes);
        while (cur > 0 &&
               !atomic_compare_exchange_weak(&n->pipes, &cur, cur - 1)) {
        }
        atomic_fetch_add(&n->disconnects, 1);
    }
}

/* Node 0 of an embedded gateway is reached by a function call. */
static bool gw_node_is_local(const struct gw* gw, int idx) {
    return gw->cfg.local_call != NULL && idx == 0;
}

static int gw_node_open(struct gw* gw, struct gw_node* n) {
    if (gw_node_is_local(gw, (int)(n - gw->nodes))) {
        atomic_store(&n->pipes, 1); /* always connected */
        return 0;
    }
    int rv = nng_req0_open(&n->sock);
    if (rv != 0) {
        return rv;
    }
    n->open = true;
    /* No automatic resend: duplicates must be our decision (NOTES.md). */
    if ((rv = nng_socket_set_ms(n->sock, NNG_OPT_REQ_RESENDTIME,
                                NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_socket_set_size(n->sock, NNG_OPT_RECVMAXSZ,
                                  gw->cfg.recv_max_bytes)) != 0 ||
        (rv = nng_socket_set_ms(n->sock, NNG_OPT_RECONNMINT, 20)) != 0 ||
        (rv = nng_socket_set_ms(n->sock, NNG_OPT_RECONNMAXT, 500)) != 0 ||
        (rv = nng_pipe_notify(n->sock, NNG_PIPE_EV_ADD_POST, gw_pipe_cb, n)) !=
            0 ||
        (rv = nng_pipe_notify(n->sock, NNG_PIPE_EV_REM_POST, gw_pipe_cb, n)) !=
            0) {
        return rv;
    }
    /* Non-blocking: a node that is down is redialled in the background. */
    return nng_dial(n->sock, n->url, NULL, NNG_FLAG_NONBLOCK);
}

int gw_rpc_open(struct gw* gw) {
    for (size_t i = 0; i < gw->node_count; i++) {
        struct gw_node* n = &gw->nodes[i];
        int rv = gw_node_open(gw, n);
        if (rv != 0) {
            if (!gw->cfg.quiet) {
                fprintf(stderr, "skein-gateway: node %s: %s\n", n->url,
                        nng_strerror(rv));
            }
            return GW_ENNG;
        }
    }
    return GW_OK;
}

void gw_rpc_close(struct gw* gw) {
    for (size_t i = 0; i < gw->node_count; i++) {
        if (gw->nodes[i].open) {
            nng_close(gw->nodes[i].sock);
            gw->nodes[i].open = false;
        }
    }
}

int gw_node_by_id(struct gw* gw, uint64_t id) {
    for (size_t i = 0; i < gw->node_count; i++) {
        if (atomic_load(&gw->nodes[i].id_known) &&
            atomic_load(&gw->nodes[i].id) == id) {
            return (int)i;
        }
    }
    return -1;
}

static bool gw_node_connected(struct gw* gw, int i) {
    return atomic_load(&gw->nodes[i].pipes) > 0;
}

static bool gw_any_connected(struct gw* gw) {
    for (size_t i = 0; i < gw->node_count; i++) {
        if (gw_node_connected(gw, (int)i)) {
            return true;
        }
    }
    return false;
}

/* ---- one attempt ------------------------------------------------------- */

/* nng's callback: after a good send, start the receive; else wake up the
 * waiter. Runs on an nng thread; never blocks. */
static void gw_wait_cb(void* arg) {
    struct gw_wait* w = arg;
    int rv = nng_aio_result(w->aio);
    pthread_mutex_lock(&w->mu);
    if (!w->sent && rv == 0) {
        w->sent = true;
        if (!w->cancel) {
            int64_t left = w->deadline_ms - gw_now_ms();
            w->receiving = true;
            pthread_mutex_unlock(&w->mu);
            nng_aio_set_timeout(w->aio, (nng_duration)(left > 1 ? left : 1));
            nng_ctx_recv(w->ctx, w->aio);
            return;
        }
    }
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/*
 * Waits until nothing is in flight. If the node loses its connection
 * meanwhile (a pipe removal since `gen0`), cancels so the caller can retry
 * elsewhere at once instead of waiting for the timeout. The cancel is
 * repeated at each poll, in case the callback started the receive just
 * after the first one. A send still not taken by a pipe at the deadline is
 * cancelled too (it has no nng timeout). Returns true if it cancelled
 * because of a lost connection.
 */
static bool gw_wait_aio(struct gw_wait* w, struct gw_node* n, uint64_t gen0) {
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        struct timespec until = gw_abstime_in(GW_RPC_POLL_MS);
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        bool expired = !w->sent && gw_now_ms() >= w->deadline_ms;
        if (!w->done &&
            (w->cancel || expired || atomic_load(&n->disconnects) != gen0)) {
            w->cancel = w->cancel || !expired;
            pthread_mutex_unlock(&w->mu);
            nng_aio_cancel(w->aio);
            pthread_mutex_lock(&w->mu);
        }
    }
    bool cancelled = w->cancel;
    pthread_mutex_unlock(&w->mu);
    return cancelled;
}

/* Decodes and checks a packed reply (not freed here). */
static enum gw_once gw_decode_bytes(struct gw* gw,
                                    const uint8_t* data,
                                    size_t len,
                                    Skein__Envelope** reply) {
    Skein__Envelope* env = skein__envelope__unpack(NULL, len, data);
    if (env == NULL) {
        return GW_ONCE_BAD;
    }
    if (env->has_cluster_id && env->cluster_id != 0 &&
        gw->cfg.cluster_id != 0 && env->cluster_id != gw->cfg.cluster_id) {
        skein__envelope__free_unpacked(env, NULL);
        return GW_ONCE_BAD;
    }
    *reply = env;
    return GW_ONCE_OK;
}

/* Decodes and checks a reply message (freed here). */
static enum gw_once gw_decode_reply(struct gw* gw,
                                    nng_msg* msg,
                                    Skein__Envelope** reply) {
    enum gw_once r = gw_decode_bytes(gw, (const uint8_t*)nng_msg_body(msg),
                                     nng_msg_len(msg), reply);
    nng_msg_free(msg);
    return r;
}

/* One request to the gateway's own node: a function call. */
static enum gw_once gw_local_once(struct gw* gw,
                                  const uint8_t* buf,
                                  size_t len,
                                  int64_t timeout_ms,
                                  Skein__Envelope** reply) {
    uint8_t* out = NULL;
    size_t out_len = 0;
    int rv = gw->cfg.local_call(gw->cfg.local_arg, buf, len,
                                (uint32_t)(timeout_ms > 1 ? timeout_ms : 1),
                                &out, &out_len);
    if (rv == -3) {
        atomic_fetch_add(&gw->metrics.rpc_sent, 1);
        atomic_fetch_add(&gw->metrics.rpc_failed, 1);
        return GW_ONCE_TIMEOUT;
    }
    if (rv != 0) {
        return GW_ONCE_UNREACHABLE;
    }
    atomic_fetch_add(&gw->metrics.rpc_sent, 1);
    enum gw_once r = gw_decode_bytes(gw, out, out_len, reply);
    free(out);
    return r;
}

/* Sends then receives with w's context and aio. */
static enum gw_once gw_send_recv(struct gw* gw,
                                 struct gw_node* n,
                                 struct gw_wait* w,
                                 const uint8_t* buf,
                                 size_t len,
                                 int64_t timeout_ms,
                                 Skein__Envelope** reply) {
    nng_msg* msg;
    if (nng_msg_alloc(&msg, len) != 0) {
        return GW_ONCE_UNREACHABLE;
    }
    if (len > 0) {
        memcpy(nng_msg_body(msg), buf, len);
    }
    uint64_t gen0 = atomic_load(&n->disconnects);
    w->deadline_ms = gw_now_ms() + timeout_ms;
    /* No nng timeout on the send: gw_wait_aio cancels it at the deadline.
     * nng 1.5.2 can let a timeout that races a completion fail the next
     * operation on the same aio at once, and the receive follows on this
     * aio; only the receive, the last operation, gets an nng timeout. */
    nng_aio_set_timeout(w->aio, NNG_DURATION_INFINITE);
    nng_aio_set_msg(w->aio, msg);
    nng_ctx_send(w->ctx, w->aio);
    bool lost = gw_wait_aio(w, n, gen0);
    int rv = nng_aio_result(w->aio);
    pthread_mutex_lock(&w->mu);
    bool sent = w->sent;
    bool receiving = w->receiving;
    pthread_mutex_unlock(&w->mu);
    if (!sent) {
        /* The REQ send completes once a pipe took the message: not sent. */
        nng_msg_free(nng_aio_get_msg(w->aio));
        return GW_ONCE_UNREACHABLE;
    }
    atomic_fetch_add(&gw->metrics.rpc_sent, 1);
    if (receiving && rv == 0) {
        /* a reply (possibly one that raced a cancel: use it) */
        return gw_decode_reply(gw, nng_aio_get_msg(w->aio), reply);
    }
    /* Sent, then no reply: timed out, or cancelled (before or during the
     * receive) because the connection dropped. */
    atomic_fetch_add(&gw->metrics.rpc_failed, 1);
    return (receiving && rv == NNG_ETIMEDOUT && !lost) ? GW_ONCE_TIMEOUT
                                                       : GW_ONCE_LOST;
}

/* One request to node `idx` with its own context. */
static enum gw_once gw_rpc_once(struct gw* gw,
                                int idx,
                                const uint8_t* buf,
                                size_t len,
                                int64_t timeout_ms,
                                Skein__Envelope** reply) {
    struct gw_node* n = &gw->nodes[idx];
    *reply = NULL;
    if (!gw_node_connected(gw, idx)) {
        atomic_fetch_add(&gw->metrics.rpc_unreachable, 1);
        return GW_ONCE_UNREACHABLE;
    }
    if (gw_node_is_local(gw, idx)) {
        enum gw_once r = gw_local_once(gw, buf, len, timeout_ms, reply);
        if (r == GW_ONCE_BAD) {
            atomic_fetch_add(&gw->metrics.rpc_bad_reply, 1);
        } else if (r == GW_ONCE_OK) {
            atomic_store(&n->last_seen_ms, gw_now_ms());
        }
        return r;
    }
    struct gw_wait w = {.aio = NULL};
    if (pthread_mutex_init(&w.mu, NULL) != 0) {
        return GW_ONCE_UNREACHABLE;
    }
    if (gw_cond_init_monotonic(&w.cv) != 0) {
        pthread_mutex_destroy(&w.mu);
        return GW_ONCE_UNREACHABLE;
    }
    enum gw_once result = GW_ONCE_UNREACHABLE;
    if (nng_ctx_open(&w.ctx, n->sock) != 0) {
        goto out;
    }
    if (nng_aio_alloc(&w.aio, gw_wait_cb, &w) == 0) {
        result = gw_send_recv(gw, n, &w, buf, len, timeout_ms, reply);
        nng_aio_free(w.aio); /* stops it first */
    }
    nng_ctx_close(w.ctx);
out:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (result == GW_ONCE_BAD) {
        atomic_fetch_add(&gw->metrics.rpc_bad_reply, 1);
    }
    if (result == GW_ONCE_OK) {
        atomic_store(&n->last_seen_ms, gw_now_ms());
    }
    return result;
}

/* ---- replies ----------------------------------------------------------- */

struct gw_reply_info gw_reply_info(const Skein__Envelope* reply) {
    struct gw_reply_info info = {
        .valid = false, .status = SKEIN__CLIENT_RESPONSE__STATUS__INTERNAL};
    if (reply == NULL) {
        return info;
    }
    if (reply->body_case == SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE &&
        reply->client_response != NULL) {
        const Skein__ClientResponse* cr = reply->client_response;
        info.valid = true;
        info.status = (int)cr->status;
        info.leader_hint = cr->has_leader_hint ? cr->leader_hint : 0;
        info.leader_known = cr->has_leader_known ? cr->leader_known != 0
                                                 : info.leader_hint != 0;
        info.leader_url = cr->leader_url;
        info.leader_http = cr->leader_http_address != NULL
                               ? cr->leader_http_address
                               : cr->leader_address;
        info.error = cr->error;
    } else if (reply->body_case == SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE &&
               reply->admin_response != NULL) {
        const Skein__AdminResponse* ar = reply->admin_response;
        info.valid = true;
        info.status = (int)ar->status;
        info.leader_hint = ar->has_leader_hint ? ar->leader_hint : 0;
        info.leader_known = ar->has_leader_known ? ar->leader_known != 0
                                                 : info.leader_hint != 0;
        info.error = ar->error;
    }
    return info;
}

/* The reply body a request expects, or NOT_SET for "any". */
static Skein__Envelope__BodyCase gw_expected_reply(const Skein__Envelope* req) {
    switch (req->body_case) {
        case SKEIN__ENVELOPE__BODY_CLIENT_REQUEST:
            return SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
        case SKEIN__ENVELOPE__BODY_ADMIN_REQUEST:
            return SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE;
        default:
            return SKEIN__ENVELOPE__BODY__NOT_SET;
    }
}

/* The node a NOT_LEADER reply points to, or -1. */
static int gw_resolve_leader(struct gw* gw, const struct gw_reply_info* info) {
    /* leader_known says whether leader_hint names a leader (ids may be
     * 0); leader_url names it too, whatever its id. */
    int idx = info->leader_known ? gw_node_by_id(gw, info->leader_hint) : -1;
    if (idx >= 0) {
        return idx;
    }
    if (info->leader_url != NULL && info->leader_url[0] != '\0') {
        for (size_t i = 0; i < gw->node_count; i++) {
            if (strcmp(gw->nodes[i].url, info->leader_url) == 0) {
                return (int)i;
            }
        }
    }
    return -1;
}

void gw_rpc_result_free(struct gw_rpc_result* res) {
    if (res->reply != NULL) {
        skein__envelope__free_unpacked(res->reply, NULL);
    }
    res->reply = NULL;
    res->outcome = GW_RPC_UNAVAILABLE;
    res->node = -1;
    res->detail[0] = '\0';
}

/* ---- the retry loop ---------------------------------------------------- */

/* State of one gw_rpc call. */
struct gw_rpc_state {
    struct gw* gw;
    const struct gw_rpc_opts* opts;
    int64_t start_ms;
    int64_t deadline_ms;
    uint32_t tried;        /* nodes tried in this round (bit per index) */
    int forced;            /* next node to try (a leader hint), or -1 */
    bool maybe_applied;    /* a write was sent without an answer */
    int64_t backoff_ms;    /* next back-off */
    Skein__Envelope* last; /* last retryable reply (NOT_LEADER...) */
    int last_node;
    bool refused; /* the last bad reply was an empty envelope */
    char detail[160];
};

/* Picks the next node to try, or -1 when none is available now. */
static int gw_pick(struct gw_rpc_state* st) {
    struct gw* gw = st->gw;
    const struct gw_rpc_opts* o = st->opts;
    if (o->target == GW_TARGET_NODE) {
        if ((st->tried & (1u << o->node)) != 0 ||
            !gw_node_connected(gw, o->node)) {
            return -1;
        }
        return o->node;
    }
    if (st->forced >= 0) {
        int f = st->forced;
        st->forced = -1;
        if (gw_node_connected(gw, f)) {
            return f;
        }
    }
    if (o->target == GW_TARGET_LEADER) {
        int l = atomic_load(&gw->leader);
        if (l >= 0 && (st->tried & (1u << l)) == 0 &&
            gw_node_connected(gw, l)) {
            return l;
        }
    }
    unsigned start = atomic_fetch_add(&gw->rr, 1u);
    for (size_t k = 0; k < gw->node_count; k++) {
        int i = (int)((start + k) % gw->node_count);
        if ((st->tried & (1u << i)) == 0 && gw_node_connected(gw, i)) {
            return i;
        }
    }
    return -1;
}

/* Nothing to try now: wait a little, or return false to give up. */
static bool gw_wait_round(struct gw_rpc_state* st) {
    struct gw* gw = st->gw;
    int64_t now = gw_now_ms();
    int64_t waited = now - st->start_ms;
    if (st->opts->no_retry && st->tried != 0) {
        return false;
    }
    if (st->opts->target == GW_TARGET_NODE && st->tried != 0) {
        return false;
    }
    bool connected = st->opts->target == GW_TARGET_NODE
                         ? gw_node_connected(gw, st->opts->node)
                         : gw_any_connected(gw);
    if (!connected) {
        if (waited >= (int64_t)gw->cfg.connect_wait_ms) {
            snprintf(st->detail, sizeof st->detail,
                     "no node is reachable (waited %lld ms)",
                     (long long)waited);
            return false;
        }
    } else if (waited >= (int64_t)gw->cfg.leader_wait_ms) {
        if (st->detail[0] == '\0') {
            snprintf(st->detail, sizeof st->detail,
                     "no node could serve the request (waited %lld ms)",
                     (long long)waited);
        }
        return false;
    }
    int64_t nap = st->backoff_ms;
    if (nap > st->deadline_ms - now) {
        nap = st->deadline_ms - now;
    }
    gw_sleep_ms(nap);
    st->backoff_ms = st->backoff_ms * 2 > GW_RPC_BACKOFF_MAX_MS
                         ? GW_RPC_BACKOFF_MAX_MS
                         : st->backoff_ms * 2;
    st->tried = 0;
    return true;
}

static void gw_keep_last(struct gw_rpc_state* st,
                         Skein__Envelope* reply,
                         int idx) {
    if (st->last != NULL) {
        skein__envelope__free_unpacked(st->last, NULL);
    }
    st->last = reply;
    st->last_node = idx;
}

/* Handles a decoded reply. Returns true if it is final (taken into res). */
static bool gw_on_reply(struct gw_rpc_state* st,
                        int idx,
                        Skein__Envelope* reply,
                        struct gw_rpc_result* res) {
    struct gw* gw = st->gw;
    struct gw_reply_info info = gw_reply_info(reply);
    if (!info.valid || st->opts->no_retry) {
        res->reply = reply;
        res->node = idx;
        res->outcome = GW_RPC_REPLY;
        return true;
    }
    switch (info.status) {
        case SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER: {
            atomic_fetch_add(&gw->metrics.leader_redirects, 1);
            int hint = gw_resolve_leader(gw, &info);
            int expected = idx;
            atomic_compare_exchange_strong(&gw->leader, &expected, -1);
            if (hint >= 0 && hint != idx && (st->tried & (1u << hint)) == 0) {
                atomic_store(&gw->leader, hint);
                st->forced = hint;
            } else if (info.leader_known && hint < 0) {
                gw_probe_kick(gw); /* learn the unknown leader's id */
            }
            gw_keep_last(st, reply, idx);
            return false;
        }
        case SKEIN__CLIENT_RESPONSE__STATUS__NO_QUORUM:
            gw_keep_last(st, reply, idx);
            return false;
        case SKEIN__CLIENT_RESPONSE__STATUS__UNKNOWN_OUTCOME:
            /* Retry with the same request_id: never applied twice. */
            st->maybe_applied = true;
            atomic_fetch_add(&gw->metrics.write_retries, 1);
            gw_keep_last(st, reply, idx);
            st->tried = 0;
            gw_sleep_ms(st->backoff_ms < st->deadline_ms - gw_now_ms()
                            ? st->backoff_ms
                            : st->deadline_ms - gw_now_ms());
            return false;
        default:
            res->reply = reply;
            res->node = idx;
            res->outcome = GW_RPC_REPLY;
            return true;
    }
}

static void gw_rpc_finish(struct gw_rpc_state* st, struct gw_rpc_result* res);

/* Handles an attempt that got no reply. Returns true once *res is final. */
static bool gw_on_failure(struct gw_rpc_state* st,
                          int idx,
                          enum gw_once r,
                          struct gw_rpc_result* res) {
    struct gw* gw = st->gw;
    int expected = idx;
    atomic_compare_exchange_strong(&gw->leader, &expected, -1);
    const char* url = gw->nodes[idx].url;
    switch (r) {
        case GW_ONCE_UNREACHABLE:
            snprintf(st->detail, sizeof st->detail, "node %s is unreachable",
                     url);
            return false;
        case GW_ONCE_LOST:
        case GW_ONCE_TIMEOUT:
            snprintf(st->detail, sizeof st->detail,
                     r == GW_ONCE_LOST ? "connection to node %s lost"
                                       : "no reply from node %s in time",
                     url);
            if (st->opts->write) {
                st->maybe_applied = true;
                atomic_fetch_add(&gw->metrics.write_retries, 1);
            }
            if (st->opts->no_retry) {
                gw_rpc_finish(st, res);
                return true;
            }
            return false;
        default:
            snprintf(st->detail, sizeof st->detail,
                     st->refused ? "node %s refused the request (is the "
                                   "gateway's cluster id the node's?)"
                                 : "node %s sent a reply that does not "
                                   "decode or does not match",
                     url);
            res->outcome = (st->opts->write && !st->refused) ? GW_RPC_UNKNOWN
                                                             : GW_RPC_BAD_REPLY;
            return true;
    }
}

/* The outcome when no final reply came before the deadline. */
static void gw_rpc_finish(struct gw_rpc_state* st, struct gw_rpc_result* res) {
    if (st->opts->write && st->maybe_applied) {
        res->outcome = GW_RPC_UNKNOWN;
        if (st->detail[0] == '\0') {
            snprintf(st->detail, sizeof st->detail,
                     "the write was sent but not confirmed before the "
                     "deadline");
        }
        return;
    }
    if (st->last != NULL) {
        res->reply = st->last;
        res->node = st->last_node;
        st->last = NULL;
        res->outcome = GW_RPC_REPLY;
        return;
    }
    res->outcome = GW_RPC_UNAVAILABLE;
    if (st->detail[0] == '\0') {
        snprintf(st->detail, sizeof st->detail,
                 "no node answered before the deadline");
    }
}

/* The attempts. Returns true once *res holds a final outcome, false when
 * time or attempts ran out (gw_rpc_finish decides then). */
static bool gw_rpc_loop(struct gw_rpc_state* st,
                        const uint8_t* buf,
                        size_t len,
                        Skein__Envelope__BodyCase expect,
                        struct gw_rpc_result* res) {
    struct gw* gw = st->gw;
    for (int attempt = 0; attempt < GW_RPC_MAX_ATTEMPTS; attempt++) {
        int64_t now = gw_now_ms();
        if (now >= st->deadline_ms) {
            return false;
        }
        int idx = gw_pick(st);
        if (idx < 0) {
            if (!gw_wait_round(st)) {
                return false;
            }
            continue;
        }
        st->tried |= 1u << idx;
        int64_t timeout = st->deadline_ms - now;
        if (!st->opts->write && st->opts->target == GW_TARGET_ANY &&
            gw->node_count > 1 && timeout > 400) {
            timeout /= 2; /* leave time to ask another node */
        }
        Skein__Envelope* reply = NULL;
        enum gw_once r = gw_rpc_once(gw, idx, buf, len, timeout, &reply);
        if (r == GW_ONCE_OK && expect != SKEIN__ENVELOPE__BODY__NOT_SET &&
            reply->body_case != expect) {
            /* A node answers an empty envelope to what it refuses to
             * read: undecodable, or another cluster's. */
            st->refused = reply->body_case == SKEIN__ENVELOPE__BODY__NOT_SET;
            skein__envelope__free_unpacked(reply, NULL);
            reply = NULL;
            r = GW_ONCE_BAD;
        }
        if (r == GW_ONCE_OK) {
            if (gw_on_reply(st, idx, reply, res)) {
                return true;
            }
        } else if (gw_on_failure(st, idx, r, res)) {
            return true;
        }
    }
    return false;
}

enum gw_outcome gw_rpc(struct gw* gw,
                       Skein__Envelope* req,
                       const struct gw_rpc_opts* opts,
                       int64_t deadline_ms,
                       struct gw_rpc_result* res) {
    memset(res, 0, sizeof *res);
    res->node = -1;
    res->outcome = GW_RPC_UNAVAILABLE;
    /* cluster_id 0 means "not configured": the request keeps whatever it
     * carries (usually nothing, which the node does not check; it refuses
     * a present, different one). */
    if (gw->cfg.cluster_id != 0) {
        req->has_cluster_id = true;
        req->cluster_id = gw->cfg.cluster_id;
    }
    size_t len = skein__envelope__get_packed_size(req);
    uint8_t* buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        snprintf(res->detail, sizeof res->detail, "out of memory");
        return res->outcome;
    }
    skein__envelope__pack(req, buf);
    struct gw_rpc_state st = {.gw = gw,
                              .opts = opts,
                              .start_ms = gw_now_ms(),
                              .deadline_ms = deadline_ms,
                              .forced = -1,
                              .backoff_ms = GW_RPC_BACKOFF_MIN_MS,
                              .last_node = -1};
    bool final = gw_rpc_loop(&st, buf, len, gw_expected_reply(req), res);
    free(buf);
    if (!final) {
        gw_rpc_finish(&st, res);
    }
    if (st.last != NULL) {
        skein__envelope__free_unpacked(st.last, NULL);
    }
    if (res->outcome != GW_RPC_REPLY) {
        snprintf(res->detail, sizeof res->detail, "%s",
                 st.detail[0] != '\0' ? st.detail : "no reply");
    }
    return res->outcome;
}

/* ---- status probe ------------------------------------------------------ */

/* Probes node i; returns its status reply (owned) or NULL. */
static Skein__Envelope* gw_probe_node(struct gw* gw, int i) {
    Skein__StatusRequest sr = SKEIN__STATUS_REQUEST__INIT;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_STATUS;
    ar.status = &sr;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    env.has_cluster_id = gw->cfg.cluster_id != 0;
    env.cluster_id = gw->cfg.cluster_id;
    uint8_t buf[64];
    size_t len = skein__envelope__get_packed_size(&env);
    if (len > sizeof buf) {
        return NULL;
    }
    skein__envelope__pack(&env, buf);
    atomic_fetch_add(&gw->metrics.probes, 1);
    Skein__Envelope* reply = NULL;
    if (gw_rpc_once(gw, i, buf, len, GW_PROBE_TIMEOUT_MS, &reply) !=
        GW_ONCE_OK) {
        return NULL;
    }
    if (reply->body_case != SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE ||
        reply->admin_response->result_case !=
            SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS ||
        reply->admin_response->node_status == NULL) {
        skein__envelope__free_unpacked(reply, NULL);
        return NULL;
    }
    return reply;
}

/* Learns node i's id and role from a status reply. */
static void gw_learn(struct gw* gw, int i, const Skein__StatusResponse* s) {
    struct gw_node* n = &gw->nodes[i];
    atomic_store(&n->id, s->node_id);
    atomic_store(&n->id_known, true);
    atomic_store(&n->role, (int)s->role);
}

void gw_probe_unknown(struct gw* gw) {
    for (size_t i = 0; i < gw->node_count; i++) {
        if (atomic_load(&gw->nodes[i].id_known) ||
            !gw_node_connected(gw, (int)i)) {
            continue;
        }
        Skein__Envelope* reply = gw_probe_node(gw, (int)i);
        if (reply != NULL) {
            gw_learn(gw, (int)i, reply->admin_response->node_status);
            skein__envelope__free_unpacked(reply, NULL);
        }
    }
}

/* One probe round: learns ids and roles, then who leads. */
static void gw_probe_round(struct gw* gw) {
    int leader = -1;
    uint64_t leader_term = 0;
    uint64_t hinted_id = 0;
    bool hinted = false;
    bool any = false;
    for (size_t i = 0; i < gw->node_count; i++) {
        struct gw_node* n = &gw->nodes[i];
        if (!gw_node_connected(gw, (int)i)) {
            atomic_store(&n->role, -1);
            continue;
        }
        Skein__Envelope* reply = gw_probe_node(gw, (int)i);
        if (reply == NULL) {
            continue;
        }
        any = true;
        const Skein__StatusResponse* s = reply->admin_response->node_status;
        gw_learn(gw, (int)i, s);
        if (s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER &&
            (leader < 0 || s->term > leader_term)) {
            leader = (int)i;
            leader_term = s->term;
        } else if (gw_status_leader_known(s)) {
            hinted_id = s->leader_id;
            hinted = true;
        }
        skein__envelope__free_unpacked(reply, NULL);
    }
    if (leader < 0 && hinted) {
        leader = gw_node_by_id(gw, hinted_id);
    }
    if (leader >= 0 || any) {
        atomic_store(&gw->leader, leader);
    }
}

static void* gw_probe_main(void* arg) {
    struct gw* gw = arg;
    pthread_mutex_lock(&gw->probe_mu);
    while (!gw->probe_stop) {
        gw->probe_kick = false;
        pthread_mutex_unlock(&gw->probe_mu);
        gw_probe_round(gw);
        pthread_mutex_lock(&gw->probe_mu);
        struct timespec until = gw_abstime_in(gw->cfg.probe_interval_ms);
        while (!gw->probe_stop && !gw->probe_kick) {
            if (pthread_cond_timedwait(&gw->probe_cv, &gw->probe_mu, &until) ==
                ETIMEDOUT) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&gw->probe_mu);
    return NULL;
}

int gw_probe_start(struct gw* gw) {
    if (pthread_mutex_init(&gw->probe_mu, NULL) != 0) {
        return GW_ENOMEM;
    }
    if (gw_cond_init_monotonic(&gw->probe_cv) != 0) {
        pthread_mutex_destroy(&gw->probe_mu);
        return GW_ENOMEM;
    }
    gw->probe_stop = false;
    gw->probe_kick = false;
    gw->probe_ready = true;
    if (gw->cfg.probe_interval_ms == UINT32_MAX) {
        gw->probe_started = false;
        return GW_OK; /* disabled; the mutex and cv still exist */
    }
    if (pthread_create(&gw->probe_thread, NULL, gw_probe_main, gw) != 0) {
        pthread_cond_destroy(&gw->probe_cv);
        pthread_mutex_destroy(&gw->probe_mu);
        gw->probe_ready = false;
        return GW_ENOMEM;
    }
    gw->probe_started = true;
    return GW_OK;
}

void gw_probe_kick(struct gw* gw) {
    if (!gw->probe_ready) {
        return;
    }
    pthread_mutex_lock(&gw->probe_mu);
    gw->probe_kick = true;
    pthread_cond_signal(&gw->probe_cv);
    pthread_mutex_unlock(&gw->probe_mu);
}

void gw_probe_stop(struct gw* gw) {
    if (!gw->probe_ready) {
        return;
    }
    pthread_mutex_lock(&gw->probe_mu);
    gw->probe_stop = true;
    pthread_cond_signal(&gw->probe_cv);
    pthread_mutex_unlock(&gw->probe_mu);
    if (gw->probe_started) {
        pthread_join(gw->probe_thread, NULL);
        gw->probe_started = false;
    }
    pthread_cond_destroy(&gw->probe_cv);
    pthread_mutex_destroy(&gw->probe_mu);
    gw->probe_ready = false;
}
