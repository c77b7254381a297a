/*
 * node.c - the node loop: events in, raft steps, ready batches out.
 */
#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "codec.h"
#include "node_internal.h"
#include "store_recover.h"

/* ------------------------------------------------------------------ */
/* Time, helpers                                                       */

uint64_t node_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t node_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void node_config_default(struct node_config* cfg, uint64_t id) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->cluster_id = 0x736b65696eULL; /* "skein" */
    cfg->tick_ms = 30;
    cfg->election_ticks = 10; /* 300-600 ms randomized */
    cfg->heartbeat_ticks = 2; /* 60 ms */
    cfg->log_retain = STORE_LOG_RETAIN_DEFAULT;
    cfg->snapshot_threshold = STORE_COMPACT_THRESHOLD_DEFAULT;
    cfg->write_timeout_ms = 5000;
    cfg->read_timeout_ms = 5000;
    cfg->state_commit_ms = 10;
    cfg->batch_linger_us = 200;
    cfg->http_threads = 300;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
}

static int mkdir_p(const char* path) {
    char buf[NODE_URL_MAX + 64];
    size_t len = strlen(path);

    if (len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            buf[i] = c;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Peers and sending                                                   */

struct node_peer* node_peer_of(struct node* n, uint64_t id) {
    for (uint32_t i = 0; i < n->n_peers; i++) {
        if (n->peers[i].id == id) {
            return &n->peers[i];
        }
    }
    return NULL;
}

struct node_peer* node_add_peer(struct node* n,
                                uint64_t id,
                                const char* url,
                                const char* http) {
    struct node_peer* p = node_peer_of(n, id);

    if (id == n->cfg.id || url == NULL || url[0] == '\0') {
        return NULL;
    }
    if (p == NULL) {
        if (n->n_peers == NODE_MAX_PEERS) {
            return NULL;
        }
        p = &n->peers[n->n_peers++];
        memset(p, 0, sizeof(*p));
        p->id = id;
    }
    if (strcmp(p->url, url) != 0 || !p->known) {
        snprintf(p->url, sizeof(p->url), "%s", url);
        p->known = transport_add_peer(n->tr, id, url) == 0;
    }
    if (http != NULL && http[0] != '\0') {
        snprintf(p->http, sizeof(p->http), "%s", http);
    }
    return p;
}

void node_send_envelope(struct node* n,
                        uint64_t peer,
                        int channel,
                        const Skein__Envelope* env,
                        uint64_t cookie,
                        bool want_reply) {
    uint8_t* buf;
    size_t len;

    if (codec_pack_envelope(env, &buf, &len) != 0) {
        return;
    }
    if (transport_send(n->tr, peer, channel, buf, len, cookie, want_reply) !=
            0 &&
        want_reply) {
        /* Tell the waiting side at once instead of at its deadline. */
        struct transport_event* ev = calloc(1, sizeof(*ev));
        if (ev != NULL) {
            ev->type = TRANSPORT_EV_FAILED;
            ev->peer = peer;
            ev->channel = channel;
            ev->cookie = cookie;
            ev->error = -1;
            pthread_mutex_lock(&n->mu);
            if (n->ev_count < NODE_EVENT_QUEUE_MAX) {
                n->events[(n->ev_head + n->ev_count) % NODE_EVENT_QUEUE_MAX] =
                    ev;
                n->ev_count++;
                ev = NULL;
            }
            pthread_mutex_unlock(&n->mu);
            free(ev);
        }
    }
    free(buf);
}

static void reply_envelope(struct transport_server_ctx* reply,
                           Skein__Envelope* env) {
    if (reply != NULL) {
        transport_reply(reply, env);
    }
}

void node_reply_client(struct transport_server_ctx* reply,
                       Skein__ClientResponse* resp) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
    env.client_response = resp;
    reply_envelope(reply, &env);
}

void node_reply_admin(struct transport_server_ctx* reply,
                      Skein__AdminResponse* resp) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE;
    env.admin_response = resp;
    reply_envelope(reply, &env);
}

void node_fill_leader_hint(struct node* n, Skein__ClientResponse* resp) {
    raft_node_id leader = raft_leader(n->raft);
    struct node_peer* p;

    if (leader == 0) {
        return;
    }
    resp->has_leader_known = 1;
    resp->leader_known = 1;
    resp->has_leader_hint = 1;
    resp->leader_hint = codec_node_id(leader);
    if (resp->leader_hint == n->cfg.id) {
        resp->leader_url = n->cfg.listen_url;
        resp->leader_http_address = n->cfg.http_addr;
        return;
    }
    p = node_peer_of(n, resp->leader_hint);
    if (p != NULL) {
        resp->leader_url = p->url;
        resp->leader_address = p->http;
        resp->leader_http_address = p->http;
    }
}

/* ------------------------------------------------------------------ */
/* The event queue (nng threads -> loop)                               */

static void node_deliver(void* arg, struct transport_event* ev) {
    struct node* n = arg;

    pthread_mutex_lock(&n->mu);
    if (n->ev_count == NODE_EVENT_QUEUE_MAX) {
        n->events_dropped++;
        pthread_mutex_unlock(&n->mu);
        if (ev->reply != NULL) {
            transport_reply(ev->reply, NULL);
        }
        transport_event_free(ev);
        return;
    }
    n->events[(n->ev_head + n->ev_count) % NODE_EVENT_QUEUE_MAX] = ev;
    n->ev_count++;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */

void node_hold_reply(struct node* n,
                     uint64_t peer,
                     struct transport_server_ctx* ctx) {
    if (n->n_held < NODE_HELD_MAX) {
        n->held[n->n_held].peer = peer;
        n->held[n->n_held].ctx = ctx;
        n->n_held++;
    } else {
        transport_reply_bytes(ctx, NULL, 0);
    }
}

static void handle_raft_message(struct node* n, struct transport_event* ev) {
    struct codec_raft cr;
    struct raft_event rev;
    const char* why = NULL;
    struct node_peer* p;

    if (codec_to_raft(ev->env, &cr, &why) != 0) {
        if (ev->reply != NULL) {
            transport_reply_bytes(ev->reply, NULL, 0);
            ev->reply = NULL;
        }
        return; /* malformed: dropped (counted by the core as EINVAL) */
    }
    ev->env = NULL; /* now owned by cr */
    if (ev->reply != NULL) {
        /* Our answer to the sender may ride in this RPC's reply. */
        node_hold_reply(n, codec_node_id(cr.msg.from), ev->reply);
        ev->reply = NULL;
    }
    p = node_peer_of(n, codec_node_id(cr.msg.from));
    if (p != NULL) {
        p->last_ok_ms = node_now_ms();
    }
    memset(&rev, 0, sizeof(rev));
    rev.type = RAFT_EVENT_RECEIVE;
    rev.message = &cr.msg;
    (void)raft_step(n->raft, &rev);
    codec_raft_free(&cr);
}

/* Copies the transport's per-peer answer figures (health, status). */
static void refresh_peer_health(struct node* n) {
    for (size_t i = 0; i < n->n_peers; i++) {
        struct node_peer* p = &n->peers[i];
        struct transport_peer_health h;
        if (transport_peer_health(n->tr, p->id, &h) != 0) {
            continue;
        }
        p->last_rtt_us = h.last_rtt_us;
        p->consecutive_failures = h.consecutive_failures;
        if (h.last_ok_ms > p->last_ok_ms) {
            p->last_ok_ms = h.last_ok_ms;
        }
    }
}

static void handle_reply(struct node* n, struct transport_event* ev) {
    struct node_peer* p = node_peer_of(n, ev->peer);

    if (ev->type == TRANSPORT_EV_FAILED && p != NULL) {
        if (ev->channel == TRANSPORT_RAFT) {
            struct raft_event rev;
            memset(&rev, 0, sizeof(rev));
            rev.type = RAFT_EVENT_UNREACHABLE;
            rev.peer = codec_core_id(ev->peer);
            (void)raft_step(n->raft, &rev);
        }
    }
    if (ev->channel == TRANSPORT_RAFT && ev->type == TRANSPORT_EV_FAILED &&
        ev->cookie != 0) {
        node_forward_out_failed(n, ev->cookie, ev->delivered);
    }
    if (ev->channel != TRANSPORT_BULK) {
        return;
    }
    if (ev->cookie & (1ULL << 63)) {
        node_snapshot_on_reply(n, ev);
    } else {
        node_handle_forward_reply(n, ev);
    }
}

static void handle_event(struct node* n, struct transport_event* ev) {
    if (ev->type != TRANSPORT_EV_REQUEST) {
        handle_reply(n, ev);
        return;
    }
    if (ev->env == NULL) {
        return;
    }
    switch (ev->env->body_case) {
        case SKEIN__ENVELOPE__BODY_CLIENT_REQUEST:
            node_handle_client(n, ev);
            break;
        case SKEIN__ENVELOPE__BODY_ADMIN_REQUEST:
            node_handle_admin(n, ev);
            break;
        case SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT:
            node_snapshot_on_chunk(n, ev);
            break;
        case SKEIN__ENVELOPE__BODY_FORWARD_BATCH:
            node_handle_forward_batch(n, ev);
            break;
        case SKEIN__ENVELOPE__BODY_FORWARD_RESULTS:
            node_handle_forward_results(n, ev);
            break;
        default:
            if (codec_is_raft_body(ev->env)) {
                handle_raft_message(n, ev);
            } else if (ev->reply != NULL) {
                transport_reply(ev->reply, NULL);
                ev->reply = NULL;
            }
            break;
    }
}

/* ------------------------------------------------------------------ */
/* Ready batches                                                       */

/* Raft messages of one ready batch for one peer, sent together: in a
 * reply the peer left us (held >= 0), or else in one request. */
struct piggyback {
    uint64_t peer;
    int held; /* index in n->held, -1: a request of its own */
    ProtobufCBinaryData* bins;
    size_t count;
    size_t bytes;
    uint64_t cookie; /* of the one-way forwards among them, 0 = none */
};

/* Most bytes of raft messages sent as one envelope (a reply or a
 * request); what does not fit goes in the next one. */
#define NODE_PIGGYBACK_BYTES ((size_t)4 << 20)

/* Fills *env with the messages of pb as one EnvelopeBatch (*batch keeps
 * it; both point into pb). */
static void batch_envelope(struct node* n,
                           const struct piggyback* pb,
                           Skein__Envelope* env,
                           Skein__EnvelopeBatch* batch) {
    skein__envelope_batch__init(batch);
    skein__envelope__init(env);
    batch->n_envelopes = pb->count;
    batch->envelopes = pb->bins;
    env->has_cluster_id = 1;
    env->cluster_id = n->cfg.cluster_id;
    env->body_case = SKEIN__ENVELOPE__BODY_BATCH;
    env->batch = batch;
}

/* Sends the messages gathered for a peer (one envelope, or a batch of
 * them), in its held reply if it left one, and empties pb. */
static void piggyback_flush(struct node* n, struct piggyback* pb) {
    Skein__EnvelopeBatch batch;
    Skein__Envelope env;

    if (pb->count == 0) {
        return;
    }
    if (pb->held >= 0) {
        struct transport_server_ctx* ctx = n->held[pb->held].ctx;
        if (pb->count == 1) {
            transport_reply_bytes(ctx, pb->bins[0].data, pb->bins[0].len);
        } else {
            batch_envelope(n, pb, &env, &batch);
            transport_reply(ctx, &env);
        }
        n->held[pb->held].ctx = NULL;
        pb->held = -1; /* what else comes for this peer goes as a request */
        n->counters.raft_piggybacked += pb->count;
    } else if (pb->count == 1) {
        if (transport_send(n->tr, pb->peer, TRANSPORT_RAFT, pb->bins[0].data,
                           pb->bins[0].len, pb->cookie, false) != 0 &&
            pb->cookie != 0) {
            node_forward_out_failed(n, pb->cookie, false);
        }
        n->counters.raft_sent++;
    } else {
        batch_envelope(n, pb, &env, &batch);
        uint8_t* buf;
        size_t len;
        int rv = codec_pack_envelope(&env, &buf, &len);
        if (rv == 0) {
            rv = transport_send(n->tr, pb->peer, TRANSPORT_RAFT, buf, len,
                                pb->cookie, false);
            free(buf);
        }
        if (rv != 0 && pb->cookie != 0) {
            node_forward_out_failed(n, pb->cookie, false);
        }
        n->counters.raft_sent += pb->count;
    }
    pb->cookie = 0;
    for (size_t i = 0; i < pb->count; i++) {
        free(pb->bins[i].data);
    }
    pb->count = 0;
    pb->bytes = 0;
}

static int held_for(struct node* n, uint64_t peer);

void node_send_forward_out(struct node* n) {
    struct node_forward_out* o = &n->fwd_out;
    int h;

    if (o->data == NULL) {
        return;
    }
    if (raft_leader(n->raft) != codec_core_id(o->peer)) {
        /* The leader changed this round, before they left. */
        node_forward_out_failed(n, o->cookie, false);
        free(o->data);
        memset(o, 0, sizeof(*o));
        return;
    }
    h = held_for(n, o->peer);
    if (h >= 0 && !transport_peer_faulty(n->tr, o->peer)) {
        transport_reply_bytes(n->held[h].ctx, o->data, o->len);
        n->held[h].ctx = NULL;
    } else if (transport_send(n->tr, o->peer, TRANSPORT_RAFT, o->data, o->len,
                              o->cookie, false) != 0) {
        node_forward_out_failed(n, o->cookie, false);
    }
    free(o->data);
    memset(o, 0, sizeof(*o));
}

/* Sends the leader's answers to one-way forwarded writes it did not
 * propose, one ForwardResults per follower, and empties the list. */
static void send_forward_results(struct node* n) {
    while (n->n_fwd_results > 0) {
        uint64_t peer = n->fwd_results[0].peer;
        size_t k = 0;
        size_t count = 0;
        for (size_t i = 0; i < n->n_fwd_results; i++) {
            count += n->fwd_results[i].peer == peer;
        }
        uint64_t* tags = calloc(count, sizeof(*tags));
        ProtobufCBinaryData* resp = calloc(count, sizeof(*resp));
        for (size_t i = 0; i < n->n_fwd_results && tags && resp; i++) {
            if (n->fwd_results[i].peer == peer) {
                tags[k] = n->fwd_results[i].tag;
                resp[k].data = n->fwd_results[i].data;
                resp[k].len = n->fwd_results[i].len;
                k++;
            }
        }
        if (k == count) {
            Skein__ForwardResults fr = SKEIN__FORWARD_RESULTS__INIT;
            Skein__Envelope env = SKEIN__ENVELOPE__INIT;
            int h = held_for(n, peer);
            fr.n_tags = count;
            fr.tags = tags;
            fr.n_responses = count;
            fr.responses = resp;
            env.has_cluster_id = 1;
            env.cluster_id = n->cfg.cluster_id;
            env.has_from = 1;
            env.from = n->cfg.id;
            env.body_case = SKEIN__ENVELOPE__BODY_FORWARD_RESULTS;
            env.forward_results = &fr;
            if (h >= 0 && !transport_peer_faulty(n->tr, peer)) {
                transport_reply(n->held[h].ctx, &env);
                n->held[h].ctx = NULL;
            } else {
                node_send_envelope(n, peer, TRANSPORT_RAFT, &env, 0, false);
            }
        } /* else out of memory: the followers' deadlines answer them */
        free(tags);
        free(resp);
        /* Free this peer's results and keep the others, in order. */
        size_t keep = 0;
        for (size_t i = 0; i < n->n_fwd_results; i++) {
            if (n->fwd_results[i].peer == peer) {
                free(n->fwd_results[i].data);
            } else {
                n->fwd_results[keep++] = n->fwd_results[i];
            }
        }
        n->n_fwd_results = keep;
    }
}

/* Answers every reply handle still held (empty replies). */
static void release_held_replies(struct node* n) {
    for (size_t i = 0; i < n->n_held; i++) {
        if (n->held[i].ctx != NULL) {
            transport_reply_bytes(n->held[i].ctx, NULL, 0);
        }
    }
    n->n_held = 0;
}

/* The first unused reply handle `peer` left, or -1. */
static int held_for(struct node* n, uint64_t peer) {
    for (size_t i = 0; i < n->n_held; i++) {
        if (n->held[i].ctx != NULL && n->held[i].peer == peer) {
            return (int)i;
        }
    }
    return -1;
}

static void send_messages(struct node* n, const struct raft_ready* rd) {
    struct piggyback pbs[NODE_MAX_PEERS];
    size_t n_pbs = 0;

    for (size_t i = 0; i < rd->n_messages; i++) {
        const struct raft_message* m = &rd->messages[i];
        uint64_t to = codec_node_id(m->to);
        struct piggyback* pb = NULL;
        uint8_t* buf;
        size_t len;
        if (m->type == RAFT_MSG_SNAPSHOT) {
            node_snapshot_start_send(n, m);
            continue;
        }
        if (codec_pack_raft(m, n->cfg.cluster_id, &buf, &len) != 0) {
            continue;
        }
        for (size_t k = 0; k < n_pbs; k++) {
            if (pbs[k].peer == to) {
                pb = &pbs[k];
            }
        }
        if (pb == NULL && n_pbs < NODE_MAX_PEERS) {
            pb = &pbs[n_pbs];
            memset(pb, 0, sizeof(*pb));
            pb->peer = to;
            pb->held = -1;
            /* + 1: the one-way forwards waiting for this peer */
            pb->bins = calloc(rd->n_messages + 1, sizeof(*pb->bins));
            if (pb->bins == NULL) {
                pb = NULL;
            } else {
                int h = held_for(n, to);
                if (h >= 0 && !transport_peer_faulty(n->tr, to)) {
                    pb->held = h;
                }
                n_pbs++;
                if (n->fwd_out.peer == to && n->fwd_out.data != NULL) {
                    /* Our forwarded writes ride with our raft messages. */
                    pb->bins[0].data = n->fwd_out.data;
                    pb->bins[0].len = n->fwd_out.len;
                    pb->count = 1;
                    pb->bytes = n->fwd_out.len;
                    pb->cookie = pb->held >= 0 ? 0 : n->fwd_out.cookie;
                    memset(&n->fwd_out, 0, sizeof(n->fwd_out));
                }
            }
        }
        if (pb == NULL) {
            n->counters.raft_sent++;
            (void)transport_send(n->tr, to, TRANSPORT_RAFT, buf, len, 0, false);
            free(buf);
            continue;
        }
        if (pb->count > 0 && pb->bytes + len > NODE_PIGGYBACK_BYTES) {
            piggyback_flush(n, pb);
        }
        pb->bins[pb->count].data = buf;
        pb->bins[pb->count].len = len;
        pb->count++;
        pb->bytes += len;
    }
    for (size_t k = 0; k < n_pbs; k++) {
        piggyback_flush(n, &pbs[k]);
        free(pbs[k].bins);
    }
}

/* Writes the entries and syncs; returns 0 and the durable position. */
static int persist(struct node* n,
                   const struct raft_ready* rd,
                   raft_index* durable,
                   raft_term* durable_term) {
    uint64_t t0;
    int rv = RAFT_OK;

    if (rd->hard_state_changed) {
        rv = n->store.ops->save_hard_state(n->store.ctx, &rd->hard_state);
    }
    if (rv == RAFT_OK && rd->n_entries > 0) {
        rv = n->store.ops->append(n->store.ctx, rd->entries, rd->n_entries);
    }
    if (rv != RAFT_OK) {
        return rv;
    }
    t0 = now_us();
    rv = n->store.ops->sync(n->store.ctx, durable, durable_term);
    if (rv == RAFT_OK) {
        uint64_t us = now_us() - t0;
        n->counters.fsync_count++;
        n->counters.fsync_us_sum += us;
        if (us > n->counters.fsync_us_max) {
            n->counters.fsync_us_max = us;
        }
    }
    return rv;
}

static void fatal(struct node* n, const char* what, int rv) {
    fprintf(stderr,
            "skein-node %llu: %s failed (%d: %s): stopping rather than "
            "running on state that is not durable\n",
            (unsigned long long)n->cfg.id, what, rv, store_lmdb_errmsg(n->log));
    abort();
}

/* ------------------------------------------------------------------ */
/* Disk full: what could not be written waits in the backlog, in order, */
/* and is retried every tick; nothing is acknowledged meanwhile.        */

static bool is_disk_full(struct node* n) {
    return store_lmdb_last_error(n->log) == STORE_EDISKFULL;
}

static void backlog_clear(struct node* n) {
    for (size_t i = 0; i < n->backlog.n; i++) {
        free((void*)n->backlog.e[i].data);
    }
    n->backlog.n = 0;
    n->backlog.has_hs = false;
}

/* Copies a batch's hard state and entries behind what already waits. */
static void backlog_add(struct node* n, const struct raft_ready* rd) {
    struct node_backlog* b = &n->backlog;

    if (rd->hard_state_changed) {
        b->hs = rd->hard_state;
        b->has_hs = true;
    }
    if (rd->n_entries == 0) {
        return;
    }
    /* A batch replaces every waiting entry at or after its first index. */
    while (b->n > 0 && b->e[b->n - 1].index >= rd->entries[0].index) {
        free((void*)b->e[--b->n].data);
    }
    if (b->n + rd->n_entries > b->cap) {
        size_t cap = (b->n + rd->n_entries) * 2;
        struct raft_entry* e = realloc(b->e, cap * sizeof(*e));
        if (e == NULL) {
            fatal(n, "keeping entries while the disk is full", ENOMEM);
        }
        b->e = e;
        b->cap = cap;
    }
    for (size_t i = 0; i < rd->n_entries; i++) {
        struct raft_entry* d = &b->e[b->n++];
        uint8_t* data = malloc(rd->entries[i].len + 1);
        if (data == NULL) {
            fatal(n, "keeping entries while the disk is full", ENOMEM);
        }
        *d = rd->entries[i];
        if (d->len > 0) {
            memcpy(data, rd->entries[i].data, d->len);
        }
        d->data = data;
    }
}

static void step_persisted(struct node* n, raft_index index, raft_term term) {
    struct raft_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = RAFT_EVENT_PERSISTED;
    ev.index = index;
    ev.term = term;
    (void)raft_step(n->raft, &ev);
}

/* Retries the backlog; returns true once it is empty. */
static bool backlog_flush(struct node* n) {
    struct raft_ready rd;
    raft_index durable = 0;
    raft_term term = 0;
    bool had_entries = n->backlog.n > 0;

    if (n->backlog.n == 0 && !n->backlog.has_hs) {
        return true;
    }
    memset(&rd, 0, sizeof(rd));
    rd.hard_state_changed = n->backlog.has_hs;
    rd.hard_state = n->backlog.hs;
    rd.entries = n->backlog.e;
    rd.n_entries = n->backlog.n;
    if (persist(n, &rd, &durable, &term) != RAFT_OK) {
        if (!is_disk_full(n)) {
            fatal(n, "persisting the log", store_lmdb_last_error(n->log));
        }
        return false;
    }
    backlog_clear(n);
    n->disk_full = false;
    fprintf(stderr, "skein-node %llu: disk space is back, log writes resume\n",
            (unsigned long long)n->cfg.id);
    if (had_entries && durable > 0) {
        step_persisted(n, durable, term);
    }
    return true;
}

/* Applies what the log holds but the state machine missed (disk full). */
static void catch_up_apply(struct node* n) {
    char msg[STORE_ERRMSG_SIZE] = "";

    if (!n->apply_behind) {
        return;
    }
    if (store_replay(n->log, n->kv, raft_applied_index(n->raft), 4u << 20,
                     msg) == STORE_OK) {
        n->apply_behind = false;
    }
}

/* Applies `count` committed entries and answers the clients waiting on
 * them. */
static void apply_committed(struct node* n,
                            const struct raft_entry* committed,
                            size_t count) {
    struct kv_result* results;
    int rv;

    if (count == 0) {
        return;
    }
    for (size_t i = 0; i < count; i++) {
        if (committed[i].type == RAFT_ENTRY_CONF) {
            node_learn_addresses(n, committed[i].data, committed[i].len);
        }
    }
    if (n->apply_behind) {
        return; /* catch_up_apply replays these from the log */
    }
    results = calloc(count, sizeof(*results));
    if (results == NULL) {
        fatal(n, "allocating apply results", ENOMEM);
    }
    rv = kv_apply_batch(n->kv, committed, count, results);
    if (rv == STORE_EDISKFULL) {
        /* Nothing of the batch was applied; the waiting writes learn
         * their fate at their deadline (outcome unknown). */
        n->apply_behind = true;
        free(results);
        return;
    }
    if (rv != STORE_OK) {
        fatal(n, "applying committed entries", rv);
    }
    node_apply_results(n, committed, results, count);
    node_restore_applied(n, committed, results, count);
    free(results);
}

/* How many of a batch's committed entries may be applied before the batch
 * is persisted: those already durable in our own log, i.e. older than the
 * batch's first new entry. Committed entries are durable on a majority, so
 * applying and answering them does not wait for our sync of newer ones;
 * but the state store must never get ahead of our own durable log (after a
 * crash the log would end before the applied index). */
static size_t committed_before_persist(const struct node* n,
                                       const struct raft_ready* rd) {
    raft_index first_new = rd->n_entries > 0 ? rd->entries[0].index : 0;
    size_t count = 0;

    if (rd->snapshot != NULL || n->disk_full) {
        return 0; /* the backlog holds entries that are not durable */
    }
    while (count < rd->n_committed &&
           (first_new == 0 || rd->committed[count].index < first_new)) {
        count++;
    }
    return count;
}

/* Persists a batch; returns true once it is durable, false while it waits
 * in the backlog (disk full). */
static bool persist_batch(struct node* n,
                          const struct raft_ready* rd,
                          raft_index* durable,
                          raft_term* durable_term) {
    bool wrote = rd->hard_state_changed || rd->n_entries > 0;

    if (!wrote) {
        return true;
    }
    if (rd->n_entries == 0 && !rd->must_sync && !n->disk_full) {
        /* Only the commit index moved: it may be stored lazily (raft.h),
         * so it is staged and rides with the next append's transaction
         * instead of costing an fsync per acknowledgement round. */
        (void)n->store.ops->save_hard_state(n->store.ctx, &rd->hard_state);
        return true;
    }
    if (n->disk_full) {
        backlog_add(n, rd);
        *durable = 0; /* a successful flush steps PERSISTED itself */
        return backlog_flush(n);
    }
    if (persist(n, rd, durable, durable_term) == RAFT_OK) {
        return true;
    }
    if (!is_disk_full(n)) {
        fatal(n, "persisting the log", store_lmdb_last_error(n->log));
    }
    fprintf(stderr,
            "skein-node %llu: disk full: log writes wait, writes get 507\n",
            (unsigned long long)n->cfg.id);
    n->disk_full = true;
    backlog_add(n, rd);
    return false;
}

/* Applies the first `early` committed entries of a batch and serves the
 * reads they and the batch's read states allow, ahead of the batch's sync:
 * neither depends on our own log's durability (see
 * committed_before_persist). */
static void answer_before_persist(struct node* n,
                                  const struct raft_ready* rd,
                                  size_t early) {
    apply_committed(n, rd->committed, early);
    node_read_states(n, rd->reads, rd->n_reads);
    node_serve_reads(n);
}

static void process_ready(struct node* n) {
    for (int rounds = 0; rounds < 16 && raft_has_ready(n->raft); rounds++) {
        struct raft_ready rd;
        raft_index durable = 0;
        raft_term durable_term = 0;
        size_t early;
        bool persisted;

        raft_ready(n->raft, &rd);
        if (rd.snapshot != NULL) {
            if (node_snapshot_install(n, rd.snapshot) != 0) {
                fatal(n, "installing a snapshot", -1);
            }
            node_fail_unapplied_forwards(
                n,
                "this node caught up by snapshot before the forwarded "
                "write was confirmed");
        }
        /* Answering clients first takes our sync off their latency. */
        early = committed_before_persist(n, &rd);
        if (rd.must_sync || rd.snapshot != NULL) {
            answer_before_persist(n, &rd, early);
            persisted = persist_batch(n, &rd, &durable, &durable_term);
            if (persisted || !rd.must_sync) {
                send_messages(n, &rd);
            }
            /* else: a vote or term that is not durable never leaves. */
        } else {
            /* The leader's entries may leave before its own fsync: its
             * match counts only once PERSISTED is stepped (raft.h). */
            send_messages(n, &rd);
            answer_before_persist(n, &rd, early);
            persisted = persist_batch(n, &rd, &durable, &durable_term);
        }
        apply_committed(n, rd.committed + early, rd.n_committed - early);
        raft_advance(n->raft);
        node_snapshot_after_ready(n);
        if (persisted && rd.n_entries > 0 && durable > 0) {
            step_persisted(n, durable, durable_term);
        }
        node_serve_reads(n);
    }
}

/* ------------------------------------------------------------------ */
/* Loop                                                                */

raft_node_id node_pick_handoff(const struct raft_progress_info* prs,
                               size_t count,
                               raft_node_id self,
                               uint64_t fresh_ticks) {
    const struct raft_progress_info* best = NULL;
    bool best_fresh = false;
    uint64_t now = 0;

    for (size_t i = 0; i < count; i++) {
        if (prs[i].id == self) {
            now = prs[i].last_contact_tick;
        }
    }
    for (size_t i = 0; i < count; i++) {
        const struct raft_progress_info* p = &prs[i];
        bool fresh = p->last_contact_tick != 0 &&
                     now - p->last_contact_tick <= fresh_ticks;
        if (p->id == self || p->role != RAFT_VOTER || !p->recent_active) {
            continue;
        }
        if (best == NULL || (fresh && !best_fresh) ||
            (fresh == best_fresh &&
             (p->match > best->match ||
              (p->match == best->match &&
               p->last_contact_tick > best->last_contact_tick)))) {
            best = p;
            best_fresh = fresh;
        }
    }
    return best != NULL ? best->id : 0;
}

/* Hands leadership to the most up-to-date live voter, if we lead, so the
 * cluster does not wait an election timeout for us when we leave. */
static void hand_off_leadership(struct node* n) {
    struct raft_progress_info prs[RAFT_MAX_NODES];
    size_t count;
    raft_node_id best;

    if (raft_role(n->raft) != RAFT_LEADER) {
        return;
    }
    count = raft_progress(n->raft, prs, RAFT_MAX_NODES);
    /* A follower answers every heartbeat: two missed ones mean trouble. */
    best = node_pick_handoff(prs, count, raft_id(n->raft),
                             2u * n->cfg.heartbeat_ticks);
    if (best != 0) {
        (void)raft_transfer_leader(n->raft, best);
    }
}

static void begin_stop(struct node* n) {
    n->stopping = true;
    n->stop_deadline_ms = node_now_ms() + 2000;
    hand_off_leadership(n);
}

/* The hand-off node_request_handoff asked for, once. */
static bool handoff_due(struct node* n) {
    return !n->handed_off &&
           __atomic_load_n(&n->handoff_requested, __ATOMIC_ACQUIRE);
}

static void tick(struct node* n) {
    struct raft_event ev;
    uint64_t now = node_now_ms();

    if (now < n->tick_due_ms) {
        return;
    }
    if (now - n->tick_due_ms > 10u * n->cfg.tick_ms) {
        n->tick_due_ms = now; /* we were stalled: do not replay ticks */
    }
    while (n->tick_due_ms <= now) {
        memset(&ev, 0, sizeof(ev));
        ev.type = RAFT_EVENT_TICK;
        (void)raft_step(n->raft, &ev);
        n->tick_due_ms += n->cfg.tick_ms;
    }
    if (n->disk_full) {
        (void)backlog_flush(n);
    }
    catch_up_apply(n);
    refresh_peer_health(n);
    node_expire_requests(n);
    node_restore_tick(n);
    node_maybe_promote(n);
    node_maybe_compact(n);
}

void node_state_commit(struct node* n, bool force) {
    int64_t age = kv_pending_age_ms(n->kv);

    if (age < 0 || (!force && age < (int64_t)n->cfg.state_commit_ms)) {
        return;
    }
    int rv = kv_commit_pending(n->kv);
    if (rv != STORE_OK) {
        /* The batches since the last commit are gone from the state (not
         * from the log): replay them, as after a failed apply. */
        fprintf(stderr,
                "skein-node %llu: state commit failed (%s); "
                "replaying the log\n",
                (unsigned long long)n->cfg.id, store_strerror(rv));
        n->apply_behind = true;
    }
}

/* When the pending state transaction is due (deferred commit), or
 * UINT64_MAX without one. */
static uint64_t state_commit_due_ms(const struct node* n, uint64_t now) {
    int64_t age = kv_pending_age_ms(n->kv);

    if (age < 0) {
        return UINT64_MAX;
    }
    return age >= (int64_t)n->cfg.state_commit_ms
               ? now
               : now + (uint64_t)((int64_t)n->cfg.state_commit_ms - age);
}

/* Takes the queued events (at most cap); if `wait`, first sleeps until
 * one comes or a tick or state commit is due. */
static size_t take_events(struct node* n,
                          struct transport_event** batch,
                          size_t cap,
                          bool* stop,
                          bool wait) {
    size_t count = 0;

    pthread_mutex_lock(&n->mu);
    while (wait && n->ev_count == 0 && !n->stop_requested && !handoff_due(n)) {
        uint64_t now = node_now_ms();
        uint64_t due = n->tick_due_ms;
        struct timespec ts;
        uint64_t commit_due = state_commit_due_ms(n, now);
        if (commit_due < due) {
            due = commit_due;
        }
        if (now >= due) {
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        {
            uint64_t wait_ns = (due - now) * 1000000u;
            ts.tv_sec += (time_t)(wait_ns / 1000000000u);
            ts.tv_nsec += (long)(wait_ns % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
        }
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
    }
    while (n->ev_count > 0 && count < cap) {
        batch[count++] = n->events[n->ev_head];
        n->ev_head = (n->ev_head + 1) % NODE_EVENT_QUEUE_MAX;
        n->ev_count--;
    }
    *stop = n->stop_requested;
    pthread_mutex_unlock(&n->mu);
    return count;
}

/* A round with fewer events than this may wait for more (linger). */
#define NODE_LINGER_EVENTS 8
/* ... if at least this many clients wait for this node's answers. */
#define NODE_LINGER_CLIENTS 4

/* Clients waiting for this node's answers: callers of the embedded
 * gateway asleep in a local call (queued or pending here), or requests
 * that came over nng (a standalone gateway, tools) pending here. Every
 * pending local request has a caller asleep, so the larger of the two
 * counts each client once. */
static size_t clients_waiting(struct node* n) {
    size_t local = transport_local_waiting(n->tr);
    size_t pending = n->w_count + n->r_count + n->n_forwards;
    return local > pending ? local : pending;
}

/* Under load, waits batch_linger_us for more events when this round has
 * few, and takes them: one fsync, one message per peer and one read
 * confirmation then cover more requests, which is worth more than the
 * wait once every round is short of CPU (group commit, like MySQL's
 * binlog_group_commit_sync_delay). Never with few clients waiting, so a
 * lone client sees no delay. Returns the new count. */
static size_t linger(struct node* n,
                     struct transport_event** batch,
                     size_t count,
                     size_t cap,
                     bool* stop) {
    struct timespec ts;

    if (n->cfg.batch_linger_us == 0 || count == 0 ||
        count >= NODE_LINGER_EVENTS || *stop ||
        clients_waiting(n) < NODE_LINGER_CLIENTS) {
        return count;
    }
    n->counters.lingered_rounds++;
    ts.tv_sec = (time_t)(n->cfg.batch_linger_us / 1000000u);
    ts.tv_nsec = (long)(n->cfg.batch_linger_us % 1000000u) * 1000L;
    nanosleep(&ts, NULL);
    return count + take_events(n, batch + count, cap - count, stop, false);
}

/* One line per leadership change: what an operator looks for first. */
static void log_role_change(struct node* n) {
    enum raft_role role = raft_role(n->raft);
    raft_term term = raft_current_term(n->raft);
    raft_node_id leader = raft_leader(n->raft);

    if (role == n->logged_role && term == n->logged_term &&
        leader == n->logged_leader) {
        return;
    }
    if (role == RAFT_LEADER || leader != 0 || role != n->logged_role) {
        if (leader != 0) {
            fprintf(stderr, "skein-node %llu: term %llu: %s, leader %llu\n",
                    (unsigned long long)n->cfg.id, (unsigned long long)term,
                    raft_role_name(role),
                    (unsigned long long)codec_node_id(leader));
        } else {
            fprintf(stderr, "skein-node %llu: term %llu: %s, no leader\n",
                    (unsigned long long)n->cfg.id, (unsigned long long)term,
                    raft_role_name(role));
        }
    }
    n->logged_role = role;
    n->logged_term = term;
    n->logged_leader = leader;
}

static void* node_loop(void* arg) {
    struct node* n = arg;
    size_t cap = 4096;
    struct transport_event** batch = calloc(cap, sizeof(*batch));

    n->tick_due_ms = node_now_ms() + n->cfg.tick_ms;
    if (kv_set_commit_delay(n->kv, n->cfg.state_commit_ms) != STORE_OK) {
        fatal(n, "setting the state's commit delay", -1);
    }
    while (batch != NULL) {
        bool stop = false;
        size_t count = take_events(n, batch, cap, &stop, true);
        count = linger(n, batch, count, cap, &stop);
        for (size_t i = 0; i < count; i++) {
            handle_event(n, batch[i]);
            transport_event_free(batch[i]);
        }
        node_flush_proposals(n);
        node_flush_forwards(n);
        node_flush_reads(n);
        tick(n);
        node_snapshot_poll_builds(n);
        process_ready(n);
        /* Reads held back for an answer that just came go now. */
        if (node_flush_reads(n)) {
            process_ready(n);
        }
        log_role_change(n);
        if (n->was_leader && raft_role(n->raft) != RAFT_LEADER) {
            node_fail_writes(n, SKEIN__CLIENT_RESPONSE__STATUS__UNKNOWN_OUTCOME,
                             "leadership lost before the write committed");
        }
        n->was_leader = raft_role(n->raft) == RAFT_LEADER;
        if (handoff_due(n)) {
            n->handed_off = true;
            hand_off_leadership(n);
            process_ready(n);
        }
        if (stop && !n->stopping) {
            begin_stop(n);
            process_ready(n);
        }
        node_send_forward_out(n);
        node_check_forwards(n);
        send_forward_results(n);
        release_held_replies(n);
        node_state_commit(n, false);
        if (n->stopping && (raft_role(n->raft) != RAFT_LEADER ||
                            node_now_ms() >= n->stop_deadline_ms)) {
            break;
        }
    }
    free(batch);
    node_snapshot_wait_builds(n);
    node_fail_all(n);
    node_restore_close(n);
    (void)kv_sync(n->kv);
    {
        raft_index d;
        raft_term t;
        (void)n->store.ops->sync(n->store.ctx, &d, &t);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */

static void bootstrap_conf(const struct node_config* cfg,
                           struct raft_conf* conf) {
    memset(conf, 0, sizeof(*conf));
    if (cfg->join) {
        return; /* learns its conf from the leader */
    }
    conf->ids[conf->count] = codec_core_id(cfg->id);
    conf->roles[conf->count++] = RAFT_VOTER;
    for (uint32_t i = 0; i < cfg->n_peers && conf->count < RAFT_MAX_NODES;
         i++) {
        conf->ids[conf->count] = codec_core_id(cfg->peers[i].id);
        conf->roles[conf->count++] = RAFT_VOTER;
    }
}

static int open_stores(struct node* n,
                       struct store_recovery* rec,
                       char* errbuf,
                       size_t errlen) {
    char dir[NODE_URL_MAX + 16];
    char msg[STORE_ERRMSG_SIZE] = "";
    struct store_lmdb_options lo;
    struct kv_options ko;
    struct raft_conf boot;
    int rv;

    memset(&lo, 0, sizeof(lo));
    memset(&ko, 0, sizeof(ko));
    lo.map_size = ko.map_size = n->cfg.map_size;
    lo.durability = ko.durability = n->cfg.durability;
    /* The log is the durability point: the state may lag it after a crash
     * and is replayed from it (store_recover.c). One flush per apply batch
     * (balanced) keeps the state uncorrupted without a second one. */
    if (ko.durability == STORE_DURABILITY_STRICT) {
        ko.durability = STORE_DURABILITY_BALANCED;
    }
    snprintf(dir, sizeof(dir), "%s/log", n->cfg.data_dir);
    if (mkdir_p(dir) != 0 ||
        (rv = store_lmdb_open(dir, &lo, &n->log, msg)) != STORE_OK) {
        snprintf(errbuf, errlen, "log store %s: %s", dir,
                 msg[0] ? msg : strerror(errno));
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s/state", n->cfg.data_dir);
    if (mkdir_p(dir) != 0 ||
        (rv = kv_open(dir, &ko, &n->kv, msg)) != STORE_OK) {
        snprintf(errbuf, errlen, "state store %s: %s", dir,
                 msg[0] ? msg : strerror(errno));
        return -1;
    }
    bootstrap_conf(&n->cfg, &boot);
    if (store_recover(n->log, n->kv, &boot, rec, msg) != STORE_OK) {
        snprintf(errbuf, errlen, "recovery: %s", msg);
        return -1;
    }
    if (rec->replay_to >= rec->replay_from) {
        if (store_replay(n->log, n->kv, rec->replay_to, 4u << 20, msg) !=
            STORE_OK) {
            snprintf(errbuf, errlen, "replaying the log: %s", msg);
            return -1;
        }
        rec->start.applied = kv_applied_index(n->kv);
    }
    store_lmdb_store(n->log, &n->store);
    n->store.ops->storage(n->store.ctx, &n->view);
    return 0;
}

static int start_raft(struct node* n,
                      const struct store_recovery* rec,
                      char* errbuf,
                      size_t errlen) {
    struct raft_config rc;
    int rv;

    raft_config_default(&rc, codec_core_id(n->cfg.id));
    rc.election_ticks = n->cfg.election_ticks;
    rc.heartbeat_ticks = n->cfg.heartbeat_ticks;
    rc.seed = node_wall_ms() ^ ((uint64_t)getpid() << 20) ^ n->cfg.id;
    rc.pre_vote = n->cfg.pre_vote;
    rc.check_quorum = n->cfg.check_quorum;
    rc.max_entry_bytes = KV_VALUE_MAX + 64 * 1024;
    rc.learner_catchup_gap = 1000;
    rv = raft_init(&rc, &n->view, &rec->start, &n->raft);
    if (rv != RAFT_OK) {
        snprintf(errbuf, errlen, "raft: %s", raft_strerror(rv));
        return -1;
    }
    return 0;
}

/* Members added at run time are known from the last conf entry applied. */
static void learn_stored_addresses(struct node* n) {
    uint8_t* buf = malloc(RAFT_CONF_ENCODED_MAX + RAFT_CONF_CONTEXT_MAX);
    size_t len = 0;
    raft_index conf_index = 0;

    if (buf != NULL &&
        kv_conf(n->kv, buf, RAFT_CONF_ENCODED_MAX + RAFT_CONF_CONTEXT_MAX, &len,
                &conf_index) == STORE_OK &&
        len > 0) {
        node_learn_addresses(n, buf, len);
    }
    free(buf);
}

int node_start(const struct node_config* cfg,
               struct node** out,
               char* errbuf,
               size_t errlen) {
    struct node* n = calloc(1, sizeof(*n));
    struct store_recovery rec;
    struct transport_config tc;

    *out = NULL;
    if (n == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    n->cfg = *cfg;
    n->start_ms = node_now_ms();
    n->rng = node_wall_ms() ^ cfg->id;
    {
        /* Forward tags differ from every earlier run's: an entry this node
         * forwarded before a restart may still be applied after it, and
         * must not answer a new client whose write took the same slot. */
        uuid_t u;
        uint64_t r;
        uuid_generate_random(u);
        memcpy(&r, u, sizeof(r));
        n->next_forward_tag = r & ((1ULL << 46) - 1);
    }
    /* Read contexts must not repeat across restarts: an answer the leader
     * sent to the previous incarnation could otherwise release a new read
     * at an older index (a stale read). */
    n->next_read_ctx = (node_wall_ms() << 20) ^ ((uint64_t)getpid() << 4);
    snprintf(n->inproc_url, sizeof(n->inproc_url), "inproc://skein-%llu",
             (unsigned long long)cfg->id);
    snprintf(n->snap_dir, sizeof(n->snap_dir), "%s/snapshots", cfg->data_dir);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    n->events = calloc(NODE_EVENT_QUEUE_MAX, sizeof(*n->events));
    n->writes = calloc(NODE_PENDING_MAX, sizeof(*n->writes));
    n->reads = calloc(NODE_PENDING_MAX, sizeof(*n->reads));
    n->forwards = calloc(NODE_PENDING_MAX, sizeof(*n->forwards));
    if (n->events == NULL || n->writes == NULL || n->reads == NULL ||
        n->forwards == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        node_join(n);
        return -1;
    }
    if (mkdir_p(n->snap_dir) != 0) {
        snprintf(errbuf, errlen, "data directory %s: %s", n->snap_dir,
                 strerror(errno));
        node_join(n);
        return -1;
    }
    if (open_stores(n, &rec, errbuf, errlen) != 0 ||
        start_raft(n, &rec, errbuf, errlen) != 0) {
        node_join(n);
        return -1;
    }
    memset(&tc, 0, sizeof(tc));
    tc.cluster_id = cfg->cluster_id;
    tc.listen_url = cfg->listen_url;
    tc.inproc_url = n->inproc_url;
    tc.recv_max_bytes = 64u << 20;
    tc.server_contexts = 512;
    tc.raft_timeout_ms = 1000;
    tc.bulk_timeout_ms = cfg->write_timeout_ms + 1000;
    tc.connect_timeout_ms = 500;
    tc.deliver = node_deliver;
    tc.deliver_arg = n;
    if (transport_start(&tc, &n->tr, errbuf, errlen) != 0) {
        node_join(n);
        return -1;
    }
    for (uint32_t i = 0; i < cfg->n_peers; i++) {
        node_add_peer(n, cfg->peers[i].id, cfg->peers[i].url,
                      cfg->peers[i].http);
    }
    learn_stored_addresses(n);
    if (pthread_create(&n->thread, NULL, node_loop, n) != 0) {
        snprintf(errbuf, errlen, "cannot start the node thread");
        node_join(n);
        return -1;
    }
    n->thread_started = true;
    *out = n;
    return 0;
}

void node_request_stop(struct node* n) {
    pthread_mutex_lock(&n->mu);
    n->stop_requested = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void node_request_handoff(struct node* n) {
    pthread_mutex_lock(&n->mu);
    __atomic_store_n(&n->handoff_requested, true, __ATOMIC_RELEASE);
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void node_join(struct node* n) {
    if (n == NULL) {
        return;
    }
    if (n->thread_started) {
        pthread_join(n->thread, NULL);
    }
    /* The transport goes first: after it, no callback can queue. */
    transport_stop(n->tr);
    while (n->events != NULL && n->ev_count > 0) {
        struct transport_event* ev = n->events[n->ev_head];
        n->ev_head = (n->ev_head + 1) % NODE_EVENT_QUEUE_MAX;
        n->ev_count--;
        transport_event_free(ev);
    }
    node_snapshot_close_all(n);
    backlog_clear(n);
    free(n->backlog.e);
    raft_close(n->raft);
    if (n->kv != NULL) {
        kv_close(n->kv);
    }
    if (n->log != NULL) {
        store_lmdb_close(n->log);
    }
    free(n->events);
    free(n->writes);
    free(n->reads);
    free(n->forwards);
    for (size_t i = 0; i < n->n_fwd_results; i++) {
        free(n->fwd_results[i].data);
    }
    free(n->fwd_results);
    free(n->fwd_out.data);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

const char* node_inproc_url(const struct node* n) {
    return n->inproc_url;
}

int node_call_local(void* arg,
                    const uint8_t* data,
                    size_t len,
                    uint32_t timeout_ms,
                    uint8_t** reply,
                    size_t* reply_len) {
    struct node* n = arg;
    return transport_call_local(n->tr, data, len, timeout_ms, reply, reply_len);
}
