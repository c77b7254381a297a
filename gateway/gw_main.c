/*
 * gw_main.c - skein-gateway: the REST gateway as a standalone process in
 * front of a cluster (gw.h explains what it does).
 *
 *   skein-gateway --listen 127.0.0.1:8000 \
 *                 --nodes tcp://127.0.0.1:9080,tcp://127.0.0.1:9081
 *
 * Runs until SIGINT or SIGTERM, then stops cleanly.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"

static void gw_usage(FILE* out) {
    fprintf(
        out,
        "usage: skein-gateway --listen HOST:PORT --nodes URL[,URL...] "
        "[options]\n"
        "\n"
        "Serves Skein's REST API (/api/kv, /status, /metrics, /_raft/*, the\n"
        "dashboard at /) and forwards each request to the cluster's nodes\n"
        "over nng. Writes go to the leader, reads are spread over the "
        "nodes.\n"
        "\n"
        "  --listen HOST:PORT     HTTP address (IPv4; port 0 picks one)\n"
        "  --nodes URL,...        node nng URLs, e.g. tcp://127.0.0.1:9081;\n"
        "                         a bare HOST:PORT means tcp://HOST:PORT\n"
        "  --cluster-id N         cluster id put in every message "
        "(default 0)\n"
        "  --threads N            HTTP worker threads = concurrent "
        "connections\n"
        "                         (default %u)\n"
        "  --timeout-ms N         deadline of one request, retries "
        "included\n"
        "                         (default %u)\n"
        "  --max-body BYTES       request body limit (default %zu)\n"
        "  --leader-wait-ms N     how long to wait for a leader (default "
        "%u)\n"
        "  --acl LIST             civetweb access control list, e.g.\n"
        "                         -0.0.0.0/0,+127.0.0.1\n"
        "  --quiet                no log lines\n"
        "  --help                 this text\n",
        GW_DEFAULT_THREADS, GW_DEFAULT_TIMEOUT_MS, GW_DEFAULT_MAX_BODY_BYTES,
        GW_DEFAULT_LEADER_WAIT_MS);
}

static int gw_parse_num(const char* flag,
                        const char* text,
                        unsigned long long max,
                        unsigned long long* out) {
    char* end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' ||
        v > max) {
        fprintf(stderr, "skein-gateway: %s: bad number %s\n", flag, text);
        return -1;
    }
    *out = v;
    return 0;
}

/* Splits "a,b,c" into urls (strings in `store`); a bare host:port gets
 * tcp://. Returns the count, or -1. */
static int gw_split_nodes(const char* list,
                          char store[][GW_URL_MAX + 1],
                          const char** urls) {
    int n = 0;
    const char* p = list;
    while (*p != '\0') {
        const char* comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len > 0) {
            if (n == GW_MAX_NODES) {
                fprintf(stderr, "skein-gateway: at most %d nodes\n",
                        GW_MAX_NODES);
                return -1;
            }
            bool has_scheme = false;
            for (size_t i = 0; i + 2 < len; i++) {
                if (p[i] == ':' && p[i + 1] == '/' && p[i + 2] == '/') {
                    has_scheme = true;
                }
            }
            const char* prefix = has_scheme ? "" : "tcp://";
            if (len + strlen(prefix) > GW_URL_MAX) {
                fprintf(stderr, "skein-gateway: node URL too long\n");
                return -1;
            }
            snprintf(store[n], GW_URL_MAX + 1, "%s%.*s", prefix, (int)len, p);
            urls[n] = store[n];
            n++;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return n;
}

int main(int argc, char** argv) {
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"nodes", required_argument, NULL, 'n'},
        {"cluster-id", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"max-body", required_argument, NULL, 'b'},
        {"leader-wait-ms", required_argument, NULL, 'w'},
        {"acl", required_argument, NULL, 'a'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static char store[GW_MAX_NODES][GW_URL_MAX + 1];
    const char* urls[GW_MAX_NODES];
    struct gw_config cfg;
    gw_config_init(&cfg);
    const char* nodes = NULL;
    unsigned long long v;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
            case 'l':
                cfg.listen = optarg;
                break;
            case 'n':
                nodes = optarg;
                break;
            case 'c':
                if (gw_parse_num("--cluster-id", optarg, UINT64_MAX, &v)) {
                    return 2;
                }
                cfg.cluster_id = v;
                break;
            case 't':
                if (gw_parse_num("--threads", optarg, 4096, &v) || v == 0) {
                    return 2;
                }
                cfg.num_threads = (unsigned)v;
                break;
            case 'T':
                if (gw_parse_num("--timeout-ms", optarg, 600000, &v) ||
                    v == 0) {
                    return 2;
                }
                cfg.request_timeout_ms = (unsigned)v;
                break;
            case 'b':
                if (gw_parse_num("--max-body", optarg, (size_t)1 << 30, &v) ||
                    v == 0) {
                    return 2;
                }
                cfg.max_body_bytes = (size_t)v;
                break;
            case 'w':
                if (gw_parse_num("--leader-wait-ms", optarg, 600000, &v) ||
                    v == 0) {
                    return 2;
                }
                cfg.leader_wait_ms = (unsigned)v;
                break;
            case 'a':
                cfg.access_control_list = optarg;
                break;
            case 'q':
                cfg.quiet = 1;
                break;
            case 'h':
                gw_usage(stdout);
                return 0;
            default:
                gw_usage(stderr);
                return 2;
        }
    }
    if (optind != argc || cfg.listen == NULL || nodes == NULL) {
        gw_usage(stderr);
        return 2;
    }
    int count = gw_split_nodes(nodes, store, urls);
    if (count <= 0) {
        fprintf(stderr, "skein-gateway: --nodes needs at least one URL\n");
        return 2;
    }
    cfg.node_urls = urls;
    cfg.node_count = (size_t)count;

    /* Block the stop signals before any thread starts, then wait for one. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct gw* gw;
    int rv = gw_start(&cfg, &gw);
    if (rv != GW_OK) {
        return 1;
    }
    if (!cfg.quiet) {
        fprintf(stderr,
                "skein-gateway: serving http://%s (port %d) for %d node(s)\n",
                cfg.listen, gw_port(gw), count);
    }
    int sig = 0;
    sigwait(&set, &sig);
    if (!cfg.quiet) {
        fprintf(stderr, "skein-gateway: signal %d, stopping\n", sig);
    }
    gw_stop(gw);
    return 0;
}
