/*
 * ctl_util.c - option parsing, clocks, PRNG, node URLs, synchronous HTTP,
 * cluster directories and processes for skeinctl.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ctl.h"

/* ---- options ------------------------------------------------------------ */

static const struct ctl_opt* ctl_opt_find(const struct ctl_opt* opts,
                                          size_t count,
                                          const char* name,
                                          size_t len) {
    for (size_t i = 0; i < count; i++) {
        if (strlen(opts[i].name) == len &&
            strncmp(opts[i].name, name, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static int ctl_opt_set(const char* cmd,
                       const struct ctl_opt* o,
                       const char* val) {
    char* end = NULL;
    errno = 0;
    switch (o->kind) {
        case CTL_OPT_LONG: {
            long v = strtol(val, &end, 10);
            if (errno != 0 || end == val || *end != '\0') {
                fprintf(stderr,
                        "skeinctl %s: --%s needs an integer, got '%s'\n", cmd,
                        o->name, val);
                return -1;
            }
            *(long*)o->out = v;
            return 0;
        }
        case CTL_OPT_DOUBLE: {
            double v = strtod(val, &end);
            if (errno != 0 || end == val || *end != '\0') {
                fprintf(stderr, "skeinctl %s: --%s needs a number, got '%s'\n",
                        cmd, o->name, val);
                return -1;
            }
            *(double*)o->out = v;
            return 0;
        }
        case CTL_OPT_STR:
            *(const char**)o->out = val;
            return 0;
        default:
            return -1;
    }
}

int ctl_parse_opts(const char* cmd,
                   int argc,
                   char** argv,
                   const struct ctl_opt* opts,
                   size_t count,
                   char** pos,
                   size_t pos_max,
                   size_t* pos_count) {
    size_t npos = 0;
    for (int i = 0; i < argc; i++) {
        const char* a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (pos == NULL || npos >= pos_max) {
                fprintf(stderr, "skeinctl %s: unexpected argument '%s'\n", cmd,
                        a);
                return -1;
            }
            pos[npos++] = argv[i];
            continue;
        }
        const char* name = a + 2;
        const char* eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct ctl_opt* o = ctl_opt_find(opts, count, name, len);
        if (o == NULL) {
            fprintf(stderr, "skeinctl %s: unknown option '%s' (see --help)\n",
                    cmd, a);
            return -1;
        }
        if (o->kind == CTL_OPT_FLAG) {
            if (eq != NULL) {
                fprintf(stderr, "skeinctl %s: --%s takes no value\n", cmd,
                        o->name);
                return -1;
            }
            *(bool*)o->out = true;
            continue;
        }
        const char* val;
        if (eq != NULL) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "skeinctl %s: --%s needs a value\n", cmd, o->name);
            return -1;
        }
        if (ctl_opt_set(cmd, o, val) != 0) {
            return -1;
        }
    }
    if (pos_count != NULL) {
        *pos_count = npos;
    }
    return 0;
}

void ctl_strlcpy(char* dst, const char* src, size_t size) {
    size_t n = strlen(src);
    if (size == 0) {
        return;
    }
    if (n >= size) {
        n = size - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- time and random ----------------------------------------------------- */

int64_t ctl_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ctl_now_ms(void) {
    return ctl_now_us() / 1000;
}

void ctl_sleep_ms(int64_t ms) {
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t ctl_splitmix(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ctl_rng_seed(struct ctl_rng* r, uint64_t seed) {
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
               ((uint64_t)getpid() << 40);
    }
    uint64_t x = seed;
    r->s = ctl_splitmix(&x);
    if (r->s == 0) {
        r->s = 0x2545f4914f6cdd1dULL;
    }
}

uint64_t ctl_rng_next(struct ctl_rng* r) {
    /* xorshift64* */
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

uint64_t ctl_rng_below(struct ctl_rng* r, uint64_t n) {
    return n == 0 ? 0 : ctl_rng_next(r) % n;
}

void ctl_uuid(struct ctl_rng* r, char out[37]) {
    uint8_t b[16];
    uint64_t a = ctl_rng_next(r);
    uint64_t c = ctl_rng_next(r);
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
}

/* ---- node URLs ----------------------------------------------------------- */

static int ctl_nodes_add(struct ctl_nodes* nodes,
                         const char* item,
                         size_t len) {
    char buf[64];
    char name[80];
    while (len > 0 && isspace((unsigned char)*item)) {
        item++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)item[len - 1])) {
        len--;
    }
    while (len > 0 && item[len - 1] == '/') {
        len--;
    }
    if (len == 0) {
        return 0;
    }
    if (len >= 64) {
        fprintf(stderr, "skeinctl: node address too long: %.*s\n", (int)len,
                item);
        return -1;
    }
    if (nodes->count >= CTL_MAX_NODES) {
        fprintf(stderr, "skeinctl: at most %d nodes\n", CTL_MAX_NODES);
        return -1;
    }
    memcpy(buf, item, len);
    buf[len] = '\0';
    bool digits = true;
    for (size_t i = 0; i < len; i++) {
        digits = digits && isdigit((unsigned char)buf[i]);
    }
    const char* hostport = buf;
    if (strncmp(buf, "http://", 7) == 0) {
        hostport = buf + 7;
    } else if (strncmp(buf, "https://", 8) == 0) {
        fprintf(stderr, "skeinctl: https is not supported: %s\n", buf);
        return -1;
    }
    size_t i = nodes->count;
    if (digits) {
        snprintf(name, sizeof name, "127.0.0.1:%s", buf);
    } else {
        snprintf(name, sizeof name, "%s", hostport);
    }
    if (strchr(name, ':') == NULL || strchr(name, '/') != NULL) {
        fprintf(stderr, "skeinctl: bad node address '%s' (want host:port)\n",
                buf);
        return -1;
    }
    memcpy(nodes->name[i], name, sizeof name);
    snprintf(nodes->url[i], CTL_URL_MAX, "http://%s", name);
    nodes->count++;
    return 0;
}

int ctl_nodes_parse(const char* list, struct ctl_nodes* nodes) {
    memset(nodes, 0, sizeof *nodes);
    const char* p = list;
    while (p != NULL && *p != '\0') {
        const char* comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (ctl_nodes_add(nodes, p, len) != 0) {
            return -1;
        }
        p = comma != NULL ? comma + 1 : NULL;
    }
    if (nodes->count == 0) {
        fprintf(stderr, "skeinctl: no nodes given\n");
        return -1;
    }
    return 0;
}

int ctl_nodes_resolve(const char* list,
                      const char* data_dir,
                      struct ctl_nodes* nodes) {
    if (list != NULL) {
        return ctl_nodes_parse(list, nodes);
    }
    struct ctl_cluster* c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    int rv;
    /* An explicit --data must name a cluster; the default may be absent. */
    if (ctl_cluster_load(data_dir != NULL ? data_dir : ctl_data_dir(), c,
                         data_dir == NULL) == 0) {
        char buf[CTL_MAX_NODES * 8];
        size_t off = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < c->count; i++) {
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%d",
                                    i > 0 ? "," : "", c->node[i].port);
        }
        rv = ctl_nodes_parse(buf, nodes);
    } else if (data_dir != NULL) {
        rv = -1;
    } else {
        rv = ctl_nodes_parse("8080,8081,8082", nodes);
    }
    free(c);
    return rv;
}

/* ---- synchronous HTTP ---------------------------------------------------- */

/* Response body accumulator for curl's write callback. */
struct ctl_sink {
    char* data;
    size_t len;
    size_t cap;
};

static size_t ctl_sink_write(char* ptr,
                             size_t size,
                             size_t nmemb,
                             void* userdata) {
    struct ctl_sink* s = userdata;
    size_t n = size * nmemb;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n + 1) {
            cap *= 2;
        }
        if (cap > ((size_t)256 << 20)) {
            return 0; /* a runaway body: abort the transfer */
        }
        char* d = realloc(s->data, cap);
        if (d == NULL) {
            return 0;
        }
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, ptr, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

int ctl_http(const char* method,
             const char* url,
             const char* body,
             long timeout_ms,
             struct ctl_http_res* res) {
    memset(res, 0, sizeof *res);
    struct ctl_sink sink = {0};
    CURL* e = curl_easy_init();
    if (e == NULL) {
        snprintf(res->error, sizeof res->error, "curl_easy_init failed");
        res->body = strdup("");
        return -1;
    }
    struct curl_slist* hdr = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ctl_sink_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    if (body != NULL) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdr);
    CURLcode rc = curl_easy_perform(e);
    int rv = 0;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &res->status);
    } else {
        snprintf(res->error, sizeof res->error, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
        rv = -1;
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(e);
    res->body = sink.data != NULL ? sink.data : strdup("");
    res->body_len = sink.len;
    return rv;
}

void ctl_http_res_free(struct ctl_http_res* res) {
    free(res->body);
    memset(res, 0, sizeof *res);
}

json_t* ctl_get_json(const char* url,
                     long timeout_ms,
                     long* status_out,
                     char* err,
                     size_t errlen) {
    struct ctl_http_res res;
    json_t* doc = NULL;
    *status_out = 0;
    if (ctl_http("GET", url, NULL, timeout_ms, &res) != 0) {
        snprintf(err, errlen, "%s", res.error);
        goto out;
    }
    *status_out = res.status;
    json_error_t jerr;
    doc = json_loadb(res.body, res.body_len, 0, &jerr);
    if (res.status < 200 || res.status >= 300) {
        json_t* msg = doc != NULL ? json_object_get(doc, "error") : NULL;
        snprintf(err, errlen, "HTTP %ld%s%s", res.status, msg ? ": " : "",
                 json_is_string(msg) ? json_string_value(msg) : "");
        json_decref(doc);
        doc = NULL;
    } else if (doc == NULL) {
        snprintf(err, errlen, "bad JSON: %s", jerr.text);
    }
out:
    ctl_http_res_free(&res);
    return doc;
}

uint64_t ctl_json_u64(const json_t* v) {
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i < 0 ? 0 : (uint64_t)i;
    }
    if (json_is_string(v)) {
        return strtoull(json_string_value(v), NULL, 10);
    }
    return 0;
}

static void ctl_copy_str(char* dst, size_t dstlen, const json_t* v) {
    snprintf(dst, dstlen, "%s", json_is_string(v) ? json_string_value(v) : "");
}

void ctl_fetch_status(const char* base_url,
                      long timeout_ms,
                      struct ctl_status* st) {
    char url[CTL_URL_MAX + 16];
    long status;
    memset(st, 0, sizeof *st);
    snprintf(url, sizeof url, "%s/status", base_url);
    json_t* doc =
        ctl_get_json(url, timeout_ms, &status, st->error, sizeof st->error);
    if (doc == NULL) {
        return;
    }
    st->ok = true;
    st->node_id = ctl_json_u64(json_object_get(doc, "node_id"));
    ctl_copy_str(st->role, sizeof st->role, json_object_get(doc, "role"));
    st->term = ctl_json_u64(json_object_get(doc, "term"));
    st->leader_id = ctl_json_u64(json_object_get(doc, "leader_id"));
    st->commit_index = ctl_json_u64(json_object_get(doc, "commit_index"));
    st->last_applied = ctl_json_u64(json_object_get(doc, "last_applied"));
    st->entry_count = ctl_json_u64(json_object_get(doc, "entry_count"));
    st->write_seq = ctl_json_u64(json_object_get(doc, "write_seq"));
    ctl_copy_str(st->state_hash, sizeof st->state_hash,
                 json_object_get(doc, "state_hash"));
    json_decref(doc);
}

int ctl_find_leader(const struct ctl_nodes* nodes, long timeout_ms) {
    int best = -1;
    uint64_t best_term = 0;
    for (size_t i = 0; i < nodes->count; i++) {
        struct ctl_status st;
        ctl_fetch_status(nodes->url[i], timeout_ms, &st);
        if (st.ok && strcmp(st.role, "leader") == 0 &&
            (best < 0 || st.term > best_term)) {
            best = (int)i;
            best_term = st.term;
        }
    }
    return best;
}

/* ---- cluster directories ------------------------------------------------- */

const char* ctl_data_dir(void) {
    const char* d = getenv("SKEIN_DATA");
    return d != NULL && d[0] != '\0' ? d : "data";
}

static int ctl_abs_dir(const char* dir, char* out, size_t outlen) {
    if (dir[0] == '/') {
        snprintf(out, outlen, "%s", dir);
        return 0;
    }
    char cwd[CTL_PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) {
        return -1;
    }
    int n = snprintf(out, outlen, "%s/%s", cwd, dir);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static pid_t ctl_read_pid(const char* dir, uint64_t id) {
    char path[CTL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/node-%llu.pid", dir,
             (unsigned long long)id);
    FILE* f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1) {
        pid = 0;
    }
    fclose(f);
    return (pid_t)pid;
}

int ctl_cluster_load(const char* dir_arg, struct ctl_cluster* c, bool quiet) {
    char path[CTL_PATH_MAX + 32];
    char dir[CTL_PATH_MAX];
    ctl_strlcpy(dir, dir_arg, sizeof dir); /* dir_arg may be c->dir */
    memset(c, 0, sizeof *c);
    if (ctl_abs_dir(dir, c->dir, sizeof c->dir) != 0) {
        return -1;
    }
    snprintf(path, sizeof path, "%s/cluster.conf", c->dir);
    FILE* f = fopen(path, "r");
    if (f == NULL) {
        if (!quiet) {
            fprintf(stderr,
                    "skeinctl: no cluster in %s (%s: %s); start one with "
                    "'skeinctl cluster start --data %s'\n",
                    c->dir, path, strerror(errno), dir);
        }
        return -1;
    }
    char line[8192];
    struct ctl_member* m = NULL;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        unsigned long long id;
        int port;
        if (sscanf(line, "node %llu %d", &id, &port) == 2) {
            if (c->count >= CTL_MAX_NODES) {
                break;
            }
            m = &c->node[c->count++];
            m->id = id;
            m->port = port;
        } else if (strncmp(line, "arg ", 4) == 0 && m != NULL &&
                   m->argc < CTL_MAX_ARGS) {
            size_t n = strlen(line + 4);
            if (n >= sizeof m->argv[0]) {
                n = sizeof m->argv[0] - 1;
            }
            memcpy(m->argv[m->argc], line + 4, n);
            m->argv[m->argc++][n] = '\0';
        }
    }
    fclose(f);
    for (size_t i = 0; i < c->count; i++) {
        c->node[i].pid = ctl_read_pid(c->dir, c->node[i].id);
    }
    if (c->count == 0) {
        if (!quiet) {
            fprintf(stderr, "skeinctl: %s lists no nodes\n", path);
        }
        return -1;
    }
    return 0;
}

int ctl_cluster_save(const struct ctl_cluster* c) {
    char path[CTL_PATH_MAX + 32];
    char tmp[CTL_PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/cluster.conf", c->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE* f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "skeinctl: cannot write %s: %s\n", tmp,
                strerror(errno));
        return -1;
    }
    fprintf(f,
            "# skeinctl local cluster: one 'node ID HTTP_PORT' line per node,"
            "\n# then its command line, one 'arg' per argument.\n");
    for (size_t i = 0; i < c->count; i++) {
        const struct ctl_member* m = &c->node[i];
        fprintf(f, "node %llu %d\n", (unsigned long long)m->id, m->port);
        for (int a = 0; a < m->argc; a++) {
            fprintf(f, "arg %s\n", m->argv[a]);
        }
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "skeinctl: cannot write %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

int ctl_member_save_pid(const struct ctl_cluster* c,
                        const struct ctl_member* m) {
    char path[CTL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/node-%llu.pid", c->dir,
             (unsigned long long)m->id);
    if (m->pid <= 0) {
        unlink(path);
        return 0;
    }
    FILE* f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "%ld\n", (long)m->pid);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- processes ----------------------------------------------------------- */

int ctl_member_spawn(const struct ctl_cluster* c, struct ctl_member* m) {
    char logpath[CTL_PATH_MAX + 32];
    char* args[CTL_MAX_ARGS + 1];
    snprintf(logpath, sizeof logpath, "%s/node-%llu.log", c->dir,
             (unsigned long long)m->id);
    if (m->argc <= 0) {
        fprintf(stderr, "skeinctl: node %llu has no command line\n",
                (unsigned long long)m->id);
        return -1;
    }
    for (int i = 0; i < m->argc; i++) {
        args[i] = m->argv[i];
    }
    args[m->argc] = NULL;
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "skeinctl: cannot open %s: %s\n", logpath,
                strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "skeinctl: fork: %s\n", strerror(errno));
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        /* Child: own session (a Ctrl-C on skeinctl does not reach it),
         * default signal mask and dispositions, output to the log. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        setsid();
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) {
            dup2(nul, 0);
        }
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* Leave skeinctl's sockets (the load's keep-alive connections)
         * behind: a node holding a copy would keep them open. */
        long maxfd = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536);
             fd++) {
            close((int)fd);
        }
        execv(args[0], args);
        execvp(args[0], args);
        fprintf(stderr, "skeinctl: exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    m->pid = pid;
    return ctl_member_save_pid(c, m);
}

bool ctl_pid_alive(pid_t pid) {
    if (pid <= 0) {
        return false;
    }
    int status;
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) {
        return false; /* our child, now reaped */
    }
    if (kill(pid, 0) != 0 && errno == ESRCH) {
        return false;
    }
    /* A zombie (nobody reaped it yet) holds no port and runs no code. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE* f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char* rp = strrchr(buf, ')');
    if (rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X')) {
        return false;
    }
    return true;
}

static int ctl_pid_wait_dead(pid_t pid, int64_t wait_ms) {
    int64_t deadline = ctl_now_ms() + wait_ms;
    while (ctl_pid_alive(pid)) {
        if (ctl_now_ms() >= deadline) {
            return -1;
        }
        ctl_sleep_ms(10);
    }
    return 0;
}

int ctl_pid_stop(pid_t pid, int sig, int64_t wait_ms) {
    if (!ctl_pid_alive(pid)) {
        return 0;
    }
    if (sig != 0) {
        kill(pid, sig);
        if (sig == SIGTERM) {
            kill(pid, SIGCONT); /* a paused node cannot act on SIGTERM */
        }
        if (ctl_pid_wait_dead(pid, wait_ms) == 0) {
            return 0;
        }
    }
    /* A big process (a sanitizer build) can take seconds to die on a busy
     * machine; its files (the LMDB lock) stay open until it has. */
    kill(pid, SIGKILL);
    return ctl_pid_wait_dead(pid, 30000);
}

bool ctl_port_free(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool ok = bind(fd, (struct sockaddr*)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

int ctl_self_dir(char* buf, size_t buflen) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) {
        return -1;
    }
    path[n] = '\0';
    char* slash = strrchr(path, '/');
    if (slash == NULL) {
        return -1;
    }
    *slash = '\0';
    snprintf(buf, buflen, "%s", path);
    return 0;
}

void ctl_node_bin(char* buf, size_t buflen) {
    const char* env = getenv("SKEIN_NODE_BIN");
    if (env != NULL && env[0] != '\0') {
        snprintf(buf, buflen, "%s", env);
        return;
    }
    char dir[PATH_MAX];
    if (ctl_self_dir(dir, sizeof dir) == 0) {
        char cand[PATH_MAX + 16];
        snprintf(cand, sizeof cand, "%s/skein-node", dir);
        if (access(cand, X_OK) == 0) {
            snprintf(buf, buflen, "%s", cand);
            return;
        }
    }
    snprintf(buf, buflen, "skein-node");
}
