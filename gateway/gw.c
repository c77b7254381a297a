/*
 * gw.c - the gateway's lifecycle: configuration, start and stop.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw_internal.h"

/* Upper bounds that keep a configuration sane. */
#define GW_THREADS_MAX    4096u
#define GW_TIMEOUT_MAX_MS (10u * 60u * 1000u)

void gw_config_init(struct gw_config* cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->num_threads = GW_DEFAULT_THREADS;
    cfg->max_body_bytes = GW_DEFAULT_MAX_BODY_BYTES;
    cfg->max_snapshot_bytes = GW_DEFAULT_MAX_SNAPSHOT_BYTES;
    cfg->request_timeout_ms = GW_DEFAULT_TIMEOUT_MS;
    cfg->keep_alive_timeout_ms = GW_DEFAULT_KEEP_ALIVE_MS;
    cfg->leader_wait_ms = GW_DEFAULT_LEADER_WAIT_MS;
    cfg->connect_wait_ms = GW_DEFAULT_CONNECT_WAIT_MS;
    cfg->probe_interval_ms = GW_DEFAULT_PROBE_INTERVAL_MS;
    cfg->recv_max_bytes = GW_DEFAULT_RECV_MAX_BYTES;
}

const char* gw_strerror(int err) {
    switch (err) {
        case GW_OK:
            return "success";
        case GW_EINVAL:
            return "invalid gateway configuration";
        case GW_ENOMEM:
            return "out of memory";
        case GW_ENNG:
            return "nng could not open or dial a node socket";
        case GW_ELISTEN:
            return "the HTTP server could not start";
        default:
            return "unknown gateway error";
    }
}

static int gw_fail(const struct gw_config* cfg, int err, const char* what) {
    if (!cfg->quiet) {
        fprintf(stderr, "skein-gateway: %s: %s\n", gw_strerror(err), what);
    }
    return err;
}

/* Replaces zero fields by their defaults and caps the rest. */
static void gw_normalize(struct gw_config* c) {
    struct gw_config d;
    gw_config_init(&d);
    if (c->num_threads == 0) {
        c->num_threads = d.num_threads;
    }
    if (c->num_threads > GW_THREADS_MAX) {
        c->num_threads = GW_THREADS_MAX;
    }
    if (c->max_body_bytes == 0) {
        c->max_body_bytes = d.max_body_bytes;
    }
    if (c->max_snapshot_bytes == 0) {
        c->max_snapshot_bytes = d.max_snapshot_bytes;
    }
    if (c->request_timeout_ms == 0) {
        c->request_timeout_ms = d.request_timeout_ms;
    }
    if (c->request_timeout_ms > GW_TIMEOUT_MAX_MS) {
        c->request_timeout_ms = GW_TIMEOUT_MAX_MS;
    }
    if (c->keep_alive_timeout_ms == 0) {
        c->keep_alive_timeout_ms = d.keep_alive_timeout_ms;
    }
    if (c->leader_wait_ms == 0) {
        c->leader_wait_ms = d.leader_wait_ms;
    }
    if (c->connect_wait_ms == 0) {
        c->connect_wait_ms = d.connect_wait_ms;
    }
    if (c->probe_interval_ms == 0) {
        c->probe_interval_ms = d.probe_interval_ms;
    }
    if (c->recv_max_bytes == 0) {
        c->recv_max_bytes = d.recv_max_bytes;
    }
}

static int gw_copy_config(struct gw* gw, const struct gw_config* cfg) {
    if (cfg->listen == NULL || strchr(cfg->listen, ':') == NULL ||
        strlen(cfg->listen) >= sizeof gw->listen) {
        return gw_fail(cfg, GW_EINVAL, "listen must be HOST:PORT");
    }
    if (cfg->node_count == 0 || cfg->node_count > GW_MAX_NODES ||
        cfg->node_urls == NULL) {
        return gw_fail(cfg, GW_EINVAL, "1 to 16 node URLs are needed");
    }
    if (cfg->access_control_list != NULL &&
        strlen(cfg->access_control_list) >= sizeof gw->acl) {
        return gw_fail(cfg, GW_EINVAL, "access_control_list is too long");
    }
    gw->cfg = *cfg;
    gw_normalize(&gw->cfg);
    snprintf(gw->listen, sizeof gw->listen, "%s", cfg->listen);
    gw->cfg.listen = gw->listen;
    snprintf(gw->acl, sizeof gw->acl, "%s",
             cfg->access_control_list != NULL ? cfg->access_control_list : "");
    gw->cfg.access_control_list = gw->acl;
    gw->cfg.node_urls = NULL; /* copied into nodes[] */
    for (size_t i = 0; i < cfg->node_count; i++) {
        const char* url = cfg->node_urls[i];
        if (url == NULL || url[0] == '\0' || strlen(url) > GW_URL_MAX ||
            strstr(url, "://") == NULL) {
            return gw_fail(cfg, GW_EINVAL,
                           "a node URL is empty, too long or has no "
                           "scheme (e.g. tcp://127.0.0.1:9081)");
        }
        struct gw_node* n = &gw->nodes[i];
        snprintf(n->url, sizeof n->url, "%s", url);
        atomic_init(&n->pipes, 0);
        atomic_init(&n->disconnects, 0);
        atomic_init(&n->id, 0);
        atomic_init(&n->id_known, false);
        atomic_init(&n->role, -1);
        atomic_init(&n->last_seen_ms, 0);
    }
    gw->node_count = cfg->node_count;
    atomic_init(&gw->leader, -1);
    atomic_init(&gw->rr, 0u);
    atomic_init(&gw->accepting, false);
    return GW_OK;
}

/* civetweb's log lines, on stderr unless quiet. */
static int gw_log_message(const struct mg_connection* conn,
                          const char* message) {
    const struct mg_context* ctx = conn != NULL ? mg_get_context(conn) : NULL;
    const struct gw* gw = ctx != NULL ? mg_get_user_data(ctx) : NULL;
    if (gw == NULL || !gw->cfg.quiet) {
        fprintf(stderr, "skein-gateway: civetweb: %s\n", message);
    }
    return 1; /* handled */
}

/* civetweb calls this before it looks for a handler: while the gateway is
 * not accepting (starting: no routes yet), the request is answered 503
 * here. Returns 0 to let civetweb route the request, else the status sent. */
static int gw_begin_request(struct mg_connection* conn) {
    const struct mg_context* ctx = mg_get_context(conn);
    struct gw* gw = ctx != NULL ? mg_get_user_data(ctx) : NULL;
    if (gw == NULL || atomic_load(&gw->accepting)) {
        return 0;
    }
    static const char body[] =
        "{\"error\":\"the gateway is not serving yet: retry shortly\","
        "\"code\":\"unavailable\"}\n";
    mg_printf(conn,
              "HTTP/1.1 503 Service Unavailable\r\n"
              "Content-Type: application/json\r\n"
              "Retry-After: %s\r\n"
              "Content-Length: %zu\r\n"
              "Connection: close\r\n\r\n%s",
              GW_RETRY_AFTER_S, sizeof body - 1, body);
    return 503;
}

static pthread_once_t gw_mg_once = PTHREAD_ONCE_INIT;

static void gw_mg_init(void) {
    mg_init_library(0);
}

static int gw_start_http(struct gw* gw) {
    char threads[16], timeout[16], keep_alive[16], backlog[16];
    const struct gw_config* c = &gw->cfg;
    snprintf(threads, sizeof threads, "%u", c->num_threads);
    snprintf(timeout, sizeof timeout, "%u", c->request_timeout_ms);
    snprintf(keep_alive, sizeof keep_alive, "%u", c->keep_alive_timeout_ms);
    snprintf(backlog, sizeof backlog, "%u",
             c->num_threads > 128 ? c->num_threads : 128);
    /* NOTES.md: without tcp_nodelay, keep-alive responses wait ~40 ms;
     * with fewer threads than connections, first responses stall. */
    const char* opts[24] = {
        "listening_ports",   gw->listen, "num_threads",           threads,
        "enable_keep_alive", "yes",      "keep_alive_timeout_ms", keep_alive,
        "tcp_nodelay",       "1",        "request_timeout_ms",    timeout,
        "listen_backlog",    backlog,    "connection_queue",      backlog};
    size_t n = 16;
    if (gw->acl[0] != '\0') {
        opts[n++] = "access_control_list";
        opts[n++] = gw->acl;
    }
    opts[n] = NULL;
    struct mg_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    callbacks.log_message = gw_log_message;
    callbacks.begin_request = gw_begin_request;
    struct mg_init_data init = {.callbacks = &callbacks,
                                .user_data = gw,
                                .configuration_options = opts};
    char errtext[256] = "";
    struct mg_error_data error = {
        .code = NULL, .text = errtext, .text_buffer_size = sizeof errtext};
    pthread_once(&gw_mg_once, gw_mg_init);
    gw->mg = mg_start2(&init, &error);
    if (gw->mg == NULL) {
        char what[400];
        snprintf(what, sizeof what, "listen %s: %s", gw->listen,
                 errtext[0] != '\0' ? errtext : "mg_start failed");
        return gw_fail(&gw->cfg, GW_ELISTEN, what);
    }
    struct mg_server_port ports[4];
    int count = mg_get_server_ports(gw->mg, 4, ports);
    gw->port = count > 0 ? ports[0].port : -1;
    gw_http_install(gw);
    gw_set_accepting(gw, true);
    return GW_OK;
}

void gw_set_accepting(struct gw* gw, bool on) {
    if (gw != NULL) {
        atomic_store(&gw->accepting, on);
    }
}

int gw_start(const struct gw_config* cfg, struct gw** out) {
    *out = NULL;
    struct gw* gw = calloc(1, sizeof *gw);
    if (gw == NULL) {
        return gw_fail(cfg, GW_ENOMEM, "allocating the gateway");
    }
    int rv = gw_copy_config(gw, cfg);
    if (rv == GW_OK) {
        rv = gw_rpc_open(gw);
    }
    if (rv == GW_OK) {
        rv = gw_probe_start(gw);
        if (rv != GW_OK) {
            gw_fail(cfg, rv, "starting the status probe");
        }
    }
    if (rv == GW_OK) {
        rv = gw_start_http(gw);
    }
    if (rv != GW_OK) {
        gw_stop(gw);
        return rv;
    }
    *out = gw;
    return GW_OK;
}

/* What wakes civetweb's listener while mg_stop waits for it. */
struct gw_waker {
    struct addrinfo* addrs; /* where our listener can be reached */
    atomic_bool done;
};

/* civetweb's listener thread looks at its stop flag only between polls
 * of 2 s (SOCKET_TIMEOUT_QUANTUM), so mg_stop alone takes up to 2 s.
 * A connection to the listener ends its poll at once; repeated, because
 * the first may come before mg_stop has raised the flag. */
static void* gw_waker_run(void* arg) {
    struct gw_waker* w = arg;
    const struct timespec pause = {0, 20 * 1000 * 1000};

    while (!atomic_load(&w->done)) {
        for (struct addrinfo* a = w->addrs; a != NULL; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK,
                            a->ai_protocol);
            if (fd >= 0) {
                (void)connect(fd, a->ai_addr, a->ai_addrlen);
                close(fd);
            }
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* The addresses of our listener for gw_waker_run (a wildcard listener is
 * reached on loopback), or NULL. The caller frees them (freeaddrinfo). */
static struct addrinfo* gw_listener_addrs(const struct gw* gw) {
    char host[128];
    char port[16];
    const char* colon = strrchr(gw->listen, ':');
    struct addrinfo hints;
    struct addrinfo* res = NULL;

    if (gw->port <= 0) {
        return NULL;
    }
    snprintf(port, sizeof port, "%d", gw->port);
    snprintf(host, sizeof host, "%.*s",
             colon != NULL ? (int)(colon - gw->listen) : 0, gw->listen);
    if (host[0] == '[') { /* [v6]:port */
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) {
        snprintf(host, sizeof host, "127.0.0.1");
    } else if (strcmp(host, "::") == 0) {
        snprintf(host, sizeof host, "::1");
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    return getaddrinfo(host, port, &hints, &res) == 0 ? res : NULL;
}

/* mg_stop, without civetweb's 2 s wait for its listener's poll. */
static void gw_stop_http(struct gw* gw) {
    struct gw_waker w = {.addrs = gw_listener_addrs(gw)};
    pthread_t waker;
    bool waking;

    atomic_init(&w.done, false);
    waking =
        w.addrs != NULL && pthread_create(&waker, NULL, gw_waker_run, &w) == 0;
    mg_stop(gw->mg);
    gw->mg = NULL;
    if (waking) {
        atomic_store(&w.done, true);
        pthread_join(waker, NULL);
    }
    if (w.addrs != NULL) {
        freeaddrinfo(w.addrs);
    }
}

void gw_stop(struct gw* gw) {
    if (gw == NULL) {
        return;
    }
    /* Handlers use the node sockets: stop them first, then the probe,
     * then close the sockets. */
    if (gw->mg != NULL) {
        gw_stop_http(gw);
    }
    gw_probe_stop(gw);
    gw_rpc_close(gw);
    free(gw);
}

int gw_port(const struct gw* gw) {
    return gw != NULL ? gw->port : -1;
}
