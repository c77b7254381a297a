/*
 * mock_node.c - a fake node for the gateway tests (see mock_node.h).
 *
 * Entries live in a fixed array, in creation order; ids are UUID-shaped
 * and increase, so creation order is id order (as the real node lists).
 * Creates are deduplicated by request_id, like the real state machine.
 */
#include "mock_node.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skein.pb-c.h"

#define MOCK_WORKERS     16
#define MOCK_MAX_ENTRIES 4096
#define MOCK_MAX_MEMBERS 16
#define MOCK_LIST_CAP    1000
#define MOCK_RID_MAX     160

struct mock_entry {
    char id[40];
    char* key;
    char* value;
    uint64_t seq;
    int64_t created_at;
    bool live;
    char rid[MOCK_RID_MAX]; /* request id of the create */
};

struct mock_member {
    uint64_t id;
    char address[64];
    char http[64];
    bool learner;
};

struct mock_node {
    nng_socket sock;
    pthread_t workers[MOCK_WORKERS];
    int nworkers;
    atomic_bool stop;
    uint64_t id;
    pthread_mutex_t mu; /* everything below */
    bool leader;
    uint64_t leader_id;
    char leader_url[128];
    bool has_leader_url;
    unsigned delay_ms;
    bool silent;
    int forced_status;
    unsigned forced_count;
    uint64_t cluster_id;
    struct mock_entry entries[MOCK_MAX_ENTRIES];
    size_t n_entries;
    uint64_t write_seq;
    unsigned client_requests;
    unsigned admin_requests;
    char last_rid[MOCK_RID_MAX];
    int last_consistency;
    uint64_t last_force_resync;
    uint64_t last_transfer;
    uint64_t last_append_from;
    struct mock_member members[MOCK_MAX_MEMBERS];
    size_t n_members;
    uint8_t* upload; /* snapshot being restored */
    size_t upload_len;
    int restore_matches;
};

uint8_t mock_snapshot_byte(size_t i) {
    return (uint8_t)((i * 2654435761u) >> 13);
}

static void mock_sleep_ms(unsigned ms) {
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- client requests --------------------------------------------------- */

static struct mock_entry* mock_find(struct mock_node* m, const char* id) {
    for (size_t i = 0; id != NULL && i < m->n_entries; i++) {
        if (m->entries[i].live && strcmp(m->entries[i].id, id) == 0) {
            return &m->entries[i];
        }
    }
    return NULL;
}

static void mock_fill_entry(Skein__KVEntry* out,
                            const struct mock_entry* e,
                            uint64_t source) {
    out->id = (char*)e->id;
    out->key = e->key;
    out->value = e->value;
    out->has_seq = true;
    out->seq = e->seq;
    out->has_source_node = true;
    out->source_node = source;
    out->has_created_at = true;
    out->created_at = e->created_at;
}

static void mock_not_leader(struct mock_node* m, Skein__ClientResponse* r) {
    r->status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER;
    r->has_leader_hint = m->leader_id != 0;
    r->leader_hint = m->leader_id;
    r->leader_url = m->has_leader_url ? m->leader_url : NULL;
}

static void mock_create(struct mock_node* m,
                        const Skein__ClientRequest* rq,
                        Skein__ClientResponse* r,
                        Skein__KVEntry* entry) {
    const Skein__CreateOp* op = rq->create;
    for (size_t i = 0; rq->request_id != NULL && i < m->n_entries; i++) {
        if (strcmp(m->entries[i].rid, rq->request_id) == 0) {
            mock_fill_entry(entry, &m->entries[i], m->id); /* dedup */
            r->entry = entry;
            r->status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
            return;
        }
    }
    if (m->n_entries == MOCK_MAX_ENTRIES || op->key == NULL ||
        op->value == NULL) {
        r->status = SKEIN__CLIENT_RESPONSE__STATUS__BAD_REQUEST;
        r->error = (char*)"mock: full or missing key/value";
        return;
    }
    struct mock_entry* e = &m->entries[m->n_entries++];
    snprintf(e->id, sizeof e->id, "00000000-0000-4000-8000-%012zu",
             m->n_entries);
    e->key = strdup(op->key);
    e->value = strdup(op->value);
    e->seq = ++m->write_seq;
    e->created_at = 1700000000123LL + (int64_t)m->n_entries;
    e->live = true;
    snprintf(e->rid, sizeof e->rid, "%s",
             rq->request_id != NULL ? rq->request_id : "");
    mock_fill_entry(entry, e, m->id);
    r->entry = entry;
    r->status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
}

static void mock_update_delete(struct mock_node* m,
                               const Skein__ClientRequest* rq,
                               Skein__ClientResponse* r,
                               Skein__KVEntry* entry) {
    bool update = rq->op_case == SKEIN__CLIENT_REQUEST__OP_UPDATE;
    const char* id = update ? rq->update->id : rq->delete_->id;
    bool has_seq =
        update ? rq->update->has_expected_seq : rq->delete_->has_expected_seq;
    uint64_t seq =
        update ? rq->update->expected_seq : rq->delete_->expected_seq;
    struct mock_entry* e = mock_find(m, id);
    if (e == NULL) {
        r->status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND;
        return;
    }
    if (has_seq && e->seq != seq) {
        r->status = SKEIN__CLIENT_RESPONSE__STATUS__CAS_MISMATCH;
        r->has_current_seq = true;
        r->current_seq = e->seq;
        return;
    }
    if (update) {
        free(e->value);
        e->value = strdup(rq->update->value);
        if (rq->update->key != NULL) {
            free(e->key);
            e->key = strdup(rq->update->key);
        }
        e->seq = ++m->write_seq;
        mock_fill_entry(entry, e, m->id);
        r->entry = entry;
    } else {
        e->live = false;
        ++m->write_seq;
    }
    r->status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
}

/* list: entries after `after` with `key`, at most limit (capped). */
static void mock_list(struct mock_node* m,
                      const Skein__ListOp* op,
                      Skein__ClientResponse* r,
                      Skein__KVEntry* pool,
                      Skein__KVEntry** ptrs) {
    uint32_t limit = op->has_limit && op->limit > 0 ? op->limit : 100;
    if (limit > MOCK_LIST_CAP) {
        limit = MOCK_LIST_CAP;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct mock_entry* e = &m->entries[i];
        if (!e->live || (op->after != NULL && strcmp(e->id, op->after) <= 0) ||
            (op->key != NULL && strcmp(e->key, op->key) != 0)) {
            continue;
        }
        if (n == limit) {
            r->has_truncated = true;
            r->truncated = true;
            break;
        }
        Skein__KVEntry init = SKEIN__KVENTRY__INIT;
        pool[n] = init;
        mock_fill_entry(&pool[n], e, m->id);
        ptrs[n] = &pool[n];
        n++;
    }
    r->n_entries = n;
    r->entries = ptrs;
    r->status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
}

static void mock_read(struct mock_node* m,
                      const Skein__ClientRequest* rq,
                      Skein__ClientResponse* r,
                      Skein__KVEntry* entry,
                      Skein__KVEntry* pool,
                      Skein__KVEntry** ptrs) {
    m->last_consistency = rq->has_consistency ? (int)rq->consistency : -1;
    size_t live = 0;
    const struct mock_entry* first = NULL;
    for (size_t i = 0; i < m->n_entries; i++) {
        if (m->entries[i].live) {
            live++;
            first = first != NULL ? first : &m->entries[i];
        }
    }
    switch (rq->op_case) {
        case SKEIN__CLIENT_REQUEST__OP_GET: {
            struct mock_entry* e = mock_find(m, rq->get->id);
            r->status = e != NULL ? SKEIN__CLIENT_RESPONSE__STATUS__OK
                                  : SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND;
            if (e != NULL) {
                mock_fill_entry(entry, e, m->id);
                r->entry = entry;
            }
            break;
        }
        case SKEIN__CLIENT_REQUEST__OP_LIST:
            mock_list(m, rq->list, r, pool, ptrs);
            break;
        case SKEIN__CLIENT_REQUEST__OP_COUNT:
            r->status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
            r->has_count = true;
            r->count = live;
            break;
        default: /* random id */
            r->status = first != NULL
                            ? SKEIN__CLIENT_RESPONSE__STATUS__OK
                            : SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND;
            r->id = first != NULL ? (char*)first->id : NULL;
            break;
    }
}

static size_t mock_client(struct mock_node* m,
                          const Skein__Envelope* in,
                          uint8_t** out) {
    const Skein__ClientRequest* rq = in->client_request;
    Skein__ClientResponse r = SKEIN__CLIENT_RESPONSE__INIT;
    Skein__KVEntry entry = SKEIN__KVENTRY__INIT;
    Skein__KVEntry* pool = calloc(MOCK_LIST_CAP, sizeof *pool);
    Skein__KVEntry** ptrs = calloc(MOCK_LIST_CAP, sizeof *ptrs);
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    if (pool == NULL || ptrs == NULL) {
        abort();
    }
    bool write = rq->op_case == SKEIN__CLIENT_REQUEST__OP_CREATE ||
                 rq->op_case == SKEIN__CLIENT_REQUEST__OP_UPDATE ||
                 rq->op_case == SKEIN__CLIENT_REQUEST__OP_DELETE;
    pthread_mutex_lock(&m->mu);
    m->client_requests++;
    snprintf(m->last_rid, sizeof m->last_rid, "%s",
             rq->request_id != NULL ? rq->request_id : "");
    r.request_id = rq->request_id;
    r.has_status = true;
    if (m->forced_count > 0) {
        m->forced_count--;
        r.status = (Skein__ClientResponse__Status)m->forced_status;
        if (r.status == SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER) {
            mock_not_leader(m, &r);
        }
    } else if (write && !m->leader) {
        mock_not_leader(m, &r);
    } else if (rq->op_case == SKEIN__CLIENT_REQUEST__OP_CREATE) {
        mock_create(m, rq, &r, &entry);
    } else if (write) {
        mock_update_delete(m, rq, &r, &entry);
    } else {
        mock_read(m, rq, &r, &entry, pool, ptrs);
    }
    env.has_cluster_id = m->cluster_id != 0;
    env.cluster_id = m->cluster_id;
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
    env.client_response = &r;
    size_t len = skein__envelope__get_packed_size(&env);
    *out = malloc(len + 1);
    skein__envelope__pack(&env, *out);
    pthread_mutex_unlock(&m->mu);
    free(pool);
    free(ptrs);
    return len;
}

/* ---- admin requests ---------------------------------------------------- */

/* Status: two followers, 2 (lag 0, 3 ms) and 3 (lag 5, 1 ms). */
static void mock_status(struct mock_node* m,
                        Skein__AdminResponse* r,
                        Skein__StatusResponse* s,
                        Skein__FollowerStatus* f,
                        Skein__FollowerStatus** fp,
                        Skein__ResyncStats* rs,
                        Skein__Configuration* conf,
                        Skein__Member* mem,
                        Skein__Member** mp) {
    s->has_node_id = true;
    s->node_id = m->id;
    s->has_role = true;
    s->role = m->leader ? SKEIN__STATUS_RESPONSE__ROLE__LEADER
                        : SKEIN__STATUS_RESPONSE__ROLE__FOLLOWER;
    s->has_term = true;
    s->term = 3;
    s->has_leader_id = true;
    s->leader_id = m->leader ? m->id : m->leader_id;
    s->has_commit_index = s->has_last_applied = s->has_last_log_index = true;
    s->commit_index = s->last_applied = s->last_log_index = m->write_seq + 1;
    s->has_state_hash = true;
    s->state_hash = 0xfeedfacecafebeefULL;
    s->has_entry_count = true;
    s->entry_count = m->n_entries;
    s->address = (char*)"inproc://mock";
    s->http_address = (char*)"127.0.0.1:8001";
    static const uint64_t lag[2] = {0, 5}, lat[2] = {3, 1};
    static const char* const addr[2] = {"tcp://127.0.0.1:9002",
                                        "tcp://127.0.0.1:9003"};
    static const char* const http[2] = {"127.0.0.1:8002", "127.0.0.1:8003"};
    for (int i = 0; m->leader && i < 2; i++) {
        Skein__FollowerStatus init = SKEIN__FOLLOWER_STATUS__INIT;
        f[i] = init;
        f[i].has_id = true;
        f[i].id = (uint64_t)i + 2;
        f[i].address = (char*)addr[i];
        f[i].http_address = (char*)http[i];
        f[i].has_health = true;
        f[i].health = i == 0 ? SKEIN__FOLLOWER_STATUS__HEALTH__HEALTHY
                             : SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING;
        f[i].has_match_index = true;
        f[i].match_index = s->last_log_index - lag[i];
        f[i].has_lag = true;
        f[i].lag = lag[i];
        f[i].has_last_latency_ms = true;
        f[i].last_latency_ms = lat[i];
        fp[i] = &f[i];
        s->n_followers++;
    }
    s->followers = fp;
    rs->has_snapshots_created = rs->has_send_attempts = true;
    rs->has_send_successes = rs->has_send_failures = true;
    rs->snapshots_created = 2;
    rs->send_attempts = 3;
    rs->send_successes = 2;
    rs->send_failures = 1;
    s->resync_stats = rs;
    for (size_t i = 0; i < m->n_members; i++) {
        Skein__Member init = SKEIN__MEMBER__INIT;
        mem[i] = init;
        mem[i].has_id = true;
        mem[i].id = m->members[i].id;
        mem[i].address = m->members[i].address;
        mem[i].http_address = m->members[i].http;
        mem[i].has_role = true;
        mem[i].role = m->members[i].learner ? SKEIN__MEMBER__ROLE__LEARNER
                                            : SKEIN__MEMBER__ROLE__VOTER;
        mp[i] = &mem[i];
    }
    conf->n_members = m->n_members;
    conf->members = mp;
    s->configuration = conf;
    r->result_case = SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS;
    r->node_status = s;
}

static void mock_members(struct mock_node* m,
                         const Skein__AdminRequest* rq,
                         Skein__AdminResponse* r) {
    if (rq->op_case == SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD &&
        m->n_members < MOCK_MAX_MEMBERS) {
        struct mock_member* mm = &m->members[m->n_members++];
        mm->id = rq->member_add->id;
        snprintf(mm->address, sizeof mm->address, "%s",
                 rq->member_add->address);
        snprintf(mm->http, sizeof mm->http, "%s",
                 rq->member_add->http_address != NULL
                     ? rq->member_add->http_address
                     : "");
        mm->learner = true;
    } else if (rq->op_case == SKEIN__ADMIN_REQUEST__OP_MEMBER_REMOVE) {
        size_t k = 0;
        for (size_t i = 0; i < m->n_members; i++) {
            if (m->members[i].id != rq->member_remove->id) {
                m->members[k++] = m->members[i];
            }
        }
        if (k == m->n_members) {
            r->status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND;
            r->error = (char*)"no such member";
            return;
        }
        m->n_members = k;
    }
    r->result_case = SKEIN__ADMIN_RESPONSE__RESULT_CONFIGURATION;
}

static void mock_snapshot_read(const Skein__SnapshotReadRequest* rq,
                               Skein__AdminResponse* r,
                               Skein__SnapshotReadResponse* sr,
                               uint8_t* chunk) {
    if ((rq->snapshot_id != 0 && rq->snapshot_id != 7) ||
        rq->offset > MOCK_SNAPSHOT_BYTES) {
        r->status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND;
        return;
    }
    size_t len = MOCK_SNAPSHOT_BYTES - rq->offset;
    if (len > rq->max_bytes) {
        len = rq->max_bytes;
    }
    if (len > (1u << 20)) {
        len = 1u << 20;
    }
    for (size_t i = 0; i < len; i++) {
        chunk[i] = mock_snapshot_byte(rq->offset + i);
    }
    sr->has_snapshot_id = sr->has_total_size = sr->has_offset = true;
    sr->snapshot_id = 7;
    sr->total_size = MOCK_SNAPSHOT_BYTES;
    sr->offset = rq->offset;
    sr->has_last_included_index = sr->has_last_included_term = true;
    sr->last_included_index = MOCK_SNAPSHOT_INDEX;
    sr->last_included_term = MOCK_SNAPSHOT_TERM;
    sr->has_data = true;
    sr->data.data = chunk;
    sr->data.len = len;
    sr->has_done = true;
    sr->done = rq->offset + len == MOCK_SNAPSHOT_BYTES;
    r->result_case = SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_READ;
    r->snapshot_read = sr;
}

static void mock_snapshot_write(struct mock_node* m,
                                const Skein__SnapshotWriteRequest* rq,
                                Skein__AdminResponse* r,
                                Skein__SnapshotWriteResponse* w) {
    if (rq->abort) {
        free(m->upload);
        m->upload = NULL;
        m->upload_len = 0;
        r->result_case = SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_WRITE;
        r->snapshot_write = w;
        return;
    }
    if (rq->offset != (rq->upload_id == 0 ? 0 : m->upload_len)) {
        r->status = SKEIN__CLIENT_RESPONSE__STATUS__BAD_REQUEST;
        return;
    }
    if (rq->upload_id == 0) {
        free(m->upload);
        m->upload = NULL;
        m->upload_len = 0;
    }
    uint8_t* p = realloc(m->upload, m->upload_len + rq->data.len + 1);
    memcpy(p + m->upload_len, rq->data.data, rq->data.len);
    m->upload = p;
    m->upload_len += rq->data.len;
    w->has_upload_id = w->has_next_offset = true;
    w->upload_id = 9;
    w->next_offset = m->upload_len;
    if (rq->done) {
        bool same = m->upload_len == MOCK_SNAPSHOT_BYTES;
        for (size_t i = 0; same && i < m->upload_len; i++) {
            same = m->upload[i] == mock_snapshot_byte(i);
        }
        m->restore_matches = same ? 1 : 0;
        w->has_restored = true;
        w->restored = true;
        w->has_last_included_index = w->has_last_included_term = true;
        w->last_included_index = MOCK_SNAPSHOT_INDEX;
        w->last_included_term = MOCK_SNAPSHOT_TERM;
    }
    r->result_case = SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_WRITE;
    r->snapshot_write = w;
}

static size_t mock_admin(struct mock_node* m,
                         const Skein__Envelope* in,
                         uint8_t** out) {
    const Skein__AdminRequest* rq = in->admin_request;
    Skein__AdminResponse r = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__StatusResponse s = SKEIN__STATUS_RESPONSE__INIT;
    Skein__FollowerStatus f[2];
    Skein__FollowerStatus* fp[2];
    Skein__ResyncStats rs = SKEIN__RESYNC_STATS__INIT;
    Skein__Configuration conf = SKEIN__CONFIGURATION__INIT;
    Skein__Member mem[MOCK_MAX_MEMBERS];
    Skein__Member* mp[MOCK_MAX_MEMBERS];
    Skein__ForceResyncResponse fr = SKEIN__FORCE_RESYNC_RESPONSE__INIT;
    Skein__SnapshotReadResponse sr = SKEIN__SNAPSHOT_READ_RESPONSE__INIT;
    Skein__SnapshotWriteResponse sw = SKEIN__SNAPSHOT_WRITE_RESPONSE__INIT;
    uint8_t* chunk = malloc(1u << 20);
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    if (chunk == NULL) {
        abort();
    }
    pthread_mutex_lock(&m->mu);
    m->admin_requests++;
    r.has_status = true;
    r.status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
    bool needs_leader = rq->op_case != SKEIN__ADMIN_REQUEST__OP_STATUS &&
                        rq->op_case != SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_READ;
    if (needs_leader && !m->leader) {
        r.status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER;
        r.has_leader_hint = m->leader_id != 0;
        r.leader_hint = m->leader_id;
    } else {
        switch (rq->op_case) {
            case SKEIN__ADMIN_REQUEST__OP_STATUS:
                mock_status(m, &r, &s, f, fp, &rs, &conf, mem, mp);
                break;
            case SKEIN__ADMIN_REQUEST__OP_FORCE_RESYNC:
                m->last_force_resync = rq->force_resync->target;
                fr.has_target = fr.has_success = true;
                fr.target = rq->force_resync->target;
                fr.success = true;
                r.result_case = SKEIN__ADMIN_RESPONSE__RESULT_FORCE_RESYNC;
                r.force_resync = &fr;
                break;
            case SKEIN__ADMIN_REQUEST__OP_TRANSFER_LEADER:
                m->last_transfer = rq->transfer_leader->to;
                break;
            case SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_READ:
                mock_snapshot_read(rq->snapshot_read, &r, &sr, chunk);
                break;
            case SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_WRITE:
                mock_snapshot_write(m, rq->snapshot_write, &r, &sw);
                break;
            default:
                mock_members(m, rq, &r);
                if (r.result_case ==
                    SKEIN__ADMIN_RESPONSE__RESULT_CONFIGURATION) {
                    Skein__StatusResponse tmp = SKEIN__STATUS_RESPONSE__INIT;
                    Skein__AdminResponse ignore = SKEIN__ADMIN_RESPONSE__INIT;
                    mock_status(m, &ignore, &tmp, f, fp, &rs, &conf, mem, mp);
                    r.configuration = &conf;
                }
                break;
        }
    }
    env.has_cluster_id = m->cluster_id != 0;
    env.cluster_id = m->cluster_id;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE;
    env.admin_response = &r;
    size_t len = skein__envelope__get_packed_size(&env);
    *out = malloc(len + 1);
    skein__envelope__pack(&env, *out);
    pthread_mutex_unlock(&m->mu);
    free(chunk);
    return len;
}

/* AppendEntries: success, match = prev + entries. */
static size_t mock_append(struct mock_node* m,
                          const Skein__Envelope* in,
                          uint8_t** out) {
    Skein__AppendEntriesResponse ar = SKEIN__APPEND_ENTRIES_RESPONSE__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    pthread_mutex_lock(&m->mu);
    m->last_append_from = in->from;
    pthread_mutex_unlock(&m->mu);
    ar.has_term = ar.has_success = ar.has_match_index = true;
    ar.term = in->append_entries->term;
    ar.success = true;
    ar.match_index =
        in->append_entries->prev_log_index + in->append_entries->n_entries;
    env.has_from = true;
    env.from = m->id;
    env.has_to = true;
    env.to = in->from;
    env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE;
    env.append_entries_response = &ar;
    size_t len = skein__envelope__get_packed_size(&env);
    *out = malloc(len + 1);
    skein__envelope__pack(&env, *out);
    return len;
}

/* ---- workers ----------------------------------------------------------- */

/* Builds the reply to one request; 0 bytes = an empty envelope. */
static size_t mock_handle(struct mock_node* m,
                          const Skein__Envelope* in,
                          uint8_t** out) {
    *out = NULL;
    switch (in->body_case) {
        case SKEIN__ENVELOPE__BODY_CLIENT_REQUEST:
            return mock_client(m, in, out);
        case SKEIN__ENVELOPE__BODY_ADMIN_REQUEST:
            return mock_admin(m, in, out);
        case SKEIN__ENVELOPE__BODY_APPEND_ENTRIES:
            return mock_append(m, in, out);
        default:
            return 0;
    }
}

static void mock_serve_one(struct mock_node* m,
                           nng_ctx ctx,
                           nng_aio* aio,
                           nng_msg* msg) {
    Skein__Envelope* in =
        skein__envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    nng_msg_free(msg);
    pthread_mutex_lock(&m->mu);
    bool silent = m->silent;
    unsigned delay = m->delay_ms;
    pthread_mutex_unlock(&m->mu);
    if (silent) {
        if (in != NULL) {
            skein__envelope__free_unpacked(in, NULL);
        }
        return;
    }
    for (unsigned waited = 0; waited < delay && !atomic_load(&m->stop);
         waited += 10) {
        mock_sleep_ms(10);
    }
    if (atomic_load(&m->stop)) { /* dying: never answer */
        if (in != NULL) {
            skein__envelope__free_unpacked(in, NULL);
        }
        return;
    }
    uint8_t* bytes = NULL;
    size_t len = in != NULL ? mock_handle(m, in, &bytes) : 0;
    if (in != NULL) {
        skein__envelope__free_unpacked(in, NULL);
    }
    nng_msg* reply;
    if (nng_msg_alloc(&reply, len) == 0) {
        if (len > 0) {
            memcpy(nng_msg_body(reply), bytes, len);
        }
        nng_aio_set_msg(aio, reply);
        /* A long timeout: a REP send waits for the pipe, which on a busy
         * machine can take a while, and giving up drops a reply the
         * gateway then waits for until its deadline. */
        nng_aio_set_timeout(aio, 30000);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        if (rv != 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (!atomic_load(&m->stop)) {
                fprintf(stderr, "mock %llu: reply lost after %.3f s: %s\n",
                        (unsigned long long)m->id,
                        (double)(t1.tv_sec - t0.tv_sec) +
                            (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                        nng_strerror(rv));
            }
            nng_msg_free(reply);
        }
    }
    free(bytes);
}

/*
 * One worker: its own context, and separate aios for receiving and
 * sending. nng 1.5.2 can let a timeout that races an operation's
 * completion fail the NEXT operation on the same aio at once with
 * NNG_ETIMEDOUT; with one aio, a reply send after a 50 ms receive timeout
 * was sometimes dropped that way (the gateway then waited for its
 * deadline).
 */
static void* mock_worker(void* arg) {
    struct mock_node* m = arg;
    nng_ctx ctx;
    nng_aio* raio;
    nng_aio* saio;
    if (nng_ctx_open(&ctx, m->sock) != 0) {
        return NULL;
    }
    if (nng_aio_alloc(&raio, NULL, NULL) != 0) {
        nng_ctx_close(ctx);
        return NULL;
    }
    if (nng_aio_alloc(&saio, NULL, NULL) != 0) {
        nng_aio_free(raio);
        nng_ctx_close(ctx);
        return NULL;
    }
    while (!atomic_load(&m->stop)) {
        nng_aio_set_timeout(raio, 50);
        nng_ctx_recv(ctx, raio);
        nng_aio_wait(raio);
        if (nng_aio_result(raio) == 0) {
            mock_serve_one(m, ctx, saio, nng_aio_get_msg(raio));
        }
    }
    nng_aio_free(raio);
    nng_aio_free(saio);
    nng_ctx_close(ctx);
    return NULL;
}

struct mock_node* mock_start(const char* url, uint64_t id) {
    struct mock_node* m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->id = id;
    m->leader = true;
    m->restore_matches = -1;
    m->last_consistency = -1;
    static const char* const addr[3] = {NULL, "tcp://127.0.0.1:9002",
                                        "tcp://127.0.0.1:9003"};
    static const char* const http[3] = {NULL, "127.0.0.1:8002",
                                        "127.0.0.1:8003"};
    m->members[0].id = id;
    snprintf(m->members[0].address, sizeof m->members[0].address, "%s", url);
    snprintf(m->members[0].http, sizeof m->members[0].http, "127.0.0.1:8001");
    for (int i = 1; i < 3; i++) {
        m->members[i].id = (uint64_t)i + 1;
        snprintf(m->members[i].address, sizeof m->members[i].address, "%s",
                 addr[i]);
        snprintf(m->members[i].http, sizeof m->members[i].http, "%s", http[i]);
    }
    m->n_members = 3;
    if (nng_rep0_open(&m->sock) != 0) {
        free(m);
        return NULL;
    }
    nng_socket_set_size(m->sock, NNG_OPT_RECVMAXSZ, (size_t)4 << 20);
    if (nng_listen(m->sock, url, NULL, 0) != 0) {
        nng_close(m->sock);
        free(m);
        return NULL;
    }
    for (int i = 0; i < MOCK_WORKERS; i++) {
        if (pthread_create(&m->workers[i], NULL, mock_worker, m) == 0) {
            m->nworkers++;
        }
    }
    return m;
}

void mock_stop(struct mock_node* m) {
    if (m == NULL) {
        return;
    }
    /* Workers stop their own aios (receives time out every 50 ms) before
     * the socket closes: nng 1.5.2 can crash closing a socket under
     * pending aios (NOTES.md). */
    atomic_store(&m->stop, true);
    for (int i = 0; i < m->nworkers; i++) {
        pthread_join(m->workers[i], NULL);
    }
    nng_close(m->sock);
    for (size_t i = 0; i < m->n_entries; i++) {
        free(m->entries[i].key);
        free(m->entries[i].value);
    }
    free(m->upload);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- knobs and observations -------------------------------------------- */

void mock_set_leader(struct mock_node* m,
                     bool leader,
                     uint64_t leader_id,
                     const char* leader_url) {
    pthread_mutex_lock(&m->mu);
    m->leader = leader;
    m->leader_id = leader_id;
    m->has_leader_url = leader_url != NULL;
    snprintf(m->leader_url, sizeof m->leader_url, "%s",
             leader_url != NULL ? leader_url : "");
    pthread_mutex_unlock(&m->mu);
}

void mock_set_delay(struct mock_node* m, unsigned ms) {
    pthread_mutex_lock(&m->mu);
    m->delay_ms = ms;
    pthread_mutex_unlock(&m->mu);
}

void mock_set_silent(struct mock_node* m, bool silent) {
    pthread_mutex_lock(&m->mu);
    m->silent = silent;
    pthread_mutex_unlock(&m->mu);
}

void mock_force_status(struct mock_node* m, int status, unsigned count) {
    pthread_mutex_lock(&m->mu);
    m->forced_status = status;
    m->forced_count = count;
    pthread_mutex_unlock(&m->mu);
}

void mock_set_cluster_id(struct mock_node* m, uint64_t cluster_id) {
    pthread_mutex_lock(&m->mu);
    m->cluster_id = cluster_id;
    pthread_mutex_unlock(&m->mu);
}

#define MOCK_GETTER(type, name, field) \
    type name(struct mock_node* m) {   \
        pthread_mutex_lock(&m->mu);    \
        type v = (type)m->field;       \
        pthread_mutex_unlock(&m->mu);  \
        return v;                      \
    }

MOCK_GETTER(unsigned, mock_client_requests, client_requests)
MOCK_GETTER(unsigned, mock_admin_requests, admin_requests)
MOCK_GETTER(int, mock_last_consistency, last_consistency)
MOCK_GETTER(uint64_t, mock_last_force_resync, last_force_resync)
MOCK_GETTER(uint64_t, mock_last_transfer, last_transfer)
MOCK_GETTER(uint64_t, mock_last_append_from, last_append_from)
MOCK_GETTER(int, mock_restore_matches, restore_matches)

unsigned mock_entry_count(struct mock_node* m) {
    pthread_mutex_lock(&m->mu);
    unsigned n = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        n += m->entries[i].live ? 1u : 0u;
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

void mock_last_request_id(struct mock_node* m, char* buf, size_t buflen) {
    pthread_mutex_lock(&m->mu);
    snprintf(buf, buflen, "%s", m->last_rid);
    pthread_mutex_unlock(&m->mu);
}
