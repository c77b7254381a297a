/*
 * node_admin.c - status, membership, leadership transfer, forced resync,
 * fault injection and backups: the admin requests behind /status and
 * the /_raft endpoints. Restores (SnapshotWriteRequest) are handled in
 * node_restore.c.
 *
 * Follower health (leader's view), as documented in the README:
 *  unknown   never heard from since this node became leader;
 *  desynced  needs a snapshot: its next entry was compacted, a snapshot is
 *            being sent, or 10 requests in a row failed;
 *  lagging   more than NODE_LAG_HEALTHY entries behind, or silent for an
 *            election timeout;
 *  healthy   otherwise.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "cpus.h"
#include "node_internal.h"

#define ST(x)                  SKEIN__CLIENT_RESPONSE__STATUS__##x
#define NODE_LAG_HEALTHY       100
#define NODE_FAILURES_DESYNCED 10

void node_reply_admin_status(struct node* n,
                             struct transport_server_ctx* reply,
                             int status,
                             const char* error) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    raft_node_id leader = raft_leader(n->raft);

    resp.has_status = 1;
    resp.status = (Skein__ClientResponse__Status)status;
    resp.error = (char*)error;
    if (leader != 0) {
        resp.has_leader_known = 1;
        resp.leader_known = 1;
        resp.has_leader_hint = 1;
        resp.leader_hint = codec_node_id(leader);
    }
    node_reply_admin(reply, &resp);
}

/* ------------------------------------------------------------------ */
/* Addresses travel in conf entries (raft_change_conf_ctx context):    */
/* one "id url http" line per member.                                  */

static size_t build_address_book(struct node* n,
                                 uint64_t extra_id,
                                 const char* extra_url,
                                 const char* extra_http,
                                 uint8_t* buf,
                                 size_t cap) {
    size_t len = 0;
    int w;

    w = snprintf((char*)buf, cap, "%llu %s %s\n", (unsigned long long)n->cfg.id,
                 n->cfg.listen_url,
                 n->cfg.http_addr[0] ? n->cfg.http_addr : "-");
    if (w < 0 || (size_t)w >= cap) {
        return 0;
    }
    len = (size_t)w;
    for (uint32_t i = 0; i < n->n_peers; i++) {
        struct node_peer* p = &n->peers[i];
        if (p->id == extra_id) {
            continue;
        }
        w = snprintf((char*)buf + len, cap - len, "%llu %s %s\n",
                     (unsigned long long)p->id, p->url,
                     p->http[0] ? p->http : "-");
        if (w < 0 || (size_t)w >= cap - len) {
            return len;
        }
        len += (size_t)w;
    }
    if (extra_url != NULL) {
        w = snprintf((char*)buf + len, cap - len, "%llu %s %s\n",
                     (unsigned long long)extra_id, extra_url,
                     extra_http && extra_http[0] ? extra_http : "-");
        if (w > 0 && (size_t)w < cap - len) {
            len += (size_t)w;
        }
    }
    return len;
}

void node_learn_addresses(struct node* n, const uint8_t* data, size_t len) {
    struct raft_conf conf;
    size_t used = 0;
    char line[3 * NODE_URL_MAX];

    if (raft_conf_decode_prefix(data, len, &conf, &used) != RAFT_OK) {
        return;
    }
    while (used < len) {
        size_t end = used;
        unsigned long long id;
        char url[NODE_URL_MAX];
        char http[NODE_URL_MAX];
        while (end < len && data[end] != '\n') {
            end++;
        }
        if (end - used < sizeof(line)) {
            memcpy(line, data + used, end - used);
            line[end - used] = '\0';
            if (sscanf(line, "%llu %255s %255s", &id, url, http) == 3) {
                node_add_peer(n, id, url, strcmp(http, "-") == 0 ? "" : http);
            }
        }
        used = end + 1;
    }
}

/* ------------------------------------------------------------------ */
/* Status                                                              */

static Skein__FollowerStatus__Health health_of(
    struct node* n,
    const struct raft_progress_info* pr,
    const struct node_peer* p) {
    raft_index last = raft_last_index(n->raft);

    if (pr->last_contact_tick == 0 && (p == NULL || p->last_ok_ms == 0)) {
        return SKEIN__FOLLOWER_STATUS__HEALTH__UNKNOWN;
    }
    if (pr->state == RAFT_PROGRESS_SNAPSHOT ||
        pr->match + 1 < raft_first_index(n->raft) ||
        (p != NULL && p->consecutive_failures >= NODE_FAILURES_DESYNCED)) {
        return SKEIN__FOLLOWER_STATUS__HEALTH__DESYNCED;
    }
    /* "Silent" is judged by the last answer, not by CheckQuorum's flag,
     * which the core clears at the start of every round (admin N2). */
    if (last - pr->match > NODE_LAG_HEALTHY ||
        raft_tick_count(n->raft) - pr->last_contact_tick >
            n->cfg.election_ticks) {
        return SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING;
    }
    return SKEIN__FOLLOWER_STATUS__HEALTH__HEALTHY;
}

struct status_buffers {
    Skein__FollowerStatus fs[RAFT_MAX_NODES];
    Skein__FollowerStatus* fps[RAFT_MAX_NODES];
    Skein__Configuration conf;
    Skein__ResyncStats rs;
    char cpus[256];
};

static void fill_followers(struct node* n,
                           Skein__StatusResponse* s,
                           struct status_buffers* b) {
    struct raft_progress_info prs[RAFT_MAX_NODES];
    size_t count = raft_progress(n->raft, prs, RAFT_MAX_NODES);
    raft_index last = raft_last_index(n->raft);

    for (size_t i = 0; i < count; i++) {
        uint64_t id = codec_node_id(prs[i].id);
        struct node_peer* p = node_peer_of(n, id);
        Skein__FollowerStatus* f = &b->fs[s->n_followers];
        if (id == n->cfg.id) {
            continue;
        }
        skein__follower_status__init(f);
        f->has_id = 1;
        f->id = id;
        f->address = p != NULL ? p->url : (char*)"";
        f->http_address = p != NULL ? p->http : (char*)"";
        f->has_health = 1;
        f->health = health_of(n, &prs[i], p);
        f->has_role = 1;
        f->role = prs[i].role == RAFT_LEARNER ? SKEIN__MEMBER__ROLE__LEARNER
                                              : SKEIN__MEMBER__ROLE__VOTER;
        f->has_progress_state = 1;
        f->progress_state = (Skein__FollowerStatus__ProgressState)prs[i].state;
        f->has_match_index = 1;
        f->match_index = prs[i].match;
        f->has_next_index = 1;
        f->next_index = prs[i].next;
        f->has_lag = 1;
        f->lag = last > prs[i].match ? last - prs[i].match : 0;
        f->has_last_latency_ms = 1;
        f->last_latency_ms = p != NULL ? (p->last_rtt_us + 999) / 1000 : 0;
        f->has_consecutive_failures = 1;
        f->consecutive_failures = p != NULL ? p->consecutive_failures : 0;
        f->has_inflight = 1;
        f->inflight = prs[i].inflight;
        b->fps[s->n_followers++] = f;
    }
    s->followers = b->fps;
}

static void fill_status(struct node* n,
                        Skein__StatusResponse* s,
                        struct status_buffers* b) {
    struct kv_stats st;
    struct transport_stats ts;
    const struct raft_snapshot_meta* snap = raft_snapshot(n->raft);
    raft_node_id leader = raft_leader(n->raft);

    memset(&st, 0, sizeof(st));
    (void)kv_stats(n->kv, &st);
    transport_stats(n->tr, &ts);
    s->has_node_id = 1;
    s->node_id = n->cfg.id;
    s->has_role = 1;
    s->role = (Skein__StatusResponse__Role)raft_role(n->raft);
    s->has_term = 1;
    s->term = raft_current_term(n->raft);
    if (leader != 0) {
        s->has_leader_known = 1;
        s->leader_known = 1;
        s->has_leader_id = 1;
        s->leader_id = codec_node_id(leader);
    }
    s->has_commit_index = 1;
    s->commit_index = raft_commit_index(n->raft);
    s->has_last_applied = 1;
    s->last_applied = st.applied_index;
    s->has_first_log_index = 1;
    s->first_log_index = raft_first_index(n->raft);
    s->has_last_log_index = 1;
    s->last_log_index = raft_last_index(n->raft);
    s->has_snapshot_index = 1;
    s->snapshot_index = snap->index;
    s->has_snapshot_term = 1;
    s->snapshot_term = snap->term;
    s->has_state_hash = 1;
    s->state_hash = st.hash;
    s->has_entry_count = 1;
    s->entry_count = st.count;
    s->has_write_seq = 1;
    s->write_seq = st.seq;
    s->has_uptime_ms = 1;
    s->uptime_ms = node_now_ms() - n->start_ms;
    s->address = n->cfg.listen_url;
    s->http_address = n->cfg.http_addr;
    s->has_dropped_messages = 1;
    s->dropped_messages = ts.decode_errors + ts.foreign_cluster +
                          ts.queue_drops + n->events_dropped;
    s->has_forwarded_writes = 1;
    s->forwarded_writes = n->counters.forwarded_writes;
    s->has_forward_requests = 1;
    s->forward_requests = n->counters.forward_requests;
    s->has_raft_sent = 1;
    s->raft_sent = n->counters.raft_sent;
    s->has_raft_piggybacked = 1;
    s->raft_piggybacked = n->counters.raft_piggybacked;
    s->has_forwards_applied = 1;
    s->forwards_applied = n->counters.forwards_applied;
    s->has_forward_results_sent = 1;
    s->forward_results_sent = n->counters.forward_results_sent;
    s->has_forward_results_unmatched = 1;
    s->forward_results_unmatched = n->counters.forward_results_unmatched;
    s->has_lingered_rounds = 1;
    s->lingered_rounds = n->counters.lingered_rounds;
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0) {
        s->cpus = cpus_format(&cpus, b->cpus, sizeof(b->cpus));
    }
    s->has_read_index_requests = 1;
    s->read_index_requests = n->counters.read_index_requests;
    s->has_fault_drops = 1;
    s->fault_drops = ts.fault_drops;
    s->has_fault_dups = 1;
    s->fault_dups = ts.fault_dups;
    {
        struct kv_restore_staging staged;
        if (kv_restore_staging(n->kv, &staged) == STORE_OK) {
            s->has_restore_staged_upload = 1;
            s->restore_staged_upload = staged.upload_id;
            s->has_restore_staged_bytes = 1;
            s->restore_staged_bytes = staged.bytes;
        }
    }
    s->has_fsync_count = 1;
    s->fsync_count = n->counters.fsync_count;
    s->has_fsync_us_sum = 1;
    s->fsync_us_sum = n->counters.fsync_us_sum;
    s->has_fsync_us_max = 1;
    s->fsync_us_max = n->counters.fsync_us_max;
    skein__resync_stats__init(&b->rs);
    b->rs.has_snapshots_created = 1;
    b->rs.snapshots_created = n->counters.snapshots_created;
    b->rs.has_send_attempts = 1;
    b->rs.send_attempts = n->counters.snapshot_send_attempts;
    b->rs.has_send_successes = 1;
    b->rs.send_successes = n->counters.snapshot_send_successes;
    b->rs.has_send_failures = 1;
    b->rs.send_failures = n->counters.snapshot_send_failures;
    b->rs.has_snapshots_received = 1;
    b->rs.snapshots_received = n->counters.snapshots_received;
    b->rs.has_snapshots_applied = 1;
    b->rs.snapshots_applied = n->counters.snapshots_applied;
    s->resync_stats = &b->rs;
    node_fill_configuration(n, raft_conf(n->raft), &b->conf);
    s->configuration = &b->conf;
    fill_followers(n, s, b);
}

static void handle_status(struct node* n, struct transport_server_ctx* reply) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__StatusResponse s = SKEIN__STATUS_RESPONSE__INIT;
    struct status_buffers* b = calloc(1, sizeof(*b));

    if (b == NULL) {
        node_reply_admin_status(n, reply, ST(INTERNAL), "out of memory");
        return;
    }
    fill_status(n, &s, b);
    resp.has_status = 1;
    resp.status = ST(OK);
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS;
    resp.node_status = &s;
    node_reply_admin(reply, &resp);
    codec_free_configuration(&b->conf);
    free(b);
}

static void reply_configuration(struct node* n,
                                struct transport_server_ctx* reply) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__Configuration conf;

    node_fill_configuration(n, raft_conf(n->raft), &conf);
    resp.has_status = 1;
    resp.status = ST(OK);
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_CONFIGURATION;
    resp.configuration = &conf;
    node_reply_admin(reply, &resp);
    codec_free_configuration(&conf);
}

/* ------------------------------------------------------------------ */
/* Membership, leadership                                              */

static int status_of_raft(int rv) {
    switch (rv) {
        case RAFT_OK:
            return ST(OK);
        case RAFT_ENOTLEADER:
        case RAFT_ETRANSFER:
            return ST(NOT_LEADER);
        case RAFT_ENOTFOUND:
            return ST(NOT_FOUND);
        case RAFT_ECONFPENDING:
        case RAFT_ENOTREADY:
        case RAFT_EBUSY:
        case RAFT_ENOTCAUGHTUP:
            return ST(NO_QUORUM);
        default:
            return ST(BAD_REQUEST);
    }
}

static void handle_member_add(struct node* n,
                              struct transport_server_ctx* reply,
                              const Skein__MemberAddRequest* req) {
    uint8_t book[RAFT_CONF_CONTEXT_MAX];
    size_t len;
    int rv;

    if (raft_role(n->raft) != RAFT_LEADER) {
        node_reply_admin_status(n, reply, ST(NOT_LEADER), "not the leader");
        return;
    }
    if (!req->has_id || req->address == NULL ||
        strncmp(req->address, "tcp://", 6) != 0 || req->id >= UINT64_MAX - 1) {
        node_reply_admin_status(n, reply, ST(BAD_REQUEST),
                                "member needs an id and a tcp:// address");
        return;
    }
    len = build_address_book(n, req->id, req->address, req->http_address, book,
                             sizeof(book));
    rv = raft_change_conf_ctx(n->raft, RAFT_CONF_ADD_LEARNER,
                              codec_core_id(req->id), book, len, NULL);
    if (rv != RAFT_OK) {
        node_reply_admin_status(n, reply, status_of_raft(rv),
                                raft_strerror(rv));
        return;
    }
    node_add_peer(n, req->id, req->address, req->http_address);
    {
        struct node_peer* p = node_peer_of(n, req->id);
        if (p != NULL) {
            n->keep_learner[p - n->peers] = req->learner;
        }
    }
    reply_configuration(n, reply);
}

static void handle_member_remove(struct node* n,
                                 struct transport_server_ctx* reply,
                                 const Skein__MemberRemoveRequest* req) {
    uint8_t book[RAFT_CONF_CONTEXT_MAX];
    size_t len;
    int rv;

    if (!req->has_id) {
        node_reply_admin_status(n, reply, ST(BAD_REQUEST), "member id missing");
        return;
    }
    len = build_address_book(n, UINT64_MAX, NULL, NULL, book, sizeof(book));
    rv = raft_change_conf_ctx(n->raft, RAFT_CONF_REMOVE, codec_core_id(req->id),
                              book, len, NULL);
    if (rv != RAFT_OK) {
        node_reply_admin_status(n, reply, status_of_raft(rv),
                                raft_strerror(rv));
        return;
    }
    reply_configuration(n, reply);
}

void node_maybe_promote(struct node* n) {
    const struct raft_conf* conf;

    if (raft_role(n->raft) != RAFT_LEADER) {
        return;
    }
    conf = raft_conf(n->raft);
    for (uint32_t i = 0; i < conf->count; i++) {
        struct node_peer* p;
        if (conf->roles[i] != RAFT_LEARNER) {
            continue;
        }
        p = node_peer_of(n, codec_node_id(conf->ids[i]));
        if (p != NULL && n->keep_learner[p - n->peers]) {
            continue;
        }
        /* Refused while it lags or another change is pending: retried on
         * the next tick. */
        if (raft_change_conf(n->raft, RAFT_CONF_PROMOTE, conf->ids[i], NULL) ==
            RAFT_OK) {
            return;
        }
    }
}

static void handle_transfer(struct node* n,
                            struct transport_server_ctx* reply,
                            const Skein__TransferLeaderRequest* req) {
    int rv;

    if (!req->has_to) {
        node_reply_admin_status(n, reply, ST(BAD_REQUEST), "target missing");
        return;
    }
    rv = raft_transfer_leader(n->raft, codec_core_id(req->to));
    node_reply_admin_status(n, reply, status_of_raft(rv),
                            rv == RAFT_OK ? NULL : raft_strerror(rv));
}

static void handle_force_resync(struct node* n,
                                struct transport_server_ctx* reply,
                                const Skein__ForceResyncRequest* req) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__ForceResyncResponse fr = SKEIN__FORCE_RESYNC_RESPONSE__INIT;
    char msg[128];
    int rv;

    if (!req->has_target) {
        node_reply_admin_status(n, reply, ST(BAD_REQUEST), "target missing");
        return;
    }
    rv = raft_send_snapshot(n->raft, codec_core_id(req->target));
    if (rv == RAFT_ECOMPACTED) {
        /* No snapshot yet: the applied state is one. */
        struct raft_snapshot_meta meta;
        if (raft_snapshot_taken(n->raft, raft_applied_index(n->raft), &meta) ==
            RAFT_OK) {
            rv = raft_send_snapshot(n->raft, codec_core_id(req->target));
        }
    }
    if (rv == RAFT_ENOTLEADER || rv == RAFT_ENOTFOUND) {
        node_reply_admin_status(n, reply, status_of_raft(rv),
                                raft_strerror(rv));
        return;
    }
    snprintf(msg, sizeof(msg), "%s",
             rv == RAFT_OK ? "snapshot resync started" : raft_strerror(rv));
    fr.has_target = 1;
    fr.target = req->target;
    fr.has_success = 1;
    fr.success = rv == RAFT_OK;
    fr.message = msg;
    resp.has_status = 1;
    resp.status = ST(OK);
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_FORCE_RESYNC;
    resp.force_resync = &fr;
    node_reply_admin(reply, &resp);
}

static void handle_fault(struct node* n,
                         struct transport_server_ctx* reply,
                         const Skein__FaultInjectRequest* req) {
    if (!n->cfg.fault_injection) {
        node_reply_admin_status(
            n, reply, ST(BAD_REQUEST),
            "fault injection is disabled: start the node with "
            "--enable-fault-injection");
        return;
    }
    if ((req->has_drop_probability &&
         !(req->drop_probability >= 0 && req->drop_probability <= 1)) ||
        (req->has_duplicate_probability &&
         !(req->duplicate_probability >= 0 &&
           req->duplicate_probability <= 1))) {
        node_reply_admin_status(
            n, reply, ST(BAD_REQUEST),
            "drop_probability and duplicate_probability must be within [0, 1]");
        return;
    }
    if (req->has_peer && node_peer_of(n, req->peer) == NULL) {
        /* Node ids start at 0: an absent peer means every peer, never 0. */
        node_reply_admin_status(n, reply, ST(BAD_REQUEST),
                                "fault injection: peer is not a member "
                                "this node sends to (leave it out for "
                                "every peer)");
        return;
    }
    transport_set_fault(n->tr, req->has_peer ? req->peer : TRANSPORT_ALL_PEERS,
                        req->partition ? 1.0 : req->drop_probability,
                        req->duplicate_probability, req->delay_ms,
                        req->jitter_ms, req->clear);
    node_reply_admin_status(n, reply, ST(OK), NULL);
}

/* ------------------------------------------------------------------ */
/* Backups                                                             */

/* Answers one GET /_raft/snapshot chunk of the pinned backup. */
static void serve_backup_chunk(struct node* n,
                               struct transport_server_ctx* reply,
                               uint64_t offset,
                               uint32_t max) {
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__SnapshotReadResponse sr = SKEIN__SNAPSHOT_READ_RESPONSE__INIT;
    Skein__Configuration conf;
    struct raft_conf rc;
    uint8_t* buf;
    size_t got = 0;
    bool done = false;

    n->backup_used_ms = node_now_ms();
    buf = malloc(max);
    if (buf == NULL || kv_snapshot_reader_read(n->backup_reader, offset, buf,
                                               max, &got, &done) != STORE_OK) {
        free(buf);
        node_reply_admin_status(n, reply, ST(NOT_FOUND), "offset past the end");
        return;
    }
    memset(&conf, 0, sizeof(conf));
    skein__configuration__init(&conf);
    if (n->backup_info.conf_len > 0 &&
        raft_conf_decode_prefix(n->backup_info.conf, n->backup_info.conf_len,
                                &rc, &(size_t){0}) == RAFT_OK) {
        node_fill_configuration(n, &rc, &conf);
    }
    sr.has_snapshot_id = 1;
    sr.snapshot_id = n->backup_id;
    sr.has_last_included_index = 1;
    sr.last_included_index = n->backup_info.stats.applied_index;
    sr.has_last_included_term = 1;
    sr.last_included_term = n->backup_info.stats.applied_term;
    sr.has_total_size = 1;
    sr.total_size = kv_snapshot_reader_size(n->backup_reader);
    sr.has_offset = 1;
    sr.offset = offset;
    sr.has_data = 1;
    sr.data.data = buf;
    sr.data.len = got;
    sr.has_done = 1;
    sr.done = done;
    sr.configuration = &conf;
    resp.has_status = 1;
    resp.status = ST(OK);
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_READ;
    resp.snapshot_read = &sr;
    node_reply_admin(reply, &resp);
    codec_free_configuration(&conf);
    free(buf);
}

static void handle_snapshot_read(struct node* n,
                                 struct transport_server_ctx* reply,
                                 const Skein__SnapshotReadRequest* req) {
    char path[NODE_URL_MAX + 64];
    uint32_t max =
        req->has_max_bytes && req->max_bytes > 0 ? req->max_bytes : 1u << 20;

    if (max > NODE_SNAPSHOT_CHUNK) {
        max = NODE_SNAPSHOT_CHUNK;
    }
    if (!req->has_snapshot_id || req->snapshot_id == 0) {
        /* A new backup: the copy is made off the loop (a large state takes
         * seconds) and the request is answered when it is there
         * (node_admin_backup_built). Requests meanwhile share it. */
        if (n->n_backup_waiters == NODE_BACKUP_WAITERS) {
            node_reply_admin_status(n, reply, ST(NO_QUORUM),
                                    "too many backups at once: retry shortly");
            return;
        }
        n->backup_waiters[n->n_backup_waiters].reply = reply;
        n->backup_waiters[n->n_backup_waiters].max_bytes = max;
        n->n_backup_waiters++;
        if (!n->backup_build.running) {
            kv_snapshot_reader_close(n->backup_reader);
            n->backup_reader = NULL;
            snprintf(path, sizeof(path), "%s/backup.mdb", n->snap_dir);
            if (node_snapshot_build_start(n, &n->backup_build, path) != 0) {
                n->backup_build.rv = STORE_EIO;
                snprintf(n->backup_build.err, sizeof(n->backup_build.err),
                         "could not start making the backup");
                node_admin_backup_built(n);
            }
        }
        return;
    }
    if (n->backup_reader == NULL || req->snapshot_id != n->backup_id) {
        node_reply_admin_status(n, reply, ST(NOT_FOUND),
                                "unknown or expired snapshot id");
        return;
    }
    serve_backup_chunk(n, reply, req->offset, max);
}

void node_admin_backup_built(struct node* n) {
    struct node_snap_build* b = &n->backup_build;
    char err[STORE_ERRMSG_SIZE] = "";
    bool ok = b->rv == STORE_OK &&
              kv_snapshot_reader_open(b->path, &n->backup_reader, NULL, err) ==
                  STORE_OK;

    if (ok) {
        n->backup_info = b->info;
        n->rng = n->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        n->backup_id = (n->rng >> 1) | 1;
    }
    for (size_t i = 0; i < n->n_backup_waiters; i++) {
        struct node_backup_waiter* w = &n->backup_waiters[i];
        if (ok) {
            serve_backup_chunk(n, w->reply, 0, w->max_bytes);
        } else {
            node_reply_admin_status(n, w->reply, ST(INTERNAL),
                                    b->rv != STORE_OK ? b->err : err);
        }
    }
    n->n_backup_waiters = 0;
}

void node_handle_admin(struct node* n, struct transport_event* ev) {
    const Skein__AdminRequest* req = ev->env->admin_request;
    struct transport_server_ctx* reply = ev->reply;

    if (reply == NULL) {
        return;
    }
    if (raft_role(n->raft) != RAFT_LEADER &&
        (req->op_case == SKEIN__ADMIN_REQUEST__OP_TRANSFER_LEADER ||
         req->op_case == SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD ||
         req->op_case == SKEIN__ADMIN_REQUEST__OP_MEMBER_REMOVE ||
         req->op_case == SKEIN__ADMIN_REQUEST__OP_FORCE_RESYNC ||
         req->op_case == SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_WRITE)) {
        /* Changes only the leader can make: any node takes them (an
         * embedded gateway only talks to its own node). */
        node_forward_to_leader(n, ev);
        return;
    }
    ev->reply = NULL;
    switch (req->op_case) {
        case SKEIN__ADMIN_REQUEST__OP_STATUS:
            handle_status(n, reply);
            break;
        case SKEIN__ADMIN_REQUEST__OP_TRANSFER_LEADER:
            handle_transfer(n, reply, req->transfer_leader);
            break;
        case SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD:
            handle_member_add(n, reply, req->member_add);
            break;
        case SKEIN__ADMIN_REQUEST__OP_MEMBER_REMOVE:
            handle_member_remove(n, reply, req->member_remove);
            break;
        case SKEIN__ADMIN_REQUEST__OP_MEMBER_LIST:
            reply_configuration(n, reply);
            break;
        case SKEIN__ADMIN_REQUEST__OP_FORCE_RESYNC:
            handle_force_resync(n, reply, req->force_resync);
            break;
        case SKEIN__ADMIN_REQUEST__OP_FAULT_INJECT:
            handle_fault(n, reply, req->fault_inject);
            break;
        case SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_READ:
            handle_snapshot_read(n, reply, req->snapshot_read);
            break;
        case SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_WRITE:
            node_restore_handle(n, reply, req->snapshot_write);
            break;
        default:
            node_reply_admin_status(n, reply, ST(BAD_REQUEST),
                                    "unknown operation");
            break;
    }
}
