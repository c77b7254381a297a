/*
 * gw_http.c - civetweb glue: one handler for every path, request bodies,
 * query parameters, and the JSON responses (errors included).
 *
 * civetweb's own error pages are text/plain and close the connection
 * (NOTES.md), so every response here, errors included, is built here:
 * small ones as one buffer (status line, headers, body) in one mg_write,
 * the rest with mg_response_header_start/add/send and mg_write.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gw_internal.h"

/* First allocation for a body of unknown length (chunked upload). */
#define GW_BODY_CHUNK ((size_t)64 * 1024)

/* ---- text buffer ------------------------------------------------------- */

static int gw_buf_reserve(struct gw_buf* b, size_t extra) {
    if (b->failed) {
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        return 0;
    }
    if (b->max != 0 && need > b->max + 1) {
        b->failed = true;
        return -1;
    }
    size_t cap = b->cap != 0 ? b->cap : 4096;
    while (cap < need) {
        cap *= 2;
    }
    char* p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = true;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int gw_buf_append(struct gw_buf* b, const char* s, size_t len) {
    if (gw_buf_reserve(b, len) != 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int gw_buf_printf(struct gw_buf* b, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || gw_buf_reserve(b, (size_t)n) != 0) {
        b->failed = true;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void gw_buf_free(struct gw_buf* b) {
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = false;
}

/* ---- small parsers ----------------------------------------------------- */

int gw_parse_u64(const char* s, uint64_t* out) {
    if (s == NULL || *s == '\0' || strlen(s) > 20) {
        return -1;
    }
    uint64_t v = 0;
    for (const char* p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int gw_query(const struct gw_req* r,
             const char* name,
             char* buf,
             size_t buflen) {
    if (r->query[0] == '\0') {
        return -1;
    }
    int n = mg_get_var2(r->query, strlen(r->query), name, buf, buflen, 0);
    if (n == -1) {
        return -1;
    }
    return n < 0 ? -2 : n;
}

const char* gw_header(const struct gw_req* r, const char* name) {
    return mg_get_header(r->conn, name);
}

/* ---- responses --------------------------------------------------------- */

void gw_add_header(struct gw_req* r, const char* name, const char* fmt, ...) {
    if (r->extra_count >= GW_MAX_EXTRA_HEADERS) {
        return;
    }
    int i = r->extra_count;
    snprintf(r->extra[i].name, sizeof r->extra[i].name, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->extra[i].value, sizeof r->extra[i].value, fmt, ap);
    va_end(ap);
    /* A header value must not carry a line break. */
    for (char* p = r->extra[i].value; *p != '\0'; p++) {
        if (*p == '\r' || *p == '\n') {
            *p = ' ';
        }
    }
    r->extra_count++;
}

int gw_reply_start(struct gw_req* r,
                   int status,
                   const char* content_type,
                   uint64_t len) {
    if (r->status != 0) {
        return -1; /* already answered: a bug, but never send twice */
    }
    r->status = status;
    char lenbuf[32];
    snprintf(lenbuf, sizeof lenbuf, "%llu", (unsigned long long)len);
    mg_response_header_start(r->conn, status);
    mg_response_header_add(r->conn, "Content-Type", content_type, -1);
    mg_response_header_add(r->conn, "Content-Length", lenbuf, -1);
    mg_response_header_add(r->conn, "Cache-Control", "no-store", -1);
    for (int i = 0; i < r->extra_count; i++) {
        mg_response_header_add(r->conn, r->extra[i].name, r->extra[i].value,
                               -1);
    }
    return mg_response_header_send(r->conn) == 0 ? 0 : -1;
}

/* Whether civetweb will keep this connection open after the response:
 * its own rule (keep-alive is enabled in our configuration): the request's
 * Connection header decides, else HTTP/1.1 means yes. */
static bool gw_keeps_alive(const struct gw_req* r) {
    const char* hdr = mg_get_header(r->conn, "Connection");
    if (hdr != NULL) {
        /* a comma-separated list of options */
        const char* p = hdr;
        while (*p != '\0') {
            while (*p == ' ' || *p == '\t' || *p == ',') {
                p++;
            }
            size_t n = strcspn(p, ", \t");
            if (n == 10 && strncasecmp(p, "keep-alive", 10) == 0) {
                return true;
            }
            p += n;
        }
        return false;
    }
    const char* v = r->ri->http_version;
    return v != NULL && strcmp(v, "1.1") == 0;
}

/* The Date header's value, formatted once per second per thread. */
static const char* gw_http_date(void) {
    static __thread time_t cached_at;
    static __thread char text[64];
    time_t now = time(NULL);
    if (now != cached_at || text[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    return text;
}

/*
 * Sends status line, headers and a small body with one mg_write, so the
 * client gets one segment and one wake-up instead of two (civetweb sends
 * headers on their own). Same headers as gw_reply_start. Returns 1 if it
 * did not apply (the caller takes the header API path), else 0 / -1.
 */
static int gw_reply_one_write(struct gw_req* r,
                              int status,
                              const char* content_type,
                              const void* body,
                              size_t len) {
    char head[2048];
    bool head_only = strcmp(r->method, "HEAD") == 0;
    for (int i = 0; i < r->extra_count; i++) {
        if (strcasecmp(r->extra[i].name, "Connection") == 0) {
            return 1; /* civetweb must learn it is closing */
        }
    }
    if (len > 64 * 1024 || r->ri->http_version == NULL) {
        return 1;
    }
    int n =
        snprintf(head, sizeof head,
                 "HTTP/%s %d %s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nCache-Control: no-store\r\n",
                 r->ri->http_version, status,
                 mg_get_response_code_text(r->conn, status), content_type, len);
    for (int i = 0; i < r->extra_count && n > 0 && (size_t)n < sizeof head;
         i++) {
        n += snprintf(head + n, sizeof head - (size_t)n, "%s: %s\r\n",
                      r->extra[i].name, r->extra[i].value);
    }
    if (n > 0 && (size_t)n < sizeof head) {
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Date: %s\r\nConnection: %s\r\n\r\n", gw_http_date(),
                      gw_keeps_alive(r) ? "keep-alive" : "close");
    }
    if (n <= 0 || (size_t)n >= sizeof head) {
        return 1;
    }
    size_t total = (size_t)n + (head_only ? 0 : len);
    char* out = malloc(total);
    if (out == NULL) {
        return 1;
    }
    memcpy(out, head, (size_t)n);
    if (!head_only && len > 0) {
        memcpy(out + n, body, len);
    }
    r->status = status;
    int rv = mg_write(r->conn, out, total) == (int)total ? 0 : -1;
    free(out);
    return rv;
}

int gw_reply_raw(struct gw_req* r,
                 int status,
                 const char* content_type,
                 const void* body,
                 size_t len) {
    if (r->status != 0) {
        return -1; /* already answered: a bug, but never send twice */
    }
    int fast = gw_reply_one_write(r, status, content_type, body, len);
    if (fast != 1) {
        return fast;
    }
    if (gw_reply_start(r, status, content_type, len) != 0) {
        return -1;
    }
    /* A HEAD answer has headers only (no route allows HEAD today, but a
     * 405 to one must not put a body on the connection). */
    if (len > 0 && strcmp(r->method, "HEAD") != 0 &&
        mg_write(r->conn, body, len) != (int)len) {
        return -1;
    }
    return 0;
}

int gw_reply_json(struct gw_req* r, int status, json_t* json) {
    char* text = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":\"out of memory\",\"code\":\"internal\"}\n";
        return gw_reply_raw(r, 500, "application/json", oom, sizeof oom - 1);
    }
    size_t len = strlen(text);
    /* A trailing newline, for people reading curl output. */
    char* with_nl = realloc(text, len + 2);
    if (with_nl != NULL) {
        text = with_nl;
        text[len++] = '\n';
        text[len] = '\0';
    }
    int rv = gw_reply_raw(r, status, "application/json", text, len);
    free(text);
    return rv;
}

int gw_reply_error(struct gw_req* r,
                   int status,
                   const char* code,
                   json_t* extra,
                   const char* fmt,
                   ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t* obj = json_object();
    if (obj != NULL) {
        json_object_set_new(obj, "error", json_string(msg));
        json_object_set_new(obj, "code", json_string(code));
        if (extra != NULL) {
            json_object_update_missing(obj, extra);
        }
    }
    json_decref(extra);
    if (status == 503 || status == 504) {
        gw_add_header(r, "Retry-After", "%s", GW_RETRY_AFTER_S);
    }
    return gw_reply_json(r, status, obj);
}

int gw_reply_method(struct gw_req* r, const char* allow) {
    gw_add_header(r, "Allow", "%s", allow);
    return gw_reply_error(r, 405, "method_not_allowed", NULL,
                          "method %s is not allowed on %s (allowed: %s)",
                          r->method, r->path, allow);
}

/* The detail text of a reply, or `fallback`. */
static const char* gw_detail(const struct gw_reply_info* info,
                             const char* fallback) {
    return (info->error != NULL && info->error[0] != '\0') ? info->error
                                                           : fallback;
}

static int gw_reply_not_leader(struct gw_req* r,
                               const struct gw_reply_info* info) {
    json_t* extra = json_object();
    if (info->leader_known) {
        json_object_set_new(extra, "leader_id", gw_json_u64(info->leader_hint));
    }
    const char* addr = info->leader_http != NULL && info->leader_http[0]
                           ? info->leader_http
                           : info->leader_url;
    if (addr != NULL && addr[0] != '\0') {
        json_object_set_new(extra, "leader_address", json_string(addr));
    }
    return gw_reply_error(
        r, 503, "not_leader", extra, "%s",
        gw_detail(info, info->leader_known ? "the leader is not reachable "
                                             "from this gateway"
                                           : "no leader is known: an "
                                             "election may be running"));
}

int gw_reply_node_status(struct gw_req* r, const Skein__Envelope* reply) {
    struct gw_reply_info info = gw_reply_info(reply);
    if (!info.valid) {
        return gw_reply_error(r, 502, "bad_reply", NULL,
                              "the node sent an unexpected reply");
    }
    switch (info.status) {
        case SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND:
            return gw_reply_error(r, 404, "not_found", NULL, "%s",
                                  gw_detail(&info, "not found"));
        case SKEIN__CLIENT_RESPONSE__STATUS__CAS_MISMATCH: {
            json_t* extra = json_object();
            const Skein__ClientResponse* cr =
                reply->body_case == SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE
                    ? reply->client_response
                    : NULL;
            if (cr != NULL && cr->has_current_seq) {
                json_object_set_new(extra, "current_seq",
                                    gw_json_u64(cr->current_seq));
                gw_add_header(r, "ETag", "\"%llu\"",
                              (unsigned long long)cr->current_seq);
            }
            return gw_reply_error(
                r, 412, "cas_mismatch", extra, "%s",
                gw_detail(&info, "If-Match does not match the entry's seq"));
        }
        case SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER:
            return gw_reply_not_leader(r, &info);
        case SKEIN__CLIENT_RESPONSE__STATUS__NO_QUORUM:
            return gw_reply_error(
                r, 503, "no_quorum", NULL, "%s",
                gw_detail(&info, "no majority of the cluster is reachable"));
        case SKEIN__CLIENT_RESPONSE__STATUS__UNKNOWN_OUTCOME:
            return gw_reply_error(
                r, 504, "outcome_unknown", NULL, "%s",
                gw_detail(&info,
                          "the write's outcome is unknown: retry it "
                          "with the same Idempotency-Key"));
        case SKEIN__CLIENT_RESPONSE__STATUS__DISK_FULL:
            return gw_reply_error(r, 507, "disk_full", NULL, "%s",
                                  gw_detail(&info, "the node's disk is full"));
        case SKEIN__CLIENT_RESPONSE__STATUS__BAD_REQUEST:
            return gw_reply_error(r, 400, "bad_request", NULL, "%s",
                                  gw_detail(&info,
                                            "the node refused the "
                                            "request"));
        default:
            return gw_reply_error(r, 500, "internal", NULL, "%s",
                                  gw_detail(&info, "internal error"));
    }
}

int gw_reply_outcome(struct gw_req* r,
                     const struct gw_rpc_result* res,
                     bool write) {
    switch (res->outcome) {
        case GW_RPC_REPLY:
            return gw_reply_node_status(r, res->reply);
        case GW_RPC_UNKNOWN:
            return gw_reply_error(
                r, 504, "outcome_unknown", NULL,
                "%s: the write may or may not have been applied; retry it "
                "with the same Idempotency-Key",
                res->detail);
        case GW_RPC_BAD_REPLY:
            return gw_reply_error(r, 502, "bad_reply", NULL, "%s", res->detail);
        default:
            return gw_reply_error(r, 503, "unavailable", NULL, "%s%s",
                                  res->detail,
                                  write ? " (the write was not applied)" : "");
    }
}

/* ---- request bodies ---------------------------------------------------- */

static int gw_reply_too_large(struct gw_req* r, size_t limit) {
    /* The rest of the body is not read: the connection must close. */
    gw_add_header(r, "Connection", "close");
    return gw_reply_error(r, 413, "body_too_large", NULL,
                          "the request body exceeds %zu bytes", limit);
}

int gw_read_body(struct gw_req* r) {
    size_t limit = r->gw->cfg.max_body_bytes;
    long long cl = r->ri->content_length;
    if (cl > 0 && (unsigned long long)cl > limit) {
        gw_reply_too_large(r, limit);
        return -1;
    }
    size_t cap = cl >= 0 ? (size_t)cl : GW_BODY_CHUNK;
    char* buf = malloc(cap + 1);
    if (buf == NULL) {
        gw_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (cl >= 0 || cap > limit) {
                break;
            }
            size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
            char* p = realloc(buf, ncap + 1);
            if (p == NULL) {
                free(buf);
                gw_reply_error(r, 500, "internal", NULL, "out of memory");
                return -1;
            }
            buf = p;
            cap = ncap;
        }
        int n = mg_read(r->conn, buf + len, cap - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    if (len > limit) {
        free(buf);
        gw_reply_too_large(r, limit);
        return -1;
    }
    if (cl >= 0 && len < (size_t)cl) {
        free(buf);
        gw_add_header(r, "Connection", "close");
        gw_reply_error(r, 400, "incomplete_body", NULL,
                       "the body ended after %zu of %lld bytes", len, cl);
        return -1;
    }
    buf[len] = '\0';
    r->body = buf;
    r->body_len = len;
    return 0;
}

/* ---- dispatch ---------------------------------------------------------- */

static int gw_route_request(struct gw_req* r) {
    const char* p = r->path;
    bool get = strcmp(r->method, "GET") == 0;
    if (strcmp(p, "/") == 0) {
        r->route = GW_ROUTE_DASHBOARD;
        return get ? gw_handle_dashboard(r) : gw_reply_method(r, "GET");
    }
    if (strcmp(p, "/status") == 0) {
        r->route = GW_ROUTE_STATUS;
        return get ? gw_handle_status(r) : gw_reply_method(r, "GET");
    }
    if (strcmp(p, "/metrics") == 0) {
        r->route = GW_ROUTE_METRICS;
        return get ? gw_handle_metrics(r) : gw_reply_method(r, "GET");
    }
    if (strcmp(p, "/api/kv") == 0 || strncmp(p, "/api/kv/", 8) == 0) {
        return gw_handle_kv(r);
    }
    if (strncmp(p, "/_raft/", 7) == 0) {
        return gw_handle_raft(r);
    }
    return gw_reply_error(r, 404, "not_found", NULL, "no route for %s",
                          r->path);
}

static int gw_dispatch(struct mg_connection* conn, void* cbdata) {
    struct gw* gw = cbdata;
    const struct mg_request_info* ri = mg_get_request_info(conn);
    struct gw_req* r = calloc(1, sizeof *r);
    if (r == NULL || ri == NULL) {
        free(r);
        return 0; /* civetweb answers with its own error */
    }
    r->gw = gw;
    r->conn = conn;
    r->ri = ri;
    r->method = ri->request_method != NULL ? ri->request_method : "";
    r->query = ri->query_string != NULL ? ri->query_string : "";
    r->route = GW_ROUTE_OTHER;
    r->start_us = gw_now_us();
    r->deadline_ms = gw_now_ms() + gw->cfg.request_timeout_ms;
    atomic_fetch_add(&gw->metrics.in_flight, 1);

    /* Paths are URL-decoded by civetweb; drop one trailing slash. */
    char path[1024];
    const char* uri = ri->local_uri != NULL ? ri->local_uri : "/";
    size_t len = strlen(uri);
    if (len >= sizeof path) {
        r->path = "(too long)";
        gw_reply_error(r, 404, "not_found", NULL, "path too long");
    } else {
        memcpy(path, uri, len + 1);
        if (len > 1 && path[len - 1] == '/') {
            path[len - 1] = '\0';
        }
        r->path = path;
        gw_route_request(r);
    }
    if (r->status == 0) {
        gw_reply_error(r, 500, "internal", NULL, "no response was produced");
    }
    int status = r->status;
    gw_metrics_observe(gw, r->route, status, gw_now_us() - r->start_us);
    atomic_fetch_sub(&gw->metrics.in_flight, 1);
    free(r->body);
    free(r);
    return status;
}

void gw_http_install(struct gw* gw) {
    /* "/" is a prefix of every path: one handler routes them all. */
    mg_set_request_handler(gw->mg, "/", gw_dispatch, gw);
}
