/*
 * gw_metrics.c - GET /metrics in the Prometheus text format (0.0.4).
 *
 * Two sources: the gateway's own counters (requests by route and status,
 * latency histograms by route and status class, node round trips), kept
 * in lock-free atomics; and each node's StatusResponse, fetched when
 * scraped (every configured node, each with a short timeout), labelled
 * node_id. A node that does not answer shows as skein_node_up 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

/* How long a scrape waits for one node's status. */
#define GW_METRICS_NODE_TIMEOUT_MS 1000

/* Counted statuses; the last slot is "other". */
static const int gw_status_codes[GW_STATUS_SLOTS - 1] = {
    200, 201, 202, 400, 404, 405, 409, 412, 413, 500, 502, 503, 504, 507, 401};

/* Bucket upper bounds in microseconds. */
static const int64_t gw_bucket_us[GW_LATENCY_BUCKETS] = {
    500,    1000,   2500,    5000,    10000,   25000,    50000,   100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};

static const char* const gw_class_names[3] = {"2xx", "4xx", "5xx"};

const char* gw_route_name(enum gw_route route) {
    static const char* const names[GW_ROUTE_COUNT] = {
        [GW_ROUTE_KV_LIST] = "kv_list",
        [GW_ROUTE_KV_CREATE] = "kv_create",
        [GW_ROUTE_KV_GET] = "kv_get",
        [GW_ROUTE_KV_UPDATE] = "kv_update",
        [GW_ROUTE_KV_DELETE] = "kv_delete",
        [GW_ROUTE_KV_COUNT] = "kv_count",
        [GW_ROUTE_KV_RANDOM_ID] = "kv_random_id",
        [GW_ROUTE_STATUS] = "status",
        [GW_ROUTE_METRICS] = "metrics",
        [GW_ROUTE_DASHBOARD] = "dashboard",
        [GW_ROUTE_RAFT_HEALTH] = "raft_health",
        [GW_ROUTE_RAFT_SYNC_STATUS] = "raft_sync_status",
        [GW_ROUTE_RAFT_RESYNC_STATS] = "raft_resync_stats",
        [GW_ROUTE_RAFT_FORCE_RESYNC] = "raft_force_resync",
        [GW_ROUTE_RAFT_TRANSFER_LEADER] = "raft_transfer_leader",
        [GW_ROUTE_RAFT_MEMBERS_LIST] = "raft_members_list",
        [GW_ROUTE_RAFT_MEMBERS_ADD] = "raft_members_add",
        [GW_ROUTE_RAFT_MEMBERS_REMOVE] = "raft_members_remove",
        [GW_ROUTE_RAFT_APPEND] = "raft_append",
        [GW_ROUTE_RAFT_SNAPSHOT_GET] = "raft_snapshot_get",
        [GW_ROUTE_RAFT_SNAPSHOT_POST] = "raft_snapshot_post",
        [GW_ROUTE_OTHER] = "other",
    };
    return (route >= 0 && route < GW_ROUTE_COUNT) ? names[route] : "other";
}

static int gw_status_slot(int status) {
    for (int i = 0; i < GW_STATUS_SLOTS - 1; i++) {
        if (gw_status_codes[i] == status) {
            return i;
        }
    }
    return GW_STATUS_SLOTS - 1;
}

static int gw_status_class(int status) {
    return status >= 500 ? 2 : (status >= 400 ? 1 : 0);
}

void gw_metrics_observe(struct gw* gw,
                        enum gw_route route,
                        int status,
                        int64_t latency_us) {
    if (route < 0 || route >= GW_ROUTE_COUNT) {
        route = GW_ROUTE_OTHER;
    }
    struct gw_metrics* m = &gw->metrics;
    int cls = gw_status_class(status);
    int b = 0;
    while (b < GW_LATENCY_BUCKETS && latency_us > gw_bucket_us[b]) {
        b++;
    }
    atomic_fetch_add(&m->requests[route][gw_status_slot(status)], 1);
    atomic_fetch_add(&m->latency[route][cls][b], 1);
    atomic_fetch_add(&m->latency_sum_us[route][cls],
                     (uint_fast64_t)(latency_us > 0 ? latency_us : 0));
}

/* ---- gateway metrics --------------------------------------------------- */

static void gw_render_requests(struct gw_buf* b, struct gw* gw) {
    struct gw_metrics* m = &gw->metrics;
    gw_buf_printf(b,
                  "# HELP skein_gateway_requests_total HTTP requests served "
                  "by route and status.\n"
                  "# TYPE skein_gateway_requests_total counter\n");
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        for (int s = 0; s < GW_STATUS_SLOTS; s++) {
            uint64_t v = atomic_load(&m->requests[r][s]);
            if (v == 0) {
                continue;
            }
            char code[8];
            if (s < GW_STATUS_SLOTS - 1) {
                snprintf(code, sizeof code, "%d", gw_status_codes[s]);
            } else {
                snprintf(code, sizeof code, "other");
            }
            gw_buf_printf(b,
                          "skein_gateway_requests_total{route=\"%s\","
                          "status=\"%s\"} %llu\n",
                          gw_route_name((enum gw_route)r), code,
                          (unsigned long long)v);
        }
    }
}

static void gw_render_histogram(struct gw_buf* b, struct gw* gw) {
    struct gw_metrics* m = &gw->metrics;
    gw_buf_printf(b,
                  "# HELP skein_gateway_request_duration_seconds HTTP "
                  "request latency by route and status class.\n"
                  "# TYPE skein_gateway_request_duration_seconds "
                  "histogram\n");
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        for (int c = 0; c < 3; c++) {
            uint64_t counts[GW_LATENCY_BUCKETS + 1];
            uint64_t total = 0;
            for (int k = 0; k <= GW_LATENCY_BUCKETS; k++) {
                counts[k] = atomic_load(&m->latency[r][c][k]);
                total += counts[k];
            }
            if (total == 0) {
                continue;
            }
            const char* route = gw_route_name((enum gw_route)r);
            uint64_t cum = 0;
            for (int k = 0; k < GW_LATENCY_BUCKETS; k++) {
                cum += counts[k];
                gw_buf_printf(b,
                              "skein_gateway_request_duration_seconds_bucket"
                              "{route=\"%s\",class=\"%s\",le=\"%g\"} %llu\n",
                              route, gw_class_names[c],
                              (double)gw_bucket_us[k] / 1e6,
                              (unsigned long long)cum);
            }
            gw_buf_printf(b,
                          "skein_gateway_request_duration_seconds_bucket"
                          "{route=\"%s\",class=\"%s\",le=\"+Inf\"} %llu\n"
                          "skein_gateway_request_duration_seconds_sum"
                          "{route=\"%s\",class=\"%s\"} %.6f\n"
                          "skein_gateway_request_duration_seconds_count"
                          "{route=\"%s\",class=\"%s\"} %llu\n",
                          route, gw_class_names[c], (unsigned long long)total,
                          route, gw_class_names[c],
                          (double)atomic_load(&m->latency_sum_us[r][c]) / 1e6,
                          route, gw_class_names[c], (unsigned long long)total);
        }
    }
}

/* Writes a label value, escaped as the text format wants. */
static void gw_label(struct gw_buf* b, const char* v) {
    for (const char* p = v != NULL ? v : ""; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            gw_buf_printf(b, "\\%c", *p);
        } else if (*p == '\n') {
            gw_buf_append(b, "\\n", 2);
        } else {
            gw_buf_append(b, p, 1);
        }
    }
}

static void gw_render_gateway(struct gw_buf* b, struct gw* gw) {
    struct gw_metrics* m = &gw->metrics;
    static const struct {
        const char* name;
        const char* help;
        size_t offset;
    } counters[] = {
        {"skein_gateway_node_requests_total", "Requests sent to nodes.",
         offsetof(struct gw_metrics, rpc_sent)},
        {"skein_gateway_node_failures_total",
         "Node requests without a reply (lost connection or timeout).",
         offsetof(struct gw_metrics, rpc_failed)},
        {"skein_gateway_node_unreachable_total",
         "Node requests skipped because the node was not connected.",
         offsetof(struct gw_metrics, rpc_unreachable)},
        {"skein_gateway_node_bad_replies_total",
         "Node replies that did not decode or did not match.",
         offsetof(struct gw_metrics, rpc_bad_reply)},
        {"skein_gateway_leader_redirects_total",
         "NOT_LEADER answers the gateway followed.",
         offsetof(struct gw_metrics, leader_redirects)},
        {"skein_gateway_write_retries_total",
         "Writes re-sent with the same request id.",
         offsetof(struct gw_metrics, write_retries)},
        {"skein_gateway_probes_total", "Status probes sent to nodes.",
         offsetof(struct gw_metrics, probes)},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        atomic_uint_fast64_t* v =
            (atomic_uint_fast64_t*)((char*)m + counters[i].offset);
        gw_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
                      counters[i].name, counters[i].help, counters[i].name,
                      counters[i].name, (unsigned long long)atomic_load(v));
    }
    gw_buf_printf(b,
                  "# HELP skein_gateway_in_flight_requests HTTP requests "
                  "being served.\n"
                  "# TYPE skein_gateway_in_flight_requests gauge\n"
                  "skein_gateway_in_flight_requests %llu\n",
                  (unsigned long long)atomic_load(&m->in_flight));
    gw_buf_printf(b,
                  "# HELP skein_gateway_node_connected Whether the gateway "
                  "holds a connection to the node.\n"
                  "# TYPE skein_gateway_node_connected gauge\n");
    int leader = atomic_load(&gw->leader);
    for (size_t i = 0; i < gw->node_count; i++) {
        gw_buf_printf(b, "skein_gateway_node_connected{node_url=\"");
        gw_label(b, gw->nodes[i].url);
        gw_buf_printf(b, "\",is_leader=\"%s\"} %d\n",
                      (int)i == leader ? "true" : "false",
                      atomic_load(&gw->nodes[i].pipes) > 0 ? 1 : 0);
    }
}

/* ---- node metrics ------------------------------------------------------ */

/* One node's status for a scrape, or NULL. */
static Skein__Envelope* gw_scrape_node(struct gw_req* r, int i) {
    Skein__StatusRequest sr = SKEIN__STATUS_REQUEST__INIT;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_STATUS;
    ar.status = &sr;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    struct gw_rpc_opts opts = {
        .target = GW_TARGET_NODE, .node = i, .no_retry = true};
    int64_t deadline = gw_now_ms() + GW_METRICS_NODE_TIMEOUT_MS;
    if (deadline > r->deadline_ms) {
        deadline = r->deadline_ms;
    }
    struct gw_rpc_result res;
    gw_rpc(r->gw, &env, &opts, deadline, &res);
    Skein__Envelope* reply = res.reply;
    res.reply = NULL;
    gw_rpc_result_free(&res);
    if (reply != NULL &&
        (reply->admin_response->status != SKEIN__CLIENT_RESPONSE__STATUS__OK ||
         reply->admin_response->result_case !=
             SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS ||
         reply->admin_response->node_status == NULL)) {
        skein__envelope__free_unpacked(reply, NULL);
        reply = NULL;
    }
    return reply;
}

/* A per-node gauge or counter family over every node that answered. */
struct gw_node_metric {
    const char* name;
    const char* type;
    const char* help;
    size_t offset; /* of a uint64_t in Skein__StatusResponse */
    double scale;  /* multiplier (1e-3 turns ms into s) */
};

#define GW_SR(f) offsetof(Skein__StatusResponse, f)

static const struct gw_node_metric gw_node_metrics[] = {
    {"skein_node_term", "gauge", "Current term.", GW_SR(term), 1},

    {"skein_node_commit_index", "gauge", "Commit index.", GW_SR(commit_index),
     1},
    {"skein_node_last_applied", "gauge", "Last applied index.",
     GW_SR(last_applied), 1},
    {"skein_node_first_log_index", "gauge", "First index in the log.",
     GW_SR(first_log_index), 1},
    {"skein_node_last_log_index", "gauge", "Last index in the log.",
     GW_SR(last_log_index), 1},
    {"skein_node_snapshot_index", "gauge", "Index of the latest snapshot.",
     GW_SR(snapshot_index), 1},
    {"skein_node_entries", "gauge", "Live KV entries.", GW_SR(entry_count), 1},
    {"skein_node_write_seq", "gauge", "Last write seq assigned.",
     GW_SR(write_seq), 1},
    {"skein_node_uptime_seconds", "gauge", "Node uptime.", GW_SR(uptime_ms),
     1e-3},
    {"skein_node_dropped_messages_total", "counter",
     "Messages dropped (undecodable or another cluster's).",
     GW_SR(dropped_messages), 1},
    {"skein_node_forwarded_writes_total", "counter",
     "Client writes this follower sent to the leader.", GW_SR(forwarded_writes),
     1},
    {"skein_node_forward_requests_total", "counter",
     "Requests that carried the forwarded writes (several per request when "
     "batched).",
     GW_SR(forward_requests), 1},
    {"skein_node_forwards_applied_total", "counter",
     "Forwarded writes this follower answered from its own apply of their "
     "entries.",
     GW_SR(forwards_applied), 1},
    {"skein_node_forward_results_sent_total", "counter",
     "Forwarded writes the leader answered without proposing them (refused).",
     GW_SR(forward_results_sent), 1},
    {"skein_node_forward_results_unmatched_total", "counter",
     "Answers to forwarded writes that found no waiting write.",
     GW_SR(forward_results_unmatched), 1},
    {"skein_node_lingered_rounds_total", "counter",
     "Loop rounds that waited --batch-linger-us for more requests to batch.",
     GW_SR(lingered_rounds), 1},
    {"skein_node_raft_sent_total", "counter",
     "Raft messages sent as requests of their own.", GW_SR(raft_sent), 1},
    {"skein_node_raft_piggybacked_total", "counter",
     "Raft messages sent in the reply to a peer's raft RPC.",
     GW_SR(raft_piggybacked), 1},
    {"skein_node_read_index_requests_total", "counter",
     "ReadIndex confirmations asked (each covers a batch of reads).",
     GW_SR(read_index_requests), 1},
    {"skein_node_fsync_total", "counter", "Log syncs.", GW_SR(fsync_count), 1},
    {"skein_node_fsync_seconds_total", "counter", "Time spent in log syncs.",
     GW_SR(fsync_us_sum), 1e-6},
    {"skein_node_fsync_seconds_max", "gauge", "Longest log sync.",
     GW_SR(fsync_us_max), 1e-6},
};

static void gw_node_labels(struct gw_buf* b, const Skein__StatusResponse* s) {
    gw_buf_printf(b, "node_id=\"%llu\"", (unsigned long long)s->node_id);
}

static void gw_render_node_scalars(struct gw_buf* b,
                                   Skein__Envelope* const* st,
                                   size_t n) {
    for (size_t k = 0; k < sizeof gw_node_metrics / sizeof gw_node_metrics[0];
         k++) {
        const struct gw_node_metric* m = &gw_node_metrics[k];
        gw_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help,
                      m->name, m->type);
        for (size_t i = 0; i < n; i++) {
            if (st[i] == NULL) {
                continue;
            }
            const Skein__StatusResponse* s = st[i]->admin_response->node_status;
            uint64_t v;
            memcpy(&v, (const char*)s + m->offset, sizeof v);
            gw_buf_printf(b, "%s{", m->name);
            gw_node_labels(b, s);
            if (m->scale == 1) {
                gw_buf_printf(b, "} %llu\n", (unsigned long long)v);
            } else {
                gw_buf_printf(b, "} %.6f\n", (double)v * m->scale);
            }
        }
    }
}

static void gw_render_node_roles(struct gw_buf* b,
                                 struct gw* gw,
                                 Skein__Envelope* const* st,
                                 size_t n) {
    static const int roles[] = {SKEIN__STATUS_RESPONSE__ROLE__FOLLOWER,
                                SKEIN__STATUS_RESPONSE__ROLE__PRE_CANDIDATE,
                                SKEIN__STATUS_RESPONSE__ROLE__CANDIDATE,
                                SKEIN__STATUS_RESPONSE__ROLE__LEADER};
    gw_buf_printf(b,
                  "# HELP skein_node_up Whether the node answered the "
                  "scrape's status request.\n# TYPE skein_node_up gauge\n");
    for (size_t i = 0; i < n; i++) {
        gw_buf_printf(b, "skein_node_up{node_url=\"");
        gw_label(b, gw->nodes[i].url);
        gw_buf_printf(b, "\",node_id=\"%llu\"} %d\n",
                      (unsigned long long)atomic_load(&gw->nodes[i].id),
                      st[i] != NULL ? 1 : 0);
    }
    gw_buf_printf(b,
                  "# HELP skein_node_role The node's raft role (1 = "
                  "current).\n# TYPE skein_node_role gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (st[i] == NULL) {
            continue;
        }
        const Skein__StatusResponse* s = st[i]->admin_response->node_status;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++) {
            gw_buf_printf(b, "skein_node_role{");
            gw_node_labels(b, s);
            gw_buf_printf(b, ",role=\"%s\"} %d\n", gw_role_name(roles[k]),
                          (int)s->role == roles[k] ? 1 : 0);
        }
    }
    gw_buf_printf(b,
                  "# HELP skein_node_leader_id The leader the node knows, -1 "
                  "when none.\n# TYPE skein_node_leader_id gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (st[i] == NULL) {
            continue;
        }
        const Skein__StatusResponse* s = st[i]->admin_response->node_status;
        uint64_t leader = s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER
                              ? s->node_id
                              : s->leader_id;
        gw_buf_printf(b, "skein_node_leader_id{");
        gw_node_labels(b, s);
        if (gw_status_leader_known(s)) {
            gw_buf_printf(b, "} %llu\n", (unsigned long long)leader);
        } else {
            gw_buf_printf(b, "} -1\n");
        }
    }
}

/* The labels of one follower of node s. */
static void gw_follower_labels(struct gw_buf* b,
                               const Skein__StatusResponse* s,
                               const Skein__FollowerStatus* f) {
    char name[32];
    gw_node_labels(b, s);
    gw_buf_printf(b, ",follower_id=\"%llu\",follower=\"",
                  (unsigned long long)f->id);
    gw_label(b, gw_follower_address(f, name, sizeof name));
    gw_buf_append(b, "\"", 1);
}

/* Per-follower families (leaders only have followers). The health is a
 * state set: one series per state, 1 for the current one. */
static void gw_render_followers(struct gw_buf* b,
                                Skein__Envelope* const* st,
                                size_t n) {
    static const struct {
        const char* name;
        const char* help;
        int field; /* 0 lag, 1 latency, 2 match, 3 failures, 4 health */
    } fams[] = {
        {"skein_follower_lag_entries", "Leader's last index minus match.", 0},
        {"skein_follower_last_latency_seconds",
         "Round trip of the last AppendEntries.", 1},
        {"skein_follower_match_index", "Last index known replicated.", 2},
        {"skein_follower_consecutive_failures", "Failed sends in a row.", 3},
        {"skein_follower_health",
         "Follower health (healthy, lagging, desynced, unknown): 1 for the "
         "current one.",
         4},
    };
    static const int healths[] = {SKEIN__FOLLOWER_STATUS__HEALTH__HEALTHY,
                                  SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING,
                                  SKEIN__FOLLOWER_STATUS__HEALTH__DESYNCED,
                                  SKEIN__FOLLOWER_STATUS__HEALTH__UNKNOWN};
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        gw_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", fams[k].name,
                      fams[k].help, fams[k].name);
        for (size_t i = 0; i < n; i++) {
            if (st[i] == NULL) {
                continue;
            }
            const Skein__StatusResponse* s = st[i]->admin_response->node_status;
            for (size_t j = 0; j < s->n_followers; j++) {
                const Skein__FollowerStatus* f = s->followers[j];
                if (fams[k].field == 4) {
                    for (size_t h = 0; h < 4; h++) {
                        gw_buf_printf(b, "%s{", fams[k].name);
                        gw_follower_labels(b, s, f);
                        gw_buf_printf(b, ",health=\"%s\"} %d\n",
                                      gw_health_name(healths[h]),
                                      (int)f->health == healths[h] ? 1 : 0);
                    }
                    continue;
                }
                gw_buf_printf(b, "%s{", fams[k].name);
                gw_follower_labels(b, s, f);
                if (fams[k].field == 1) {
                    gw_buf_printf(b, "} %.3f\n",
                                  (double)f->last_latency_ms / 1e3);
                } else {
                    uint64_t v = fams[k].field == 0   ? f->lag
                                 : fams[k].field == 2 ? f->match_index
                                                      : f->consecutive_failures;
                    gw_buf_printf(b, "} %llu\n", (unsigned long long)v);
                }
            }
        }
    }
}

static void gw_render_resync(struct gw_buf* b,
                             Skein__Envelope* const* st,
                             size_t n) {
    static const struct {
        const char* name;
        size_t offset;
    } fams[] = {
        {"skein_resync_snapshots_created_total",
         offsetof(Skein__ResyncStats, snapshots_created)},
        {"skein_resync_send_attempts_total",
         offsetof(Skein__ResyncStats, send_attempts)},
        {"skein_resync_send_successes_total",
         offsetof(Skein__ResyncStats, send_successes)},
        {"skein_resync_send_failures_total",
         offsetof(Skein__ResyncStats, send_failures)},
        {"skein_resync_snapshots_received_total",
         offsetof(Skein__ResyncStats, snapshots_received)},
        {"skein_resync_snapshots_applied_total",
         offsetof(Skein__ResyncStats, snapshots_applied)},
    };
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        gw_buf_printf(b,
                      "# HELP %s Snapshot resync counter (seed 004 "
                      "resync_stats).\n# TYPE %s counter\n",
                      fams[k].name, fams[k].name);
        for (size_t i = 0; i < n; i++) {
            if (st[i] == NULL) {
                continue;
            }
            const Skein__StatusResponse* s = st[i]->admin_response->node_status;
            uint64_t v = 0;
            if (s->resync_stats != NULL) {
                memcpy(&v, (const char*)s->resync_stats + fams[k].offset,
                       sizeof v);
            }
            gw_buf_printf(b, "%s{", fams[k].name);
            gw_node_labels(b, s);
            gw_buf_printf(b, "} %llu\n", (unsigned long long)v);
        }
    }
}

int gw_handle_metrics(struct gw_req* r) {
    struct gw* gw = r->gw;
    Skein__Envelope* st[GW_MAX_NODES] = {NULL};
    for (size_t i = 0; i < gw->node_count; i++) {
        st[i] = gw_scrape_node(r, (int)i);
    }
    struct gw_buf b = {.max = (size_t)8 << 20};
    gw_render_node_roles(&b, gw, st, gw->node_count);
    gw_render_node_scalars(&b, st, gw->node_count);
    gw_render_followers(&b, st, gw->node_count);
    gw_render_resync(&b, st, gw->node_count);
    gw_render_gateway(&b, gw);
    gw_render_requests(&b, gw);
    gw_render_histogram(&b, gw);
    for (size_t i = 0; i < gw->node_count; i++) {
        if (st[i] != NULL) {
            skein__envelope__free_unpacked(st[i], NULL);
        }
    }
    int rv;
    if (b.failed) {
        rv = gw_reply_error(r, 500, "internal", NULL,
                            "the metrics do not fit in memory");
    } else {
        rv = gw_reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                          b.data, b.len);
    }
    gw_buf_free(&b);
    return rv;
}
