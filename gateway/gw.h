/*
 * gw.h - Skein's REST gateway, as a library (prefix gw_).
 *
 * The gateway serves the REST surface of DESIGN.md ("REST surface": /api/kv,
 * /status, /metrics, the dashboard at /, and /_raft/...) over civetweb, and
 * turns each HTTP request into one skein.Envelope sent to a node over nng
 * REQ/REP (proto/skein.proto: ClientRequest -> ClientResponse, AdminRequest
 * -> AdminResponse). JSON in, JSON out; errors are
 * {"error": "...", "code": "..."} with the matching HTTP status.
 *
 * Two users:
 *  - skein-node --http HOST:PORT embeds it, with one node URL: the node's
 *    own `inproc://skein-<id>` REP listener. The node forwards writes to
 *    its leader itself; the gateway only waits (bounded) while there is no
 *    leader.
 *  - the standalone skein-gateway binary (gateway/gw_main.c), with the tcp
 *    URLs of several nodes: it learns each node's id and the leader from
 *    periodic status requests, sends writes to the leader, spreads reads
 *    round-robin over the nodes, and follows NOT_LEADER hints.
 *
 * Typical embedding (error handling elided):
 *
 *     const char *urls[] = { "inproc://skein-1" };
 *     struct gw_config cfg;
 *     struct gw *gw;
 *     gw_config_init(&cfg);
 *     cfg.listen = "127.0.0.1:8080";
 *     cfg.node_urls = urls;
 *     cfg.node_count = 1;
 *     cfg.cluster_id = 42;
 *     if (gw_start(&cfg, &gw) != 0) { ... }
 *     ...
 *     gw_stop(gw);
 *
 * The node's REP listener must exist before requests arrive, not before
 * gw_start: the gateway dials with NNG_FLAG_NONBLOCK and reconnects in the
 * background, and answers 503 (with Retry-After) while no node is
 * reachable.
 *
 * Retries and idempotency: every write carries a request_id (the client's
 * Idempotency-Key header, or a random UUID). A write is retried, with the
 * same request_id, only after NOT_LEADER, NO_QUORUM, a lost connection or
 * UNKNOWN_OUTCOME, and only until the request deadline; the node's
 * idempotency table makes sure it is applied at most once. A write whose
 * fate is still unknown at the deadline is answered 504 with code
 * "outcome_unknown", never as a success.
 *
 * Threads: civetweb runs num_threads worker threads, each blocking on at
 * most one node request at a time (one nng context per request). One more
 * thread probes the nodes' status every probe_interval_ms. Every public
 * function below may be called from any thread, but gw_stop only once per
 * gateway.
 */
#ifndef SKEIN_GW_H
#define SKEIN_GW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* At most this many node URLs per gateway. */
#define GW_MAX_NODES 16
/* Longest node URL accepted, in bytes, without the terminating NUL. */
#define GW_URL_MAX 255

/* Return codes of gw_start (0 = success). */
enum gw_err {
    GW_OK = 0,
    GW_EINVAL = 1,  /* bad configuration (see the message on stderr) */
    GW_ENOMEM = 2,  /* out of memory */
    GW_ENNG = 3,    /* nng could not open a socket or dialer */
    GW_ELISTEN = 4, /* civetweb did not start (address in use, bad listen) */
};

/*
 * Gateway configuration. Fill it with gw_config_init, then set at least
 * `listen`, `node_urls` and `node_count`. gw_start copies everything it
 * needs: the strings and the URL array may be freed once it returns.
 * A zero numeric field (other than cluster_id) means "the default".
 */
/*
 * gw_local_call_fn - hands a packed request Envelope to a node living in
 * the gateway's own process and waits up to timeout_ms for its packed
 * answer (*reply malloc'd, the gateway frees it; NULL when empty).
 * Returns 0 with an answer, -3 if none came in time (the request may have
 * been acted on), any other negative value if it was not delivered.
 */
typedef int (*gw_local_call_fn)(void* arg,
                                const uint8_t* data,
                                size_t len,
                                uint32_t timeout_ms,
                                uint8_t** reply,
                                size_t* reply_len);

struct gw_config {
    const char* listen;              /* "HOST:PORT" to serve HTTP on, e.g.
                                        "127.0.0.1:8080"; port 0 picks a free
                                        port (see gw_port). IPv4 only. */
    const char* const* node_urls;    /* nng URLs of the nodes, e.g.
                                        "inproc://skein-1", "tcp://h:9081" */
    size_t node_count;               /* 1..GW_MAX_NODES */
    uint64_t cluster_id;             /* put in every Envelope; replies from
                                        another cluster (non-zero, different)
                                        are refused */
    unsigned num_threads;            /* civetweb worker threads = concurrent
                                        connections served; default 300 */
    size_t max_body_bytes;           /* request body limit (413 above);
                                        default 1 MiB + 64 KiB */
    size_t max_snapshot_bytes;       /* POST /_raft/snapshot body limit;
                                        default 4 GiB */
    unsigned request_timeout_ms;     /* deadline of one HTTP request, node
                                        round trips and retries included;
                                        also civetweb's request_timeout_ms;
                                        default 10000 */
    unsigned keep_alive_timeout_ms;  /* idle keep-alive connection timeout;
                                        default 5000 */
    unsigned leader_wait_ms;         /* how long a request waits for a leader
                                        (NOT_LEADER/NO_QUORUM without a usable
                                        hint) before answering 503; capped by
                                        the request timeout; default 3000 */
    unsigned connect_wait_ms;        /* how long a request waits while no node
                                        is connected before answering 503;
                                        default 1000 */
    unsigned probe_interval_ms;      /* period of the status probe that learns
                                        node ids and the leader; default 1000;
                                        UINT32_MAX disables it */
    size_t recv_max_bytes;           /* nng recv-size-max of replies; default
                                        16 MiB (a list page, a snapshot chunk) */
    const char* access_control_list; /* civetweb ACL, e.g.
                                        "-0.0.0.0/0,+127.0.0.1"; NULL: all */
    int quiet;                       /* non-zero: no log lines on stderr */
    gw_local_call_fn local_call;     /* set by skein-node --http: node_urls[0]
                                        is this process's node, reached by
                                        this function call instead of a
                                        socket (no thread hand-offs) */
    void* local_arg;                 /* local_call's first argument */
};

/* Defaults, also what gw_config_init puts in a config. */
#define GW_DEFAULT_THREADS            300u
#define GW_DEFAULT_MAX_BODY_BYTES     ((size_t)(1024 * 1024 + 64 * 1024))
#define GW_DEFAULT_MAX_SNAPSHOT_BYTES ((size_t)4 << 30)
#define GW_DEFAULT_TIMEOUT_MS         10000u
#define GW_DEFAULT_KEEP_ALIVE_MS      5000u
#define GW_DEFAULT_LEADER_WAIT_MS     3000u
#define GW_DEFAULT_CONNECT_WAIT_MS    1000u
#define GW_DEFAULT_PROBE_INTERVAL_MS  1000u
#define GW_DEFAULT_RECV_MAX_BYTES     ((size_t)16 << 20)

/* A running gateway: opaque. */
struct gw;

/*
 * gw_config_init - fill *cfg with the defaults above and no listen address
 * or nodes. Never fails; cfg must not be NULL.
 */
void gw_config_init(struct gw_config* cfg);

/*
 * gw_start - validate cfg, dial every node (non-blocking), start the HTTP
 * server and the status probe.
 *
 * Returns GW_OK and sets *out to a gateway the caller owns and must release
 * with gw_stop; otherwise returns a gw_err code, prints why on stderr
 * (unless cfg->quiet) and leaves *out NULL. Nothing of cfg is kept: it is
 * copied.
 */
int gw_start(const struct gw_config* cfg, struct gw** out);

/*
 * gw_stop - stop serving and free the gateway. Waits for in-flight HTTP
 * requests to finish (each is bounded by request_timeout_ms; civetweb
 * itself may take ~2 s to stop its threads), then closes the node sockets.
 * gw may be NULL. gw is invalid afterwards.
 */
void gw_stop(struct gw* gw);

/*
 * gw_set_accepting - whether requests are served (true, the state once
 * gw_start returned) or each answered 503 {"code":"unavailable"} with
 * Retry-After and nothing else done (false). Safe from any thread. The
 * gateway starts refusing: civetweb listens before the routes are in
 * place, and a request in that window must not get civetweb's own 404,
 * which a client would take for "no such entry".
 */
void gw_set_accepting(struct gw* gw, bool on);

/*
 * gw_port - the TCP port the gateway listens on (useful with port 0).
 * Returns the port, or -1 if gw is NULL.
 */
int gw_port(const struct gw* gw);

/*
 * gw_strerror - a static English description of a gw_err code; never NULL,
 * never to be freed.
 */
const char* gw_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* SKEIN_GW_H */
