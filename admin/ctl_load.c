/*
 * ctl_load.c - load generation: flood, burst, mixed, storm (seed 000's
 * stress tests) and bench, on one libcurl multi handle.
 *
 * Model: `concurrency` slots, each a closed-loop client running one
 * operation at a time (the "proc" of the history). An operation has a
 * deadline (--timeout, default 10 s) and is attempted until it gets a
 * final answer or the deadline passes. Every write carries an
 * Idempotency-Key that stays the same across its attempts, so the node
 * applies it at most once whatever the retries. A retryable failure (503,
 * a refused or reset connection, a timeout, 500/502/504) is retried on the
 * next node after a short backoff. A write whose every attempt failed
 * before reaching a node is "failed"; one that may have reached a node
 * and got no final answer is "indeterminate". Keep-alive connections are
 * pooled by the multi handle (NOTES.md: TCP_NODELAY, MAXCONNECTS).
 */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ctl.h"

/* Most slots (concurrent operations) of one run. */
#define CTL_LOAD_MAX_SLOTS 1024
/* Longest response body kept. */
#define CTL_BODY_MAX ((size_t)1 << 20)

/* Workloads. */
enum ctl_workload {
    CTL_W_FLOOD, /* creates, to the leader */
    CTL_W_BURST, /* creates in bursts, to the leader */
    CTL_W_MIXED, /* CRUD mix, round robin over nodes */
    CTL_W_STORM, /* random operations on random nodes */
    CTL_W_BENCH, /* creates or reads for a duration */
};

/* One run's configuration. */
struct ctl_load_cfg {
    enum ctl_workload w;
    const char* name;        /* command name, for messages */
    struct ctl_nodes nodes;  /* targets */
    long count;              /* operations (0 with duration) */
    long concurrency;        /* slots */
    long size, bursts;       /* burst */
    long pause_ms;           /* burst: pause between bursts */
    long read_pct;           /* storm: % of reads */
    long hot;                /* storm/mixed: ids picked among the last N */
    long value_bytes;        /* pad values to this many bytes */
    double duration_s;       /* bench: stop issuing after this */
    bool read;               /* bench: reads instead of creates */
    const char* consistency; /* bench --read: ?consistency=, NULL = default */
    int64_t op_timeout_us;   /* per-operation deadline */
    int64_t attempt_timeout_us; /* per-attempt timeout */
    FILE* history;              /* JSON lines, or NULL */
    bool progress;              /* progress bar on stderr */
    uint64_t seed;              /* PRNG seed */
    int leader;                 /* node index of the leader, -1 unknown */
    const char** preset_ids;    /* bench --read: ids to read */
    size_t preset_count;
    struct ctl_chaos* chaos; /* storm --chaos: the second half of the
                                operations waits for the first event */
};

/* An id this run created, with the last seq seen. */
struct ctl_known {
    char id[40];
    uint64_t seq;
    bool deleted;
};

/* Per-node counters. */
struct ctl_node_stats {
    uint64_t attempts;   /* requests sent */
    uint64_t answered;   /* final answers (2xx, 404, 412, 4xx) */
    uint64_t retried;    /* retryable failures */
    struct ctl_hist lat; /* attempt latency, us */
};

/* Results of one run. */
struct ctl_load_stats {
    uint64_t issued;        /* operations started */
    uint64_t acked;         /* ok */
    uint64_t failed;        /* certainly not applied / read failed */
    uint64_t indeterminate; /* writes with unknown fate */
    uint64_t attempts;      /* HTTP requests */
    uint64_t retries;       /* attempts after the first */
    uint64_t by_fn_ok[4];   /* ok per operation kind */
    uint64_t not_found;     /* ok answers that were 404 */
    uint64_t cas_mismatch;  /* ok answers that were 412 */
    int64_t elapsed_us;     /* wall time of the run */
    struct ctl_hist lat;    /* latency of acked operations, us */
    struct ctl_node_stats node[CTL_MAX_NODES];
    char last_error[200]; /* the last failure, for the report */
    bool interrupted;     /* stopped by a signal */
};

/* One slot: a client with at most one operation. */
struct ctl_slot {
    size_t idx;              /* slot number = proc */
    CURL* easy;              /* its handle (connections are pooled by
                                the multi handle) */
    struct curl_slist* hdrs; /* headers of the current attempt */
    char* req_body;          /* JSON body of the operation, or NULL */
    char* resp;              /* response body */
    size_t resp_len, resp_cap;
    char errbuf[CURL_ERROR_SIZE]; /* curl's message */
    bool busy;                    /* holds an operation */
    bool in_flight;               /* a transfer runs */
    int64_t retry_at_us;          /* waiting: next attempt time */
    struct ctl_hop op;            /* the operation (history record) */
    char id[40];                  /* target id (owned by op.id on record) */
    char idem[40];                /* Idempotency-Key */
    int node;                     /* node of the current attempt */
    int attempts;                 /* attempts so far */
    bool maybe_applied;           /* a write attempt may have landed */
    int64_t deadline_us;          /* operation deadline */
    int64_t attempt_start_us;     /* current attempt start */
    long http;                    /* last HTTP status, 0 none */
    char error[160];              /* last failure */
    char trail[256];              /* "node:status@ms" per attempt */
};

/* The engine. */
struct ctl_engine {
    const struct ctl_load_cfg* cfg;
    struct ctl_load_stats* st;
    CURLM* multi;
    int epfd;              /* sockets curl asked us to watch */
    int64_t curl_timer_us; /* when curl wants a timeout call, -1 none */
    struct ctl_slot* slots;
    size_t nslots;
    struct ctl_rng rng;
    int64_t t0_us;           /* run start */
    int64_t stop_issue_us;   /* duration mode: no new ops after */
    uint64_t next_op;        /* operation numbers */
    uint64_t done;           /* operations finished */
    size_t rr;               /* round-robin cursor */
    struct ctl_known* known; /* ids created by this run */
    size_t nknown, known_cap;
    /* burst gating */
    long burst_no;           /* bursts started */
    long burst_issued;       /* ops issued in the current burst */
    long burst_done;         /* ops done in the current burst */
    int64_t burst_resume_us; /* pause end */
    int64_t last_progress_us;
};

static volatile sig_atomic_t ctl_load_stop_flag;

static void ctl_load_on_signal(int sig) {
    (void)sig;
    ctl_load_stop_flag = 1;
}

/* ---- curl plumbing ----------------------------------------------------- */

static size_t ctl_slot_write(char* ptr,
                             size_t size,
                             size_t nmemb,
                             void* userdata) {
    struct ctl_slot* s = userdata;
    size_t n = size * nmemb;
    if (s->resp_len + n + 1 > s->resp_cap) {
        size_t cap = s->resp_cap ? s->resp_cap : 2048;
        while (cap < s->resp_len + n + 1) {
            cap *= 2;
        }
        if (cap > CTL_BODY_MAX) {
            return 0;
        }
        char* d = realloc(s->resp, cap);
        if (d == NULL) {
            return 0;
        }
        s->resp = d;
        s->resp_cap = cap;
    }
    memcpy(s->resp + s->resp_len, ptr, n);
    s->resp_len += n;
    s->resp[s->resp_len] = '\0';
    return n;
}

static bool ctl_is_write_fn(enum ctl_fn fn) {
    return fn != CTL_F_GET;
}

/* Starts an attempt of the slot's operation on s->node. */
static int ctl_attempt_start(struct ctl_engine* e, struct ctl_slot* s) {
    const struct ctl_load_cfg* cfg = e->cfg;
    char url[CTL_URL_MAX + 64];
    char h[96];
    const char* base = cfg->nodes.url[s->node];
    int64_t now = ctl_now_us();
    const char* method = "GET";
    switch (s->op.fn) {
        case CTL_F_CREATE:
            method = "POST";
            snprintf(url, sizeof url, "%s/api/kv", base);
            break;
        case CTL_F_GET:
            if (cfg->consistency != NULL) {
                snprintf(url, sizeof url, "%s/api/kv/%s?consistency=%s", base,
                         s->id, cfg->consistency);
            } else {
                snprintf(url, sizeof url, "%s/api/kv/%s", base, s->id);
            }
            break;
        case CTL_F_UPDATE:
            method = "PUT";
            snprintf(url, sizeof url, "%s/api/kv/%s", base, s->id);
            break;
        case CTL_F_DELETE:
            method = "DELETE";
            snprintf(url, sizeof url, "%s/api/kv/%s", base, s->id);
            break;
    }
    curl_easy_reset(s->easy);
    curl_slist_free_all(s->hdrs);
    s->hdrs = NULL;
    s->resp_len = 0;
    if (s->resp != NULL) {
        s->resp[0] = '\0';
    }
    s->errbuf[0] = '\0';
    s->hdrs = curl_slist_append(s->hdrs, "Expect:");
    if (s->req_body != NULL) {
        s->hdrs = curl_slist_append(s->hdrs, "Content-Type: application/json");
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->req_body);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE,
                         (long)strlen(s->req_body));
    }
    if (ctl_is_write_fn(s->op.fn)) {
        snprintf(h, sizeof h, "Idempotency-Key: %s", s->idem);
        s->hdrs = curl_slist_append(s->hdrs, h);
    }
    if (s->op.has_if_match) {
        snprintf(h, sizeof h, "If-Match: %llu",
                 (unsigned long long)s->op.if_match);
        s->hdrs = curl_slist_append(s->hdrs, h);
    }
    int64_t left = s->deadline_us - now;
    int64_t tmo =
        cfg->attempt_timeout_us < left ? cfg->attempt_timeout_us : left;
    if (tmo < 1000) {
        tmo = 1000;
    }
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)(tmo / 1000));
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(tmo / 1000));
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(s->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(s->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, ctl_slot_write);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    s->attempts++;
    s->attempt_start_us = now;
    s->in_flight = true;
    s->retry_at_us = 0;
    e->st->attempts++;
    e->st->node[s->node].attempts++;
    if (s->attempts > 1) {
        e->st->retries++;
    }
    if (curl_multi_add_handle(e->multi, s->easy) != CURLM_OK) {
        s->in_flight = false;
        return -1;
    }
    return 0;
}

/* ---- the known ids ------------------------------------------------------- */

static void ctl_known_add(struct ctl_engine* e, const char* id, uint64_t seq) {
    if (e->nknown == e->known_cap) {
        size_t cap = e->known_cap ? e->known_cap * 2 : 1024;
        struct ctl_known* k = realloc(e->known, cap * sizeof *k);
        if (k == NULL) {
            return;
        }
        e->known = k;
        e->known_cap = cap;
    }
    struct ctl_known* k = &e->known[e->nknown++];
    snprintf(k->id, sizeof k->id, "%s", id);
    k->seq = seq;
    k->deleted = false;
}

static struct ctl_known* ctl_known_find(struct ctl_engine* e, const char* id) {
    /* The hot ids are the recent ones: search from the end. */
    for (size_t i = e->nknown; i-- > 0;) {
        if (strcmp(e->known[i].id, id) == 0) {
            return &e->known[i];
        }
    }
    return NULL;
}

/* A random known id among the last `hot`, or NULL. */
static struct ctl_known* ctl_known_pick(struct ctl_engine* e) {
    if (e->nknown == 0) {
        return NULL;
    }
    size_t hot = e->cfg->hot > 0 ? (size_t)e->cfg->hot : e->nknown;
    if (hot > e->nknown) {
        hot = e->nknown;
    }
    size_t i = e->nknown - 1 - (size_t)ctl_rng_below(&e->rng, hot);
    return &e->known[i];
}

/* ---- choosing operations ---------------------------------------------------
 */

static void ctl_make_value(struct ctl_engine* e,
                           struct ctl_slot* s,
                           char* buf,
                           size_t buflen) {
    int n = snprintf(buf, buflen, "v%llu-%04x", (unsigned long long)s->op.op,
                     (unsigned)(ctl_rng_next(&e->rng) & 0xffff));
    size_t want = e->cfg->value_bytes > 0 ? (size_t)e->cfg->value_bytes : 0;
    if (want >= buflen) {
        want = buflen - 1;
    }
    for (size_t i = (size_t)n; i < want; i++) {
        buf[i] = 'x';
    }
    if ((size_t)n < want) {
        buf[want] = '\0';
    }
}

/* Picks the node of a new operation. */
static int ctl_pick_node(struct ctl_engine* e) {
    const struct ctl_load_cfg* cfg = e->cfg;
    size_t n = cfg->nodes.count;
    switch (cfg->w) {
        case CTL_W_FLOOD:
        case CTL_W_BURST:
            if (cfg->leader >= 0) {
                return cfg->leader;
            }
            return (int)(e->rr++ % n);
        case CTL_W_STORM:
            return (int)ctl_rng_below(&e->rng, n);
        default:
            return (int)(e->rr++ % n);
    }
}

/* Picks what the next operation does: fn and target. */
static enum ctl_fn ctl_pick_fn(struct ctl_engine* e,
                               struct ctl_known** k,
                               bool* cas) {
    const struct ctl_load_cfg* cfg = e->cfg;
    uint64_t r = ctl_rng_below(&e->rng, 100);
    *k = NULL;
    *cas = false;
    switch (cfg->w) {
        case CTL_W_FLOOD:
        case CTL_W_BURST:
            return CTL_F_CREATE;
        case CTL_W_BENCH:
            return cfg->read ? CTL_F_GET : CTL_F_CREATE;
        case CTL_W_MIXED:
            *k = ctl_known_pick(e);
            if (*k == NULL || r < 40) {
                return CTL_F_CREATE;
            }
            if (r < 70) {
                return CTL_F_GET;
            }
            if (r < 90) {
                *cas = r < 80;
                return CTL_F_UPDATE;
            }
            return CTL_F_DELETE;
        default:
            break;
    }
    /* storm */
    *k = ctl_known_pick(e);
    if (*k == NULL) {
        return CTL_F_CREATE;
    }
    if ((long)r < cfg->read_pct) {
        return CTL_F_GET;
    }
    uint64_t w = ctl_rng_below(&e->rng, 100);
    if (w < 45) {
        return CTL_F_CREATE;
    }
    if (w < 90) {
        *cas = w >= 70;
        return CTL_F_UPDATE;
    }
    return CTL_F_DELETE;
}

/* Fills the slot with a new operation and starts its first attempt. */
static int ctl_issue(struct ctl_engine* e, struct ctl_slot* s) {
    const struct ctl_load_cfg* cfg = e->cfg;
    struct ctl_known* k;
    bool cas;
    enum ctl_fn fn = ctl_pick_fn(e, &k, &cas);
    char value[4096];
    memset(&s->op, 0, sizeof s->op);
    s->op.op = e->next_op++;
    s->op.proc = s->idx;
    s->op.fn = fn;
    s->id[0] = '\0';
    free(s->req_body);
    s->req_body = NULL;
    if (cfg->w == CTL_W_BENCH && cfg->read && cfg->preset_count > 0) {
        const char* id =
            cfg->preset_ids[ctl_rng_below(&e->rng, cfg->preset_count)];
        snprintf(s->id, sizeof s->id, "%s", id);
    } else if (k != NULL && fn != CTL_F_CREATE) {
        snprintf(s->id, sizeof s->id, "%s", k->id);
        if (cas) {
            s->op.has_if_match = true;
            s->op.if_match = k->seq;
        }
    } else if (fn != CTL_F_CREATE) {
        fn = s->op.fn = CTL_F_CREATE;
    }
    if (fn == CTL_F_CREATE || fn == CTL_F_UPDATE) {
        ctl_make_value(e, s, value, sizeof value);
        s->op.value = strdup(value);
        json_t* b = json_object();
        if (fn == CTL_F_CREATE) {
            char key[48];
            snprintf(key, sizeof key, "k%llu",
                     (unsigned long long)(cfg->w == CTL_W_STORM ||
                                                  cfg->w == CTL_W_MIXED
                                              ? ctl_rng_below(&e->rng, 1000)
                                              : s->op.op));
            json_object_set_new(b, "key", json_string(key));
        }
        json_object_set_new(b, "value", json_string(value));
        s->req_body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
    }
    ctl_uuid(&e->rng, s->idem);
    int64_t now = ctl_now_us();
    s->op.invoke_us = now - e->t0_us;
    s->deadline_us = now + cfg->op_timeout_us;
    s->attempts = 0;
    s->maybe_applied = false;
    s->http = 0;
    s->error[0] = '\0';
    s->trail[0] = '\0';
    s->node = ctl_pick_node(e);
    s->busy = true;
    e->st->issued++;
    if (cfg->w == CTL_W_BURST) {
        e->burst_no += e->burst_issued == 0;
        e->burst_issued++;
    }
    return ctl_attempt_start(e, s);
}

/* ---- completing operations -------------------------------------------------
 */

/* How an attempt ended. */
enum ctl_attempt {
    CTL_A_OK,            /* a final answer: the result */
    CTL_A_RETRY_SAFE,    /* retryable, certainly not applied */
    CTL_A_RETRY_UNKNOWN, /* retryable, a write may have been applied */
    CTL_A_FAIL,          /* a final refusal (400, 405, 413, 507, ...) */
};

static enum ctl_attempt ctl_classify(const struct ctl_slot* s, CURLcode rc) {
    if (rc != CURLE_OK) {
        /* Refused before anything was sent: nothing can have landed. */
        return rc == CURLE_COULDNT_CONNECT ? CTL_A_RETRY_SAFE
                                           : CTL_A_RETRY_UNKNOWN;
    }
    long st = s->http;
    if (st >= 200 && st < 300) {
        return CTL_A_OK;
    }
    if (st == 404 && s->op.fn != CTL_F_CREATE) {
        return CTL_A_OK;
    }
    if (st == 412 && s->op.has_if_match) {
        return CTL_A_OK;
    }
    if (st == 503) {
        /* The gateway answers 503 only when the write was not proposed
         * (not_leader, no_quorum, unavailable); 504 when it may have been. */
        return CTL_A_RETRY_SAFE;
    }
    if (st == 500 || st == 502 || st == 504) {
        return CTL_A_RETRY_UNKNOWN;
    }
    return CTL_A_FAIL;
}

/* Reads the result of an ok answer into s->op. Returns 0, or -1 if the
 * body is not what the status promised. */
static int ctl_read_result(struct ctl_engine* e, struct ctl_slot* s) {
    json_error_t jerr;
    json_t* doc =
        json_loadb(s->resp != NULL ? s->resp : "", s->resp_len, 0, &jerr);
    int rv = 0;
    if (s->http == 404) {
        s->op.res = CTL_RES_NOT_FOUND;
        e->st->not_found++;
    } else if (s->http == 412) {
        s->op.res = CTL_RES_CAS_MISMATCH;
        json_t* cur = doc != NULL ? json_object_get(doc, "current_seq") : NULL;
        if (!json_is_integer(cur)) {
            rv = -1;
        }
        s->op.res_seq = ctl_json_u64(cur);
        e->st->cas_mismatch++;
    } else if (s->op.fn == CTL_F_DELETE) {
        s->op.res = CTL_RES_DELETED;
    } else {
        json_t* seq = doc != NULL ? json_object_get(doc, "seq") : NULL;
        json_t* val = doc != NULL ? json_object_get(doc, "value") : NULL;
        json_t* id = doc != NULL ? json_object_get(doc, "id") : NULL;
        if (!json_is_integer(seq) || !json_is_string(val)) {
            rv = -1;
        }
        s->op.res = CTL_RES_ENTRY;
        s->op.res_seq = ctl_json_u64(seq);
        s->op.res_value =
            json_is_string(val) ? strdup(json_string_value(val)) : NULL;
        if (s->op.fn == CTL_F_CREATE) {
            if (json_is_string(id)) {
                snprintf(s->id, sizeof s->id, "%s", json_string_value(id));
            } else {
                rv = -1;
            }
        }
    }
    if (rv != 0) {
        snprintf(s->error, sizeof s->error,
                 "HTTP %ld with an unexpected body (%zu bytes): %.100s",
                 s->http, s->resp_len, s->resp != NULL ? s->resp : "");
    }
    json_decref(doc);
    return rv;
}

/* Learns from an ok answer: new ids and the latest seqs. */
static void ctl_learn(struct ctl_engine* e, const struct ctl_slot* s) {
    if (e->cfg->w == CTL_W_BENCH && e->cfg->preset_count > 0) {
        return;
    }
    if (s->op.fn == CTL_F_CREATE && s->op.res == CTL_RES_ENTRY) {
        ctl_known_add(e, s->id, s->op.res_seq);
        return;
    }
    struct ctl_known* k = ctl_known_find(e, s->id);
    if (k == NULL) {
        return;
    }
    if (s->op.res == CTL_RES_ENTRY || s->op.res == CTL_RES_CAS_MISMATCH) {
        if (s->op.res_seq > k->seq) {
            k->seq = s->op.res_seq;
        }
    } else if (s->op.res == CTL_RES_DELETED || s->op.res == CTL_RES_NOT_FOUND) {
        k->deleted = true;
    }
}

static void ctl_record(struct ctl_engine* e, struct ctl_slot* s) {
    if (e->cfg->history == NULL) {
        return;
    }
    s->op.id = s->id[0] != '\0' ? s->id : NULL;
    json_t* o = ctl_hop_json(&s->op);
    s->op.id = NULL;
    json_object_set_new(o, "node", json_string(e->cfg->nodes.name[s->node]));
    json_object_set_new(o, "attempts", json_integer(s->attempts));
    json_object_set_new(o, "idempotency_key", json_string(s->idem));
    if (s->http != 0) {
        json_object_set_new(o, "http", json_integer(s->http));
    }
    if (s->error[0] != '\0') {
        json_object_set_new(o, "error", json_string(s->error));
    }
    json_object_set_new(o, "trail", json_string(s->trail));
    char* line = json_dumps(o, JSON_COMPACT);
    if (line != NULL) {
        fprintf(e->cfg->history, "%s\n", line);
        free(line);
    }
    json_decref(o);
}

/* Ends the slot's operation with `outcome`. */
static void ctl_finish(struct ctl_engine* e,
                       struct ctl_slot* s,
                       enum ctl_outcome outcome) {
    int64_t now = ctl_now_us();
    s->op.outcome = outcome;
    s->op.complete_us = now - e->t0_us;
    switch (outcome) {
        case CTL_OUT_OK:
            e->st->acked++;
            e->st->by_fn_ok[s->op.fn]++;
            ctl_hist_record(&e->st->lat,
                            (uint64_t)(s->op.complete_us - s->op.invoke_us));
            ctl_learn(e, s);
            break;
        case CTL_OUT_FAIL:
            e->st->failed++;
            break;
        case CTL_OUT_INDETERMINATE:
            e->st->indeterminate++;
            break;
    }
    if (outcome != CTL_OUT_OK && s->error[0] != '\0') {
        snprintf(e->st->last_error, sizeof e->st->last_error, "%s %s: %s",
                 ctl_fn_name(s->op.fn), e->cfg->nodes.name[s->node], s->error);
    }
    ctl_record(e, s);
    free(s->op.value);
    free(s->op.res_value);
    memset(&s->op, 0, sizeof s->op);
    s->busy = false;
    e->done++;
    if (e->cfg->w == CTL_W_BURST) {
        e->burst_done++;
    }
}

static void ctl_attempt_done(struct ctl_engine* e,
                             struct ctl_slot* s,
                             CURLcode rc) {
    int64_t now = ctl_now_us();
    s->in_flight = false;
    curl_multi_remove_handle(e->multi, s->easy);
    s->http = 0;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->http);
    }
    struct ctl_node_stats* ns = &e->st->node[s->node];
    ctl_hist_record(&ns->lat, (uint64_t)(now - s->attempt_start_us));
    enum ctl_attempt a = ctl_classify(s, rc);
    if (rc != CURLE_OK) {
        ctl_strlcpy(s->error, s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc),
                    sizeof s->error);
    }
    /* The attempts' trail: node index, HTTP status (0: none), when it
     * ended (ms since the run started). Diagnostics for the history. */
    size_t tl = strlen(s->trail);
    if (tl + 32 < sizeof s->trail) {
        snprintf(s->trail + tl, sizeof s->trail - tl, "%s%d:%ld@%lld",
                 tl ? " " : "", s->node, s->http,
                 (long long)((now - e->t0_us) / 1000));
    }
    if (rc == CURLE_OK && (a != CTL_A_OK || s->http == 404 || s->http == 412)) {
        /* Keep the node's reason, for failures and for 404/412 answers. */
        json_t* doc = json_loads(s->resp != NULL ? s->resp : "", 0, NULL);
        json_t* msg = doc != NULL ? json_object_get(doc, "error") : NULL;
        snprintf(s->error, sizeof s->error, "HTTP %ld%s%s", s->http,
                 json_is_string(msg) ? ": " : "",
                 json_is_string(msg) ? json_string_value(msg) : "");
        json_decref(doc);
    }
    bool write = ctl_is_write_fn(s->op.fn);
    switch (a) {
        case CTL_A_OK:
            ns->answered++;
            if (ctl_read_result(e, s) != 0) {
                ctl_finish(e, s, write ? CTL_OUT_INDETERMINATE : CTL_OUT_FAIL);
            } else {
                ctl_finish(e, s, CTL_OUT_OK);
            }
            return;
        case CTL_A_FAIL:
            ns->answered++;
            ctl_finish(e, s,
                       write && s->maybe_applied ? CTL_OUT_INDETERMINATE
                                                 : CTL_OUT_FAIL);
            return;
        case CTL_A_RETRY_UNKNOWN:
            s->maybe_applied = s->maybe_applied || write;
            break;
        case CTL_A_RETRY_SAFE:
            break;
    }
    ns->retried++;
    int shift = s->attempts - 1 < 4 ? s->attempts - 1 : 4;
    int64_t backoff = (int64_t)(25000 << shift);
    if (backoff > 400000) {
        backoff = 400000;
    }
    backoff += (int64_t)ctl_rng_below(&e->rng, 25000);
    if (now + backoff >= s->deadline_us || ctl_load_stop_flag) {
        ctl_finish(
            e, s,
            write && s->maybe_applied ? CTL_OUT_INDETERMINATE : CTL_OUT_FAIL);
        return;
    }
    /* Another node next time: this one may be down or partitioned. */
    s->node = (s->node + 1) % (int)e->cfg->nodes.count;
    s->retry_at_us = now + backoff;
}

/* ---- the loop -------------------------------------------------------------
 */

/* True once no more operations will be issued. */
static bool ctl_all_issued(const struct ctl_engine* e, int64_t now) {
    if (ctl_load_stop_flag) {
        return true;
    }
    if (e->stop_issue_us > 0) {
        return now >= e->stop_issue_us;
    }
    return (long)e->st->issued >= e->cfg->count;
}

/* May a new operation start now? (burst: not during a burst's tail or the
 * pause after it). No side effects but the start of the next burst. */
static bool ctl_may_issue(struct ctl_engine* e, int64_t now) {
    const struct ctl_load_cfg* cfg = e->cfg;
    if (ctl_all_issued(e, now)) {
        return false;
    }
    /* With chaos, hold the second half of the run until the first event
     * (a leader kill) has happened, however fast the cluster is: every
     * chaos run then has load on both sides of a leader kill. */
    if (cfg->chaos != NULL && (long)e->st->issued >= cfg->count / 2 &&
        ctl_chaos_events(cfg->chaos) == 0) {
        return false;
    }
    if (cfg->w == CTL_W_BURST && e->burst_issued == cfg->size) {
        if (e->burst_done < cfg->size) {
            return false;
        }
        if (e->burst_resume_us == 0) {
            e->burst_resume_us = now + cfg->pause_ms * 1000;
        }
        if (now < e->burst_resume_us) {
            return false;
        }
        e->burst_issued = 0;
        e->burst_done = 0;
        e->burst_resume_us = 0;
    }
    return true;
}

static void ctl_progress(struct ctl_engine* e, int64_t now, bool final) {
    const struct ctl_load_cfg* cfg = e->cfg;
    if (!cfg->progress || (!final && now - e->last_progress_us < 200000)) {
        return;
    }
    e->last_progress_us = now;
    double frac;
    if (e->stop_issue_us > 0) {
        double total = (double)(e->stop_issue_us - e->t0_us);
        frac = total > 0 ? (double)(now - e->t0_us) / total : 1;
    } else {
        frac = cfg->count > 0 ? (double)e->done / (double)cfg->count : 1;
    }
    if (frac > 1) {
        frac = 1;
    }
    char bar[31];
    int filled = (int)(frac * 30);
    for (int i = 0; i < 30; i++) {
        bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    }
    bar[30] = '\0';
    double secs = (double)(now - e->t0_us) / 1e6;
    fprintf(stderr,
            "\r%s [%s] %3.0f%% %llu done  %.0f op/s  ok %llu  fail %llu  "
            "indet %llu   %s",
            cfg->name, bar, frac * 100, (unsigned long long)e->done,
            secs > 0 ? (double)e->st->acked / secs : 0.0,
            (unsigned long long)e->st->acked, (unsigned long long)e->st->failed,
            (unsigned long long)e->st->indeterminate, final ? "\n" : "");
    fflush(stderr);
}

/* curl's socket callback: watch (or stop watching) one socket. The
 * socket_action interface wakes the engine for the sockets that have
 * something, instead of polling and walking every transfer per answer
 * (which cost the benchmark client as much CPU as a node's loop). */
static int ctl_curl_socket(CURL* easy,
                           curl_socket_t fd,
                           int what,
                           void* userp,
                           void* socketp) {
    struct ctl_engine* e = userp;
    struct epoll_event ev;
    (void)easy;
    (void)socketp;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = fd;
    if (what == CURL_POLL_REMOVE) {
        (void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) |
                (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        (void)epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
    return 0;
}

/* curl's timer callback: when to call socket_action with the timeout. */
static int ctl_curl_timer(CURLM* multi, long timeout_ms, void* userp) {
    struct ctl_engine* e = userp;
    (void)multi;
    e->curl_timer_us = timeout_ms < 0 ? -1 : ctl_now_us() + timeout_ms * 1000;
    return 0;
}

static int ctl_engine_init(struct ctl_engine* e,
                           const struct ctl_load_cfg* cfg,
                           struct ctl_load_stats* st) {
    memset(e, 0, sizeof *e);
    e->cfg = cfg;
    e->st = st;
    ctl_rng_seed(&e->rng, cfg->seed);
    e->nslots = (size_t)cfg->concurrency;
    e->slots = calloc(e->nslots, sizeof *e->slots);
    e->multi = curl_multi_init();
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->curl_timer_us = -1;
    if (e->slots == NULL || e->multi == NULL || e->epfd < 0) {
        return -1;
    }
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS,
                      (long)(e->nslots * 2 + cfg->nodes.count));
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, ctl_curl_socket);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, ctl_curl_timer);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    for (size_t i = 0; i < e->nslots; i++) {
        e->slots[i].idx = i;
        e->slots[i].easy = curl_easy_init();
        if (e->slots[i].easy == NULL) {
            return -1;
        }
    }
    return 0;
}

static void ctl_engine_free(struct ctl_engine* e) {
    for (size_t i = 0; e->slots != NULL && i < e->nslots; i++) {
        struct ctl_slot* s = &e->slots[i];
        if (s->in_flight) {
            curl_multi_remove_handle(e->multi, s->easy);
        }
        if (s->easy != NULL) {
            curl_easy_cleanup(s->easy);
        }
        curl_slist_free_all(s->hdrs);
        free(s->req_body);
        free(s->resp);
        free(s->op.value);
        free(s->op.res_value);
    }
    free(e->slots);
    if (e->multi != NULL) {
        curl_multi_cleanup(e->multi);
    }
    if (e->epfd >= 0) {
        close(e->epfd);
    }
    free(e->known);
}

/* Hands every finished transfer to its slot; returns how many. */
static size_t ctl_take_done(struct ctl_engine* e) {
    CURLMsg* msg;
    int left;
    size_t done = 0;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        struct ctl_slot* s = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &s);
        if (s != NULL) {
            ctl_attempt_done(e, s, msg->data.result);
            done++;
        }
    }
    return done;
}

/* Lets curl run what is due (its timer, or sockets that are ready,
 * waiting for them until `next_wake` at most) and takes what finished. */
static void ctl_engine_wait(struct ctl_engine* e, int64_t next_wake) {
    struct epoll_event evs[64];
    int running = 0;
    int64_t now = ctl_now_us();
    int64_t until = next_wake;
    int n;

    if (e->curl_timer_us >= 0 && e->curl_timer_us <= now) {
        e->curl_timer_us = -1;
        curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        if (ctl_take_done(e) > 0) {
            return;
        }
        now = ctl_now_us();
    }
    if (e->curl_timer_us >= 0 && e->curl_timer_us < until) {
        until = e->curl_timer_us;
    }
    int wait_ms = until <= now ? 0 : (int)((until - now + 999) / 1000);
    n = epoll_wait(e->epfd, evs, 64, wait_ms);
    for (int i = 0; i < n; i++) {
        int mask =
            (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
            (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
            (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(e->multi, evs[i].data.fd, mask, &running);
    }
    if (e->curl_timer_us >= 0 && e->curl_timer_us <= ctl_now_us()) {
        e->curl_timer_us = -1;
        curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    (void)ctl_take_done(e);
}

/* Runs the workload to the end. Returns 0, or -1 on a setup failure. */
static int ctl_engine_run(struct ctl_engine* e) {
    const struct ctl_load_cfg* cfg = e->cfg;
    e->t0_us = ctl_now_us();
    if (cfg->duration_s > 0) {
        e->stop_issue_us = e->t0_us + (int64_t)(cfg->duration_s * 1e6);
    }
    for (;;) {
        int64_t now = ctl_now_us();
        size_t busy = 0;
        int64_t next_wake = now + 100000;
        for (size_t i = 0; i < e->nslots; i++) {
            struct ctl_slot* s = &e->slots[i];
            if (!s->busy && ctl_may_issue(e, now)) {
                if (ctl_issue(e, s) != 0) {
                    return -1;
                }
            } else if (s->busy && !s->in_flight) {
                if (s->retry_at_us <= now) {
                    if (ctl_attempt_start(e, s) != 0) {
                        return -1;
                    }
                } else if (s->retry_at_us < next_wake) {
                    next_wake = s->retry_at_us;
                }
            }
            busy += s->busy;
        }
        if (busy == 0 && ctl_all_issued(e, now)) {
            break;
        }
        if (cfg->w == CTL_W_BURST && e->burst_resume_us > 0 &&
            e->burst_resume_us < next_wake) {
            next_wake = e->burst_resume_us;
        }
        ctl_engine_wait(e, next_wake);
        ctl_progress(e, ctl_now_us(), false);
    }
    e->st->elapsed_us = ctl_now_us() - e->t0_us;
    e->st->interrupted = ctl_load_stop_flag != 0;
    ctl_progress(e, ctl_now_us(), true);
    return 0;
}

/* ---- reports --------------------------------------------------------------
 */

/* The seed's grade: 100 % success and p99 < 50 ms is what a healthy
 * cluster shows (seed 000, "Expected Results"). */
static const char* ctl_grade(const struct ctl_load_stats* st, double p99_ms) {
    uint64_t total = st->acked + st->failed + st->indeterminate;
    double rate = total ? (double)st->acked / (double)total : 1.0;
    if (rate >= 1.0 && p99_ms < 50) {
        return "A (EXCELLENT: 100% success, p99 < 50 ms)";
    }
    if (rate >= 1.0 && p99_ms < 200) {
        return "B (GOOD: 100% success, p99 < 200 ms)";
    }
    if (rate >= 1.0) {
        return "C (FAIR: 100% success, p99 >= 200 ms)";
    }
    if (rate >= 0.99) {
        return "D (DEGRADED: success >= 99%)";
    }
    return "F (FAILING: success < 99%)";
}

static double ctl_ms(uint64_t us) {
    return (double)us / 1000.0;
}

static json_t* ctl_lat_json(const struct ctl_hist* h) {
    json_t* o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)h->count));
    json_object_set_new(o, "mean_ms", json_real(ctl_hist_mean(h) / 1000.0));
    json_object_set_new(o, "p50_ms",
                        json_real(ctl_ms(ctl_hist_percentile(h, 50))));
    json_object_set_new(o, "p90_ms",
                        json_real(ctl_ms(ctl_hist_percentile(h, 90))));
    json_object_set_new(o, "p99_ms",
                        json_real(ctl_ms(ctl_hist_percentile(h, 99))));
    json_object_set_new(o, "p999_ms",
                        json_real(ctl_ms(ctl_hist_percentile(h, 99.9))));
    json_object_set_new(o, "max_ms", json_real(ctl_ms(h->max)));
    return o;
}

static json_t* ctl_report_json(const struct ctl_load_cfg* cfg,
                               const struct ctl_load_stats* st,
                               const struct ctl_chaos_stats* cs) {
    json_t* o = json_object();
    double secs = (double)st->elapsed_us / 1e6;
    double p99 = ctl_ms(ctl_hist_percentile(&st->lat, 99));
    json_object_set_new(o, "command", json_string(cfg->name));
    json_object_set_new(o, "operations", json_integer((json_int_t)st->issued));
    json_object_set_new(o, "concurrency", json_integer(cfg->concurrency));
    json_object_set_new(o, "acked", json_integer((json_int_t)st->acked));
    json_object_set_new(o, "failed", json_integer((json_int_t)st->failed));
    json_object_set_new(o, "indeterminate",
                        json_integer((json_int_t)st->indeterminate));
    json_object_set_new(o, "attempts", json_integer((json_int_t)st->attempts));
    json_object_set_new(o, "retries", json_integer((json_int_t)st->retries));
    json_object_set_new(o, "not_found",
                        json_integer((json_int_t)st->not_found));
    json_object_set_new(o, "cas_mismatch",
                        json_integer((json_int_t)st->cas_mismatch));
    json_object_set_new(o, "elapsed_s", json_real(secs));
    json_object_set_new(o, "throughput_ops_s",
                        json_real(secs > 0 ? (double)st->acked / secs : 0));
    json_object_set_new(o, "latency", ctl_lat_json(&st->lat));
    json_t* by = json_object();
    for (int f = 0; f < 4; f++) {
        json_object_set_new(by, ctl_fn_name((enum ctl_fn)f),
                            json_integer((json_int_t)st->by_fn_ok[f]));
    }
    json_object_set_new(o, "acked_by_op", by);
    json_t* nodes = json_array();
    for (size_t i = 0; i < cfg->nodes.count; i++) {
        const struct ctl_node_stats* ns = &st->node[i];
        json_t* n = json_object();
        json_object_set_new(n, "node", json_string(cfg->nodes.name[i]));
        json_object_set_new(n, "attempts",
                            json_integer((json_int_t)ns->attempts));
        json_object_set_new(n, "answered",
                            json_integer((json_int_t)ns->answered));
        json_object_set_new(n, "retried",
                            json_integer((json_int_t)ns->retried));
        json_object_set_new(n, "latency", ctl_lat_json(&ns->lat));
        json_array_append_new(nodes, n);
    }
    json_object_set_new(o, "nodes", nodes);
    if (cs != NULL) {
        json_t* c = json_object();
        json_object_set_new(c, "kills", json_integer((json_int_t)cs->kills));
        json_object_set_new(c, "leader_kills",
                            json_integer((json_int_t)cs->leader_kills));
        json_object_set_new(c, "pauses", json_integer((json_int_t)cs->stops));
        json_object_set_new(c, "restarts",
                            json_integer((json_int_t)cs->restarts));
        json_object_set_new(c, "restart_failures",
                            json_integer((json_int_t)cs->restart_failures));
        json_object_set_new(c, "faults", json_integer((json_int_t)cs->faults));
        json_object_set_new(c, "fault_errors",
                            json_integer((json_int_t)cs->fault_errors));
        json_object_set_new(o, "chaos", c);
    }
    json_object_set_new(o, "grade", json_string(ctl_grade(st, p99)));
    json_object_set_new(o, "interrupted", json_boolean(st->interrupted));
    return o;
}

static void ctl_print_lat(FILE* out,
                          const char* label,
                          const struct ctl_hist* h) {
    fprintf(out,
            "%s p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p999 %.2f ms  max "
            "%.2f ms\n",
            label, ctl_ms(ctl_hist_percentile(h, 50)),
            ctl_ms(ctl_hist_percentile(h, 90)),
            ctl_ms(ctl_hist_percentile(h, 99)),
            ctl_ms(ctl_hist_percentile(h, 99.9)), ctl_ms(h->max));
}

static void ctl_report_text(FILE* out,
                            const struct ctl_load_cfg* cfg,
                            const struct ctl_load_stats* st,
                            const struct ctl_chaos_stats* cs) {
    double secs = (double)st->elapsed_us / 1e6;
    uint64_t total = st->acked + st->failed + st->indeterminate;
    double p99 = ctl_ms(ctl_hist_percentile(&st->lat, 99));
    fprintf(out, "%s: %llu operations, concurrency %ld, %zu nodes, %.2f s%s\n",
            cfg->name, (unsigned long long)st->issued, cfg->concurrency,
            cfg->nodes.count, secs, st->interrupted ? " (interrupted)" : "");
    fprintf(out, "  acked          %llu (%.2f%%)\n",
            (unsigned long long)st->acked,
            total ? 100.0 * (double)st->acked / (double)total : 100.0);
    fprintf(out, "  failed         %llu\n", (unsigned long long)st->failed);
    fprintf(out, "  indeterminate  %llu\n",
            (unsigned long long)st->indeterminate);
    fprintf(out, "  throughput     %.1f ops/s (acked)\n",
            secs > 0 ? (double)st->acked / secs : 0.0);
    ctl_print_lat(out, "  latency       ", &st->lat);
    fprintf(out,
            "  acked by op    create %llu  get %llu  update %llu  delete %llu"
            "  (404: %llu, 412: %llu)\n",
            (unsigned long long)st->by_fn_ok[CTL_F_CREATE],
            (unsigned long long)st->by_fn_ok[CTL_F_GET],
            (unsigned long long)st->by_fn_ok[CTL_F_UPDATE],
            (unsigned long long)st->by_fn_ok[CTL_F_DELETE],
            (unsigned long long)st->not_found,
            (unsigned long long)st->cas_mismatch);
    fprintf(out, "  attempts       %llu (%llu retries)\n",
            (unsigned long long)st->attempts, (unsigned long long)st->retries);
    fprintf(out, "  per node:\n");
    for (size_t i = 0; i < cfg->nodes.count; i++) {
        const struct ctl_node_stats* ns = &st->node[i];
        char label[CTL_URL_MAX + 96];
        snprintf(label, sizeof label,
                 "    %-21s attempts %-7llu answered %-7llu retried %-5llu",
                 cfg->nodes.name[i], (unsigned long long)ns->attempts,
                 (unsigned long long)ns->answered,
                 (unsigned long long)ns->retried);
        fprintf(out, "%s p50 %.2f ms  p99 %.2f ms\n", label,
                ctl_ms(ctl_hist_percentile(&ns->lat, 50)),
                ctl_ms(ctl_hist_percentile(&ns->lat, 99)));
    }
    if (cs != NULL) {
        fprintf(out,
                "  chaos          kills %llu (leader %llu), pauses %llu, "
                "restarts %llu (failed %llu), faults %llu (errors %llu)\n",
                (unsigned long long)cs->kills,
                (unsigned long long)cs->leader_kills,
                (unsigned long long)cs->stops, (unsigned long long)cs->restarts,
                (unsigned long long)cs->restart_failures,
                (unsigned long long)cs->faults,
                (unsigned long long)cs->fault_errors);
    }
    if (st->last_error[0] != '\0' && (st->failed || st->indeterminate)) {
        fprintf(out, "  last error     %s\n", st->last_error);
    }
    fprintf(out, "  grade          %s\n", ctl_grade(st, p99));
}

/* ---- commands --------------------------------------------------------------
 */

static void ctl_load_usage(FILE* out) {
    fprintf(out,
            "usage: skeinctl flood [--count N] [--concurrency C]\n"
            "       skeinctl burst [--size N] [--bursts B] [--pause MS]\n"
            "       skeinctl mixed [--count N] [--concurrency C]\n"
            "       skeinctl storm [--count N] [--concurrency C] "
            "[--read-pct P]\n"
            "                      [--chaos [--kill-interval S] "
            "[--leader-pct P] [--stop-pct P]\n"
            "                       [--stop-ms MS] [--net-fault SPEC]]\n"
            "common: [--nodes URL,...] [--data DIR] [--timeout S] "
            "[--attempt-timeout-ms MS]\n"
            "        [--history FILE] [--json] [--no-progress] [--seed N] "
            "[--hot N] [--value-bytes N]\n"
            "Exit 0 only when every operation was acknowledged.\n");
}

/* Options shared by the load commands and bench. */
struct ctl_load_args {
    const char *nodes, *data, *history, *net_fault;
    long count, concurrency, size, bursts, pause_ms, read_pct, hot;
    long value_bytes, seed, attempt_timeout_ms, leader_pct, stop_pct, stop_ms;
    double timeout_s, kill_interval_s;
    bool json, no_progress, chaos, help;
};

static int ctl_load_prepare(struct ctl_load_cfg* cfg,
                            const struct ctl_load_args* a) {
    if (ctl_nodes_resolve(a->nodes, a->data, &cfg->nodes) != 0) {
        return -1;
    }
    if (a->concurrency < 1 || a->concurrency > CTL_LOAD_MAX_SLOTS) {
        fprintf(stderr, "skeinctl %s: --concurrency must be 1..%d\n", cfg->name,
                CTL_LOAD_MAX_SLOTS);
        return -1;
    }
    if (a->timeout_s <= 0 || a->attempt_timeout_ms <= 0) {
        fprintf(stderr, "skeinctl %s: timeouts must be positive\n", cfg->name);
        return -1;
    }
    cfg->concurrency = a->concurrency;
    cfg->count = a->count;
    cfg->read_pct = a->read_pct;
    cfg->hot = a->hot;
    cfg->value_bytes = a->value_bytes;
    cfg->seed = (uint64_t)a->seed;
    cfg->op_timeout_us = (int64_t)(a->timeout_s * 1e6);
    cfg->attempt_timeout_us = a->attempt_timeout_ms * 1000;
    cfg->progress = !a->no_progress && !a->json && isatty(2);
    cfg->leader = -1;
    if (cfg->w == CTL_W_FLOOD || cfg->w == CTL_W_BURST ||
        cfg->w == CTL_W_BENCH) {
        cfg->leader = ctl_find_leader(&cfg->nodes, 2000);
    }
    return 0;
}

/* Runs one configured workload. Returns 0, or -1 on a setup failure. */
static int ctl_run(const struct ctl_load_cfg* cfg, struct ctl_load_stats* st) {
    struct ctl_engine e;
    memset(st, 0, sizeof *st);
    ctl_hist_init(&st->lat);
    for (size_t i = 0; i < CTL_MAX_NODES; i++) {
        ctl_hist_init(&st->node[i].lat);
    }
    int rv = ctl_engine_init(&e, cfg, st);
    if (rv == 0) {
        rv = ctl_engine_run(&e);
    }
    ctl_engine_free(&e);
    return rv;
}

static void ctl_install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ctl_load_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int ctl_cmd_load(int argc, char** argv) {
    const char* cmd = argv[0];
    struct ctl_load_args a = {.count = 100,
                              .concurrency = 10,
                              .size = 50,
                              .bursts = 5,
                              .pause_ms = 500,
                              .read_pct = 50,
                              .hot = 32,
                              .timeout_s = 10,
                              .attempt_timeout_ms = 4000,
                              .kill_interval_s = 10,
                              .leader_pct = 50,
                              .stop_pct = 0,
                              .stop_ms = 2000};
    if (strcmp(cmd, "storm") == 0) {
        a.count = 500;
        a.concurrency = 50;
    }
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &a.help},
        {"nodes", CTL_OPT_STR, &a.nodes},
        {"data", CTL_OPT_STR, &a.data},
        {"count", CTL_OPT_LONG, &a.count},
        {"concurrency", CTL_OPT_LONG, &a.concurrency},
        {"size", CTL_OPT_LONG, &a.size},
        {"bursts", CTL_OPT_LONG, &a.bursts},
        {"pause", CTL_OPT_LONG, &a.pause_ms},
        {"read-pct", CTL_OPT_LONG, &a.read_pct},
        {"hot", CTL_OPT_LONG, &a.hot},
        {"value-bytes", CTL_OPT_LONG, &a.value_bytes},
        {"seed", CTL_OPT_LONG, &a.seed},
        {"timeout", CTL_OPT_DOUBLE, &a.timeout_s},
        {"attempt-timeout-ms", CTL_OPT_LONG, &a.attempt_timeout_ms},
        {"history", CTL_OPT_STR, &a.history},
        {"json", CTL_OPT_FLAG, &a.json},
        {"no-progress", CTL_OPT_FLAG, &a.no_progress},
        {"chaos", CTL_OPT_FLAG, &a.chaos},
        {"kill-interval", CTL_OPT_DOUBLE, &a.kill_interval_s},
        {"leader-pct", CTL_OPT_LONG, &a.leader_pct},
        {"stop-pct", CTL_OPT_LONG, &a.stop_pct},
        {"stop-ms", CTL_OPT_LONG, &a.stop_ms},
        {"net-fault", CTL_OPT_STR, &a.net_fault},
    };
    if (ctl_parse_opts(cmd, argc - 1, argv + 1, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        ctl_load_usage(stderr);
        return 2;
    }
    if (a.help) {
        ctl_load_usage(stdout);
        return 0;
    }
    struct ctl_load_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = cmd;
    if (strcmp(cmd, "flood") == 0) {
        cfg.w = CTL_W_FLOOD;
    } else if (strcmp(cmd, "burst") == 0) {
        cfg.w = CTL_W_BURST;
        if (a.size < 1 || a.bursts < 1 || a.pause_ms < 0) {
            fprintf(stderr,
                    "skeinctl burst: --size and --bursts must be "
                    "positive, --pause not negative\n");
            return 2;
        }
        a.concurrency =
            a.size < CTL_LOAD_MAX_SLOTS ? a.size : CTL_LOAD_MAX_SLOTS;
        a.count = a.size * a.bursts;
        cfg.size = a.size;
        cfg.bursts = a.bursts;
        cfg.pause_ms = a.pause_ms;
    } else if (strcmp(cmd, "mixed") == 0) {
        cfg.w = CTL_W_MIXED;
    } else {
        cfg.w = CTL_W_STORM;
    }
    if (a.chaos && cfg.w != CTL_W_STORM) {
        fprintf(stderr, "skeinctl %s: --chaos is a storm option\n", cmd);
        return 2;
    }
    if (a.count < 1 || a.read_pct < 0 || a.read_pct > 100) {
        fprintf(stderr,
                "skeinctl %s: --count must be positive and "
                "--read-pct 0..100\n",
                cmd);
        return 2;
    }
    if (ctl_load_prepare(&cfg, &a) != 0) {
        return 2;
    }
    if (a.history != NULL) {
        cfg.history = fopen(a.history, "w");
        if (cfg.history == NULL) {
            perror(a.history);
            return 2;
        }
    }
    struct ctl_chaos* chaos = NULL;
    struct ctl_chaos_stats cs;
    memset(&cs, 0, sizeof cs);
    if (a.chaos) {
        struct ctl_chaos_opts co = {
            .data_dir = a.data != NULL ? a.data : ctl_data_dir(),
            .kill_interval_s = a.kill_interval_s,
            .leader_pct = a.leader_pct,
            .stop_pct = a.stop_pct,
            .stop_ms = a.stop_ms,
            .net_fault = a.net_fault,
            .seed = (uint64_t)a.seed,
            .quiet = a.json};
        if (ctl_chaos_start(&co, &chaos) != 0) {
            if (cfg.history != NULL) {
                fclose(cfg.history);
            }
            return 2;
        }
    }
    ctl_install_sigint();
    cfg.chaos = chaos;
    struct ctl_load_stats* st = calloc(1, sizeof *st);
    int rv = st != NULL ? ctl_run(&cfg, st) : -1;
    if (chaos != NULL) {
        ctl_chaos_stop(chaos, &cs);
    }
    if (cfg.history != NULL && fclose(cfg.history) != 0) {
        perror(a.history);
        rv = -1;
    }
    if (rv != 0) {
        fprintf(stderr, "skeinctl %s: could not run the load\n", cmd);
        free(st);
        return 2;
    }
    if (a.json) {
        json_t* o = ctl_report_json(&cfg, st, a.chaos ? &cs : NULL);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        ctl_report_text(stdout, &cfg, st, a.chaos ? &cs : NULL);
    }
    /* Chaos that was asked for and did not happen is a failure too. */
    bool ok = st->failed == 0 && st->indeterminate == 0 && !st->interrupted &&
              cs.restart_failures == 0 && cs.fault_errors == 0;
    free(st);
    return ok ? 0 : 1;
}

/* ---- bench ----------------------------------------------------------------
 */

/* Creates `n` entries for a read benchmark; fills ids (malloc'd). */
static int ctl_bench_seed(const struct ctl_load_cfg* base,
                          size_t n,
                          char*** ids_out) {
    char** ids = calloc(n, sizeof *ids);
    if (ids == NULL) {
        return -1;
    }
    size_t got = 0;
    int64_t deadline = ctl_now_ms() + 60000;
    char url[CTL_URL_MAX + 16];
    while (got < n && ctl_now_ms() < deadline) {
        const char* node =
            base->nodes.url[base->leader >= 0 ? base->leader : 0];
        snprintf(url, sizeof url, "%s/api/kv", node);
        char body[96];
        snprintf(body, sizeof body,
                 "{\"key\":\"bench-%zu\",\"value\":\"v%zu\"}", got, got);
        struct ctl_http_res res;
        if (ctl_http("POST", url, body, 5000, &res) == 0 && res.status == 201) {
            json_t* doc = json_loads(res.body, 0, NULL);
            json_t* id = doc != NULL ? json_object_get(doc, "id") : NULL;
            if (json_is_string(id)) {
                ids[got++] = strdup(json_string_value(id));
            }
            json_decref(doc);
        } else {
            ctl_sleep_ms(50);
        }
        ctl_http_res_free(&res);
    }
    *ids_out = ids;
    return got == n ? 0 : -1;
}

/* Keeps only the leader in cfg->nodes (--target leader). Returns 0, or -1
 * after saying why when no leader is known. */
static int bench_target_leader(struct ctl_load_cfg* cfg) {
    if (cfg->leader < 0 || (size_t)cfg->leader >= cfg->nodes.count) {
        fprintf(stderr,
                "skeinctl bench: --target leader: no node reports "
                "itself leader\n");
        return -1;
    }
    if (cfg->leader != 0) {
        memcpy(cfg->nodes.url[0], cfg->nodes.url[cfg->leader],
               sizeof cfg->nodes.url[0]);
        memcpy(cfg->nodes.name[0], cfg->nodes.name[cfg->leader],
               sizeof cfg->nodes.name[0]);
    }
    cfg->nodes.count = 1;
    cfg->leader = 0;
    return 0;
}

int ctl_cmd_bench(int argc, char** argv) {
    const char* conns = "1,16,64,256";
    double duration = 5;
    struct ctl_load_args a = {.timeout_s = 10, .attempt_timeout_ms = 4000};
    bool read = false;
    const char* consistency = NULL;
    const char* target = "all";
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &a.help},
        {"nodes", CTL_OPT_STR, &a.nodes},
        {"data", CTL_OPT_STR, &a.data},
        {"connections", CTL_OPT_STR, &conns},
        {"duration", CTL_OPT_DOUBLE, &duration},
        {"read", CTL_OPT_FLAG, &read},
        {"consistency", CTL_OPT_STR, &consistency},
        {"target", CTL_OPT_STR, &target},
        {"value-bytes", CTL_OPT_LONG, &a.value_bytes},
        {"json", CTL_OPT_FLAG, &a.json},
        {"seed", CTL_OPT_LONG, &a.seed},
    };
    if (ctl_parse_opts("bench", argc - 1, argv + 1, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0 ||
        a.help || duration <= 0 ||
        (consistency != NULL && strcmp(consistency, "linearizable") != 0 &&
         strcmp(consistency, "lease") != 0 &&
         strcmp(consistency, "stale") != 0) ||
        (strcmp(target, "all") != 0 && strcmp(target, "leader") != 0)) {
        fprintf(a.help ? stdout : stderr,
                "usage: skeinctl bench [--connections 1,16,64,256] "
                "[--duration S] [--read]\n"
                "                      [--consistency "
                "linearizable|lease|stale]\n"
                "                      [--target all|leader] [--nodes "
                "URL,...] [--value-bytes N] [--json]\n"
                "Closed-loop creates (or reads of existing entries with "
                "--read, linearizable\nunless --consistency says otherwise), "
                "one row per connection count.\n"
                "--target all (default) spreads the connections over every "
                "node, so followers\nforward writes; --target leader sends "
                "everything to the leader (etcd's\nbenchmark --target-leader)."
                "\n");
        return a.help ? 0 : 2;
    }
    struct ctl_load_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "bench";
    cfg.w = CTL_W_BENCH;
    a.concurrency = 1;
    a.no_progress = true;
    if (ctl_load_prepare(&cfg, &a) != 0) {
        return 2;
    }
    if (strcmp(target, "leader") == 0 && bench_target_leader(&cfg) != 0) {
        return 1;
    }
    cfg.read = read;
    cfg.consistency = consistency;
    cfg.duration_s = duration;
    char** ids = NULL;
    size_t nids = 256;
    if (read) {
        if (ctl_bench_seed(&cfg, nids, &ids) != 0) {
            fprintf(stderr,
                    "skeinctl bench: could not create the entries "
                    "to read\n");
            for (size_t i = 0; ids != NULL && i < nids; i++) {
                free(ids[i]);
            }
            free(ids);
            return 1;
        }
        cfg.preset_ids = (const char**)ids;
        cfg.preset_count = nids;
    }
    ctl_install_sigint();
    json_t* rows = json_array();
    struct ctl_load_stats* st = calloc(1, sizeof *st);
    int status = st != NULL ? 0 : 1;
    if (!a.json) {
        printf("bench: %s%s, %.1f s per row, %zu nodes (leader %s)\n",
               read ? (consistency != NULL ? consistency : "linearizable")
                    : "creates (POST /api/kv)",
               read ? " reads (GET /api/kv/{id})" : "", duration,
               cfg.nodes.count,
               cfg.leader >= 0 ? cfg.nodes.name[cfg.leader] : "unknown");
        printf("%-11s %10s %9s %9s %9s %9s %9s %8s\n", "connections", "ops/s",
               "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms", "errors");
    }
    const char* p = conns;
    while (status == 0 && p != NULL && *p != '\0' && !ctl_load_stop_flag) {
        char* end;
        long c = strtol(p, &end, 10);
        if (end == p || c < 1 || c > CTL_LOAD_MAX_SLOTS) {
            fprintf(stderr, "skeinctl bench: bad --connections '%s'\n", conns);
            status = 2;
            break;
        }
        p = *end == ',' ? end + 1 : NULL;
        cfg.concurrency = c;
        if (ctl_run(&cfg, st) != 0) {
            status = 1;
            break;
        }
        double secs = (double)st->elapsed_us / 1e6;
        double tput = secs > 0 ? (double)st->acked / secs : 0;
        uint64_t errors = st->failed + st->indeterminate;
        if (!a.json) {
            printf("%-11ld %10.0f %9.2f %9.2f %9.2f %9.2f %9.2f %8llu\n", c,
                   tput, ctl_ms(ctl_hist_percentile(&st->lat, 50)),
                   ctl_ms(ctl_hist_percentile(&st->lat, 90)),
                   ctl_ms(ctl_hist_percentile(&st->lat, 99)),
                   ctl_ms(ctl_hist_percentile(&st->lat, 99.9)),
                   ctl_ms(st->lat.max), (unsigned long long)errors);
            fflush(stdout);
        }
        json_t* row = json_object();
        json_object_set_new(row, "connections", json_integer(c));
        json_object_set_new(row, "ops_s", json_real(tput));
        json_object_set_new(row, "acked", json_integer((json_int_t)st->acked));
        json_object_set_new(row, "errors", json_integer((json_int_t)errors));
        json_object_set_new(row, "latency", ctl_lat_json(&st->lat));
        json_array_append_new(rows, row);
        if (errors > 0) {
            status = 1;
        }
    }
    if (a.json) {
        json_t* o = json_object();
        json_object_set_new(o, "workload",
                            json_string(read ? "read" : "create"));
        json_object_set_new(o, "duration_s", json_real(duration));
        json_object_set_new(o, "rows", rows);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        json_decref(rows);
    }
    for (size_t i = 0; ids != NULL && i < nids; i++) {
        free(ids[i]);
    }
    free(ids);
    free(st);
    return status;
}
