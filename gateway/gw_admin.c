/*
 * gw_admin.c - /status and the /_raft/... routes (DESIGN.md "REST surface",
 * seed 004).
 *
 *   GET    /status                 the node's StatusResponse as JSON, plus
 *                                  the gateway's view ("gateway")
 *   GET    /_raft/health           seed 004: node_id, state, term,
 *                                  commit_index, last_applied, followers
 *                                  {address: health}
 *   GET    /_raft/sync-status      seed 004: node_id, is_leader,
 *                                  commit_index, followers [...]
 *   GET    /_raft/resync_stats     seed 004: node_id, is_leader,
 *                                  resync_stats {...}
 *   POST   /_raft/force-resync?target=ADDR   ADDR: follower HTTP
 *                                  host:port, nng URL (or its host:port)
 *                                  or node id; seed 004's answer
 *   POST   /_raft/transfer-leader?to=ID|auto
 *   GET    /_raft/members          {"members": [...]}
 *   POST   /_raft/members          {"id": N, "address": "tcp://...",
 *                                  "http_address"?: "h:p", "learner"?: b}
 *   DELETE /_raft/members/{id}     (or ?id=N, or a body {"id": N})
 *   POST   /_raft/append?from=ID   protobuf AppendEntriesRequest/Envelope
 *   GET    /_raft/snapshot         download a consistent snapshot (backup)
 *   POST   /_raft/snapshot         upload one and restore it
 *
 * The read-only routes take ?node=ID (or a node URL) to ask one node; by
 * default they ask the leader, so that a standalone gateway in front of
 * a cluster reports the cluster as the leader sees it. Embedded in a node
 * (one node URL) they describe that node, like the seed's per-node API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

/* Sends an admin request; 0 with an OK admin_response in res->reply, or
 * -1 after answering. res must be freed either way. */
static int gw_admin_call(struct gw_req* r,
                         Skein__AdminRequest* ar,
                         const struct gw_rpc_opts* opts,
                         int64_t deadline_ms,
                         struct gw_rpc_result* res) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = ar;
    if (gw_rpc(r->gw, &env, opts, deadline_ms, res) != GW_RPC_REPLY) {
        gw_reply_outcome(r, res, opts->write);
        return -1;
    }
    if (res->reply->admin_response->status !=
        SKEIN__CLIENT_RESPONSE__STATUS__OK) {
        gw_reply_node_status(r, res->reply);
        return -1;
    }
    return 0;
}

int gw_node_param(struct gw_req* r) {
    char buf[GW_URL_MAX + 1];
    int n = gw_query(r, "node", buf, sizeof buf);
    if (n == -1) {
        return -1;
    }
    if (n >= 0) {
        uint64_t id;
        bool numeric = gw_parse_u64(buf, &id) == 0;
        int idx = numeric ? gw_node_by_id(r->gw, id) : -1;
        if (numeric && idx < 0) {
            gw_probe_unknown(r->gw); /* just started? learn the ids */
            idx = gw_node_by_id(r->gw, id);
        }
        if (idx >= 0) {
            return idx;
        }
        for (size_t i = 0; i < r->gw->node_count; i++) {
            if (strcmp(r->gw->nodes[i].url, buf) == 0) {
                return (int)i;
            }
        }
    }
    gw_reply_error(r, 404, "unknown_node", NULL,
                   "node must be the id or URL of a node this gateway "
                   "talks to");
    return -2;
}

/* One StatusRequest to `node` (or the leader when node < 0). Returns 0
 * with the status in res->reply, or -1 with the failure in res (answer it
 * with gw_status_fail). Answers nothing itself. */
static int gw_status_try(struct gw_req* r,
                         int node,
                         struct gw_rpc_result* res) {
    Skein__StatusRequest sr = SKEIN__STATUS_REQUEST__INIT;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_STATUS;
    ar.status = &sr;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    struct gw_rpc_opts opts = {
        .target = node >= 0 ? GW_TARGET_NODE : GW_TARGET_LEADER, .node = node};
    if (gw_rpc(r->gw, &env, &opts, r->deadline_ms, res) != GW_RPC_REPLY) {
        return -1;
    }
    const Skein__AdminResponse* resp = res->reply->admin_response;
    if (resp->status != SKEIN__CLIENT_RESPONSE__STATUS__OK) {
        return -1;
    }
    if (resp->result_case != SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS ||
        resp->node_status == NULL) {
        skein__envelope__free_unpacked(res->reply, NULL);
        res->reply = NULL;
        res->outcome = GW_RPC_BAD_REPLY;
        snprintf(res->detail, sizeof res->detail,
                 "the node's status reply has no status");
        return -1;
    }
    return 0;
}

/* Answers a failed gw_status_try. */
static void gw_status_fail(struct gw_req* r, const struct gw_rpc_result* res) {
    if (res->outcome == GW_RPC_REPLY) {
        gw_reply_node_status(r, res->reply);
    } else {
        gw_reply_outcome(r, res, false);
    }
}

int gw_fetch_status(struct gw_req* r,
                    int node,
                    Skein__Envelope** reply,
                    const Skein__StatusResponse** status,
                    int* answered) {
    struct gw_rpc_result res;
    if (gw_status_try(r, node, &res) != 0) {
        gw_status_fail(r, &res);
        gw_rpc_result_free(&res);
        return -1;
    }
    const Skein__StatusResponse* s = res.reply->admin_response->node_status;
    if (node < 0 && s->role != SKEIN__STATUS_RESPONSE__ROLE__LEADER) {
        /* Asked a follower: ask the leader it names, if we can reach it;
         * else keep the follower's view. */
        int idx =
            gw_status_leader_known(s) ? gw_node_by_id(r->gw, s->leader_id) : -1;
        if (idx >= 0 && idx != res.node) {
            struct gw_rpc_result again;
            if (gw_status_try(r, idx, &again) == 0) {
                gw_rpc_result_free(&res);
                res = again;
            } else {
                gw_rpc_result_free(&again);
            }
        }
    }
    *answered = res.node;
    *reply = res.reply;
    *status = res.reply->admin_response->node_status;
    res.reply = NULL;
    return 0;
}

/* The gateway's own view, added to /status as "gateway". */
static json_t* gw_gateway_json(struct gw* gw, int answered) {
    json_t* o = json_object();
    json_t* nodes = json_array();
    int leader = atomic_load(&gw->leader);
    for (size_t i = 0; i < gw->node_count; i++) {
        struct gw_node* n = &gw->nodes[i];
        json_t* j = json_object();
        int role = atomic_load(&n->role);
        json_object_set_new(j, "url", json_string(n->url));
        json_object_set_new(j, "id",
                            atomic_load(&n->id_known)
                                ? gw_json_u64(atomic_load(&n->id))
                                : json_null());
        json_object_set_new(j, "connected",
                            json_boolean(atomic_load(&n->pipes) > 0));
        json_object_set_new(
            j, "role", json_string(role < 0 ? "unknown" : gw_role_name(role)));
        json_object_set_new(j, "is_leader", json_boolean((int)i == leader));
        json_array_append_new(nodes, j);
    }
    json_object_set_new(o, "nodes", nodes);
    json_object_set_new(
        o, "served_by",
        answered >= 0 ? json_string(gw->nodes[answered].url) : json_null());
    json_object_set_new(o, "in_flight",
                        gw_json_u64(atomic_load(&gw->metrics.in_flight)));
    return o;
}

int gw_handle_status(struct gw_req* r) {
    int node = gw_node_param(r);
    if (node == -2) {
        return -1;
    }
    Skein__Envelope* reply;
    const Skein__StatusResponse* s;
    int answered;
    if (gw_fetch_status(r, node, &reply, &s, &answered) != 0) {
        return -1;
    }
    json_t* o = gw_status_json(s);
    json_object_set_new(o, "gateway", gw_gateway_json(r->gw, answered));
    skein__envelope__free_unpacked(reply, NULL);
    return gw_reply_json(r, 200, o);
}

/* GET /_raft/health, sync-status and resync_stats (seed 004 shapes). */
static int gw_raft_view(struct gw_req* r, int which) {
    int node = gw_node_param(r);
    if (node == -2) {
        return -1;
    }
    Skein__Envelope* reply;
    const Skein__StatusResponse* s;
    int answered;
    if (gw_fetch_status(r, node, &reply, &s, &answered) != 0) {
        return -1;
    }
    bool leader = s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER;
    json_t* o = json_object();
    json_object_set_new(o, "node_id", gw_json_u64(s->node_id));
    if (which == 0) { /* health */
        json_object_set_new(o, "state", json_string(gw_state_name(s->role)));
        json_object_set_new(o, "term", gw_json_u64(s->term));
        json_object_set_new(o, "commit_index", gw_json_u64(s->commit_index));
        json_object_set_new(o, "last_applied", gw_json_u64(s->last_applied));
        json_t* f = json_object();
        for (size_t i = 0; i < s->n_followers; i++) {
            char name[32];
            const Skein__FollowerStatus* fs = s->followers[i];
            json_object_set_new(f, gw_follower_address(fs, name, sizeof name),
                                json_string(gw_health_name(fs->health)));
        }
        json_object_set_new(o, "followers", f);
        json_object_set_new(o, "role", json_string(gw_role_name(s->role)));
        json_object_set_new(o, "leader_id", gw_leader_json(s));
        json_object_set_new(o, "last_log_index",
                            gw_json_u64(s->last_log_index));
    } else if (which == 1) { /* sync-status */
        json_object_set_new(o, "is_leader", json_boolean(leader));
        json_object_set_new(o, "commit_index", gw_json_u64(s->commit_index));
        json_t* f = json_array();
        for (size_t i = 0; i < s->n_followers; i++) {
            json_array_append_new(f, gw_follower_json(s->followers[i]));
        }
        json_object_set_new(o, "followers", f);
        json_object_set_new(o, "term", gw_json_u64(s->term));
        json_object_set_new(o, "leader_id", gw_leader_json(s));
        json_object_set_new(o, "last_log_index",
                            gw_json_u64(s->last_log_index));
    } else { /* resync_stats */
        json_object_set_new(o, "is_leader", json_boolean(leader));
        json_object_set_new(o, "resync_stats",
                            gw_resync_stats_json(s->resync_stats));
    }
    skein__envelope__free_unpacked(reply, NULL);
    return gw_reply_json(r, 200, o);
}

/* The leader's id as status s knows it; false if unknown (see
 * gw_status_leader_known: ids may be 0). */
static bool gw_leader_of(const Skein__StatusResponse* s, uint64_t* id) {
    if (s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER) {
        *id = s->node_id;
        return true;
    }
    *id = s->leader_id;
    return gw_status_leader_known(s);
}

/* Answers 503 not_leader for a follower's status, naming the leader (id
 * and REST address) when it is known. */
static int gw_reply_need_leader(struct gw_req* r,
                                const Skein__StatusResponse* s) {
    json_t* extra = json_object();
    const Skein__Configuration* c = s->configuration;
    if (gw_status_leader_known(s)) {
        json_object_set_new(extra, "leader_id", gw_json_u64(s->leader_id));
        for (size_t i = 0; c != NULL && i < c->n_members; i++) {
            const Skein__Member* m = c->members[i];
            if (m->id == s->leader_id && m->http_address != NULL &&
                m->http_address[0] != '\0') {
                json_object_set_new(extra, "leader_address",
                                    json_string(m->http_address));
            }
        }
    }
    return gw_reply_error(r, 503, "not_leader", extra,
                          "this needs the leader's view, and no leader is "
                          "reachable from this gateway (leader_address "
                          "names it when known)");
}

/* "tcp://h:p" and "h:p" name the same address. */
static bool gw_addr_match(const char* have, const char* want) {
    if (have == NULL || have[0] == '\0') {
        return false;
    }
    if (strcmp(have, want) == 0) {
        return true;
    }
    const char* h = strstr(have, "://");
    const char* w = strstr(want, "://");
    h = h != NULL ? h + 3 : have;
    w = w != NULL ? w + 3 : want;
    return strcmp(h, w) == 0;
}

/* Resolves a force-resync target to a node id (ids may be 0). Returns
 * false if no follower or member is known by that name. */
static bool gw_resolve_target(const Skein__StatusResponse* s,
                              const char* t,
                              uint64_t* out) {
    uint64_t id;
    bool numeric = gw_parse_u64(t, &id) == 0;
    for (size_t i = 0; i < s->n_followers; i++) {
        const Skein__FollowerStatus* f = s->followers[i];
        if ((numeric && f->id == id) || gw_addr_match(f->http_address, t) ||
            gw_addr_match(f->address, t)) {
            *out = f->id;
            return true;
        }
    }
    const Skein__Configuration* c = s->configuration;
    for (size_t i = 0; c != NULL && i < c->n_members; i++) {
        const Skein__Member* m = c->members[i];
        if ((numeric && m->id == id) || gw_addr_match(m->http_address, t) ||
            gw_addr_match(m->address, t)) {
            *out = m->id;
            return true;
        }
    }
    return false;
}

static json_t* gw_resync_extra(const char* target) {
    json_t* o = json_object();
    json_object_set_new(o, "target", json_string(target));
    json_object_set_new(o, "success", json_false());
    return o;
}

static int gw_force_resync_send(struct gw_req* r,
                                const char* target,
                                uint64_t id,
                                int leader_idx) {
    Skein__ForceResyncRequest fr = SKEIN__FORCE_RESYNC_REQUEST__INIT;
    fr.has_target = true;
    fr.target = id;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_FORCE_RESYNC;
    ar.force_resync = &fr;
    struct gw_rpc_opts opts = {.target = GW_TARGET_NODE, .node = leader_idx};
    struct gw_rpc_result res;
    if (gw_admin_call(r, &ar, &opts, r->deadline_ms, &res) == 0) {
        const Skein__AdminResponse* resp = res.reply->admin_response;
        const Skein__ForceResyncResponse* f =
            resp->result_case == SKEIN__ADMIN_RESPONSE__RESULT_FORCE_RESYNC
                ? resp->force_resync
                : NULL;
        bool ok = f == NULL || !f->has_success || f->success;
        char msg[320];
        if (f != NULL && f->message != NULL && f->message[0] != '\0') {
            snprintf(msg, sizeof msg, "%s", f->message);
        } else {
            snprintf(msg, sizeof msg, "Snapshot resync to %s %s", target,
                     ok ? "completed successfully" : "failed");
        }
        json_t* o = json_object();
        json_object_set_new(o, "target", json_string(target));
        json_object_set_new(o, "success", json_boolean(ok));
        json_object_set_new(o, "message", json_string(msg));
        json_object_set_new(o, "target_id", gw_json_u64(id));
        if (ok) {
            gw_reply_json(r, 200, o);
        } else {
            gw_reply_error(r, 500, "resync_failed", o, "%s", msg);
        }
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* Resolves the target with the status of the leader if reachable, else of
 * any node (its configuration names every member), and sends the request
 * to the node that answered: a follower forwards it to its leader. */
static int gw_force_resync(struct gw_req* r) {
    char target[GW_URL_MAX + 1];
    int n = gw_query(r, "target", target, sizeof target);
    if (n <= 0) {
        return gw_reply_error(r, 400, n == -1 ? "missing_param" : "bad_param",
                              NULL,
                              "target=ADDR is required (a follower's "
                              "host:port, nng URL or node id)");
    }
    Skein__Envelope* reply;
    const Skein__StatusResponse* s;
    int answered;
    if (gw_fetch_status(r, -1, &reply, &s, &answered) != 0) {
        return -1;
    }
    uint64_t id = 0;
    uint64_t leader = 0;
    bool known = gw_resolve_target(s, target, &id);
    bool leader_known = gw_leader_of(s, &leader);
    skein__envelope__free_unpacked(reply, NULL);
    if (!known) {
        return gw_reply_error(r, 404, "unknown_target", gw_resync_extra(target),
                              "no follower is known as %s", target);
    }
    if (leader_known && id == leader) {
        return gw_reply_error(r, 400, "bad_param", gw_resync_extra(target),
                              "%s is the leader itself", target);
    }
    return gw_force_resync_send(r, target, id, answered);
}

/* The follower `auto` picks: a voter, not desynced, least lag, then least
 * latency, then fewest failures. Returns false if none qualifies. */
static bool gw_pick_successor(const Skein__StatusResponse* s, uint64_t* out) {
    const Skein__FollowerStatus* best = NULL;
    for (size_t i = 0; i < s->n_followers; i++) {
        const Skein__FollowerStatus* f = s->followers[i];
        if (f->role != SKEIN__MEMBER__ROLE__VOTER ||
            f->health == SKEIN__FOLLOWER_STATUS__HEALTH__DESYNCED ||
            f->health == SKEIN__FOLLOWER_STATUS__HEALTH__UNKNOWN) {
            continue;
        }
        if (best == NULL || f->lag < best->lag ||
            (f->lag == best->lag &&
             (f->last_latency_ms < best->last_latency_ms ||
              (f->last_latency_ms == best->last_latency_ms &&
               f->consecutive_failures < best->consecutive_failures)))) {
            best = f;
        }
    }
    if (best != NULL) {
        *out = best->id;
    }
    return best != NULL;
}

static bool gw_is_voter(const Skein__StatusResponse* s, uint64_t id) {
    const Skein__Configuration* c = s->configuration;
    for (size_t i = 0; c != NULL && i < c->n_members; i++) {
        if (c->members[i]->id == id) {
            return c->members[i]->role == SKEIN__MEMBER__ROLE__VOTER;
        }
    }
    for (size_t i = 0; i < s->n_followers; i++) {
        if (s->followers[i]->id == id) {
            return s->followers[i]->role == SKEIN__MEMBER__ROLE__VOTER;
        }
    }
    return false;
}

static int gw_transfer_send(struct gw_req* r,
                            const uint64_t* from,
                            uint64_t to,
                            int leader_idx) {
    Skein__TransferLeaderRequest tr = SKEIN__TRANSFER_LEADER_REQUEST__INIT;
    tr.has_to = true;
    tr.to = to;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_TRANSFER_LEADER;
    ar.transfer_leader = &tr;
    struct gw_rpc_opts opts = {.target = GW_TARGET_NODE, .node = leader_idx};
    struct gw_rpc_result res;
    if (gw_admin_call(r, &ar, &opts, r->deadline_ms, &res) == 0) {
        json_t* o = json_object();
        json_object_set_new(o, "success", json_true());
        json_object_set_new(o, "from",
                            from != NULL ? gw_json_u64(*from) : json_null());
        json_object_set_new(o, "to", gw_json_u64(to));
        char msg[96];
        snprintf(msg, sizeof msg, "leadership transfer to %llu started",
                 (unsigned long long)to);
        json_object_set_new(o, "message", json_string(msg));
        gw_reply_json(r, 200, o);
        gw_probe_kick(r->gw);
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* auto needs the leader's view (follower lag and latency); an explicit id
 * is checked against any node's configuration and sent to the node that
 * answered, which forwards it to its leader if it is a follower. */
static int gw_transfer_leader(struct gw_req* r) {
    char to[32];
    uint64_t id = 0;
    int n = gw_query(r, "to", to, sizeof to);
    bool is_auto = n > 0 && strcmp(to, "auto") == 0;
    if (n <= 0 || (!is_auto && gw_parse_u64(to, &id) != 0)) {
        return gw_reply_error(r, 400, n == -1 ? "missing_param" : "bad_param",
                              NULL, "to must be a node id or auto");
    }
    Skein__Envelope* reply;
    const Skein__StatusResponse* s;
    int answered;
    if (gw_fetch_status(r, -1, &reply, &s, &answered) != 0) {
        return -1;
    }
    uint64_t leader = 0;
    bool leader_known = gw_leader_of(s, &leader);
    int rv = 0;
    if (is_auto && s->role != SKEIN__STATUS_RESPONSE__ROLE__LEADER) {
        rv = gw_reply_need_leader(r, s);
    } else if (is_auto) {
        if (!gw_pick_successor(s, &id)) {
            rv = gw_reply_error(r, 409, "no_candidate", NULL,
                                "no healthy voting follower to hand "
                                "leadership to");
        }
    } else if (leader_known && id == leader) {
        json_t* o = json_object();
        json_object_set_new(o, "success", json_true());
        json_object_set_new(o, "from", gw_json_u64(leader));
        json_object_set_new(o, "to", gw_json_u64(leader));
        json_object_set_new(o, "message", json_string("already the leader"));
        rv = gw_reply_json(r, 200, o);
    } else if (!gw_is_voter(s, id)) {
        rv = gw_reply_error(r, 404, "unknown_node", NULL,
                            "node %llu is not a voting member",
                            (unsigned long long)id);
    }
    skein__envelope__free_unpacked(reply, NULL);
    if (r->status != 0) {
        return rv;
    }
    return gw_transfer_send(r, leader_known ? &leader : NULL, id, answered);
}

/* ---- members ----------------------------------------------------------- */

static int gw_members_reply(struct gw_req* r,
                            Skein__AdminRequest* ar,
                            bool write) {
    struct gw_rpc_opts opts = {
        .target = GW_TARGET_LEADER, .node = -1, .write = write};
    struct gw_rpc_result res;
    if (gw_admin_call(r, ar, &opts, r->deadline_ms, &res) == 0) {
        const Skein__AdminResponse* resp = res.reply->admin_response;
        const Skein__Configuration* c =
            resp->result_case == SKEIN__ADMIN_RESPONSE__RESULT_CONFIGURATION
                ? resp->configuration
                : NULL;
        gw_reply_json(r, 200, gw_configuration_json(c));
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* Reads the body as a JSON object; NULL after answering. An empty body is
 * an empty object when `empty_ok`. */
static json_t* gw_admin_body(struct gw_req* r, bool empty_ok) {
    if (gw_read_body(r) != 0) {
        return NULL;
    }
    if (r->body_len == 0 && empty_ok) {
        return json_object();
    }
    json_error_t err;
    json_t* doc = json_loadb(r->body, r->body_len,
                             JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (doc == NULL) {
        gw_reply_error(r, 400, "bad_json", NULL,
                       "malformed JSON at line %d, column %d: %s", err.line,
                       err.column, err.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        gw_reply_error(r, 400, "not_object", NULL,
                       "the request body must be a JSON object");
        return NULL;
    }
    return doc;
}

/* {"id": N} field (N >= 0): -1 after a 400; 0 with *present and *id. */
static int gw_id_field(struct gw_req* r,
                       json_t* doc,
                       uint64_t* id,
                       bool* present) {
    json_t* v = json_object_get(doc, "id");
    *id = 0;
    *present = v != NULL;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        gw_reply_error(r, 400, "wrong_type", NULL,
                       "field \"id\" must be a node id (an integer >= 0)");
        return -1;
    }
    *id = (uint64_t)json_integer_value(v);
    return 0;
}

/* An optional string field no longer than max; -1 after a 400. */
static int gw_opt_string(struct gw_req* r,
                         json_t* doc,
                         const char* name,
                         size_t max,
                         const char** out) {
    json_t* v = json_object_get(doc, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) > max) {
        gw_reply_error(r, 400, "wrong_type", NULL,
                       "field \"%s\" must be a string of at most %zu bytes",
                       name, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int gw_members_add(struct gw_req* r) {
    json_t* doc = gw_admin_body(r, false);
    if (doc == NULL) {
        return -1;
    }
    uint64_t id;
    const char* address;
    const char* http;
    json_t* learner = json_object_get(doc, "learner");
    int rv = -1;
    bool has_id;
    if (gw_id_field(r, doc, &id, &has_id) != 0 ||
        gw_opt_string(r, doc, "address", GW_URL_MAX, &address) != 0 ||
        gw_opt_string(r, doc, "http_address", GW_URL_MAX, &http) != 0) {
        goto out;
    }
    if (!has_id || address == NULL || address[0] == '\0') {
        gw_reply_error(r, 400, "missing_field", NULL,
                       "fields \"id\" and \"address\" are required");
        goto out;
    }
    if (learner != NULL && !json_is_boolean(learner)) {
        gw_reply_error(r, 400, "wrong_type", NULL,
                       "field \"learner\" must be a boolean");
        goto out;
    }
    Skein__MemberAddRequest add = SKEIN__MEMBER_ADD_REQUEST__INIT;
    add.has_id = true;
    add.id = id;
    add.address = (char*)address;
    add.http_address = (char*)http;
    add.has_learner = learner != NULL;
    add.learner = learner != NULL && json_is_true(learner);
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD;
    ar.member_add = &add;
    rv = gw_members_reply(r, &ar, true);
out:
    json_decref(doc);
    return rv;
}

static int gw_members_remove(struct gw_req* r, const char* suffix) {
    uint64_t id = 0;
    char buf[32];
    if (suffix != NULL) {
        if (gw_parse_u64(suffix, &id) != 0) {
            return gw_reply_error(r, 404, "not_found", NULL,
                                  "no member with id %s", "(invalid)");
        }
    } else {
        int n = gw_query(r, "id", buf, sizeof buf);
        bool has_id = n != -1;
        if (has_id && (n < 0 || gw_parse_u64(buf, &id) != 0)) {
            return gw_reply_error(r, 400, "bad_param", NULL,
                                  "id must be a node id (an integer)");
        }
        if (!has_id) {
            json_t* doc = gw_admin_body(r, true);
            if (doc == NULL) {
                return -1;
            }
            int rv = gw_id_field(r, doc, &id, &has_id);
            json_decref(doc);
            if (rv != 0) {
                return -1;
            }
        }
        if (!has_id) {
            return gw_reply_error(r, 400, "missing_param", NULL,
                                  "the member id is required: "
                                  "/_raft/members/ID, ?id=ID or "
                                  "{\"id\": ID}");
        }
    }
    Skein__MemberRemoveRequest rm = SKEIN__MEMBER_REMOVE_REQUEST__INIT;
    rm.has_id = true;
    rm.id = id;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_REMOVE;
    ar.member_remove = &rm;
    return gw_members_reply(r, &ar, true);
}

static int gw_members(struct gw_req* r, const char* suffix) {
    const char* m = r->method;
    if (suffix != NULL) {
        if (strcmp(m, "DELETE") != 0) {
            return gw_reply_method(r, "DELETE");
        }
        r->route = GW_ROUTE_RAFT_MEMBERS_REMOVE;
        return gw_members_remove(r, suffix);
    }
    if (strcmp(m, "GET") == 0) {
        r->route = GW_ROUTE_RAFT_MEMBERS_LIST;
        Skein__MemberListRequest ml = SKEIN__MEMBER_LIST_REQUEST__INIT;
        Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
        ar.op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_LIST;
        ar.member_list = &ml;
        return gw_members_reply(r, &ar, false);
    }
    if (strcmp(m, "POST") == 0) {
        r->route = GW_ROUTE_RAFT_MEMBERS_ADD;
        return gw_members_add(r);
    }
    if (strcmp(m, "DELETE") == 0) {
        r->route = GW_ROUTE_RAFT_MEMBERS_REMOVE;
        return gw_members_remove(r, NULL);
    }
    return gw_reply_method(r, "GET, POST, DELETE");
}

/* ---- raft RPC: POST /_raft/append -------------------------------------- */

/* The node a raft RPC or snapshot goes to: ?node=, else the only node.
 * -1 after answering. */
static int gw_rpc_node(struct gw_req* r, bool leader_ok) {
    int node = gw_node_param(r);
    if (node == -2) {
        return -1;
    }
    if (node >= 0) {
        return node;
    }
    if (r->gw->node_count == 1) {
        return 0;
    }
    if (leader_ok) {
        int l = atomic_load(&r->gw->leader);
        if (l >= 0) {
            return l;
        }
    }
    gw_reply_error(r, 400, "missing_param", NULL,
                   "node=ID is required: this gateway talks to several "
                   "nodes");
    return -1;
}

/* The sender id of an append: ?from=, X-Skein-From, else the envelope's. */
static int gw_append_from(struct gw_req* r, uint64_t fallback, uint64_t* from) {
    char buf[32];
    int n = gw_query(r, "from", buf, sizeof buf);
    const char* h = gw_header(r, "X-Skein-From");
    const char* text = n >= 0 ? buf : h;
    *from = fallback;
    if (n == -2 || (text != NULL && (gw_parse_u64(text, from) != 0))) {
        gw_reply_error(r, 400, "bad_param", NULL,
                       "from must be the sending node's id");
        return -1;
    }
    if (*from == 0) {
        gw_reply_error(r, 400, "missing_param", NULL,
                       "the sender id is required: ?from=ID or "
                       "X-Skein-From: ID");
        return -1;
    }
    return 0;
}

/* Answers the node's reply to a raft RPC: protobuf bytes, or 202. */
static int gw_append_reply(struct gw_req* r, const Skein__Envelope* reply) {
    if (reply->body_case == SKEIN__ENVELOPE__BODY__NOT_SET) {
        return gw_reply_raw(r, 202, "application/x-protobuf", "", 0);
    }
    size_t len = skein__envelope__get_packed_size(reply);
    uint8_t* buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return gw_reply_error(r, 500, "internal", NULL, "out of memory");
    }
    skein__envelope__pack(reply, buf);
    int rv = gw_reply_raw(r, 200, "application/x-protobuf", buf, len);
    free(buf);
    return rv;
}

static int gw_append_forward(struct gw_req* r, Skein__Envelope* env, int node) {
    struct gw_rpc_opts opts = {
        .target = GW_TARGET_NODE, .node = node, .no_retry = true};
    struct gw_rpc_result res;
    if (gw_rpc(r->gw, env, &opts, r->deadline_ms, &res) == GW_RPC_REPLY) {
        gw_append_reply(r, res.reply);
    } else {
        gw_reply_outcome(r, &res, false);
    }
    gw_rpc_result_free(&res);
    return 0;
}

static int gw_append(struct gw_req* r) {
    int node = gw_rpc_node(r, false);
    if (node < 0 || gw_read_body(r) != 0) {
        return -1;
    }
    if (r->body_len == 0) {
        return gw_reply_error(r, 400, "bad_protobuf", NULL,
                              "the body must be a protobuf "
                              "AppendEntriesRequest or Envelope");
    }
    const uint8_t* data = (const uint8_t*)r->body;
    Skein__Envelope* in = skein__envelope__unpack(NULL, r->body_len, data);
    if (in != NULL && in->body_case == SKEIN__ENVELOPE__BODY_APPEND_ENTRIES) {
        uint64_t from;
        if (in->has_cluster_id && in->cluster_id != 0 &&
            r->gw->cfg.cluster_id != 0 &&
            in->cluster_id != r->gw->cfg.cluster_id) {
            gw_reply_error(r, 400, "wrong_cluster", NULL,
                           "the envelope belongs to cluster %llu",
                           (unsigned long long)in->cluster_id);
        } else if (gw_append_from(r, in->from, &from) == 0) {
            in->has_from = true;
            in->from = from;
            in->has_to = true;
            in->to = 0;
            gw_append_forward(r, in, node);
        }
        skein__envelope__free_unpacked(in, NULL);
        return 0;
    }
    if (in != NULL) {
        skein__envelope__free_unpacked(in, NULL);
    }
    Skein__AppendEntriesRequest* ae =
        skein__append_entries_request__unpack(NULL, r->body_len, data);
    if (ae == NULL) {
        return gw_reply_error(r, 400, "bad_protobuf", NULL,
                              "the body is neither an AppendEntriesRequest "
                              "nor an Envelope carrying one");
    }
    uint64_t from;
    if (gw_append_from(r, 0, &from) == 0) {
        Skein__Envelope env = SKEIN__ENVELOPE__INIT;
        env.has_from = true;
        env.from = from;
        env.has_to = true;
        env.to = 0;
        env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES;
        env.append_entries = ae;
        gw_append_forward(r, &env, node);
    }
    skein__append_entries_request__free_unpacked(ae, NULL);
    return 0;
}

/* ---- snapshots --------------------------------------------------------- */

/* One SnapshotReadRequest; 0 with a checked chunk in res, -1 if failed
 * (answered only when `answer`). */
static int gw_snapshot_chunk(struct gw_req* r,
                             int node,
                             uint64_t sid,
                             uint64_t offset,
                             bool answer,
                             struct gw_rpc_result* res) {
    Skein__SnapshotReadRequest rq = SKEIN__SNAPSHOT_READ_REQUEST__INIT;
    rq.has_snapshot_id = true;
    rq.snapshot_id = sid;
    rq.has_offset = true;
    rq.offset = offset;
    rq.has_max_bytes = true;
    rq.max_bytes = (uint32_t)GW_SNAPSHOT_CHUNK;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_READ;
    ar.snapshot_read = &rq;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    struct gw_rpc_opts opts = {.target = GW_TARGET_NODE, .node = node};
    int64_t deadline = gw_now_ms() + r->gw->cfg.request_timeout_ms;
    if (gw_rpc(r->gw, &env, &opts, deadline, res) != GW_RPC_REPLY) {
        if (answer) {
            gw_reply_outcome(r, res, false);
        }
        return -1;
    }
    const Skein__AdminResponse* resp = res->reply->admin_response;
    if (resp->status != SKEIN__CLIENT_RESPONSE__STATUS__OK) {
        if (answer) {
            gw_reply_node_status(r, res->reply);
        }
        return -1;
    }
    const Skein__SnapshotReadResponse* c =
        resp->result_case == SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_READ
            ? resp->snapshot_read
            : NULL;
    if (c == NULL || c->offset != offset || c->data.len > GW_SNAPSHOT_CHUNK ||
        c->offset + c->data.len > c->total_size ||
        (c->data.len == 0 && c->offset != c->total_size) ||
        (sid != 0 && c->snapshot_id != sid)) {
        if (answer) {
            gw_reply_error(r, 502, "bad_reply", NULL,
                           "the node sent a malformed snapshot chunk");
        }
        return -1;
    }
    return 0;
}

static int gw_snapshot_get(struct gw_req* r) {
    int node = gw_rpc_node(r, true);
    if (node < 0) {
        return -1;
    }
    struct gw_rpc_result res;
    if (gw_snapshot_chunk(r, node, 0, 0, true, &res) != 0) {
        gw_rpc_result_free(&res);
        return -1;
    }
    const Skein__SnapshotReadResponse* c =
        res.reply->admin_response->snapshot_read;
    uint64_t total = c->total_size;
    uint64_t sid = c->snapshot_id;
    gw_add_header(r, "Content-Disposition",
                  "attachment; filename=\"skein-snapshot-%llu-%llu.mdb\"",
                  (unsigned long long)c->last_included_index,
                  (unsigned long long)c->last_included_term);
    gw_add_header(r, "X-Skein-Snapshot-Index", "%llu",
                  (unsigned long long)c->last_included_index);
    gw_add_header(r, "X-Skein-Snapshot-Term", "%llu",
                  (unsigned long long)c->last_included_term);
    /* A failure mid-way can only cut the body short: close the connection
     * so the client sees it. */
    gw_add_header(r, "Connection", "close");
    gw_reply_start(r, 200, "application/octet-stream", total);
    uint64_t offset = 0;
    for (;;) {
        const Skein__SnapshotReadResponse* ch =
            res.reply->admin_response->snapshot_read;
        if (ch->data.len > 0 && mg_write(r->conn, ch->data.data,
                                         ch->data.len) != (int)ch->data.len) {
            break; /* the client went away */
        }
        offset += ch->data.len;
        bool done = ch->done || offset >= total;
        gw_rpc_result_free(&res);
        if (done || gw_snapshot_chunk(r, node, sid, offset, false, &res) != 0) {
            break;
        }
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* One SnapshotWriteRequest. 0 with the response in *out (owned by res);
 * -1 after answering. */
static int gw_snapshot_put_chunk(struct gw_req* r,
                                 int* node,
                                 Skein__SnapshotWriteRequest* rq,
                                 struct gw_rpc_result* res,
                                 const Skein__SnapshotWriteResponse** out) {
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_WRITE;
    ar.snapshot_write = rq;
    /* The first chunk finds the leader; the rest go where it went. */
    struct gw_rpc_opts opts = {
        .target = *node < 0 ? GW_TARGET_LEADER : GW_TARGET_NODE,
        .node = *node,
        .write = rq->done,
        .no_retry = *node >= 0};
    int64_t deadline = gw_now_ms() + r->gw->cfg.request_timeout_ms;
    if (gw_admin_call(r, &ar, &opts, deadline, res) != 0) {
        return -1;
    }
    const Skein__AdminResponse* resp = res->reply->admin_response;
    const Skein__SnapshotWriteResponse* w =
        resp->result_case == SKEIN__ADMIN_RESPONSE__RESULT_SNAPSHOT_WRITE
            ? resp->snapshot_write
            : NULL;
    if (w == NULL || w->next_offset != rq->offset + rq->data.len ||
        (rq->upload_id != 0 && w->upload_id != rq->upload_id) ||
        w->upload_id == 0) {
        gw_reply_error(r, 502, "bad_reply", NULL,
                       "the node sent a malformed snapshot upload reply");
        return -1;
    }
    *node = res->node;
    *out = w;
    return 0;
}

/* Best effort: tells the node to drop a staged upload. */
static void gw_snapshot_abort(struct gw_req* r, int node, uint64_t upload) {
    if (node < 0 || upload == 0) {
        return;
    }
    Skein__SnapshotWriteRequest rq = SKEIN__SNAPSHOT_WRITE_REQUEST__INIT;
    rq.has_upload_id = true;
    rq.upload_id = upload;
    rq.has_abort = true;
    rq.abort = true;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_SNAPSHOT_WRITE;
    ar.snapshot_write = &rq;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    struct gw_rpc_opts opts = {
        .target = GW_TARGET_NODE, .node = node, .no_retry = true};
    struct gw_rpc_result res;
    gw_rpc(r->gw, &env, &opts, gw_now_ms() + 1000, &res);
    gw_rpc_result_free(&res);
}

/* Fills buf from the body; returns bytes read (< cap only at the end). */
static size_t gw_fill(struct gw_req* r, uint8_t* buf, size_t cap) {
    size_t len = 0;
    while (len < cap) {
        int n = mg_read(r->conn, buf + len, cap - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    return len;
}

static int gw_snapshot_post(struct gw_req* r) {
    size_t limit = r->gw->cfg.max_snapshot_bytes;
    long long cl = r->ri->content_length;
    if (cl > 0 && (unsigned long long)cl > limit) {
        gw_add_header(r, "Connection", "close");
        return gw_reply_error(r, 413, "body_too_large", NULL,
                              "the snapshot exceeds %zu bytes", limit);
    }
    uint8_t* buf = malloc(GW_SNAPSHOT_CHUNK);
    if (buf == NULL) {
        return gw_reply_error(r, 500, "internal", NULL, "out of memory");
    }
    int node = gw_node_param(r);
    if (node == -2) {
        free(buf);
        return -1;
    }
    uint64_t upload = 0;
    uint64_t offset = 0;
    for (;;) {
        size_t len = gw_fill(r, buf, GW_SNAPSHOT_CHUNK);
        bool done = len < GW_SNAPSHOT_CHUNK ||
                    (cl >= 0 && offset + len >= (unsigned long long)cl);
        if (offset + len > limit || (done && offset + len == 0) ||
            (done && cl >= 0 && offset + len < (unsigned long long)cl)) {
            gw_snapshot_abort(r, node, upload);
            gw_add_header(r, "Connection", "close");
            free(buf);
            if (offset + len > limit) {
                return gw_reply_error(r, 413, "body_too_large", NULL,
                                      "the snapshot exceeds %zu bytes", limit);
            }
            return gw_reply_error(r, 400, "incomplete_body", NULL,
                                  "the snapshot body is empty or cut short");
        }
        Skein__SnapshotWriteRequest rq = SKEIN__SNAPSHOT_WRITE_REQUEST__INIT;
        rq.has_upload_id = true;
        rq.upload_id = upload;
        rq.has_offset = true;
        rq.offset = offset;
        rq.has_data = true;
        rq.data.data = buf;
        rq.data.len = len;
        rq.has_done = true;
        rq.done = done;
        rq.has_total_size = true;
        rq.total_size = cl > 0 ? (uint64_t)cl : 0;
        struct gw_rpc_result res;
        const Skein__SnapshotWriteResponse* w;
        if (gw_snapshot_put_chunk(r, &node, &rq, &res, &w) != 0) {
            gw_rpc_result_free(&res);
            gw_snapshot_abort(r, node, upload);
            free(buf);
            return -1;
        }
        upload = w->upload_id;
        offset += len;
        if (done) {
            json_t* o = json_object();
            json_object_set_new(o, "success", json_true());
            json_object_set_new(o, "restored", json_boolean(w->restored));
            json_object_set_new(o, "bytes", gw_json_u64(offset));
            json_object_set_new(o, "last_included_index",
                                gw_json_u64(w->last_included_index));
            json_object_set_new(o, "last_included_term",
                                gw_json_u64(w->last_included_term));
            gw_rpc_result_free(&res);
            free(buf);
            return gw_reply_json(r, 200, o);
        }
        gw_rpc_result_free(&res);
    }
}

/* ---- dispatch ---------------------------------------------------------- */

int gw_handle_raft(struct gw_req* r) {
    const char* sub = r->path + strlen("/_raft/");
    const char* m = r->method;
    bool get = strcmp(m, "GET") == 0;
    bool post = strcmp(m, "POST") == 0;
    static const struct {
        const char* name;
        int which;
        enum gw_route route;
    } views[] = {{"health", 0, GW_ROUTE_RAFT_HEALTH},
                 {"sync-status", 1, GW_ROUTE_RAFT_SYNC_STATUS},
                 {"resync_stats", 2, GW_ROUTE_RAFT_RESYNC_STATS},
                 {"resync-stats", 2, GW_ROUTE_RAFT_RESYNC_STATS}};
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        if (strcmp(sub, views[i].name) == 0) {
            r->route = views[i].route;
            return get ? gw_raft_view(r, views[i].which)
                       : gw_reply_method(r, "GET");
        }
    }
    if (strcmp(sub, "force-resync") == 0) {
        r->route = GW_ROUTE_RAFT_FORCE_RESYNC;
        return post ? gw_force_resync(r) : gw_reply_method(r, "POST");
    }
    if (strcmp(sub, "transfer-leader") == 0) {
        r->route = GW_ROUTE_RAFT_TRANSFER_LEADER;
        return post ? gw_transfer_leader(r) : gw_reply_method(r, "POST");
    }
    if (strcmp(sub, "members") == 0) {
        return gw_members(r, NULL);
    }
    if (strncmp(sub, "members/", 8) == 0 && strchr(sub + 8, '/') == NULL) {
        return gw_members(r, sub + 8);
    }
    if (strcmp(sub, "append") == 0) {
        r->route = GW_ROUTE_RAFT_APPEND;
        return post ? gw_append(r) : gw_reply_method(r, "POST");
    }
    if (strcmp(sub, "snapshot") == 0) {
        if (get) {
            r->route = GW_ROUTE_RAFT_SNAPSHOT_GET;
            return gw_snapshot_get(r);
        }
        if (post) {
            r->route = GW_ROUTE_RAFT_SNAPSHOT_POST;
            return gw_snapshot_post(r);
        }
        return gw_reply_method(r, "GET, POST");
    }
    return gw_reply_error(r, 404, "not_found", NULL, "no route for %s",
                          r->path);
}
