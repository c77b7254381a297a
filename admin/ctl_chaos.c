/*
 * ctl_chaos.c - chaos during a storm (storm --chaos): every kill interval
 * one event on a node of the local cluster that `cluster start` made:
 *
 *   - SIGKILL (the leader included: the first event aims at the leader,
 *     later ones with --leader-pct), then restart with the same command
 *     line and data, and wait until it answers GET /status;
 *   - or, with --stop-pct, SIGSTOP for --stop-ms, then SIGCONT (a node
 *     that hangs without closing its connections);
 *   - and, with --net-fault, transport faults injected once at the start
 *     (and again after each restart) through the node's admin hook: a
 *     FaultInjectRequest over nng to the node's REP socket. The node
 *     refuses it unless started with --enable-fault-injection.
 *
 * The thread only sleeps, signals, forks and makes blocking requests; it
 * shares nothing with the load engine but stderr.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "ctl.h"
#include "skein.pb-c.h"

/* How long a restarted node may take to answer. */
#define CTL_RESTART_WAIT_MS 60000
/* Pause between a kill and the restart: time for an election without it. */
#define CTL_DOWN_MS 300

struct ctl_chaos {
    struct ctl_chaos_opts opts;   /* copy */
    struct ctl_cluster* cluster;  /* loaded from opts.data_dir */
    struct ctl_nodes nodes;       /* http URLs of the members */
    struct ctl_chaos_stats stats; /* under mu */
    struct ctl_rng rng;           /* thread's own */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
    /* parsed --net-fault */
    bool fault;                   /* a fault is configured */
    double drop;                  /* drop probability */
    uint32_t delay_ms, jitter_ms; /* added delay */
    uint64_t fault_peer;          /* CTL_ALL_PEERS = every peer */
    bool fault_node_all;          /* inject on every node */
    uint64_t fault_node;          /* else only this node id */
};

static void ctl_chaos_log(const struct ctl_chaos* c, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ctl_chaos_log(const struct ctl_chaos* c, const char* fmt, ...) {
    if (c->opts.quiet) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\r[chaos] ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

int ctl_fault_inject(const char* nng_url,
                     uint64_t peer,
                     double drop,
                     uint32_t delay_ms,
                     uint32_t jitter_ms,
                     bool partition,
                     bool clear,
                     char* err,
                     size_t errlen) {
    nng_socket sock;
    int rv = nng_req0_open(&sock);
    if (rv != 0) {
        snprintf(err, errlen, "nng_req0_open: %s", nng_strerror(rv));
        return -1;
    }
    nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 3000);
    nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, 3000);
    nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, 1 << 20);
    Skein__FaultInjectRequest fi = SKEIN__FAULT_INJECT_REQUEST__INIT;
    fi.has_peer = peer != CTL_ALL_PEERS;
    fi.peer = fi.has_peer ? peer : 0;
    fi.has_drop_probability = drop > 0;
    fi.drop_probability = drop;
    fi.has_delay_ms = delay_ms > 0;
    fi.delay_ms = delay_ms;
    fi.has_jitter_ms = jitter_ms > 0;
    fi.jitter_ms = jitter_ms;
    fi.has_partition = partition;
    fi.partition = partition;
    fi.has_clear = true;
    fi.clear = clear;
    Skein__AdminRequest ar = SKEIN__ADMIN_REQUEST__INIT;
    ar.op_case = SKEIN__ADMIN_REQUEST__OP_FAULT_INJECT;
    ar.fault_inject = &fi;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &ar;
    size_t len = skein__envelope__get_packed_size(&env);
    uint8_t* buf = malloc(len > 0 ? len : 1);
    char* reply = NULL;
    size_t reply_len = 0;
    int result = -1;
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    skein__envelope__pack(&env, buf);
    if ((rv = nng_dial(sock, nng_url, NULL, 0)) != 0) {
        snprintf(err, errlen, "dial %s: %s", nng_url, nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_send(sock, buf, len, 0)) != 0 ||
        (rv = nng_recv(sock, &reply, &reply_len, NNG_FLAG_ALLOC)) != 0) {
        snprintf(err, errlen, "%s: %s", nng_url, nng_strerror(rv));
        goto out;
    }
    Skein__Envelope* resp =
        skein__envelope__unpack(NULL, reply_len, (const uint8_t*)reply);
    if (resp == NULL ||
        resp->body_case != SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE) {
        snprintf(err, errlen, "%s: unexpected reply", nng_url);
    } else if (resp->admin_response->status !=
               SKEIN__CLIENT_RESPONSE__STATUS__OK) {
        snprintf(err, errlen, "%s refused: %s", nng_url,
                 resp->admin_response->error ? resp->admin_response->error
                                             : "no reason given");
    } else {
        result = 0;
    }
    if (resp != NULL) {
        skein__envelope__free_unpacked(resp, NULL);
    }
out:
    if (reply != NULL) {
        nng_free(reply, reply_len);
    }
    free(buf);
    nng_close(sock);
    return result;
}

/* Parses "drop=P,delay=MS,jitter=MS,peer=ID,node=ID". */
static int ctl_parse_fault(struct ctl_chaos* c, const char* spec) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    c->fault = true;
    c->fault_node_all = true;
    c->fault_peer = CTL_ALL_PEERS;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char* eq = strchr(tok, '=');
        if (eq == NULL) {
            goto bad;
        }
        *eq = '\0';
        const char* v = eq + 1;
        char* end;
        errno = 0;
        if (strcmp(tok, "drop") == 0) {
            c->drop = strtod(v, &end);
            if (c->drop < 0 || c->drop > 1) {
                goto bad;
            }
        } else if (strcmp(tok, "delay") == 0) {
            c->delay_ms = (uint32_t)strtoul(v, &end, 10);
        } else if (strcmp(tok, "jitter") == 0) {
            c->jitter_ms = (uint32_t)strtoul(v, &end, 10);
        } else if (strcmp(tok, "peer") == 0) {
            c->fault_peer = strtoull(v, &end, 10);
        } else if (strcmp(tok, "node") == 0) {
            c->fault_node = strtoull(v, &end, 10);
            c->fault_node_all = false;
        } else {
            goto bad;
        }
        if (errno != 0 || end == v || *end != '\0') {
            goto bad;
        }
    }
    return 0;
bad:
    fprintf(stderr,
            "skeinctl storm: bad --net-fault '%s' (want e.g. "
            "drop=0.1,delay=20,jitter=10,peer=1,node=0)\n",
            spec);
    return -1;
}

/* Injects the configured fault on member i (if it is a target). */
static void ctl_chaos_fault(struct ctl_chaos* c, size_t i) {
    const struct ctl_member* m = &c->cluster->node[i];
    if (!c->fault || (!c->fault_node_all && m->id != c->fault_node) ||
        m->id == c->fault_peer) {
        return; /* not a target, or the peer itself (no messages to self) */
    }
    char url[64];
    char err[256];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", m->port + 1000);
    int rv = ctl_fault_inject(url, c->fault_peer, c->drop, c->delay_ms,
                              c->jitter_ms, false, true, err, sizeof err);
    pthread_mutex_lock(&c->mu);
    if (rv == 0) {
        c->stats.faults++;
    } else {
        c->stats.fault_errors++;
    }
    pthread_mutex_unlock(&c->mu);
    if (rv == 0) {
        char to[32] = "every peer";
        if (c->fault_peer != CTL_ALL_PEERS) {
            snprintf(to, sizeof to, "node %llu",
                     (unsigned long long)c->fault_peer);
        }
        ctl_chaos_log(c,
                      "node %llu: transport fault drop=%.2f delay=%u ms "
                      "jitter=%u ms to %s",
                      (unsigned long long)m->id, c->drop, c->delay_ms,
                      c->jitter_ms, to);
    } else {
        ctl_chaos_log(c, "node %llu: fault injection failed: %s",
                      (unsigned long long)m->id, err);
    }
}

/* Sleeps up to ms; returns true when asked to stop. */
static bool ctl_chaos_sleep(struct ctl_chaos* c, int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    bool stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

/* Waits until member i answers /status. */
static bool ctl_chaos_wait_up(struct ctl_chaos* c, size_t i) {
    int64_t deadline = ctl_now_ms() + CTL_RESTART_WAIT_MS;
    while (ctl_now_ms() < deadline) {
        struct ctl_status st;
        ctl_fetch_status(c->nodes.url[i], 1000, &st);
        if (st.ok) {
            return true;
        }
        if (!ctl_pid_alive(c->cluster->node[i].pid)) {
            return false; /* it exited: see its log */
        }
        ctl_sleep_ms(50);
    }
    return false;
}

/* Restarts member i if it is not running. */
static void ctl_chaos_restart(struct ctl_chaos* c, size_t i) {
    struct ctl_member* m = &c->cluster->node[i];
    if (ctl_pid_alive(m->pid)) {
        return;
    }
    bool up = ctl_member_spawn(c->cluster, m) == 0 && ctl_chaos_wait_up(c, i);
    pthread_mutex_lock(&c->mu);
    if (up) {
        c->stats.restarts++;
    } else {
        c->stats.restart_failures++;
    }
    pthread_mutex_unlock(&c->mu);
    ctl_chaos_log(c, "node %llu restarted (pid %ld): %s",
                  (unsigned long long)m->id, (long)m->pid,
                  up ? "answering" : "NOT answering, see its log");
    if (up) {
        ctl_chaos_fault(c, i);
    }
}

/* One chaos event. */
static void ctl_chaos_event(struct ctl_chaos* c, uint64_t n) {
    size_t count = c->cluster->count;
    int leader = ctl_find_leader(&c->nodes, 1000);
    /* The first event is a SIGKILL of the leader: wait out an election. */
    for (int tries = 0; n == 0 && leader < 0 && tries < 50; tries++) {
        if (ctl_chaos_sleep(c, 100)) {
            return;
        }
        leader = ctl_find_leader(&c->nodes, 1000);
    }
    size_t target;
    bool aim_leader =
        leader >= 0 &&
        (n == 0 || (long)ctl_rng_below(&c->rng, 100) < c->opts.leader_pct);
    target =
        aim_leader ? (size_t)leader : (size_t)ctl_rng_below(&c->rng, count);
    struct ctl_member* m = &c->cluster->node[target];
    bool is_leader = leader >= 0 && (size_t)leader == target;
    if (!ctl_pid_alive(m->pid)) {
        ctl_chaos_restart(c, target);
        return;
    }
    if (n > 0 && (long)ctl_rng_below(&c->rng, 100) < c->opts.stop_pct) {
        ctl_chaos_log(c, "SIGSTOP node %llu%s for %ld ms",
                      (unsigned long long)m->id, is_leader ? " (leader)" : "",
                      c->opts.stop_ms);
        kill(m->pid, SIGSTOP);
        ctl_chaos_sleep(c, c->opts.stop_ms);
        kill(m->pid, SIGCONT);
        pthread_mutex_lock(&c->mu);
        c->stats.stops++;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    ctl_chaos_log(c, "SIGKILL node %llu%s (pid %ld)", (unsigned long long)m->id,
                  is_leader ? " (leader)" : "", (long)m->pid);
    if (ctl_pid_stop(m->pid, 0, 0) != 0) {
        /* Restarting now would find its data still locked. */
        ctl_chaos_log(c, "node %llu (pid %ld) does not die",
                      (unsigned long long)m->id, (long)m->pid);
        pthread_mutex_lock(&c->mu);
        c->stats.restart_failures++;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->stats.kills++;
    c->stats.leader_kills += is_leader;
    pthread_mutex_unlock(&c->mu);
    ctl_sleep_ms(CTL_DOWN_MS);
    ctl_chaos_restart(c, target);
}

static void* ctl_chaos_main(void* arg) {
    struct ctl_chaos* c = arg;
    for (size_t i = 0; i < c->cluster->count; i++) {
        ctl_chaos_fault(c, i);
    }
    int64_t interval_ms = (int64_t)(c->opts.kill_interval_s * 1000);
    /* The first event comes early (after at most 1 s), so that even a run
     * shorter than one interval sees a leader kill; then every interval. */
    int64_t first_ms = interval_ms < 1000 ? interval_ms : 1000;
    for (uint64_t n = 0; !ctl_chaos_sleep(c, n == 0 ? first_ms : interval_ms);
         n++) {
        ctl_chaos_event(c, n);
    }
    return NULL;
}

uint64_t ctl_chaos_events(struct ctl_chaos* c) {
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->stats.kills + c->stats.stops + c->stats.restarts +
                 c->stats.restart_failures;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int ctl_chaos_start(const struct ctl_chaos_opts* opts, struct ctl_chaos** out) {
    *out = NULL;
    if (opts->kill_interval_s <= 0) {
        fprintf(stderr, "skeinctl storm: --kill-interval must be positive\n");
        return -1;
    }
    struct ctl_chaos* c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    c->opts = *opts;
    c->cluster = calloc(1, sizeof *c->cluster);
    if (c->cluster == NULL ||
        ctl_cluster_load(opts->data_dir, c->cluster, false) != 0 ||
        (opts->net_fault != NULL && ctl_parse_fault(c, opts->net_fault) != 0)) {
        fprintf(stderr,
                "skeinctl storm: --chaos needs a cluster started by "
                "'skeinctl cluster start' (--data DIR)\n");
        free(c->cluster);
        free(c);
        return -1;
    }
    char list[CTL_MAX_NODES * 8] = "";
    size_t off = 0;
    for (size_t i = 0; i < c->cluster->count; i++) {
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%d",
                                i ? "," : "", c->cluster->node[i].port);
    }
    if (ctl_nodes_parse(list, &c->nodes) != 0) {
        free(c->cluster);
        free(c);
        return -1;
    }
    ctl_rng_seed(&c->rng, opts->seed ? opts->seed * 7919 : 0);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&c->thread, NULL, ctl_chaos_main, c) != 0) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c->cluster);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void ctl_chaos_stop(struct ctl_chaos* c, struct ctl_chaos_stats* stats) {
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    /* Leave the cluster whole: every node running, no fault left. */
    for (size_t i = 0; i < c->cluster->count; i++) {
        if (c->cluster->node[i].pid > 0) {
            kill(c->cluster->node[i].pid, SIGCONT);
        }
        ctl_chaos_restart(c, i);
        if (c->fault) {
            char url[64];
            char err[256];
            snprintf(url, sizeof url, "tcp://127.0.0.1:%d",
                     c->cluster->node[i].port + 1000);
            ctl_fault_inject(url, CTL_ALL_PEERS, 0, 0, 0, false, true, err,
                             sizeof err);
        }
    }
    *stats = c->stats;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->cluster);
    free(c);
}
