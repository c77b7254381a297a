/*
 * skein_probe.c - status polling for the fault tests (tests/fault/), in one
 * process instead of the encode | nngcat | decode pipeline per request, so
 * that watching a 7-node cluster ten times a second does not load the
 * machine it watches.
 *
 *   skein-probe status [-t MS] [-o FILE] ID=URL...
 *       asks every node for its status in parallel (each within MS, default
 *       2000) and prints one line per node, in argument order:
 *       "ID node_id=.. role=.. term=.. ..." (the fields of skein-wire's
 *       status line), or just "ID" when the node did not answer; with -o
 *       also appends "EPOCH_MS node_id=.. ..." to FILE for every answer.
 *   skein-probe observe [-i MS] [-t MS] -o FILE -m MEMBERS -s STOPFILE
 *       polls every node listed in MEMBERS (lines "ID=URL"; new lines are
 *       picked up) every MS (default 100), each node from its own thread,
 *       until STOPFILE exists; appends "EPOCH_MS node_id=.. role=.. ..." to
 *       FILE for every answer, EPOCH_MS being when the answer arrived.
 */
#include <errno.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "skein.pb-c.h"

#define MAX_NODES    32
#define LINE_MAX_LEN 512

struct target {
    char id[32];
    char url[256];
    nng_socket sock;
    bool open;
    char line[LINE_MAX_LEN]; /* last answer, "" if none */
    uint64_t at_ms;          /* when it arrived */
};

static int timeout_ms = 2000;
static uint8_t* request;
static size_t request_len;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void build_request(void) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__AdminRequest areq = SKEIN__ADMIN_REQUEST__INIT;
    Skein__StatusRequest st = SKEIN__STATUS_REQUEST__INIT;

    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &areq;
    areq.op_case = SKEIN__ADMIN_REQUEST__OP_STATUS;
    areq.status = &st;
    request_len = skein__envelope__get_packed_size(&env);
    request = malloc(request_len + 1);
    if (request == NULL) {
        exit(2);
    }
    skein__envelope__pack(&env, request);
}

/* Same fields and format as skein-wire's decoded status line. */
static void format_status(const Skein__StatusResponse* s, char* out) {
    snprintf(out, LINE_MAX_LEN,
             "node_id=%" PRIu64 " role=%d term=%" PRIu64 " leader=%" PRIu64
             " commit=%" PRIu64 " applied=%" PRIu64 " count=%" PRIu64
             " hash=%016" PRIx64 " first=%" PRIu64 " snapshots_applied=%" PRIu64
             " snapshots_sent=%" PRIu64 " fault_dups=%" PRIu64,
             s->node_id, s->role, s->term, s->leader_id, s->commit_index,
             s->last_applied, s->entry_count, s->state_hash, s->first_log_index,
             s->resync_stats ? s->resync_stats->snapshots_applied : 0,
             s->resync_stats ? s->resync_stats->send_successes : 0,
             s->fault_dups);
}

static int target_open(struct target* t) {
    if (nng_req0_open(&t->sock) != 0) {
        return -1;
    }
    /* One answer per request: no automatic resend (NOTES.md). */
    nng_socket_set_ms(t->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_ms(t->sock, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_socket_set_ms(t->sock, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_socket_set_ms(t->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(t->sock, NNG_OPT_RECONNMAXT, 200);
    nng_socket_set_size(t->sock, NNG_OPT_RECVMAXSZ, 1 << 20);
    if (nng_dial(t->sock, t->url, NULL, NNG_FLAG_NONBLOCK) != 0) {
        nng_close(t->sock);
        return -1;
    }
    t->open = true;
    return 0;
}

static void* poll_one(void* arg) {
    struct target* t = arg;
    void* buf = NULL;
    size_t len = 0;
    Skein__Envelope* env;

    t->line[0] = '\0';
    if (!t->open && target_open(t) != 0) {
        return NULL;
    }
    if (nng_send(t->sock, request, request_len, 0) != 0 ||
        nng_recv(t->sock, &buf, &len, NNG_FLAG_ALLOC) != 0) {
        return NULL;
    }
    env = skein__envelope__unpack(NULL, len, buf);
    nng_free(buf, len);
    if (env == NULL) {
        return NULL;
    }
    if (env->body_case == SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE &&
        env->admin_response->result_case ==
            SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS) {
        format_status(env->admin_response->node_status, t->line);
        t->at_ms = now_ms();
    }
    skein__envelope__free_unpacked(env, NULL);
    return NULL;
}

static void poll_all(struct target* ts, int n) {
    pthread_t th[MAX_NODES];
    for (int i = 0; i < n; i++) {
        if (pthread_create(&th[i], NULL, poll_one, &ts[i]) != 0) {
            poll_one(&ts[i]);
            th[i] = 0;
        }
    }
    for (int i = 0; i < n; i++) {
        if (th[i] != 0) {
            pthread_join(th[i], NULL);
        }
    }
}

static int parse_target(const char* arg, struct target* t) {
    const char* eq = strchr(arg, '=');
    if (eq == NULL || (size_t)(eq - arg) >= sizeof(t->id) ||
        strlen(eq + 1) >= sizeof(t->url)) {
        return -1;
    }
    memset(t, 0, sizeof(*t));
    memcpy(t->id, arg, (size_t)(eq - arg));
    snprintf(t->url, sizeof(t->url), "%s", eq + 1);
    return 0;
}

static int cmd_status(int argc, char** argv) {
    static struct target ts[MAX_NODES];
    const char* log = NULL;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            timeout_ms = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            log = argv[++i];
        } else if (n < MAX_NODES && parse_target(argv[i], &ts[n]) == 0) {
            n++;
        } else {
            fprintf(stderr, "skein-probe: bad target %s\n", argv[i]);
            return 2;
        }
    }
    build_request();
    poll_all(ts, n);
    for (int i = 0; i < n; i++) {
        printf("%s%s%s\n", ts[i].id, ts[i].line[0] ? " " : "", ts[i].line);
    }
    if (log != NULL) {
        FILE* f = fopen(log, "a");
        for (int i = 0; f != NULL && i < n; i++) {
            if (ts[i].line[0] != '\0') {
                fprintf(f, "%" PRIu64 " %s\n", ts[i].at_ms, ts[i].line);
            }
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    return 0;
}

/* One observer thread per node: its own loop, so that a dead or stopped
 * node (each request then waits for its timeout) never delays the samples
 * of the others; each line carries the time its answer arrived. */
struct watcher {
    struct target t;
    FILE* out;
    const char* stop;
    int interval;
};
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void* watch(void* arg) {
    struct watcher* w = arg;
    while (access(w->stop, F_OK) != 0) {
        uint64_t t0 = now_ms(), spent;
        poll_one(&w->t);
        if (w->t.line[0] != '\0') {
            pthread_mutex_lock(&out_mu);
            fprintf(w->out, "%" PRIu64 " %s\n", now_ms(), w->t.line);
            pthread_mutex_unlock(&out_mu);
        }
        spent = now_ms() - t0;
        if (spent < (uint64_t)w->interval) {
            usleep((useconds_t)((uint64_t)w->interval - spent) * 1000u);
        }
    }
    return NULL;
}

/* Starts a watcher for every "ID=URL" line of MEMBERS not watched yet. */
static int load_members(const char* path,
                        struct watcher* ws,
                        int n,
                        FILE* out,
                        const char* stop,
                        int interval) {
    char buf[512];
    FILE* f = fopen(path, "r");
    pthread_t th;

    if (f == NULL) {
        return n;
    }
    while (n < MAX_NODES && fgets(buf, sizeof(buf), f) != NULL) {
        struct target t;
        bool known = false;
        buf[strcspn(buf, "\r\n")] = '\0';
        if (buf[0] == '\0' || parse_target(buf, &t) != 0) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            known = known || strcmp(ws[i].t.id, t.id) == 0;
        }
        if (known) {
            continue;
        }
        ws[n].t = t;
        ws[n].out = out;
        ws[n].stop = stop;
        ws[n].interval = interval;
        if (pthread_create(&th, NULL, watch, &ws[n]) == 0) {
            pthread_detach(th);
            n++;
        }
    }
    fclose(f);
    return n;
}

static int cmd_observe(int argc, char** argv) {
    static struct watcher ws[MAX_NODES];
    const char *out = NULL, *members = NULL, *stop = NULL;
    int interval = 100, n = 0;
    FILE* f;

    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-i") == 0) {
            interval = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "-t") == 0) {
            timeout_ms = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "-o") == 0) {
            out = argv[i + 1];
        } else if (strcmp(argv[i], "-m") == 0) {
            members = argv[i + 1];
        } else if (strcmp(argv[i], "-s") == 0) {
            stop = argv[i + 1];
        }
    }
    if (out == NULL || members == NULL || stop == NULL) {
        fprintf(stderr,
                "skein-probe observe: -o FILE -m MEMBERS -s STOPFILE\n");
        return 2;
    }
    if ((f = fopen(out, "a")) == NULL) {
        fprintf(stderr, "skein-probe: %s: %s\n", out, strerror(errno));
        return 1;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    build_request();
    while (access(stop, F_OK) != 0) {
        n = load_members(members, ws, n, f, stop, interval);
        usleep(200 * 1000);
    }
    usleep((useconds_t)(timeout_ms + interval) * 1000u); /* watchers end */
    pthread_mutex_lock(&out_mu);
    fclose(f);
    return 0;
}

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "status") == 0) {
        return cmd_status(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "observe") == 0) {
        return cmd_observe(argc - 2, argv + 2);
    }
    fprintf(stderr,
            "usage: skein-probe status [-t MS] [-o FILE] ID=URL...\n"
            "       skein-probe observe [-i MS] [-t MS] -o FILE -m MEMBERS "
            "-s STOPFILE\n");
    return 2;
}
