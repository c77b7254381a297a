/*
 * gw_kv.c - the data routes, /api/kv (DESIGN.md "REST surface", seed 000).
 *
 *   GET    /api/kv               list: JSON array of entries, in id order;
 *                                ?limit=N (1..10000) one page, the next
 *                                with ?after=<last id>; X-Skein-Next-After
 *                                names it when more follow; ?key=K only
 *                                entries with that key. Without ?limit=
 *                                every entry (read page by page).
 *   POST   /api/kv               create {"key": str, "value": str} -> 201
 *   GET    /api/kv/{id}          one entry (ETag: "<seq>")
 *   PUT    /api/kv/{id}          update {"value": str[, "key": str]};
 *                                If-Match: <seq> -> 412 on mismatch
 *   DELETE /api/kv/{id}          delete (If-Match honoured too)
 *   GET    /api/kv/count         {"count": N}
 *   GET    /api/kv/random-id     {"id": "..."} (404 when empty)
 *
 * Reads take ?consistency=linearizable (default) | lease | stale. Writes
 * take Idempotency-Key (else the gateway makes a UUID) and are answered
 * with it in the Idempotency-Key response header.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "gw_internal.h"

/* How a request reads: its consistency and where it may go. */
struct gw_read_mode {
    Skein__ClientRequest__Consistency consistency;
    enum gw_target target;
};

/* Entry ids: printable, no '/', bounded (UUIDs in practice). */
static bool gw_valid_id(const char* id) {
    size_t len = strlen(id);
    if (len == 0 || len > GW_ID_MAX) {
        return false;
    }
    for (const char* p = id; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '/') {
            return false;
        }
    }
    return true;
}

/* Fills out with the Idempotency-Key, or a fresh UUID. -1 after a 400. */
static int gw_request_id(struct gw_req* r, char* out, size_t outlen) {
    const char* h = gw_header(r, "Idempotency-Key");
    if (h == NULL) {
        uuid_t u;
        uuid_generate_random(u);
        char text[37];
        uuid_unparse_lower(u, text);
        snprintf(out, outlen, "%s", text);
    } else {
        size_t len = strlen(h);
        bool ok = len > 0 && len <= GW_REQUEST_ID_MAX && len < outlen;
        for (size_t i = 0; ok && i < len; i++) {
            unsigned char c = (unsigned char)h[i];
            ok = c > 0x20 && c < 0x7f;
        }
        if (!ok) {
            gw_reply_error(r, 400, "bad_idempotency_key", NULL,
                           "Idempotency-Key must be 1 to %d printable "
                           "ASCII characters without spaces",
                           GW_REQUEST_ID_MAX);
            return -1;
        }
        memcpy(out, h, len + 1);
    }
    gw_add_header(r, "Idempotency-Key", "%s", out);
    return 0;
}

/* Parses ?consistency=. -1 after a 400. */
static int gw_read_mode(struct gw_req* r, struct gw_read_mode* mode) {
    char buf[32];
    int n = gw_query(r, "consistency", buf, sizeof buf);
    mode->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__LINEARIZABLE;
    mode->target = GW_TARGET_ANY;
    if (n == -1 || (n >= 0 && strcmp(buf, "linearizable") == 0)) {
        return 0;
    }
    if (n >= 0 && strcmp(buf, "stale") == 0) {
        mode->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__STALE;
        return 0;
    }
    if (n >= 0 && strcmp(buf, "lease") == 0) {
        mode->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__LEASE;
        mode->target = GW_TARGET_LEADER; /* only the leader holds a lease */
        return 0;
    }
    gw_reply_error(r, 400, "bad_param", NULL,
                   "consistency must be linearizable, lease or stale");
    return -1;
}

/*
 * Parses If-Match: <seq>, "<seq>" or * (no condition). Sets *has and *seq.
 * Returns -1 after a 400.
 */
static int gw_if_match(struct gw_req* r, bool* has, uint64_t* seq) {
    *has = false;
    const char* h = gw_header(r, "If-Match");
    if (h == NULL) {
        return 0;
    }
    char buf[32];
    while (*h == ' ' || *h == '\t') {
        h++;
    }
    size_t len = strlen(h);
    while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t')) {
        len--;
    }
    if (len == 1 && h[0] == '*') {
        return 0;
    }
    if (len >= 2 && h[0] == '"' && h[len - 1] == '"') {
        h++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof buf) {
        goto bad;
    }
    memcpy(buf, h, len);
    buf[len] = '\0';
    if (gw_parse_u64(buf, seq) != 0) {
        goto bad;
    }
    *has = true;
    return 0;
bad:
    gw_reply_error(r, 400, "bad_if_match", NULL,
                   "If-Match must be an entry's seq, e.g. If-Match: 42");
    return -1;
}

/* Reads the body as a JSON object. NULL after answering 400/413. */
static json_t* gw_body_object(struct gw_req* r) {
    if (gw_read_body(r) != 0) {
        return NULL;
    }
    if (r->body_len == 0) {
        gw_reply_error(r, 400, "bad_json", NULL,
                       "the request body is empty: a JSON object is "
                       "expected");
        return NULL;
    }
    json_error_t err;
    json_t* doc = json_loadb(r->body, r->body_len,
                             JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (doc == NULL) {
        gw_reply_error(r, 400, "bad_json", NULL,
                       "malformed JSON at line %d, column %d: %s", err.line,
                       err.column, err.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        gw_reply_error(r, 400, "not_object", NULL,
                       "the request body must be a JSON object");
        return NULL;
    }
    return doc;
}

/*
 * The string field `name` of doc: *out borrows it (NULL when absent and
 * !required). Returns -1 after a 400 (missing or not a string).
 */
static int gw_string_field(struct gw_req* r,
                           json_t* doc,
                           const char* name,
                           bool required,
                           const char** out) {
    json_t* v = json_object_get(doc, name);
    *out = NULL;
    if (v == NULL || (json_is_null(v) && !required)) {
        if (required) {
            gw_reply_error(r, 400, "missing_field", NULL,
                           "field \"%s\" is required", name);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v)) {
        gw_reply_error(r, 400, "wrong_type", NULL,
                       "field \"%s\" must be a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/*
 * Sends a client request and checks that it succeeded. On success returns
 * 0 with res->reply holding a client_response with status OK; otherwise
 * answers the HTTP request and returns -1. res must be freed either way.
 */
static int gw_client_call(struct gw_req* r,
                          Skein__ClientRequest* cr,
                          bool write,
                          enum gw_target target,
                          struct gw_rpc_result* res) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = cr;
    struct gw_rpc_opts opts = {.target = target, .node = -1, .write = write};
    if (gw_rpc(r->gw, &env, &opts, r->deadline_ms, res) != GW_RPC_REPLY) {
        gw_reply_outcome(r, res, write);
        return -1;
    }
    if (res->reply->client_response->status !=
        SKEIN__CLIENT_RESPONSE__STATUS__OK) {
        gw_reply_node_status(r, res->reply);
        return -1;
    }
    return 0;
}

/* Answers with the reply's entry (status 200 or 201). */
static int gw_reply_entry(struct gw_req* r,
                          int status,
                          const Skein__ClientResponse* cr) {
    if (cr->entry == NULL) {
        return gw_reply_error(r, 502, "bad_reply", NULL,
                              "the node's reply lacks the entry");
    }
    gw_add_header(r, "ETag", "\"%llu\"", (unsigned long long)cr->entry->seq);
    if (status == 201 && cr->entry->id != NULL && gw_valid_id(cr->entry->id)) {
        gw_add_header(r, "Location", "/api/kv/%s", cr->entry->id);
    }
    return gw_reply_json(r, status, gw_entry_json(cr->entry));
}

static int gw_kv_create(struct gw_req* r) {
    char rid[GW_REQUEST_ID_MAX + 1];
    json_t* doc = gw_body_object(r);
    if (doc == NULL) {
        return -1;
    }
    const char* key;
    const char* value;
    if (gw_string_field(r, doc, "key", true, &key) != 0 ||
        gw_string_field(r, doc, "value", true, &value) != 0 ||
        gw_request_id(r, rid, sizeof rid) != 0) {
        json_decref(doc);
        return -1;
    }
    Skein__CreateOp op = SKEIN__CREATE_OP__INIT;
    op.key = (char*)key;
    op.value = (char*)value;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    cr.request_id = rid;
    cr.op_case = SKEIN__CLIENT_REQUEST__OP_CREATE;
    cr.create = &op;
    struct gw_rpc_result res;
    if (gw_client_call(r, &cr, true, GW_TARGET_LEADER, &res) == 0) {
        gw_reply_entry(r, 201, res.reply->client_response);
    }
    gw_rpc_result_free(&res);
    json_decref(doc);
    return 0;
}

static int gw_kv_update(struct gw_req* r, const char* id) {
    char rid[GW_REQUEST_ID_MAX + 1];
    bool has_seq;
    uint64_t seq = 0;
    if (gw_if_match(r, &has_seq, &seq) != 0) {
        return -1;
    }
    json_t* doc = gw_body_object(r);
    if (doc == NULL) {
        return -1;
    }
    const char* key;
    const char* value;
    if (gw_string_field(r, doc, "value", true, &value) != 0 ||
        gw_string_field(r, doc, "key", false, &key) != 0 ||
        gw_request_id(r, rid, sizeof rid) != 0) {
        json_decref(doc);
        return -1;
    }
    Skein__UpdateOp op = SKEIN__UPDATE_OP__INIT;
    op.id = (char*)id;
    op.key = (char*)key;
    op.value = (char*)value;
    op.has_expected_seq = has_seq;
    op.expected_seq = seq;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    cr.request_id = rid;
    cr.op_case = SKEIN__CLIENT_REQUEST__OP_UPDATE;
    cr.update = &op;
    struct gw_rpc_result res;
    if (gw_client_call(r, &cr, true, GW_TARGET_LEADER, &res) == 0) {
        gw_reply_entry(r, 200, res.reply->client_response);
    }
    gw_rpc_result_free(&res);
    json_decref(doc);
    return 0;
}

static int gw_kv_delete(struct gw_req* r, const char* id) {
    char rid[GW_REQUEST_ID_MAX + 1];
    bool has_seq;
    uint64_t seq = 0;
    if (gw_if_match(r, &has_seq, &seq) != 0 ||
        gw_request_id(r, rid, sizeof rid) != 0) {
        return -1;
    }
    Skein__DeleteOp op = SKEIN__DELETE_OP__INIT;
    op.id = (char*)id;
    op.has_expected_seq = has_seq;
    op.expected_seq = seq;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    cr.request_id = rid;
    cr.op_case = SKEIN__CLIENT_REQUEST__OP_DELETE;
    cr.delete_ = &op;
    struct gw_rpc_result res;
    if (gw_client_call(r, &cr, true, GW_TARGET_LEADER, &res) == 0) {
        const Skein__ClientResponse* resp = res.reply->client_response;
        json_t* o =
            resp->entry != NULL ? gw_entry_json(resp->entry) : json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "deleted", json_true());
        gw_reply_json(r, 200, o);
    }
    gw_rpc_result_free(&res);
    return 0;
}

static int gw_kv_get(struct gw_req* r, const char* id) {
    struct gw_read_mode mode;
    if (gw_read_mode(r, &mode) != 0) {
        return -1;
    }
    Skein__GetOp op = SKEIN__GET_OP__INIT;
    op.id = (char*)id;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    cr.op_case = SKEIN__CLIENT_REQUEST__OP_GET;
    cr.get = &op;
    cr.has_consistency = true;
    cr.consistency = mode.consistency;
    struct gw_rpc_result res;
    if (gw_client_call(r, &cr, false, mode.target, &res) == 0) {
        gw_reply_entry(r, 200, res.reply->client_response);
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* GET /api/kv/count and /api/kv/random-id. */
static int gw_kv_scalar(struct gw_req* r, bool count) {
    struct gw_read_mode mode;
    if (gw_read_mode(r, &mode) != 0) {
        return -1;
    }
    Skein__CountOp cop = SKEIN__COUNT_OP__INIT;
    Skein__RandomIdOp rop = SKEIN__RANDOM_ID_OP__INIT;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    if (count) {
        cr.op_case = SKEIN__CLIENT_REQUEST__OP_COUNT;
        cr.count = &cop;
    } else {
        cr.op_case = SKEIN__CLIENT_REQUEST__OP_RANDOM_ID;
        cr.random_id = &rop;
    }
    cr.has_consistency = true;
    cr.consistency = mode.consistency;
    struct gw_rpc_result res;
    if (gw_client_call(r, &cr, false, mode.target, &res) == 0) {
        const Skein__ClientResponse* resp = res.reply->client_response;
        json_t* o = json_object();
        if (count) {
            json_object_set_new(o, "count", gw_json_u64(resp->count));
            gw_reply_json(r, 200, o);
        } else if (resp->id == NULL || resp->id[0] == '\0') {
            json_decref(o);
            gw_reply_error(r, 404, "not_found", NULL, "the store is empty");
        } else {
            json_object_set_new(o, "id", json_string(resp->id));
            gw_reply_json(r, 200, o);
        }
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* The list parameters. */
struct gw_list_args {
    struct gw_read_mode mode;
    bool has_limit;
    uint32_t limit;
    char after[GW_ID_MAX + 1];
    bool has_after;
    char* key; /* malloc'd, or NULL */
};

static int gw_list_args(struct gw_req* r, struct gw_list_args* a) {
    char buf[32];
    memset(a, 0, sizeof *a);
    if (gw_read_mode(r, &a->mode) != 0) {
        return -1;
    }
    int n = gw_query(r, "limit", buf, sizeof buf);
    if (n != -1) {
        uint64_t v;
        if (n < 0 || gw_parse_u64(buf, &v) != 0 || v == 0 ||
            v > GW_LIST_LIMIT_MAX) {
            gw_reply_error(r, 400, "bad_param", NULL,
                           "limit must be an integer from 1 to %u",
                           GW_LIST_LIMIT_MAX);
            return -1;
        }
        a->has_limit = true;
        a->limit = (uint32_t)v;
    }
    n = gw_query(r, "after", a->after, sizeof a->after);
    if (n != -1) {
        if (n < 0 || !gw_valid_id(a->after)) {
            gw_reply_error(r, 400, "bad_param", NULL,
                           "after must be an entry id");
            return -1;
        }
        a->has_after = true;
    }
    a->key = malloc(GW_KEY_PARAM_MAX + 1);
    if (a->key == NULL) {
        gw_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    n = gw_query(r, "key", a->key, GW_KEY_PARAM_MAX + 1);
    if (n == -2) {
        gw_reply_error(r, 400, "bad_param", NULL, "key is longer than %d bytes",
                       GW_KEY_PARAM_MAX);
        return -1;
    }
    if (n == -1) {
        free(a->key);
        a->key = NULL;
    }
    return 0;
}

/* One page. 0 with res->reply set, or -1 after answering. */
static int gw_list_page(struct gw_req* r,
                        const struct gw_list_args* a,
                        const char* after,
                        uint32_t limit,
                        struct gw_rpc_result* res) {
    Skein__ListOp op = SKEIN__LIST_OP__INIT;
    op.key = a->key;
    op.has_limit = true;
    op.limit = limit;
    op.after = (char*)after;
    Skein__ClientRequest cr = SKEIN__CLIENT_REQUEST__INIT;
    cr.op_case = SKEIN__CLIENT_REQUEST__OP_LIST;
    cr.list = &op;
    cr.has_consistency = true;
    cr.consistency = a->mode.consistency;
    return gw_client_call(r, &cr, false, a->mode.target, res);
}

static int gw_kv_list_page(struct gw_req* r, const struct gw_list_args* a) {
    struct gw_rpc_result res;
    if (gw_list_page(r, a, a->has_after ? a->after : NULL, a->limit, &res) ==
        0) {
        const Skein__ClientResponse* cr = res.reply->client_response;
        json_t* arr = json_array();
        size_t n = cr->n_entries < a->limit ? cr->n_entries : a->limit;
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(arr, gw_entry_json(cr->entries[i]));
        }
        if (cr->truncated && n > 0 && cr->entries[n - 1]->id != NULL) {
            gw_add_header(r, "X-Skein-Next-After", "%s",
                          cr->entries[n - 1]->id);
        }
        gw_reply_json(r, 200, arr);
    }
    gw_rpc_result_free(&res);
    return 0;
}

/* Appends one page's entries to the JSON text. Returns the page's last id
 * (into last) and whether more follow; -1 on a malformed page. */
static int gw_list_append(struct gw_buf* out,
                          const Skein__ClientResponse* cr,
                          char* last,
                          size_t lastlen,
                          bool* more) {
    for (size_t i = 0; i < cr->n_entries; i++) {
        json_t* e = gw_entry_json(cr->entries[i]);
        char* text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        if (text == NULL) {
            out->failed = true;
            return -1;
        }
        if (out->len > 1) {
            gw_buf_append(out, ",", 1);
        }
        gw_buf_append(out, text, strlen(text));
        free(text);
    }
    *more = cr->truncated;
    if (cr->n_entries == 0) {
        return *more ? -1 : 0; /* "more" without progress: refuse to spin */
    }
    const char* id = cr->entries[cr->n_entries - 1]->id;
    if (id == NULL || strlen(id) >= lastlen || strcmp(id, last) == 0) {
        return -1; /* ids must advance, or the loop could never end */
    }
    memcpy(last, id, strlen(id) + 1);
    return 0;
}

/* GET /api/kv without ?limit=: every entry, page by page, bounded. */
static int gw_kv_list_all(struct gw_req* r, const struct gw_list_args* a) {
    struct gw_buf out = {.max = GW_LIST_ALL_MAX_BYTES};
    char last[GW_ID_MAX + 1] = "";
    if (a->has_after) {
        memcpy(last, a->after, sizeof last);
    }
    gw_buf_append(&out, "[", 1);
    bool more = true;
    while (more) {
        struct gw_rpc_result res;
        if (gw_list_page(r, a, last[0] != '\0' ? last : NULL, GW_LIST_PAGE,
                         &res) != 0) {
            gw_rpc_result_free(&res);
            gw_buf_free(&out);
            return -1;
        }
        int rv = gw_list_append(&out, res.reply->client_response, last,
                                sizeof last, &more);
        gw_rpc_result_free(&res);
        if (out.failed) {
            gw_buf_free(&out);
            return gw_reply_error(
                r, 400, "too_many_entries", NULL,
                "the list exceeds %zu bytes: page it with ?limit=&after=",
                (size_t)GW_LIST_ALL_MAX_BYTES);
        }
        if (rv != 0) {
            gw_buf_free(&out);
            return gw_reply_error(r, 502, "bad_reply", NULL,
                                  "the node sent a list page that does not "
                                  "advance");
        }
    }
    gw_buf_append(&out, "]\n", 2);
    if (out.failed) {
        gw_buf_free(&out);
        return gw_reply_error(r, 500, "internal", NULL, "out of memory");
    }
    gw_reply_raw(r, 200, "application/json", out.data, out.len);
    gw_buf_free(&out);
    return 0;
}

static int gw_kv_list(struct gw_req* r) {
    struct gw_list_args a;
    int rv = gw_list_args(r, &a);
    if (rv == 0) {
        rv = a.has_limit ? gw_kv_list_page(r, &a) : gw_kv_list_all(r, &a);
    }
    free(a.key);
    return rv;
}

int gw_handle_kv(struct gw_req* r) {
    const char* m = r->method;
    const char* rest = r->path + strlen("/api/kv");
    if (*rest == '\0') {
        if (strcmp(m, "GET") == 0) {
            r->route = GW_ROUTE_KV_LIST;
            return gw_kv_list(r);
        }
        if (strcmp(m, "POST") == 0) {
            r->route = GW_ROUTE_KV_CREATE;
            return gw_kv_create(r);
        }
        return gw_reply_method(r, "GET, POST");
    }
    rest++; /* the '/' */
    if (strcmp(rest, "count") == 0 || strcmp(rest, "random-id") == 0) {
        bool count = rest[0] == 'c';
        if (strcmp(m, "GET") != 0) {
            return gw_reply_method(r, "GET");
        }
        r->route = count ? GW_ROUTE_KV_COUNT : GW_ROUTE_KV_RANDOM_ID;
        return gw_kv_scalar(r, count);
    }
    if (strchr(rest, '/') != NULL) {
        return gw_reply_error(r, 404, "not_found", NULL, "no route for %s",
                              r->path);
    }
    bool get = strcmp(m, "GET") == 0;
    bool put = strcmp(m, "PUT") == 0;
    bool del = strcmp(m, "DELETE") == 0;
    if (!get && !put && !del) {
        return gw_reply_method(r, "GET, PUT, DELETE");
    }
    r->route =
        get ? GW_ROUTE_KV_GET : (put ? GW_ROUTE_KV_UPDATE : GW_ROUTE_KV_DELETE);
    if (!gw_valid_id(rest)) {
        return gw_reply_error(r, 404, "not_found", NULL, "no entry with id %s",
                              "(invalid)");
    }
    if (get) {
        return gw_kv_get(r, rest);
    }
    return put ? gw_kv_update(r, rest) : gw_kv_delete(r, rest);
}
