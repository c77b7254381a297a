/*
 * ctl_cluster.c - `skeinctl cluster ...`: start, stop, status, sync-status,
 * resync, transfer-leader, add-node, remove-node (seed 000's "Cluster
 * Management" table, plus membership).
 *
 * A local cluster lives in one directory (--data DIR, default $SKEIN_DATA
 * or ./data): cluster.conf (each node's id, HTTP port and command line),
 * node-<id>.pid, node-<id>.log and the nodes' data dirs node-<id>/.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ctl.h"

/* Default time for a cluster to elect a leader and answer. */
#define CTL_START_WAIT_S 30

static void ctl_cluster_usage(FILE* out) {
    fprintf(out,
            "usage: skeinctl cluster start [--nodes N] [--port P] [--data DIR]"
            " [--wait S]\n"
            "                              [--node-flags \"FLAGS\"] "
            "[--fault-injection] [--foreground]\n"
            "                              [--cpus auto|none]\n"
            "       skeinctl cluster stop [--data DIR] [--grace S]\n"
            "       skeinctl cluster status [--nodes URL,...] [--json]\n"
            "       skeinctl cluster sync-status [--leader URL] [--json]\n"
            "       skeinctl cluster resync --leader URL --target ADDR\n"
            "       skeinctl cluster transfer-leader [--to ID|auto] "
            "[--leader URL]\n"
            "       skeinctl cluster add-node [--data DIR] [--learner]\n"
            "       skeinctl cluster remove-node --id N [--data DIR] "
            "[--leader URL]\n"
            "--nodes/--leader default to the cluster in --data, else "
            "127.0.0.1:8080-8082.\n"
            "--cpus auto (default): when the nodes are at least as many as "
            "the CPUs,\n"
            "node i runs on CPU i mod CPUs (skein-node --cpus), so each "
            "node's\n"
            "threads hand work to each other on one CPU; none: no "
            "pinning.\n");
}

/* mkdir -p for one level below an existing parent (enough for DIR). */
static int ctl_mkdirs(const char* dir) {
    char buf[CTL_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char* p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Prints the last lines of node id's log to stderr. */
static void ctl_log_tail(const struct ctl_cluster* c, uint64_t id) {
    char path[CTL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/node-%llu.log", c->dir,
             (unsigned long long)id);
    FILE* f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    char* lines[8] = {0};
    size_t n = 0;
    char buf[512];
    while (fgets(buf, sizeof buf, f) != NULL) {
        free(lines[n % 8]);
        lines[n % 8] = strdup(buf);
        n++;
    }
    fclose(f);
    fprintf(stderr, "--- last lines of %s:\n", path);
    for (size_t i = n > 8 ? n - 8 : 0; i < n; i++) {
        fputs(lines[i % 8] ? lines[i % 8] : "", stderr);
    }
    for (size_t i = 0; i < 8; i++) {
        free(lines[i]);
    }
}

/* Fills member m's command line. peers: the other members' ports. */
static void ctl_member_argv(struct ctl_member* m,
                            const char* bin,
                            const char* dir,
                            const char* peers,
                            const char* node_flags,
                            const char* cpus,
                            bool fault,
                            bool join) {
    m->argc = 0;
#define CTL_ARG(...) \
    snprintf(m->argv[m->argc++], sizeof m->argv[0], __VA_ARGS__)
    CTL_ARG("%s", bin);
    CTL_ARG("--node-id");
    CTL_ARG("%llu", (unsigned long long)m->id);
    CTL_ARG("--port");
    CTL_ARG("%d", m->port);
    CTL_ARG("--peers");
    CTL_ARG("%s", peers);
    CTL_ARG("--data-dir");
    CTL_ARG("%s/node-%llu", dir, (unsigned long long)m->id);
    if (fault) {
        CTL_ARG("--enable-fault-injection");
    }
    if (join) {
        CTL_ARG("--join");
    }
    if (cpus != NULL && cpus[0] != '\0') {
        CTL_ARG("--cpus");
        CTL_ARG("%s", cpus);
    }
#undef CTL_ARG
    char flags[1024];
    snprintf(flags, sizeof flags, "%s", node_flags != NULL ? node_flags : "");
    for (char *save = NULL, *tok = strtok_r(flags, " \t", &save);
         tok != NULL && m->argc < CTL_MAX_ARGS;
         tok = strtok_r(NULL, " \t", &save)) {
        snprintf(m->argv[m->argc++], sizeof m->argv[0], "%s", tok);
    }
}

/* The CPU list for node `index` of `count` sharing this machine (--cpus
 * auto), or "" to leave it to the scheduler. With at least as many nodes
 * as CPUs, node i gets CPU i mod CPUs: a node's request passes between its
 * own threads (HTTP worker, loop, nng) several times, and a wake-up on the
 * same CPU costs no inter-processor interrupt (dear in a VM; the README
 * has the figures). With more CPUs than nodes nothing is pinned, so no
 * node is held to one CPU while others idle. */
static void ctl_auto_cpus(size_t index, size_t count, char* buf, size_t len) {
    cpu_set_t allowed;
    int cpus[CPU_SETSIZE];
    int n = 0;

    buf[0] = '\0';
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        return;
    }
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &allowed)) {
            cpus[n++] = c;
        }
    }
    if (n < 2 || count < (size_t)n) {
        return;
    }
    snprintf(buf, len, "%d", cpus[index % (size_t)n]);
}

/* Peers of member `self`: every other member's port, comma-separated. */
static void ctl_peers_of(const struct ctl_cluster* c,
                         size_t self,
                         char* buf,
                         size_t buflen) {
    size_t off = 0;
    buf[0] = '\0';
    for (size_t j = 0; j < c->count; j++) {
        if (j != self) {
            off += (size_t)snprintf(buf + off, buflen - off, "%s%d",
                                    off ? "," : "", c->node[j].port);
        }
    }
}

/* The http URLs of a cluster's members. */
static void ctl_cluster_nodes(const struct ctl_cluster* c,
                              struct ctl_nodes* nodes) {
    char list[CTL_MAX_NODES * 8];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < c->count; i++) {
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%d",
                                i ? "," : "", c->node[i].port);
    }
    ctl_nodes_parse(list, nodes);
}

/*
 * Waits until every member answers /status and exactly one is leader.
 * Returns the leader's index, or -1 (printed) if a node exited or the
 * time ran out.
 */
static int ctl_wait_ready(const struct ctl_cluster* c, int64_t wait_ms) {
    struct ctl_nodes nodes;
    ctl_cluster_nodes(c, &nodes);
    int64_t deadline = ctl_now_ms() + wait_ms;
    char why[256] = "";
    while (ctl_now_ms() < deadline) {
        int leaders = 0;
        int leader = -1;
        bool all = true;
        for (size_t i = 0; i < c->count; i++) {
            if (!ctl_pid_alive(c->node[i].pid)) {
                fprintf(stderr,
                        "skeinctl cluster: node %llu (port %d) "
                        "exited\n",
                        (unsigned long long)c->node[i].id, c->node[i].port);
                ctl_log_tail(c, c->node[i].id);
                return -1;
            }
            struct ctl_status st;
            ctl_fetch_status(nodes.url[i], 1000, &st);
            if (!st.ok) {
                all = false;
                snprintf(why, sizeof why, "%s: %s", nodes.name[i], st.error);
                continue;
            }
            if (strcmp(st.role, "leader") == 0) {
                leaders++;
                leader = (int)i;
            }
        }
        if (all && leaders == 1) {
            return leader;
        }
        if (all) {
            snprintf(why, sizeof why, "%d nodes report themselves leader",
                     leaders);
        }
        ctl_sleep_ms(100);
    }
    fprintf(stderr, "skeinctl cluster: not ready after %lld ms (%s)\n",
            (long long)wait_ms, why);
    return -1;
}

/* Stops every running member: SIGTERM, SIGKILL after grace_ms. */
static int ctl_cluster_kill_all(struct ctl_cluster* c,
                                int64_t grace_ms,
                                bool quiet) {
    int bad = 0;
    bool was[CTL_MAX_NODES];
    for (size_t i = 0; i < c->count; i++) {
        was[i] = ctl_pid_alive(c->node[i].pid);
        if (was[i]) {
            kill(c->node[i].pid, SIGTERM);
            kill(c->node[i].pid, SIGCONT);
        }
    }
    for (size_t i = 0; i < c->count; i++) {
        struct ctl_member* m = &c->node[i];
        if (m->pid <= 0) {
            continue;
        }
        int64_t t0 = ctl_now_ms();
        if (ctl_pid_stop(m->pid, SIGTERM, grace_ms) != 0) {
            fprintf(stderr,
                    "skeinctl cluster: node %llu (pid %ld) survives "
                    "SIGKILL\n",
                    (unsigned long long)m->id, (long)m->pid);
            bad = -1;
            continue;
        }
        if (was[i] && !quiet) {
            printf("stopped node %llu (pid %ld) in %lld ms\n",
                   (unsigned long long)m->id, (long)m->pid,
                   (long long)(ctl_now_ms() - t0));
        }
        m->pid = 0;
        ctl_member_save_pid(c, m);
    }
    return bad;
}

static volatile sig_atomic_t ctl_fg_stop;

static void ctl_fg_signal(int sig) {
    (void)sig;
    ctl_fg_stop = 1;
}

/* Checks the ports of n nodes from base; prints the first one taken. */
static int ctl_check_ports(const char* what, int base, long n) {
    for (long i = 0; i < n; i++) {
        int ports[2] = {base + (int)i, base + (int)i + 1000};
        for (int k = 0; k < 2; k++) {
            if (ports[k] <= 0 || ports[k] > 65535 || !ctl_port_free(ports[k])) {
                fprintf(stderr,
                        "skeinctl %s: port %d (%s) is taken or invalid; pick "
                        "another --port\n",
                        what, ports[k], k == 0 ? "HTTP" : "nng");
                return -1;
            }
        }
    }
    return 0;
}

/* Lays out a new cluster of n nodes from `port` in `data` and saves it. */
static int ctl_new_layout(struct ctl_cluster* c,
                          const char* data,
                          long n,
                          long port,
                          const char* bin_opt,
                          const char* node_flags,
                          bool pin,
                          bool fault) {
    memset(c, 0, sizeof *c);
    if (ctl_mkdirs(data) != 0) {
        fprintf(stderr, "skeinctl cluster start: cannot create %s: %s\n", data,
                strerror(errno));
        return -1;
    }
    char* abs = realpath(data, NULL);
    if (abs == NULL) {
        return -1;
    }
    snprintf(c->dir, sizeof c->dir, "%s", abs);
    free(abs);
    char bin[CTL_PATH_MAX];
    if (bin_opt != NULL) {
        snprintf(bin, sizeof bin, "%s", bin_opt);
    } else {
        ctl_node_bin(bin, sizeof bin);
    }
    c->count = (size_t)n;
    for (size_t i = 0; i < c->count; i++) {
        c->node[i].id = i;
        c->node[i].port = (int)port + (int)i;
    }
    for (size_t i = 0; i < c->count; i++) {
        char peers[CTL_MAX_NODES * 8];
        char cpus[16] = "";
        ctl_peers_of(c, i, peers, sizeof peers);
        if (pin) {
            ctl_auto_cpus(i, c->count, cpus, sizeof cpus);
        }
        ctl_member_argv(&c->node[i], bin, c->dir, peers, node_flags, cpus,
                        fault, false);
    }
    return ctl_cluster_save(c);
}

static int ctl_cluster_start(int argc, char** argv) {
    long n = -1, port = -1; /* -1: not given (defaults 3 and 8080) */
    double wait_s = CTL_START_WAIT_S;
    const char *data = NULL, *node_flags = NULL, *bin_opt = NULL;
    const char* cpus_mode = "auto";
    bool fault = false, foreground = false, help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"nodes", CTL_OPT_LONG, &n},
        {"port", CTL_OPT_LONG, &port},
        {"data", CTL_OPT_STR, &data},
        {"wait", CTL_OPT_DOUBLE, &wait_s},
        {"node-flags", CTL_OPT_STR, &node_flags},
        {"node-bin", CTL_OPT_STR, &bin_opt},
        {"fault-injection", CTL_OPT_FLAG, &fault},
        {"foreground", CTL_OPT_FLAG, &foreground},
        {"cpus", CTL_OPT_STR, &cpus_mode},
    };
    if (ctl_parse_opts("cluster start", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help) {
        ctl_cluster_usage(stdout);
        return 0;
    }
    if (strcmp(cpus_mode, "auto") != 0 && strcmp(cpus_mode, "none") != 0) {
        fprintf(stderr, "skeinctl cluster start: --cpus is auto or none\n");
        return 2;
    }
    if (data == NULL) {
        data = ctl_data_dir();
    }
    struct ctl_cluster* c = calloc(1, sizeof *c);
    if (c == NULL) {
        return 1;
    }
    int rv = 1;
    bool restart = false;
    if (ctl_cluster_load(data, c, true) == 0) {
        for (size_t i = 0; i < c->count; i++) {
            if (ctl_pid_alive(c->node[i].pid)) {
                fprintf(stderr,
                        "skeinctl cluster start: a cluster already runs in %s "
                        "(node %llu, pid %ld); 'skeinctl cluster stop --data "
                        "%s' first\n",
                        c->dir, (unsigned long long)c->node[i].id,
                        (long)c->node[i].pid, data);
                goto out;
            }
        }
        /* A stopped cluster: start it again as it was (its nodes' data
         * remembers the members' addresses). */
        bool same_port = port < 0 || port == c->node[0].port;
        bool same_n = n < 0 || (size_t)n == c->count;
        if (!same_port || !same_n) {
            fprintf(stderr,
                    "skeinctl cluster start: %s holds a cluster of %zu nodes "
                    "from port %d; start it with the same layout, or use "
                    "another --data\n",
                    c->dir, c->count, c->node[0].port);
            goto out;
        }
        n = (long)c->count;
        port = c->node[0].port;
        restart = true;
        printf("restarting the cluster in %s with its saved command lines\n",
               c->dir);
    }
    n = n < 0 ? 3 : n;
    port = port < 0 ? 8080 : port;
    if (n < 1 || n > CTL_MAX_NODES || port < 1 || port + n > 64535) {
        fprintf(stderr,
                "skeinctl cluster start: --nodes must be 1..%d and "
                "--port leave room for nng on port + 1000\n",
                CTL_MAX_NODES);
        rv = 2;
        goto out;
    }
    if (restart) {
        for (size_t i = 0; i < c->count; i++) {
            if (ctl_check_ports("cluster start", c->node[i].port, 1) != 0) {
                goto out;
            }
        }
    } else if (ctl_check_ports("cluster start", (int)port, n) != 0) {
        goto out;
    }
    if (!restart &&
        ctl_new_layout(c, data, n, port, bin_opt, node_flags,
                       strcmp(cpus_mode, "auto") == 0, fault) != 0) {
        goto out;
    }
    for (size_t i = 0; i < c->count; i++) {
        if (ctl_member_spawn(c, &c->node[i]) != 0) {
            ctl_cluster_kill_all(c, 2000, true);
            goto out;
        }
    }
    int leader = ctl_wait_ready(c, (int64_t)(wait_s * 1000));
    if (leader < 0) {
        ctl_cluster_kill_all(c, 2000, true);
        goto out;
    }
    printf("cluster of %zu nodes running, data in %s\n", c->count, c->dir);
    for (size_t i = 0; i < c->count; i++) {
        printf(
            "  node %llu: http://127.0.0.1:%d  nng tcp://127.0.0.1:%d  "
            "pid %ld%s\n",
            (unsigned long long)c->node[i].id, c->node[i].port,
            c->node[i].port + 1000, (long)c->node[i].pid,
            (int)i == leader ? "  (leader)" : "");
    }
    fflush(stdout);
    rv = 0;
    if (foreground) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = ctl_fg_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        printf("running in the foreground: Ctrl-C stops the cluster\n");
        fflush(stdout);
        while (!ctl_fg_stop) {
            ctl_sleep_ms(200);
        }
        ctl_cluster_load(c->dir, c, true); /* chaos may have new pids */
        rv = ctl_cluster_kill_all(c, 10000, false) == 0 ? 0 : 1;
    }
out:
    free(c);
    return rv;
}

static int ctl_cluster_stop(int argc, char** argv) {
    const char* data = NULL;
    double grace = 10;
    bool help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"data", CTL_OPT_STR, &data},
        {"grace", CTL_OPT_DOUBLE, &grace},
    };
    if (ctl_parse_opts("cluster stop", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help) {
        ctl_cluster_usage(stdout);
        return 0;
    }
    struct ctl_cluster* c = calloc(1, sizeof *c);
    if (c == NULL) {
        return 1;
    }
    int rv = 1;
    if (ctl_cluster_load(data != NULL ? data : ctl_data_dir(), c, false) == 0) {
        size_t running = 0;
        for (size_t i = 0; i < c->count; i++) {
            running += ctl_pid_alive(c->node[i].pid);
        }
        rv = ctl_cluster_kill_all(c, (int64_t)(grace * 1000), false) == 0 ? 0
                                                                          : 1;
        if (running == 0) {
            printf("no node of %s was running\n", c->dir);
        }
    }
    free(c);
    return rv;
}

static int ctl_cluster_status(int argc, char** argv) {
    const char *list = NULL, *data = NULL;
    bool json = false, help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"nodes", CTL_OPT_STR, &list},
        {"data", CTL_OPT_STR, &data},
        {"json", CTL_OPT_FLAG, &json},
    };
    struct ctl_nodes nodes;
    if (ctl_parse_opts("cluster status", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0 ||
        ctl_nodes_resolve(list, data, &nodes) != 0) {
        return 2;
    }
    if (help) {
        ctl_cluster_usage(stdout);
        return 0;
    }
    int down = 0, leaders = 0;
    json_t* arr = json_array();
    for (size_t i = 0; i < nodes.count; i++) {
        struct ctl_status st;
        ctl_fetch_status(nodes.url[i], 2000, &st);
        json_t* o = json_object();
        json_object_set_new(o, "node", json_string(nodes.name[i]));
        json_object_set_new(o, "up", json_boolean(st.ok));
        if (!st.ok) {
            down++;
            json_object_set_new(o, "error", json_string(st.error));
            if (!json) {
                printf("%-21s DOWN (%s)\n", nodes.name[i], st.error);
            }
            json_array_append_new(arr, o);
            continue;
        }
        leaders += strcmp(st.role, "leader") == 0;
        json_object_set_new(o, "node_id", json_integer((json_int_t)st.node_id));
        json_object_set_new(o, "role", json_string(st.role));
        json_object_set_new(o, "term", json_integer((json_int_t)st.term));
        json_object_set_new(o, "commit_index",
                            json_integer((json_int_t)st.commit_index));
        json_object_set_new(o, "last_applied",
                            json_integer((json_int_t)st.last_applied));
        json_object_set_new(o, "entry_count",
                            json_integer((json_int_t)st.entry_count));
        json_object_set_new(o, "state_hash", json_string(st.state_hash));
        json_array_append_new(arr, o);
        if (!json) {
            printf(
                "%-21s node %-3llu %-9s term %-5llu commit %-8llu applied "
                "%-8llu entries %-8llu hash %s\n",
                nodes.name[i], (unsigned long long)st.node_id, st.role,
                (unsigned long long)st.term,
                (unsigned long long)st.commit_index,
                (unsigned long long)st.last_applied,
                (unsigned long long)st.entry_count, st.state_hash);
        }
    }
    if (json) {
        json_t* o = json_object();
        json_object_set_new(o, "nodes", arr);
        json_object_set_new(o, "down", json_integer(down));
        json_object_set_new(o, "leaders", json_integer(leaders));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        json_decref(arr);
        printf("%zu nodes: %zu up, %d down, %s\n", nodes.count,
               nodes.count - (size_t)down, down,
               leaders == 1 ? "1 leader"
                            : (leaders == 0 ? "NO leader" : "SEVERAL leaders"));
    }
    return down == 0 && leaders == 1 ? 0 : 1;
}

/* The leader's URL: --leader, else the leader among the default nodes. */
static int ctl_leader_url(const char* leader_opt,
                          const char* data,
                          char* url,
                          size_t urllen) {
    struct ctl_nodes nodes;
    if (leader_opt != NULL) {
        if (ctl_nodes_parse(leader_opt, &nodes) != 0) {
            return -1;
        }
        snprintf(url, urllen, "%s", nodes.url[0]);
        return 0;
    }
    if (ctl_nodes_resolve(NULL, data, &nodes) != 0) {
        return -1;
    }
    int l = ctl_find_leader(&nodes, 2000);
    if (l < 0) {
        fprintf(stderr,
                "skeinctl cluster: no leader among the nodes; name "
                "one with --leader URL\n");
        return -1;
    }
    snprintf(url, urllen, "%s", nodes.url[l]);
    return 0;
}

static int ctl_cluster_sync_status(int argc, char** argv) {
    const char *leader = NULL, *data = NULL;
    bool json = false, help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"leader", CTL_OPT_STR, &leader},
        {"data", CTL_OPT_STR, &data},
        {"json", CTL_OPT_FLAG, &json},
    };
    char base[CTL_URL_MAX];
    if (ctl_parse_opts("cluster sync-status", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0 ||
        ctl_leader_url(leader, data, base, sizeof base) != 0) {
        return 2;
    }
    char url[CTL_URL_MAX + 32];
    char err[256];
    long status;
    snprintf(url, sizeof url, "%s/_raft/sync-status", base);
    json_t* doc = ctl_get_json(url, 5000, &status, err, sizeof err);
    if (doc == NULL) {
        fprintf(stderr, "skeinctl cluster sync-status: %s: %s\n", url, err);
        return 1;
    }
    int rv = 0;
    if (json) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
    } else {
        bool is_leader = json_is_true(json_object_get(doc, "is_leader"));
        printf(
            "%s: node %llu, %s, commit index %llu\n", base + 7,
            (unsigned long long)ctl_json_u64(json_object_get(doc, "node_id")),
            is_leader ? "leader" : "NOT the leader (no follower view)",
            (unsigned long long)ctl_json_u64(
                json_object_get(doc, "commit_index")));
        json_t* fs = json_object_get(doc, "followers");
        size_t i;
        json_t* f;
        json_array_foreach(fs, i, f) {
            json_t* addr = json_object_get(f, "address");
            json_t* health = json_object_get(f, "health");
            const char* h =
                json_is_string(health) ? json_string_value(health) : "unknown";
            printf("%s (%s) - Last replicated: %llu | Lag: %llu\n",
                   json_is_string(addr) ? json_string_value(addr) : "?", h,
                   (unsigned long long)ctl_json_u64(
                       json_object_get(f, "last_replicated_index")),
                   (unsigned long long)ctl_json_u64(json_object_get(f, "lag")));
            rv |= strcmp(h, "healthy") != 0;
        }
        if (!is_leader) {
            rv = 1;
        }
    }
    json_decref(doc);
    return rv;
}

/* POSTs to base+path, prints the JSON "message" (or error). */
static int ctl_post_print(const char* what,
                          const char* method,
                          const char* url,
                          const char* body) {
    struct ctl_http_res res;
    int rv = 1;
    if (ctl_http(method, url, body, 60000, &res) != 0) {
        fprintf(stderr, "skeinctl %s: %s: %s\n", what, url, res.error);
        ctl_http_res_free(&res);
        return 1;
    }
    json_t* doc = json_loadb(res.body, res.body_len, 0, NULL);
    json_t* msg = doc != NULL ? json_object_get(doc, "message") : NULL;
    json_t* err = doc != NULL ? json_object_get(doc, "error") : NULL;
    json_t* ok = doc != NULL ? json_object_get(doc, "success") : NULL;
    if (res.status >= 200 && res.status < 300 && !json_is_false(ok)) {
        rv = 0;
    }
    if (json_is_string(msg)) {
        printf("%s\n", json_string_value(msg));
    } else if (json_is_string(err)) {
        fprintf(stderr, "skeinctl %s: HTTP %ld: %s\n", what, res.status,
                json_string_value(err));
    } else {
        printf("HTTP %ld %s\n", res.status, res.body);
    }
    json_decref(doc);
    ctl_http_res_free(&res);
    return rv;
}

static int ctl_cluster_resync(int argc, char** argv) {
    const char *leader = NULL, *data = NULL, *target = NULL;
    bool help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"leader", CTL_OPT_STR, &leader},
        {"data", CTL_OPT_STR, &data},
        {"target", CTL_OPT_STR, &target},
    };
    char base[CTL_URL_MAX];
    if (ctl_parse_opts("cluster resync", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help || target == NULL) {
        fprintf(help ? stdout : stderr,
                "usage: skeinctl cluster resync --leader URL --target ADDR\n"
                "ADDR: the follower's host:port, nng URL or node id\n");
        return help ? 0 : 2;
    }
    if (ctl_leader_url(leader, data, base, sizeof base) != 0) {
        return 2;
    }
    char* esc = curl_easy_escape(NULL, target, 0);
    char url[CTL_URL_MAX + 256];
    snprintf(url, sizeof url, "%s/_raft/force-resync?target=%s", base,
             esc != NULL ? esc : target);
    curl_free(esc);
    return ctl_post_print("cluster resync", "POST", url, NULL);
}

static int ctl_cluster_transfer(int argc, char** argv) {
    const char *leader = NULL, *data = NULL, *to = "auto";
    bool help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"leader", CTL_OPT_STR, &leader},
        {"data", CTL_OPT_STR, &data},
        {"to", CTL_OPT_STR, &to},
    };
    char base[CTL_URL_MAX];
    if (ctl_parse_opts("cluster transfer-leader", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help) {
        ctl_cluster_usage(stdout);
        return 0;
    }
    if (ctl_leader_url(leader, data, base, sizeof base) != 0) {
        return 2;
    }
    char* esc = curl_easy_escape(NULL, to, 0);
    char url[CTL_URL_MAX + 128];
    snprintf(url, sizeof url, "%s/_raft/transfer-leader?to=%s", base,
             esc != NULL ? esc : to);
    curl_free(esc);
    int rv = ctl_post_print("cluster transfer-leader", "POST", url, NULL);
    if (rv != 0 || leader != NULL) {
        return rv;
    }
    /* Show where leadership went (best effort, bounded). */
    struct ctl_nodes nodes;
    if (ctl_nodes_resolve(NULL, data, &nodes) == 0) {
        int64_t deadline = ctl_now_ms() + 5000;
        while (ctl_now_ms() < deadline) {
            int l = ctl_find_leader(&nodes, 1000);
            if (l >= 0 && strcmp(nodes.url[l], base) != 0) {
                printf("new leader: %s\n", nodes.name[l]);
                return 0;
            }
            ctl_sleep_ms(100);
        }
        printf("leader unchanged after 5 s (still %s)\n", base + 7);
        return 1;
    }
    return rv;
}

static int ctl_cluster_add_node(int argc, char** argv) {
    const char *data = NULL, *node_flags = NULL;
    bool learner = false, help = false;
    double wait_s = 2 * CTL_START_WAIT_S;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"data", CTL_OPT_STR, &data},
        {"learner", CTL_OPT_FLAG, &learner},
        {"node-flags", CTL_OPT_STR, &node_flags},
        {"wait", CTL_OPT_DOUBLE, &wait_s},
    };
    if (ctl_parse_opts("cluster add-node", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help) {
        ctl_cluster_usage(stdout);
        return 0;
    }
    struct ctl_cluster* c = calloc(1, sizeof *c);
    int rv = 1;
    if (c == NULL ||
        ctl_cluster_load(data != NULL ? data : ctl_data_dir(), c, false) != 0) {
        goto out;
    }
    if (c->count >= CTL_MAX_NODES) {
        fprintf(stderr, "skeinctl cluster add-node: at most %d nodes\n",
                CTL_MAX_NODES);
        goto out;
    }
    /* The new node takes the next id and port after the highest ones. */
    struct ctl_member* m = &c->node[c->count];
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < c->count; i++) {
        if (c->node[i].id + 1 > m->id) {
            m->id = c->node[i].id + 1;
        }
    }
    m->port = c->node[0].port + (int)(m->id - c->node[0].id);
    if (ctl_check_ports("cluster add-node", m->port, 1) != 0) {
        goto out;
    }
    struct ctl_nodes nodes;
    ctl_cluster_nodes(c, &nodes);
    int leader = ctl_find_leader(&nodes, 2000);
    if (leader < 0) {
        fprintf(stderr, "skeinctl cluster add-node: no leader\n");
        goto out;
    }
    c->count++;
    char peers[CTL_MAX_NODES * 8];
    ctl_peers_of(c, c->count - 1, peers, sizeof peers);
    /* Same extra flags as node 0 had (fault injection, durability...),
     * and a CPU of its own if node 0 was given one. */
    bool fault = false;
    char cpus[16] = "";
    for (int a = 0; a < c->node[0].argc; a++) {
        fault = fault ||
                strcmp(c->node[0].argv[a], "--enable-fault-injection") == 0;
        if (strcmp(c->node[0].argv[a], "--cpus") == 0) {
            ctl_auto_cpus(c->count - 1, c->count, cpus, sizeof cpus);
        }
    }
    char bin[CTL_PATH_MAX];
    snprintf(bin, sizeof bin, "%s", c->node[0].argv[0]);
    ctl_member_argv(m, bin, c->dir, peers, node_flags, cpus, fault, true);
    if (ctl_cluster_save(c) != 0 || ctl_member_spawn(c, m) != 0) {
        goto out;
    }
    char url[CTL_URL_MAX + 32];
    char body[256];
    snprintf(url, sizeof url, "%s/_raft/members", nodes.url[leader]);
    snprintf(body, sizeof body,
             "{\"id\":%llu,\"address\":\"tcp://127.0.0.1:%d\","
             "\"http_address\":\"127.0.0.1:%d\",\"learner\":%s}",
             (unsigned long long)m->id, m->port + 1000, m->port,
             learner ? "true" : "false");
    struct ctl_http_res res;
    if (ctl_http("POST", url, body, 30000, &res) != 0 || res.status != 200) {
        fprintf(stderr, "skeinctl cluster add-node: POST %s: %s %s\n", url,
                res.status ? "" : res.error, res.body ? res.body : "");
        ctl_http_res_free(&res);
        goto out;
    }
    ctl_http_res_free(&res);
    /* Wait until the new node answers and knows the leader. */
    char nurl[CTL_URL_MAX];
    snprintf(nurl, sizeof nurl, "http://127.0.0.1:%d", m->port);
    int64_t deadline = ctl_now_ms() + (int64_t)(wait_s * 1000);
    while (ctl_now_ms() < deadline) {
        struct ctl_status st;
        ctl_fetch_status(nurl, 1000, &st);
        if (st.ok && st.last_applied > 0) {
            printf(
                "node %llu added%s: http://127.0.0.1:%d (pid %ld), "
                "applied %llu\n",
                (unsigned long long)m->id, learner ? " as a learner" : "",
                m->port, (long)m->pid, (unsigned long long)st.last_applied);
            rv = 0;
            goto out;
        }
        if (!ctl_pid_alive(m->pid)) {
            fprintf(stderr, "skeinctl cluster add-node: node %llu exited\n",
                    (unsigned long long)m->id);
            ctl_log_tail(c, m->id);
            goto out;
        }
        ctl_sleep_ms(100);
    }
    {
        /* Say where it stands, and how the leader sees it. */
        struct ctl_status st;
        ctl_fetch_status(nurl, 2000, &st);
        fprintf(stderr,
                "skeinctl cluster add-node: node %llu did not catch up in "
                "%.0f s: %s role %s term %llu commit %llu applied %llu\n",
                (unsigned long long)m->id, wait_s,
                st.ok ? "answers," : st.error, st.role,
                (unsigned long long)st.term,
                (unsigned long long)st.commit_index,
                (unsigned long long)st.last_applied);
        char surl[CTL_URL_MAX + 32];
        char err[160];
        long status;
        int l = ctl_find_leader(&nodes, 2000);
        snprintf(surl, sizeof surl, "%s/_raft/sync-status",
                 nodes.url[l >= 0 ? l : leader]);
        json_t* doc = ctl_get_json(surl, 2000, &status, err, sizeof err);
        char* text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
        fprintf(stderr, "  leader's sync-status: %s\n",
                text != NULL ? text : err);
        free(text);
        json_decref(doc);
        ctl_log_tail(c, m->id);
    }
out:
    free(c);
    return rv;
}

static int ctl_cluster_remove_node(int argc, char** argv) {
    const char *data = NULL, *leader = NULL;
    long id = -1;
    bool help = false, keep = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},         {"data", CTL_OPT_STR, &data},
        {"leader", CTL_OPT_STR, &leader},      {"id", CTL_OPT_LONG, &id},
        {"keep-running", CTL_OPT_FLAG, &keep},
    };
    if (ctl_parse_opts("cluster remove-node", argc, argv, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help || id < 0) {
        fprintf(help ? stdout : stderr,
                "usage: skeinctl cluster remove-node --id N [--data DIR] "
                "[--leader URL] [--keep-running]\n");
        return help ? 0 : 2;
    }
    char base[CTL_URL_MAX];
    if (ctl_leader_url(leader, data, base, sizeof base) != 0) {
        return 1;
    }
    char url[CTL_URL_MAX + 48];
    snprintf(url, sizeof url, "%s/_raft/members/%ld", base, id);
    struct ctl_http_res res;
    if (ctl_http("DELETE", url, NULL, 30000, &res) != 0 || res.status != 200) {
        fprintf(stderr, "skeinctl cluster remove-node: DELETE %s: %s %s\n", url,
                res.status ? "" : res.error, res.body ? res.body : "");
        ctl_http_res_free(&res);
        return 1;
    }
    ctl_http_res_free(&res);
    printf("node %ld removed from the configuration\n", id);
    /* Stop its process and forget it, when it belongs to our cluster. */
    struct ctl_cluster* c = calloc(1, sizeof *c);
    if (c != NULL &&
        ctl_cluster_load(data != NULL ? data : ctl_data_dir(), c, true) == 0) {
        for (size_t i = 0; i < c->count; i++) {
            if (c->node[i].id != (uint64_t)id) {
                continue;
            }
            if (!keep && ctl_pid_alive(c->node[i].pid)) {
                ctl_pid_stop(c->node[i].pid, SIGTERM, 10000);
                printf("stopped node %ld (pid %ld)\n", id,
                       (long)c->node[i].pid);
            }
            if (!keep) {
                c->node[i].pid = 0;
                ctl_member_save_pid(c, &c->node[i]);
                memmove(&c->node[i], &c->node[i + 1],
                        (c->count - i - 1) * sizeof c->node[0]);
                c->count--;
                ctl_cluster_save(c);
            }
            break;
        }
    }
    free(c);
    return 0;
}

int ctl_cmd_cluster(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        ctl_cluster_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char* sub = argv[1];
    argc -= 2;
    argv += 2;
    if (strcmp(sub, "start") == 0) {
        return ctl_cluster_start(argc, argv);
    }
    if (strcmp(sub, "stop") == 0) {
        return ctl_cluster_stop(argc, argv);
    }
    if (strcmp(sub, "status") == 0) {
        return ctl_cluster_status(argc, argv);
    }
    if (strcmp(sub, "sync-status") == 0) {
        return ctl_cluster_sync_status(argc, argv);
    }
    if (strcmp(sub, "resync") == 0) {
        return ctl_cluster_resync(argc, argv);
    }
    if (strcmp(sub, "transfer-leader") == 0) {
        return ctl_cluster_transfer(argc, argv);
    }
    if (strcmp(sub, "add-node") == 0) {
        return ctl_cluster_add_node(argc, argv);
    }
    if (strcmp(sub, "remove-node") == 0) {
        return ctl_cluster_remove_node(argc, argv);
    }
    fprintf(stderr, "skeinctl cluster: unknown subcommand '%s'\n", sub);
    ctl_cluster_usage(stderr);
    return 2;
}
