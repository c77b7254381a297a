/*
 * codec.c - raft_message <-> protobuf Envelope (see codec.h).
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

raft_node_id codec_core_id(uint64_t node_id) {
    return node_id + 1;
}

uint64_t codec_node_id(raft_node_id core_id) {
    return core_id - 1;
}

int codec_pack_envelope(const Skein__Envelope* env,
                        uint8_t** out,
                        size_t* len) {
    size_t n = skein__envelope__get_packed_size(env);
    uint8_t* buf = malloc(n > 0 ? n : 1);

    if (buf == NULL) {
        return -1;
    }
    *len = skein__envelope__pack(env, buf);
    *out = buf;
    return 0;
}

/* Packs an append request; entries point at the core's data (no copy). */
static int pack_append(const struct raft_message* m,
                       Skein__Envelope* env,
                       uint8_t** out,
                       size_t* len) {
    Skein__AppendEntriesRequest req = SKEIN__APPEND_ENTRIES_REQUEST__INIT;
    Skein__LogEntry* ents = NULL;
    Skein__LogEntry** ptrs = NULL;
    int rv;

    if (m->n_entries > 0) {
        ents = calloc(m->n_entries, sizeof(*ents));
        ptrs = calloc(m->n_entries, sizeof(*ptrs));
        if (ents == NULL || ptrs == NULL) {
            free(ents);
            free(ptrs);
            return -1;
        }
    }
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry* e = &m->entries[i];
        skein__log_entry__init(&ents[i]);
        ents[i].has_term = 1;
        ents[i].term = e->term;
        ents[i].has_index = 1;
        ents[i].index = e->index;
        ents[i].has_type = 1;
        ents[i].type = (Skein__LogEntry__Type)e->type;
        ents[i].has_data = 1;
        ents[i].data.len = e->len;
        ents[i].data.data = (uint8_t*)e->data;
        ptrs[i] = &ents[i];
    }
    req.has_term = 1;
    req.term = m->term;
    req.has_prev_log_index = 1;
    req.prev_log_index = m->index;
    req.has_prev_log_term = 1;
    req.prev_log_term = m->log_term;
    req.has_leader_commit = 1;
    req.leader_commit = m->commit;
    req.n_entries = m->n_entries;
    req.entries = ptrs;
    env->body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES;
    env->append_entries = &req;
    rv = codec_pack_envelope(env, out, len);
    free(ents);
    free(ptrs);
    return rv;
}

int codec_pack_raft(const struct raft_message* m,
                    uint64_t cluster_id,
                    uint8_t** out,
                    size_t* len) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__AppendEntriesResponse aresp = SKEIN__APPEND_ENTRIES_RESPONSE__INIT;
    Skein__RequestVoteRequest vreq = SKEIN__REQUEST_VOTE_REQUEST__INIT;
    Skein__RequestVoteResponse vresp = SKEIN__REQUEST_VOTE_RESPONSE__INIT;
    Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
    Skein__HeartbeatResponse hbresp = SKEIN__HEARTBEAT_RESPONSE__INIT;
    Skein__TimeoutNow tn = SKEIN__TIMEOUT_NOW__INIT;
    Skein__ReadIndexRequest rreq = SKEIN__READ_INDEX_REQUEST__INIT;
    Skein__ReadIndexResponse rresp = SKEIN__READ_INDEX_RESPONSE__INIT;

    env.has_cluster_id = 1;
    env.cluster_id = cluster_id;
    env.has_from = 1;
    env.from = codec_node_id(m->from);
    env.has_to = 1;
    env.to = codec_node_id(m->to);
    switch (m->type) {
        case RAFT_MSG_APPEND:
            return pack_append(m, &env, out, len);
        case RAFT_MSG_APPEND_RESP:
            aresp.has_term = 1;
            aresp.term = m->term;
            aresp.has_success = 1;
            aresp.success = !m->reject;
            if (m->reject) {
                aresp.has_rejected_index = 1;
                aresp.rejected_index = m->index;
                aresp.has_conflict_term = 1;
                aresp.conflict_term = m->log_term;
                aresp.has_conflict_index = 1;
                aresp.conflict_index = m->reject_hint;
            } else {
                aresp.has_match_index = 1;
                aresp.match_index = m->index;
            }
            env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE;
            env.append_entries_response = &aresp;
            break;
        case RAFT_MSG_VOTE:
        case RAFT_MSG_PREVOTE:
            vreq.has_term = 1;
            vreq.term = m->term;
            vreq.has_last_log_index = 1;
            vreq.last_log_index = m->index;
            vreq.has_last_log_term = 1;
            vreq.last_log_term = m->log_term;
            vreq.has_pre_vote = 1;
            vreq.pre_vote = m->type == RAFT_MSG_PREVOTE;
            vreq.has_leader_transfer = 1;
            vreq.leader_transfer = m->force;
            env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE;
            env.request_vote = &vreq;
            break;
        case RAFT_MSG_VOTE_RESP:
        case RAFT_MSG_PREVOTE_RESP:
            vresp.has_term = 1;
            vresp.term = m->term;
            vresp.has_vote_granted = 1;
            vresp.vote_granted = !m->reject;
            vresp.has_pre_vote = 1;
            vresp.pre_vote = m->type == RAFT_MSG_PREVOTE_RESP;
            env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE_RESPONSE;
            env.request_vote_response = &vresp;
            break;
        case RAFT_MSG_HEARTBEAT:
            hb.has_term = 1;
            hb.term = m->term;
            hb.has_commit = 1;
            hb.commit = m->commit;
            hb.has_context = 1;
            hb.context = m->context;
            env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &hb;
            break;
        case RAFT_MSG_HEARTBEAT_RESP:
            hbresp.has_term = 1;
            hbresp.term = m->term;
            hbresp.has_context = 1;
            hbresp.context = m->context;
            env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT_RESPONSE;
            env.heartbeat_response = &hbresp;
            break;
        case RAFT_MSG_TIMEOUT_NOW:
            tn.has_term = 1;
            tn.term = m->term;
            env.body_case = SKEIN__ENVELOPE__BODY_TIMEOUT_NOW;
            env.timeout_now = &tn;
            break;
        case RAFT_MSG_READ_INDEX:
            rreq.has_term = 1;
            rreq.term = m->term;
            rreq.has_context = 1;
            rreq.context = m->context;
            env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX;
            env.read_index = &rreq;
            break;
        case RAFT_MSG_READ_INDEX_RESP:
            rresp.has_term = 1;
            rresp.term = m->term;
            rresp.has_context = 1;
            rresp.context = m->context;
            rresp.has_index = 1;
            rresp.index = m->index;
            rresp.has_rejected = 1;
            rresp.rejected = m->reject;
            env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX_RESPONSE;
            env.read_index_response = &rresp;
            break;
        default:
            return -1;
    }
    return codec_pack_envelope(&env, out, len);
}

int codec_is_raft_body(const Skein__Envelope* env) {
    switch (env->body_case) {
        case SKEIN__ENVELOPE__BODY_APPEND_ENTRIES:
        case SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE:
        case SKEIN__ENVELOPE__BODY_REQUEST_VOTE:
        case SKEIN__ENVELOPE__BODY_REQUEST_VOTE_RESPONSE:
        case SKEIN__ENVELOPE__BODY_HEARTBEAT:
        case SKEIN__ENVELOPE__BODY_HEARTBEAT_RESPONSE:
        case SKEIN__ENVELOPE__BODY_TIMEOUT_NOW:
        case SKEIN__ENVELOPE__BODY_READ_INDEX:
        case SKEIN__ENVELOPE__BODY_READ_INDEX_RESPONSE:
            return 1;
        default:
            return 0;
    }
}

int codec_is_stream_body(const Skein__Envelope* env) {
    if (codec_is_raft_body(env) ||
        env->body_case == SKEIN__ENVELOPE__BODY_FORWARD_RESULTS) {
        return 1;
    }
    return env->body_case == SKEIN__ENVELOPE__BODY_FORWARD_BATCH &&
           env->forward_batch != NULL && env->forward_batch->one_way;
}

/* Converts the entries of an append; data stays in the envelope. */
static int decode_entries(const Skein__AppendEntriesRequest* a,
                          struct codec_raft* out,
                          const char** why) {
    if (a->n_entries == 0) {
        return 0;
    }
    out->entries = calloc(a->n_entries, sizeof(*out->entries));
    if (out->entries == NULL) {
        *why = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < a->n_entries; i++) {
        const Skein__LogEntry* e = a->entries[i];
        if (e == NULL || !e->has_term || !e->has_index) {
            *why = "log entry without term or index";
            return -1;
        }
        if (e->has_type &&
            (e->type < 0 || (int)e->type > (int)RAFT_ENTRY_CONF)) {
            *why = "log entry of unknown type";
            return -1;
        }
        if (e->data.len > UINT32_MAX) {
            *why = "log entry too large";
            return -1;
        }
        out->entries[i].term = e->term;
        out->entries[i].index = e->index;
        out->entries[i].type = e->has_type ? (uint32_t)e->type : 0;
        out->entries[i].len = (uint32_t)e->data.len;
        out->entries[i].data = e->data.data;
    }
    out->msg.entries = out->entries;
    out->msg.n_entries = (uint32_t)a->n_entries;
    return 0;
}

/* Fills msg from the body; returns 0 or -1 with *why. */
static int decode_body(const Skein__Envelope* env,
                       struct codec_raft* out,
                       const char** why) {
    struct raft_message* m = &out->msg;

#define NEED(cond, text)   \
    do {                   \
        if (!(cond)) {     \
            *why = (text); \
            return -1;     \
        }                  \
    } while (0)

    switch (env->body_case) {
        case SKEIN__ENVELOPE__BODY_APPEND_ENTRIES: {
            const Skein__AppendEntriesRequest* a = env->append_entries;
            NEED(a->has_term && a->has_prev_log_index && a->has_prev_log_term,
                 "append without term or previous entry");
            m->type = RAFT_MSG_APPEND;
            m->term = a->term;
            m->index = a->prev_log_index;
            m->log_term = a->prev_log_term;
            m->commit = a->has_leader_commit ? a->leader_commit : 0;
            return decode_entries(a, out, why);
        }
        case SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE: {
            const Skein__AppendEntriesResponse* a =
                env->append_entries_response;
            NEED(a->has_term, "append response without term");
            m->type = RAFT_MSG_APPEND_RESP;
            m->term = a->term;
            m->reject = a->has_success && !a->success;
            m->index = m->reject ? a->rejected_index : a->match_index;
            m->log_term = a->conflict_term;
            m->reject_hint = a->conflict_index;
            return 0;
        }
        case SKEIN__ENVELOPE__BODY_REQUEST_VOTE: {
            const Skein__RequestVoteRequest* v = env->request_vote;
            NEED(v->has_term && v->has_last_log_index && v->has_last_log_term,
                 "vote request without term or last entry");
            m->type = v->pre_vote ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE;
            m->term = v->term;
            m->index = v->last_log_index;
            m->log_term = v->last_log_term;
            m->force = v->leader_transfer;
            return 0;
        }
        case SKEIN__ENVELOPE__BODY_REQUEST_VOTE_RESPONSE: {
            const Skein__RequestVoteResponse* v = env->request_vote_response;
            NEED(v->has_term && v->has_vote_granted,
                 "vote response without term or decision");
            m->type = v->pre_vote ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP;
            m->term = v->term;
            m->reject = !v->vote_granted;
            return 0;
        }
        case SKEIN__ENVELOPE__BODY_HEARTBEAT:
            NEED(env->heartbeat->has_term, "heartbeat without term");
            m->type = RAFT_MSG_HEARTBEAT;
            m->term = env->heartbeat->term;
            m->commit = env->heartbeat->commit;
            m->context = env->heartbeat->context;
            return 0;
        case SKEIN__ENVELOPE__BODY_HEARTBEAT_RESPONSE:
            NEED(env->heartbeat_response->has_term,
                 "heartbeat response without term");
            m->type = RAFT_MSG_HEARTBEAT_RESP;
            m->term = env->heartbeat_response->term;
            m->context = env->heartbeat_response->context;
            return 0;
        case SKEIN__ENVELOPE__BODY_TIMEOUT_NOW:
            NEED(env->timeout_now->has_term, "timeout-now without term");
            m->type = RAFT_MSG_TIMEOUT_NOW;
            m->term = env->timeout_now->term;
            return 0;
        case SKEIN__ENVELOPE__BODY_READ_INDEX:
            NEED(env->read_index->has_term && env->read_index->has_context,
                 "read-index request without term or context");
            m->type = RAFT_MSG_READ_INDEX;
            m->term = env->read_index->term;
            m->context = env->read_index->context;
            return 0;
        case SKEIN__ENVELOPE__BODY_READ_INDEX_RESPONSE: {
            const Skein__ReadIndexResponse* r = env->read_index_response;
            NEED(r->has_term && r->has_context,
                 "read-index response without term or context");
            m->type = RAFT_MSG_READ_INDEX_RESP;
            m->term = r->term;
            m->context = r->context;
            m->index = r->index;
            m->reject = r->rejected;
            return 0;
        }
        default:
            *why = "not a raft message";
            return -1;
    }
#undef NEED
}

int codec_to_raft(Skein__Envelope* env,
                  struct codec_raft* out,
                  const char** why) {
    memset(out, 0, sizeof(*out));
    if (!env->has_from || env->from >= UINT64_MAX - 1 ||
        (env->has_to && env->to >= UINT64_MAX - 1)) {
        *why = "raft message without a valid sender";
        return -1;
    }
    if (decode_body(env, out, why) != 0) {
        free(out->entries);
        memset(out, 0, sizeof(*out));
        return -1;
    }
    out->msg.from = codec_core_id(env->from);
    /* No recipient means "whoever receives it" (POST /_raft/append). */
    out->msg.to = env->has_to ? codec_core_id(env->to) : 0;
    out->env = env;
    return 0;
}

void codec_raft_free(struct codec_raft* c) {
    free(c->entries);
    if (c->env != NULL) {
        skein__envelope__free_unpacked(c->env, NULL);
    }
    memset(c, 0, sizeof(*c));
}

int codec_configuration_from_conf(const struct raft_conf* conf,
                                  Skein__Configuration* out) {
    skein__configuration__init(out);
    if (conf->count == 0) {
        return 0;
    }
    out->members = calloc(conf->count, sizeof(*out->members));
    if (out->members == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < conf->count; i++) {
        Skein__Member* mem = malloc(sizeof(*mem));
        if (mem == NULL) {
            codec_free_configuration(out);
            return -1;
        }
        skein__member__init(mem);
        mem->has_id = 1;
        mem->id = codec_node_id(conf->ids[i]);
        mem->has_role = 1;
        mem->role = conf->roles[i] == RAFT_LEARNER
                        ? SKEIN__MEMBER__ROLE__LEARNER
                        : SKEIN__MEMBER__ROLE__VOTER;
        out->members[out->n_members++] = mem;
    }
    return 0;
}

void codec_free_configuration(Skein__Configuration* c) {
    for (size_t i = 0; i < c->n_members; i++) {
        free(c->members[i]);
    }
    free(c->members);
    c->members = NULL;
    c->n_members = 0;
}

int codec_conf_from_configuration(const Skein__Configuration* c,
                                  struct raft_conf* out) {
    memset(out, 0, sizeof(*out));
    if (c == NULL || c->n_members == 0 || c->n_members > RAFT_MAX_NODES) {
        return -1;
    }
    for (size_t i = 0; i < c->n_members; i++) {
        const Skein__Member* mem = c->members[i];
        raft_node_id id;
        if (mem == NULL || !mem->has_id || mem->id >= UINT64_MAX - 1) {
            return -1;
        }
        id = codec_core_id(mem->id);
        if (raft_conf_role(out, id) >= 0) {
            return -1;
        }
        out->ids[out->count] = id;
        out->roles[out->count] =
            mem->has_role && mem->role == SKEIN__MEMBER__ROLE__LEARNER
                ? RAFT_LEARNER
                : RAFT_VOTER;
        out->count++;
    }
    return 0;
}
