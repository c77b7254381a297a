/*
 * gw_internal.h - the gateway's internal interfaces, shared by its files.
 *
 *   gw.c          lifecycle: config, gw_start, gw_stop
 *   gw_rpc.c      nng client: node sockets, one request, leader following,
 *                 the status probe thread
 *   gw_http.c     civetweb glue: dispatch, request bodies, query
 *                 parameters, JSON and error responses
 *   gw_kv.c       /api/kv handlers
 *   gw_admin.c    /status and /_raft/... handlers
 *   gw_conv.c     protobuf -> JSON conversions
 *   gw_metrics.c  request counters, latency histograms, GET /metrics
 *   gw_dashboard.c  GET /: the HTML dashboard
 *
 * Nothing here is public API; gw.h is.
 */
#ifndef SKEIN_GW_INTERNAL_H
#define SKEIN_GW_INTERNAL_H

#include <civetweb.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw.h"
#include "skein.pb-c.h"

/* Longest Idempotency-Key accepted (printable ASCII, no spaces). */
#define GW_REQUEST_ID_MAX 128
/* Longest entry id accepted in a path or ?after= (ids are UUIDs). */
#define GW_ID_MAX 128
/* Longest ?key= filter accepted, in bytes (URL-decoded). */
#define GW_KEY_PARAM_MAX 4096
/* Largest ?limit= page, and the page size used to list everything. */
#define GW_LIST_LIMIT_MAX 10000u
#define GW_LIST_PAGE      1000u
/* A GET /api/kv without ?limit= stops with an error above this many bytes
 * of JSON: such a client must page. */
#define GW_LIST_ALL_MAX_BYTES ((size_t)128 << 20)
/* Snapshot transfer chunk, both directions. */
#define GW_SNAPSHOT_CHUNK ((size_t)1 << 20)
/* Extra response headers one request may add. */
#define GW_MAX_EXTRA_HEADERS 8
/* Seconds in the Retry-After header of a 503/504. */
#define GW_RETRY_AFTER_S "1"

/* Routes, as counted by the metrics (one per path and method). */
enum gw_route {
    GW_ROUTE_KV_LIST,
    GW_ROUTE_KV_CREATE,
    GW_ROUTE_KV_GET,
    GW_ROUTE_KV_UPDATE,
    GW_ROUTE_KV_DELETE,
    GW_ROUTE_KV_COUNT,
    GW_ROUTE_KV_RANDOM_ID,
    GW_ROUTE_STATUS,
    GW_ROUTE_METRICS,
    GW_ROUTE_DASHBOARD,
    GW_ROUTE_RAFT_HEALTH,
    GW_ROUTE_RAFT_SYNC_STATUS,
    GW_ROUTE_RAFT_RESYNC_STATS,
    GW_ROUTE_RAFT_FORCE_RESYNC,
    GW_ROUTE_RAFT_TRANSFER_LEADER,
    GW_ROUTE_RAFT_MEMBERS_LIST,
    GW_ROUTE_RAFT_MEMBERS_ADD,
    GW_ROUTE_RAFT_MEMBERS_REMOVE,
    GW_ROUTE_RAFT_APPEND,
    GW_ROUTE_RAFT_SNAPSHOT_GET,
    GW_ROUTE_RAFT_SNAPSHOT_POST,
    GW_ROUTE_OTHER, /* unknown path or method: 404/405 */
    GW_ROUTE_COUNT
};

/* HTTP statuses counted one by one; anything else is "other". */
#define GW_STATUS_SLOTS 16
/* Latency histogram buckets (upper bounds in microseconds), +Inf last. */
#define GW_LATENCY_BUCKETS 15

/* Gateway metrics: lock-free counters, read by GET /metrics. */
struct gw_metrics {
    atomic_uint_fast64_t requests[GW_ROUTE_COUNT][GW_STATUS_SLOTS];
    /* per route and status class (2xx/3xx, 4xx, 5xx), non-cumulative */
    atomic_uint_fast64_t latency[GW_ROUTE_COUNT][3][GW_LATENCY_BUCKETS + 1];
    atomic_uint_fast64_t latency_sum_us[GW_ROUTE_COUNT][3];
    atomic_uint_fast64_t in_flight;        /* HTTP requests being served */
    atomic_uint_fast64_t rpc_sent;         /* node requests sent */
    atomic_uint_fast64_t rpc_failed;       /* no reply (lost or timeout) */
    atomic_uint_fast64_t rpc_unreachable;  /* skipped: node not connected */
    atomic_uint_fast64_t rpc_bad_reply;    /* reply did not decode/match */
    atomic_uint_fast64_t leader_redirects; /* NOT_LEADER followed */
    atomic_uint_fast64_t write_retries;    /* writes re-sent (same id) */
    atomic_uint_fast64_t probes;           /* status probes sent */
};

/* One node the gateway talks to. */
struct gw_node {
    char url[GW_URL_MAX + 1];         /* nng URL, as configured */
    nng_socket sock;                  /* REQ socket, this node only */
    bool open;                        /* sock was opened */
    atomic_int pipes;                 /* connected pipes now */
    atomic_uint_fast64_t disconnects; /* pipe removals so far */
    atomic_uint_fast64_t id;          /* node id from its status */
    atomic_bool id_known;             /* id was learned (ids may be 0) */
    atomic_int role;                  /* StatusResponse.Role, -1 unknown */
    atomic_int_fast64_t last_seen_ms; /* monotonic ms of last reply, 0 */
};

/* A running gateway (struct gw of gw.h). */
struct gw {
    struct gw_config cfg;  /* copy; strings below */
    char listen[128];      /* cfg.listen points here */
    char acl[512];         /* cfg.access_control_list, or "" */
    struct mg_context* mg; /* civetweb, NULL until started */
    atomic_bool accepting; /* requests are routed (gw_set_accepting) */
    int port;              /* bound HTTP port */
    struct gw_node nodes[GW_MAX_NODES];
    size_t node_count;
    atomic_int leader; /* index of the leader, -1 unknown */
    atomic_uint rr;    /* round-robin cursor for reads */
    struct gw_metrics metrics;
    /* status probe thread */
    pthread_t probe_thread;
    bool probe_ready;   /* probe_mu and probe_cv exist */
    bool probe_started; /* probe_thread runs */
    pthread_mutex_t probe_mu;
    pthread_cond_t probe_cv; /* CLOCK_MONOTONIC */
    bool probe_stop;         /* under probe_mu */
    bool probe_kick;         /* under probe_mu: probe now */
};

/* ---- gw_rpc.c ---------------------------------------------------------- */

/* Where a request goes. */
enum gw_target {
    GW_TARGET_ANY,    /* round robin over connected nodes (reads) */
    GW_TARGET_LEADER, /* the leader if known, else any, following hints */
    GW_TARGET_NODE,   /* exactly one node (opts.node), no retries elsewhere */
};

/* How a request is sent. */
struct gw_rpc_opts {
    enum gw_target target;
    int node;      /* GW_TARGET_NODE: index into gw->nodes */
    bool write;    /* a state change: a lost reply means "outcome unknown" */
    bool no_retry; /* one attempt only (raft RPCs, snapshot chunks) */
};

/* What came of a request. */
enum gw_outcome {
    GW_RPC_REPLY,       /* reply holds the node's last answer, any status */
    GW_RPC_UNAVAILABLE, /* no node answered; a write was never delivered */
    GW_RPC_UNKNOWN,     /* a write may have been applied: no answer came */
    GW_RPC_BAD_REPLY,   /* a node answered something that does not decode
                           or does not match the request */
};

/* The result of gw_rpc; release with gw_rpc_result_free. */
struct gw_rpc_result {
    enum gw_outcome outcome;
    Skein__Envelope* reply; /* owned; GW_RPC_REPLY only, else NULL */
    int node;               /* index of the node that answered, or -1 */
    char detail[160];       /* why, when not GW_RPC_REPLY */
};

/* The fields of a reply that steer retries, from either response type. */
struct gw_reply_info {
    bool valid;              /* a client_response or admin_response */
    int status;              /* Skein__ClientResponse__Status */
    uint64_t leader_hint;    /* meaningful when leader_known */
    bool leader_known;       /* leader_hint names a leader */
    const char* leader_url;  /* borrowed from the reply, may be NULL */
    const char* leader_http; /* borrowed from the reply, may be NULL */
    const char* error;       /* borrowed from the reply, may be NULL */
};

/* Opens one REQ socket per configured node and dials it without blocking.
 * Returns GW_OK or GW_ENNG (message on stderr unless quiet). */
int gw_rpc_open(struct gw* gw);
/* Closes every node socket. Only after HTTP serving and the probe stopped. */
void gw_rpc_close(struct gw* gw);
/* Starts the status probe thread. Returns GW_OK or GW_ENOMEM. */
int gw_probe_start(struct gw* gw);
/* Stops and joins the probe thread (no-op if it never started). */
void gw_probe_stop(struct gw* gw);
/* Probes, now and from the calling thread, the connected nodes whose id is
 * not known yet (a request naming a node by id right after start). */
void gw_probe_unknown(struct gw* gw);
/* Asks the probe thread to probe now (non-blocking). */
void gw_probe_kick(struct gw* gw);

/*
 * gw_rpc - send `req` (an Envelope the caller owns; cluster_id is set here)
 * according to `opts`, retrying and following the leader until
 * `deadline_ms` (monotonic, gw_now_ms). Fills *res; the caller must call
 * gw_rpc_result_free on it whatever the outcome. Returns res->outcome.
 */
enum gw_outcome gw_rpc(struct gw* gw,
                       Skein__Envelope* req,
                       const struct gw_rpc_opts* opts,
                       int64_t deadline_ms,
                       struct gw_rpc_result* res);
/* Frees res->reply (if any) and resets *res. */
void gw_rpc_result_free(struct gw_rpc_result* res);
/* Reads the retry-relevant fields of a reply envelope (borrowed). */
struct gw_reply_info gw_reply_info(const Skein__Envelope* reply);
/* Index of the node whose learned id is `id`, or -1. Any id, 0 included
 * (seed-form clusters number nodes from 0). */
int gw_node_by_id(struct gw* gw, uint64_t id);
/* Monotonic clock in milliseconds. */
int64_t gw_now_ms(void);
/* Monotonic clock in microseconds. */
int64_t gw_now_us(void);

/* ---- gw_http.c --------------------------------------------------------- */

/* One HTTP request being served (lives on the handler's stack). */
struct gw_req {
    struct gw* gw;
    struct mg_connection* conn;
    const struct mg_request_info* ri;
    const char* method;  /* "GET", ... */
    const char* path;    /* URL-decoded path, no trailing slash (but
                            "/") */
    const char* query;   /* raw query string, or "" */
    enum gw_route route; /* set by the dispatcher */
    int64_t start_us;    /* when the dispatcher saw it */
    int64_t deadline_ms; /* start + request_timeout_ms */
    int status;          /* status sent, 0 = nothing sent yet */
    char* body;          /* request body (NUL-terminated), or NULL */
    size_t body_len;     /* bytes in body */
    int extra_count;     /* extra response headers below */
    struct {
        char name[32];
        char value[160];
    } extra[GW_MAX_EXTRA_HEADERS];
};

/* Installs the request handler on gw->mg. */
void gw_http_install(struct gw* gw);
/* Adds a response header to the next reply (bounded; extra ones are
 * dropped). */
void gw_add_header(struct gw_req* r, const char* name, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends `body` (len bytes) with `status` and `content_type`. Returns 0, or
 * -1 if the client went away. */
int gw_reply_raw(struct gw_req* r,
                 int status,
                 const char* content_type,
                 const void* body,
                 size_t len);
/* Sends `json` (stolen: decref'd here, may be NULL meaning {}) as
 * compact JSON with `status`. */
int gw_reply_json(struct gw_req* r, int status, json_t* json);
/* Sends {"error": message, "code": code} plus the fields of `extra`
 * (stolen, may be NULL) with `status`; adds Retry-After to 503/504. */
int gw_reply_error(struct gw_req* r,
                   int status,
                   const char* code,
                   json_t* extra,
                   const char* fmt,
                   ...) __attribute__((format(printf, 5, 6)));
/* Answers a reply whose status is not OK (404, 412, 503, ...). */
int gw_reply_node_status(struct gw_req* r, const Skein__Envelope* reply);
/* Answers a failed gw_rpc (outcome other than GW_RPC_REPLY). */
int gw_reply_outcome(struct gw_req* r,
                     const struct gw_rpc_result* res,
                     bool write);
/* Reads the whole body into r->body (bounded by cfg.max_body_bytes).
 * Returns 0, or -1 after answering 413 or 400 itself. */
int gw_read_body(struct gw_req* r);
/* Copies query parameter `name` (URL-decoded) into buf. Returns its
 * length, -1 if absent, -2 if longer than buflen - 1. */
int gw_query(const struct gw_req* r,
             const char* name,
             char* buf,
             size_t buflen);
/* The value of request header `name`, or NULL (borrowed). */
const char* gw_header(const struct gw_req* r, const char* name);
/* Parses a decimal u64 without sign or spaces. Returns 0 or -1. */
int gw_parse_u64(const char* s, uint64_t* out);

/* A growable text buffer (list-all and /metrics). */
struct gw_buf {
    char* data;  /* NUL-terminated when len > 0, owned */
    size_t len;  /* bytes used, without the NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* growth limit; 0 = none */
    bool failed; /* an append failed (no memory or over max): stop */
};

/* Appends len bytes. Sets b->failed and returns -1 if it cannot. */
int gw_buf_append(struct gw_buf* b, const char* s, size_t len);
/* Appends formatted text. Sets b->failed and returns -1 if it cannot. */
int gw_buf_printf(struct gw_buf* b, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Frees the buffer's memory and resets it. */
void gw_buf_free(struct gw_buf* b);

/* Starts a response whose body follows with mg_write: sends the status,
 * Content-Type, a Content-Length of `len` and the extra headers. */
int gw_reply_start(struct gw_req* r,
                   int status,
                   const char* content_type,
                   uint64_t len);

/* ---- gw_kv.c / gw_admin.c ---------------------------------------------- */

/* /api/kv... (path starts with /api/kv). */
int gw_handle_kv(struct gw_req* r);
/* /status */
int gw_handle_status(struct gw_req* r);
/* /_raft/... (path starts with /_raft/). */
int gw_handle_raft(struct gw_req* r);
/* GET /metrics */
int gw_handle_metrics(struct gw_req* r);
/* GET / */
int gw_handle_dashboard(struct gw_req* r);

/* Answers 405 with an Allow header. */
int gw_reply_method(struct gw_req* r, const char* allow);

/*
 * Fetches one node's StatusResponse. With node >= 0 that node, else the
 * leader (the node believed to lead, falling back to any node, then to
 * the leader that node names). On success returns 0, *reply owns the
 * envelope (free with skein__envelope__free_unpacked), *status points into
 * it and *answered is the index of the node that answered. On failure
 * answers the HTTP request itself and returns -1.
 */
int gw_fetch_status(struct gw_req* r,
                    int node,
                    Skein__Envelope** reply,
                    const Skein__StatusResponse** status,
                    int* answered);
/* Picks the node named by ?node=ID (or index when not an id), -1 if the
 * parameter is absent; -2 after answering 400/404 itself. */
int gw_node_param(struct gw_req* r);

/* ---- gw_conv.c --------------------------------------------------------- */

/* u64 as a JSON integer (a decimal string above INT64_MAX). New ref. */
json_t* gw_json_u64(uint64_t v);
/* An entry in seed 000's shape. New ref, never NULL unless OOM. */
json_t* gw_entry_json(const Skein__KVEntry* e);
/* Role names: "leader", "follower", ... and seed 004's "Leader", ... */
const char* gw_role_name(int role);
const char* gw_state_name(int role);
/* "healthy", "lagging", "desynced", "unknown" */
const char* gw_health_name(int health);
/* A member: {"id","role","address","http_address"}. New ref. */
json_t* gw_member_json(const Skein__Member* m);
/* {"members": [...]} of a configuration (NULL: empty). New ref. */
json_t* gw_configuration_json(const Skein__Configuration* c);
/* One follower in seed 004's sync-status shape (plus more). New ref. */
json_t* gw_follower_json(const Skein__FollowerStatus* f);
/* The address a follower is known by in seed 004 (never NULL). */
const char* gw_follower_address(const Skein__FollowerStatus* f,
                                char* buf,
                                size_t buflen);
/* The resync_stats object of seed 004 (plus more). New ref. */
json_t* gw_resync_stats_json(const Skein__ResyncStats* s);
/* Whether s->leader_id names a leader: the leader_known flag, or for
 * nodes that do not send it, leader_id != 0 (ids may be 0: admin G3). */
bool gw_status_leader_known(const Skein__StatusResponse* s);
/* leader_id as JSON: the id, or null when no leader is known. New ref. */
json_t* gw_leader_json(const Skein__StatusResponse* s);
/* The whole StatusResponse. New ref. */
json_t* gw_status_json(const Skein__StatusResponse* s);

/* ---- gw_metrics.c ------------------------------------------------------ */

/* Counts one finished HTTP request. */
void gw_metrics_observe(struct gw* gw,
                        enum gw_route route,
                        int status,
                        int64_t latency_us);
/* The metric label of a route, e.g. "kv_get". */
const char* gw_route_name(enum gw_route route);

/* ---- gw_dashboard.c ---------------------------------------------------- */

/* The dashboard page (static, NUL-terminated). */
extern const char gw_dashboard_html[];

#endif /* SKEIN_GW_INTERNAL_H */
