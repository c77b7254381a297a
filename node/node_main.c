/*
 * node_main.c - skein-node: flags, config file, environment, signals.
 *
 * Precedence: defaults < config file < SKEIN_* environment < flags.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <nng/nng.h>

#include "cpus.h"
#include "gw.h"
#include "node.h"
#include "store_env.h"

struct main_opts {
    struct node_config cfg;
    bool have_id;
    long seed_port;        /* seed form: HTTP port, 0 = long form */
    char seed_peers[1024]; /* seed form: comma-separated ports */
    char long_peers[4096]; /* long form: ID=URL[@HTTP],... */
    bool data_dir_set;
    bool no_http;
    char cpus[256]; /* --cpus, empty = where the scheduler likes */
};

static void usage(FILE* f) {
    fprintf(
        f,
        "usage: skein-node --node-id N --port P --peers P1,P2 [--data-dir "
        "DIR]\n"
        "       skein-node --node-id N --data-dir DIR --listen "
        "tcp://HOST:PORT\n"
        "                  [--http HOST:PORT] --peers "
        "ID=tcp://HOST:PORT[@HTTP],...\n"
        "\n"
        "Seed form: HTTP on 127.0.0.1:P, nng on tcp://127.0.0.1:(P+1000). A "
        "peer\n"
        "given as port Q has id N + (Q - P), so nodes on 8080/8081/8082 "
        "agree.\n"
        "Default data dir data/node-N ($SKEIN_DATA replaces the base 'data').\n"
        "\n"
        "Options (each also SKEIN_<NAME> in the environment, upper case with\n"
        "underscores, and NAME=VALUE in a --config file):\n"
        "  --node-id N              this node's id (required)\n"
        "  --port P                 seed form HTTP port\n"
        "  --peers LIST             other members (ports, or ID=URL[@HTTP])\n"
        "  --data-dir DIR           where log/ and state/ live\n"
        "  --listen URL             nng listen URL (long form)\n"
        "  --http HOST:PORT         serve the REST gateway here (long form)\n"
        "  --no-http                do not serve REST (seed form)\n"
        "  --join                   start empty, wait to be added (no "
        "bootstrap)\n"
        "  --cluster-id N           refuse messages of other clusters\n"
        "  --tick-ms N              raft tick (default 30)\n"
        "  --election-ticks N       election timeout in ticks (default 10)\n"
        "  --heartbeat-ticks N      heartbeat interval in ticks (default 2)\n"
        "  --durability MODE        strict (default) | balanced | fast\n"
        "  --state-commit-ms N      commit applied batches to the state "
        "together,\n"
        "                           at most N ms apart (default 10, 0 = "
        "each\n"
        "                           batch; the log stays the durability "
        "point)\n"
        "  --batch-linger-us N      under load, a loop round with few "
        "events\n"
        "                           waits N us for more to batch them "
        "(default\n"
        "                           200, at most 5000, 0 = never)\n"
        "  --map-size BYTES         LMDB map size per environment (default 64 "
        "GiB)\n"
        "  --log-retain N           entries kept when compacting (default "
        "10000)\n"
        "  --snapshot-threshold N   compactable entries before a snapshot\n"
        "  --write-timeout-ms N     a write's deadline (default 5000)\n"
        "  --read-timeout-ms N      a read's deadline (default 5000)\n"
        "  --http-threads N         gateway threads (default 300)\n"
        "  --cpus LIST              run every thread of the node on these "
        "CPUs\n"
        "                           (\"0\", \"0-3\", \"0,2\"; default: "
        "any): nodes that\n"
        "                           share a machine hand work between their "
        "own\n"
        "                           threads on one CPU\n"
        "  --enable-fault-injection accept transport fault injection (chaos)\n"
        "  --no-pre-vote, --no-check-quorum   disable those raft features "
        "(tests)\n"
        "  --config FILE            read NAME=VALUE lines first\n"
        "  --help                   this text\n");
}

static int parse_u64(const char* s, uint64_t* out) {
    char* end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u32(const char* s, uint32_t* out) {
    uint64_t v;
    if (parse_u64(s, &v) != 0 || v > UINT32_MAX) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Applies one option by name ("node-id", ...). Returns 0 or -1. */
static int set_option(struct main_opts* o, const char* name, const char* val) {
    struct node_config* c = &o->cfg;
    uint64_t v;

#define COPY(dst)                                                           \
    (strlen(val) < sizeof(dst) ? (snprintf(dst, sizeof(dst), "%s", val), 0) \
                               : -1)
    if (strcmp(name, "node-id") == 0) {
        o->have_id = true;
        return parse_u64(val, &c->id);
    }
    if (strcmp(name, "port") == 0) {
        if (parse_u64(val, &v) != 0 || v == 0 || v > 64535) {
            return -1;
        }
        o->seed_port = (long)v;
        return 0;
    }
    if (strcmp(name, "peers") == 0) {
        return strchr(val, '=') != NULL ? COPY(o->long_peers)
                                        : COPY(o->seed_peers);
    }
    if (strcmp(name, "data-dir") == 0) {
        o->data_dir_set = true;
        return COPY(c->data_dir);
    }
    if (strcmp(name, "listen") == 0) {
        return COPY(c->listen_url);
    }
    if (strcmp(name, "http") == 0) {
        return COPY(c->http_addr);
    }
    if (strcmp(name, "cluster-id") == 0) {
        return parse_u64(val, &c->cluster_id);
    }
    if (strcmp(name, "tick-ms") == 0) {
        return parse_u32(val, &c->tick_ms) == 0 && c->tick_ms > 0 ? 0 : -1;
    }
    if (strcmp(name, "election-ticks") == 0) {
        return parse_u32(val, &c->election_ticks);
    }
    if (strcmp(name, "heartbeat-ticks") == 0) {
        return parse_u32(val, &c->heartbeat_ticks);
    }
    if (strcmp(name, "durability") == 0) {
        if (strcmp(val, "strict") == 0) {
            c->durability = STORE_DURABILITY_STRICT;
        } else if (strcmp(val, "balanced") == 0) {
            c->durability = STORE_DURABILITY_BALANCED;
        } else if (strcmp(val, "fast") == 0) {
            c->durability = STORE_DURABILITY_FAST;
        } else {
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "map-size") == 0) {
        if (parse_u64(val, &v) != 0 || v < (1u << 20)) {
            return -1;
        }
        c->map_size = (size_t)v;
        return 0;
    }
    if (strcmp(name, "log-retain") == 0) {
        return parse_u64(val, &c->log_retain);
    }
    if (strcmp(name, "snapshot-threshold") == 0) {
        return parse_u64(val, &c->snapshot_threshold);
    }
    if (strcmp(name, "state-commit-ms") == 0) {
        return parse_u32(val, &c->state_commit_ms) == 0 &&
                       c->state_commit_ms <= 1000
                   ? 0
                   : -1;
    }
    if (strcmp(name, "batch-linger-us") == 0) {
        return parse_u32(val, &c->batch_linger_us) == 0 &&
                       c->batch_linger_us <= 5000
                   ? 0
                   : -1;
    }
    if (strcmp(name, "write-timeout-ms") == 0) {
        return parse_u32(val, &c->write_timeout_ms);
    }
    if (strcmp(name, "read-timeout-ms") == 0) {
        return parse_u32(val, &c->read_timeout_ms);
    }
    if (strcmp(name, "http-threads") == 0) {
        return parse_u32(val, &c->http_threads);
    }
    if (strcmp(name, "cpus") == 0) {
        cpu_set_t set;
        return cpus_parse(val, &set) == 0 ? COPY(o->cpus) : -1;
    }
    if (strcmp(name, "enable-fault-injection") == 0) {
        c->fault_injection = strcmp(val, "0") != 0 && strcmp(val, "no") != 0;
        return 0;
    }
    if (strcmp(name, "no-pre-vote") == 0) {
        c->pre_vote = false;
        return 0;
    }
    if (strcmp(name, "no-check-quorum") == 0) {
        c->check_quorum = false;
        return 0;
    }
    if (strcmp(name, "no-http") == 0) {
        o->no_http = true;
        return 0;
    }
    if (strcmp(name, "join") == 0) {
        c->join = true;
        return 0;
    }
#undef COPY
    return -1;
}

static bool is_flag_option(const char* name) {
    return strcmp(name, "enable-fault-injection") == 0 ||
           strcmp(name, "no-pre-vote") == 0 ||
           strcmp(name, "no-check-quorum") == 0 ||
           strcmp(name, "no-http") == 0 || strcmp(name, "join") == 0;
}

static int load_config_file(struct main_opts* o, const char* path) {
    FILE* f = fopen(path, "r");
    char line[4096];
    int lineno = 0;

    if (f == NULL) {
        fprintf(stderr, "skein-node: config %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char* eq;
        char* end = line + strlen(line);
        lineno++;
        while (end > line && (end[-1] == '\n' || end[-1] == ' ')) {
            *--end = '\0';
        }
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        eq = strchr(line, '=');
        if (eq == NULL) {
            fprintf(stderr, "skein-node: %s:%d: expected NAME=VALUE\n", path,
                    lineno);
            fclose(f);
            return -1;
        }
        *eq = '\0';
        if (set_option(o, line, eq + 1) != 0) {
            fprintf(stderr, "skein-node: %s:%d: bad option %s\n", path, lineno,
                    line);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

static const char* const env_names[] = {"node-id",
                                        "port",
                                        "peers",
                                        "data-dir",
                                        "listen",
                                        "http",
                                        "cluster-id",
                                        "tick-ms",
                                        "election-ticks",
                                        "heartbeat-ticks",
                                        "durability",
                                        "state-commit-ms",
                                        "batch-linger-us",
                                        "map-size",
                                        "log-retain",
                                        "snapshot-threshold",
                                        "write-timeout-ms",
                                        "read-timeout-ms",
                                        "http-threads",
                                        "cpus",
                                        "enable-fault-injection",
                                        NULL};

static int load_env(struct main_opts* o) {
    for (int i = 0; env_names[i] != NULL; i++) {
        char var[64] = "SKEIN_";
        const char* val;
        size_t k = strlen(var);
        for (const char* p = env_names[i]; *p && k + 1 < sizeof(var); p++) {
            var[k++] = *p == '-' ? '_' : (char)(*p - 32 * (*p >= 'a'));
        }
        var[k] = '\0';
        val = getenv(var);
        if (val != NULL && set_option(o, env_names[i], val) != 0) {
            fprintf(stderr, "skein-node: bad value in %s\n", var);
            return -1;
        }
    }
    return 0;
}

/* Seed form: ports to URLs and ids. */
static int resolve_seed_form(struct main_opts* o) {
    struct node_config* c = &o->cfg;
    char list[1024];
    char* save = NULL;

    snprintf(c->listen_url, sizeof(c->listen_url), "tcp://127.0.0.1:%ld",
             o->seed_port + 1000);
    if (!o->no_http) {
        snprintf(c->http_addr, sizeof(c->http_addr), "127.0.0.1:%ld",
                 o->seed_port);
    }
    snprintf(list, sizeof(list), "%s", o->seed_peers);
    for (char* tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        uint64_t port;
        long long id;
        struct node_peer_config* p;
        if (parse_u64(tok, &port) != 0 || port == 0 || port > 64535 ||
            c->n_peers == NODE_MAX_PEERS) {
            fprintf(stderr, "skein-node: bad peer port '%s'\n", tok);
            return -1;
        }
        id = (long long)c->id + ((long long)port - o->seed_port);
        if (id < 0 || (uint64_t)id == c->id) {
            fprintf(stderr, "skein-node: peer port %s gives id %lld\n", tok,
                    id);
            return -1;
        }
        p = &c->peers[c->n_peers++];
        p->id = (uint64_t)id;
        snprintf(p->url, sizeof(p->url), "tcp://127.0.0.1:%llu",
                 (unsigned long long)port + 1000);
        snprintf(p->http, sizeof(p->http), "127.0.0.1:%llu",
                 (unsigned long long)port);
    }
    if (!o->data_dir_set) {
        const char* base = getenv("SKEIN_DATA");
        snprintf(c->data_dir, sizeof(c->data_dir), "%s/node-%llu",
                 base && base[0] ? base : "data", (unsigned long long)c->id);
    }
    return 0;
}

static int resolve_long_form(struct main_opts* o) {
    struct node_config* c = &o->cfg;
    char list[4096];
    char* save = NULL;

    if (c->listen_url[0] == '\0' || !o->data_dir_set) {
        fprintf(stderr,
                "skein-node: the long form needs --listen and "
                "--data-dir (see --help)\n");
        return -1;
    }
    snprintf(list, sizeof(list), "%s", o->long_peers);
    for (char* tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char* eq = strchr(tok, '=');
        char* at;
        struct node_peer_config* p;
        uint64_t id;
        if (eq == NULL || c->n_peers == NODE_MAX_PEERS) {
            fprintf(stderr, "skein-node: bad peer '%s' (ID=URL[@HTTP])\n", tok);
            return -1;
        }
        *eq = '\0';
        at = strchr(eq + 1, '@');
        if (at != NULL) {
            *at = '\0';
        }
        if (parse_u64(tok, &id) != 0 || id == c->id ||
            strncmp(eq + 1, "tcp://", 6) != 0 ||
            strlen(eq + 1) >= NODE_URL_MAX) {
            fprintf(stderr, "skein-node: bad peer '%s'\n", tok);
            return -1;
        }
        p = &c->peers[c->n_peers++];
        p->id = id;
        snprintf(p->url, sizeof(p->url), "%s", eq + 1);
        if (at != NULL) {
            snprintf(p->http, sizeof(p->http), "%s", at + 1);
        }
    }
    return 0;
}

static int parse_args(struct main_opts* o, int argc, char** argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            if (load_config_file(o, argv[++i]) != 0) {
                return -1;
            }
        }
    }
    if (load_env(o) != 0) {
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "skein-node: unexpected argument '%s'\n", a);
            return -1;
        }
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (is_flag_option(a + 2)) {
            (void)set_option(o, a + 2, "1");
            continue;
        }
        if (i + 1 >= argc || set_option(o, a + 2, argv[i + 1]) != 0) {
            fprintf(stderr, "skein-node: bad or unknown option %s%s%s\n", a,
                    i + 1 < argc ? " " : "", i + 1 < argc ? argv[i + 1] : "");
            return -1;
        }
        i++;
    }
    if (!o->have_id) {
        fprintf(stderr, "skein-node: --node-id is required (see --help)\n");
        return -1;
    }
    return o->seed_port > 0 ? resolve_seed_form(o) : resolve_long_form(o);
}

/* Binds this thread, and so every thread started after it (nng's,
 * civetweb's, the loop), to the CPUs in `list`. Returns 0 or -1. */
static int pin_to_cpus(const char* list, uint64_t id) {
    cpu_set_t set;

    if (cpus_parse(list, &set) != 0 ||
        sched_setaffinity(0, sizeof(set), &set) != 0) {
        fprintf(stderr,
                "skein-node %llu: cannot run on CPUs %s: %s (see "
                "/sys/devices/system/cpu/online)\n",
                (unsigned long long)id, list, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char** argv) {
    struct main_opts o;
    struct node* n = NULL;
    struct gw* gw = NULL;
    char err[512];
    struct sigaction sa;
    sigset_t stop_set;
    int sig = 0;

    memset(&o, 0, sizeof(o));
    node_config_default(&o.cfg, 0);
    if (parse_args(&o, argc, argv) != 0) {
        return 2;
    }
    if (o.cpus[0] != '\0' && pin_to_cpus(o.cpus, o.cfg.id) != 0) {
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* Every thread started from here on inherits the mask, so SIGTERM and
     * SIGINT reach only sigwait() below. */
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    if (node_start(&o.cfg, &n, err, sizeof(err)) != 0) {
        fprintf(stderr, "skein-node %llu: %s\n", (unsigned long long)o.cfg.id,
                err);
        return 1;
    }
    if (o.cfg.http_addr[0] != '\0') {
        struct gw_config gc;
        const char* urls[1] = {node_inproc_url(n)};
        int rv;
        gw_config_init(&gc);
        gc.listen = o.cfg.http_addr;
        gc.node_urls = urls;
        gc.node_count = 1;
        gc.cluster_id = o.cfg.cluster_id;
        gc.num_threads = o.cfg.http_threads;
        /* Long enough to ride out an election, short enough that a node
         * cut off from its quorum answers 503 promptly. */
        gc.leader_wait_ms = 2 * o.cfg.election_ticks * o.cfg.tick_ms;
        gc.quiet = 1;
        /* The node is in this process: a function call, not a socket. */
        gc.local_call = node_call_local;
        gc.local_arg = n;
        rv = gw_start(&gc, &gw);
        if (rv != GW_OK) {
            fprintf(stderr, "skein-node %llu: HTTP on %s: %s\n",
                    (unsigned long long)o.cfg.id, o.cfg.http_addr,
                    gw_strerror(rv));
            node_request_stop(n);
            node_join(n);
            return 1;
        }
    }
    fprintf(stderr, "skein-node %llu: serving nng on %s%s%s, data in %s\n",
            (unsigned long long)o.cfg.id, o.cfg.listen_url,
            o.cfg.http_addr[0] ? ", HTTP on " : "", o.cfg.http_addr,
            o.cfg.data_dir);
    if (sigwait(&stop_set, &sig) != 0) {
        sig = SIGTERM;
    }
    fprintf(stderr, "skein-node %llu: stopping (signal %d)\n",
            (unsigned long long)o.cfg.id, sig);
    /* A leader hands off at once; the gateway stops next, so requests in
     * flight finish against a live node (now a follower that forwards
     * them); then the node stops. */
    node_request_handoff(n);
    gw_stop(gw);
    node_request_stop(n);
    node_join(n);
    nng_fini(); /* nng's own threads and caches, so leak checks stay clean */
    return 0;
}
