/*
 * test_gateway.c - the gateway's REST surface against one mock node over
 * inproc://: every route and method, the JSON shapes of seeds 000 and 004,
 * each error status, body limits, If-Match, Idempotency-Key, the node
 * statuses' mapping, /_raft/append and snapshots.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "gw_test.h"
#include "skein.pb-c.h"

struct fx {
    struct mock_node* mock;
    struct gw* gw;
    int port;
    char url[128];
};

static int fx_setup(void** state) {
    struct fx* fx = calloc(1, sizeof *fx);
    gwt_inproc_url(fx->url, sizeof fx->url, "one");
    fx->mock = mock_start(fx->url, 1);
    assert_non_null(fx->mock);
    const char* urls[1] = {fx->url};
    fx->gw = gwt_start(urls, 1, NULL, &fx->port);
    assert_int_equal(gwt_wait_status(fx->port, "/status", 200, 3000), 0);
    *state = fx;
    return 0;
}

static int fx_teardown(void** state) {
    struct fx* fx = *state;
    gw_stop(fx->gw);
    mock_stop(fx->mock);
    free(fx);
    return 0;
}

/* POST /api/kv {"key": key, "value": value}; returns the entry. */
static json_t* create(struct fx* fx, const char* key, const char* value) {
    char body[512];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", key,
             value);
    struct http_resp r;
    http_simple(fx->port, "POST", "/api/kv", body, &r);
    json_t* e = gwt_expect_json(&r, 201);
    http_free(&r);
    return e;
}

static void request(struct fx* fx,
                    const char* method,
                    const char* path,
                    const char* body,
                    const char* const* headers,
                    struct http_resp* r) {
    struct http_req req = {.method = method,
                           .path = path,
                           .body = body,
                           .body_len = body != NULL ? strlen(body) : 0,
                           .headers = headers};
    http_do(fx->port, &req, r);
}

/* ---- /api/kv ----------------------------------------------------------- */

static void test_create_and_get(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "POST", "/api/kv",
                "{\"key\":\"test1\",\"value\":\"hello\"}", &r);
    json_t* e = gwt_expect_json(&r, 201);
    /* seed 000's KVEntry: id, key, value, seq, source_node, created_at */
    const char* id = gwt_str(e, "id");
    assert_int_equal(strlen(id), 36);
    assert_string_equal(gwt_str(e, "key"), "test1");
    assert_string_equal(gwt_str(e, "value"), "hello");
    long long seq = gwt_int(e, "seq");
    assert_true(seq > 0);
    assert_int_equal(gwt_int(e, "source_node"), 1);
    const char* when = gwt_str(e, "created_at");
    assert_int_equal(strlen(when), 24);
    assert_int_equal(when[10], 'T');
    assert_int_equal(when[23], 'Z');
    char path[128], etag[32];
    snprintf(path, sizeof path, "/api/kv/%s", id);
    snprintf(etag, sizeof etag, "\"%lld\"", seq);
    gwt_expect_header(&r, "Location", path);
    gwt_expect_header(&r, "ETag", etag);
    gwt_expect_header(&r, "Idempotency-Key", NULL);
    http_free(&r);

    struct http_resp g;
    http_simple(fx->port, "GET", path, NULL, &g);
    json_t* e2 = gwt_expect_json(&g, 200);
    assert_true(json_equal(e, e2));
    gwt_expect_header(&g, "ETag", etag);
    http_free(&g);
    json_decref(e2);

    /* a trailing slash names the same resource */
    strcat(path, "/");
    http_simple(fx->port, "GET", path, NULL, &g);
    json_decref(gwt_expect_json(&g, 200));
    http_free(&g);
    json_decref(e);
}

static void test_update_and_cas(void** state) {
    struct fx* fx = *state;
    json_t* e = create(fx, "cas", "v1");
    char path[128], hdr[64];
    snprintf(path, sizeof path, "/api/kv/%s", gwt_str(e, "id"));
    long long seq = gwt_int(e, "seq");
    struct http_resp r;

    http_simple(fx->port, "PUT", path, "{\"value\":\"v2\"}", &r);
    json_t* u = gwt_expect_json(&r, 200);
    assert_string_equal(gwt_str(u, "value"), "v2");
    assert_string_equal(gwt_str(u, "key"), "cas");
    long long seq2 = gwt_int(u, "seq");
    assert_true(seq2 > seq);
    json_decref(u);
    http_free(&r);

    /* stale If-Match: 412 with the current seq */
    snprintf(hdr, sizeof hdr, "If-Match: %lld", seq);
    const char* h1[] = {hdr, NULL};
    request(fx, "PUT", path, "{\"value\":\"v3\"}", h1, &r);
    json_t* err = gwt_expect_json(&r, 412);
    assert_string_equal(gwt_str(err, "code"), "cas_mismatch");
    assert_int_equal(gwt_int(err, "current_seq"), seq2);
    json_decref(err);
    http_free(&r);

    /* matching If-Match, quoted like an ETag */
    snprintf(hdr, sizeof hdr, "If-Match: \"%lld\"", seq2);
    request(fx, "PUT", path, "{\"value\":\"v3\",\"key\":\"cas2\"}", h1, &r);
    u = gwt_expect_json(&r, 200);
    assert_string_equal(gwt_str(u, "value"), "v3");
    assert_string_equal(gwt_str(u, "key"), "cas2");
    json_decref(u);
    http_free(&r);

    /* If-Match: * is no condition */
    const char* star[] = {"If-Match: *", NULL};
    request(fx, "PUT", path, "{\"value\":\"v4\"}", star, &r);
    json_decref(gwt_expect_json(&r, 200));
    http_free(&r);

    /* malformed If-Match */
    const char* bad[] = {"If-Match: abc", NULL};
    request(fx, "PUT", path, "{\"value\":\"v5\"}", bad, &r);
    gwt_expect_error(&r, 400, "bad_if_match");
    http_free(&r);
    const char* neg[] = {"If-Match: -1", NULL};
    request(fx, "PUT", path, "{\"value\":\"v5\"}", neg, &r);
    gwt_expect_error(&r, 400, "bad_if_match");
    http_free(&r);

    /* unknown id */
    http_simple(fx->port, "PUT", "/api/kv/nope", "{\"value\":\"x\"}", &r);
    gwt_expect_error(&r, 404, "not_found");
    http_free(&r);
    json_decref(e);
}

static void test_delete(void** state) {
    struct fx* fx = *state;
    json_t* e = create(fx, "del", "v");
    char path[128];
    snprintf(path, sizeof path, "/api/kv/%s", gwt_str(e, "id"));
    struct http_resp r;
    const char* stale[] = {"If-Match: 999999", NULL};
    request(fx, "DELETE", path, NULL, stale, &r);
    gwt_expect_error(&r, 412, "cas_mismatch");
    http_free(&r);

    http_simple(fx->port, "DELETE", path, NULL, &r);
    json_t* d = gwt_expect_json(&r, 200);
    assert_string_equal(gwt_str(d, "id"), gwt_str(e, "id"));
    assert_true(json_is_true(json_object_get(d, "deleted")));
    json_decref(d);
    http_free(&r);

    http_simple(fx->port, "GET", path, NULL, &r);
    gwt_expect_error(&r, 404, "not_found");
    http_free(&r);
    http_simple(fx->port, "DELETE", path, NULL, &r);
    gwt_expect_error(&r, 404, "not_found");
    http_free(&r);
    json_decref(e);
}

static void test_list_paging_count_random(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "GET", "/api/kv/random-id", NULL, &r);
    gwt_expect_error(&r, 404, "not_found"); /* empty store */
    http_free(&r);
    for (int i = 0; i < 5; i++) {
        json_decref(create(fx, "page", "v"));
    }
    json_decref(create(fx, "other", "v"));

    /* everything, as one array (seed 000's GET /api/kv) */
    http_simple(fx->port, "GET", "/api/kv", NULL, &r);
    json_t* all = gwt_expect_json(&r, 200);
    assert_true(json_is_array(all));
    assert_int_equal(json_array_size(all), 6);
    json_decref(all);
    http_free(&r);

    http_simple(fx->port, "GET", "/api/kv?key=page", NULL, &r);
    all = gwt_expect_json(&r, 200);
    assert_int_equal(json_array_size(all), 5);
    http_free(&r);

    /* pages of 2 */
    char path[256], next[128];
    snprintf(path, sizeof path, "/api/kv?key=page&limit=2");
    size_t seen = 0;
    for (int page = 0; page < 3; page++) {
        http_simple(fx->port, "GET", path, NULL, &r);
        json_t* p = gwt_expect_json(&r, 200);
        size_t n = json_array_size(p);
        for (size_t i = 0; i < n; i++) {
            assert_true(json_equal(json_array_get(p, i),
                                   json_array_get(all, seen + i)));
        }
        seen += n;
        const char* h =
            http_header(&r, "X-Skein-Next-After", next, sizeof next);
        if (page < 2) {
            assert_int_equal(n, 2);
            assert_non_null(h);
            assert_string_equal(h, gwt_str(json_array_get(p, n - 1), "id"));
            snprintf(path, sizeof path, "/api/kv?key=page&limit=2&after=%s",
                     next);
        } else {
            assert_int_equal(n, 1);
            assert_null(h);
        }
        json_decref(p);
        http_free(&r);
    }
    assert_int_equal(seen, 5);
    json_decref(all);

    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    json_t* c = gwt_expect_json(&r, 200);
    assert_int_equal(gwt_int(c, "count"), 6);
    json_decref(c);
    http_free(&r);

    http_simple(fx->port, "GET", "/api/kv/random-id", NULL, &r);
    c = gwt_expect_json(&r, 200);
    assert_int_equal(strlen(gwt_str(c, "id")), 36);
    json_decref(c);
    http_free(&r);

    static const char* const bad[] = {"/api/kv?limit=0",
                                      "/api/kv?limit=abc",
                                      "/api/kv?limit=10001",
                                      "/api/kv?limit=-1",
                                      "/api/kv?after=a%2Fb",
                                      "/api/kv?consistency=strong",
                                      "/api/kv/count?consistency=",
                                      NULL};
    for (const char* const* p = bad; *p != NULL; p++) {
        http_simple(fx->port, "GET", *p, NULL, &r);
        gwt_expect_error(&r, 400, "bad_param");
        http_free(&r);
    }
}

static void test_consistency(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    static const struct {
        const char* q;
        int want;
    } cases[] = {
        {"", SKEIN__CLIENT_REQUEST__CONSISTENCY__LINEARIZABLE},
        {"?consistency=linearizable",
         SKEIN__CLIENT_REQUEST__CONSISTENCY__LINEARIZABLE},
        {"?consistency=lease", SKEIN__CLIENT_REQUEST__CONSISTENCY__LEASE},
        {"?consistency=stale", SKEIN__CLIENT_REQUEST__CONSISTENCY__STALE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[96];
        snprintf(path, sizeof path, "/api/kv/count%s", cases[i].q);
        http_simple(fx->port, "GET", path, NULL, &r);
        json_decref(gwt_expect_json(&r, 200));
        http_free(&r);
        assert_int_equal(mock_last_consistency(fx->mock), cases[i].want);
    }
}

static void test_idempotency_key(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    char seen[200];
    const char* key[] = {"Idempotency-Key: order-42-retry", NULL};
    request(fx, "POST", "/api/kv", "{\"key\":\"idem\",\"value\":\"v\"}", key,
            &r);
    json_t* a = gwt_expect_json(&r, 201);
    gwt_expect_header(&r, "Idempotency-Key", "order-42-retry");
    mock_last_request_id(fx->mock, seen, sizeof seen);
    assert_string_equal(seen, "order-42-retry");
    http_free(&r);
    unsigned before = mock_entry_count(fx->mock);

    /* the same key again: the same entry, not a second one */
    request(fx, "POST", "/api/kv", "{\"key\":\"idem\",\"value\":\"v\"}", key,
            &r);
    json_t* b = gwt_expect_json(&r, 201);
    assert_string_equal(gwt_str(a, "id"), gwt_str(b, "id"));
    assert_int_equal(mock_entry_count(fx->mock), before);
    http_free(&r);

    /* no key: the gateway makes a UUID and passes it on */
    http_simple(fx->port, "POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}",
                &r);
    json_decref(gwt_expect_json(&r, 201));
    char made[64];
    assert_non_null(http_header(&r, "Idempotency-Key", made, sizeof made));
    assert_int_equal(strlen(made), 36);
    mock_last_request_id(fx->mock, seen, sizeof seen);
    assert_string_equal(seen, made);
    http_free(&r);

    /* PUT and DELETE carry it too */
    char path[128];
    snprintf(path, sizeof path, "/api/kv/%s", gwt_str(a, "id"));
    const char* k2[] = {"Idempotency-Key: put-1", NULL};
    request(fx, "PUT", path, "{\"value\":\"w\"}", k2, &r);
    json_decref(gwt_expect_json(&r, 200));
    mock_last_request_id(fx->mock, seen, sizeof seen);
    assert_string_equal(seen, "put-1");
    http_free(&r);
    const char* k3[] = {"Idempotency-Key: del-1", NULL};
    request(fx, "DELETE", path, NULL, k3, &r);
    json_decref(gwt_expect_json(&r, 200));
    mock_last_request_id(fx->mock, seen, sizeof seen);
    assert_string_equal(seen, "del-1");
    http_free(&r);

    /* a key that is too long or has spaces */
    char longkey[200] = "Idempotency-Key: ";
    memset(longkey + strlen(longkey), 'x', 150);
    const char* k4[] = {longkey, NULL};
    request(fx, "POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}", k4, &r);
    gwt_expect_error(&r, 400, "bad_idempotency_key");
    http_free(&r);
    const char* k5[] = {"Idempotency-Key: a b", NULL};
    request(fx, "POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}", k5, &r);
    gwt_expect_error(&r, 400, "bad_idempotency_key");
    http_free(&r);
    json_decref(a);
    json_decref(b);
}

/* ---- errors ------------------------------------------------------------ */

/* A gateway that is not accepting (starting: civetweb listens before the
 * routes exist) answers 503 "unavailable" with Retry-After, never
 * civetweb's own 404 that a client would read as "no such entry"; found by
 * `skeinctl storm --chaos`, whose reads of a restarting node got 404s. */
static void test_refuses_until_accepting(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    char buf[32];
    gw_set_accepting(fx->gw, false);
    http_simple(fx->port, "GET", "/api/kv/nope", NULL, &r);
    gwt_expect_error(&r, 503, "unavailable");
    assert_non_null(http_header(&r, "Retry-After", buf, sizeof buf));
    http_free(&r);
    http_simple(fx->port, "POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}",
                &r);
    gwt_expect_error(&r, 503, "unavailable");
    http_free(&r);
    gw_set_accepting(fx->gw, true);
    http_simple(fx->port, "GET", "/api/kv/nope", NULL, &r);
    gwt_expect_error(&r, 404, "not_found");
    http_free(&r);
}

static void test_bad_json(void** state) {
    struct fx* fx = *state;
    static const struct {
        const char* body;
        const char* code;
    } cases[] = {
        {"{\"key\":", "bad_json"},
        {"", "bad_json"},
        {"not json", "bad_json"},
        {"{\"key\":\"a\",\"key\":\"b\",\"value\":\"v\"}", "bad_json"},
        {"{\"key\":\"a\\u0000b\",\"value\":\"v\"}", "bad_json"},
        {"{\"key\":\"\xff\xfe\",\"value\":\"v\"}", "bad_json"},
        {"[1,2]", "not_object"},
        {"42", "not_object"},
        {"\"str\"", "not_object"},
        {"null", "not_object"},
        {"{\"value\":\"v\"}", "missing_field"},
        {"{\"key\":\"k\"}", "missing_field"},
        {"{\"key\":1,\"value\":\"v\"}", "wrong_type"},
        {"{\"key\":\"k\",\"value\":null}", "wrong_type"},
        {"{\"key\":\"k\",\"value\":{\"a\":1}}", "wrong_type"},
        {"{\"key\":[\"k\"],\"value\":\"v\"}", "wrong_type"},
    };
    struct http_resp r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_simple(fx->port, "POST", "/api/kv", cases[i].body, &r);
        gwt_expect_error(&r, 400, cases[i].code);
        http_free(&r);
    }
    json_t* e = create(fx, "k", "v");
    char path[128];
    snprintf(path, sizeof path, "/api/kv/%s", gwt_str(e, "id"));
    http_simple(fx->port, "PUT", path, "{\"value\":", &r);
    gwt_expect_error(&r, 400, "bad_json");
    http_free(&r);
    http_simple(fx->port, "PUT", path, "{\"key\":\"x\"}", &r);
    gwt_expect_error(&r, 400, "missing_field");
    http_free(&r);
    http_simple(fx->port, "PUT", path, "{\"value\":\"v\",\"key\":5}", &r);
    gwt_expect_error(&r, 400, "wrong_type");
    http_free(&r);
    json_decref(e);
    /* nothing bad reached the store */
    assert_int_equal(mock_entry_count(fx->mock), 1);
}

static void test_routes_and_methods(void** state) {
    struct fx* fx = *state;
    static const char* const missing[] = {"/nope",       "/api",
                                          "/api/kvx",    "/api/kv/a/b",
                                          "/_raft/nope", "/_raft/members/1/x",
                                          "/status/x",   NULL};
    struct http_resp r;
    for (const char* const* p = missing; *p != NULL; p++) {
        http_simple(fx->port, "GET", *p, NULL, &r);
        gwt_expect_error(&r, 404, "not_found");
        http_free(&r);
    }
    static const struct {
        const char* method;
        const char* path;
        const char* allow;
    } wrong[] = {
        {"DELETE", "/api/kv", "GET, POST"},
        {"PUT", "/api/kv", "GET, POST"},
        {"POST", "/api/kv/some-id", "GET, PUT, DELETE"},
        {"PATCH", "/api/kv/some-id", "GET, PUT, DELETE"},
        {"POST", "/api/kv/count", "GET"},
        {"DELETE", "/api/kv/random-id", "GET"},
        {"POST", "/status", "GET"},
        {"PUT", "/metrics", "GET"},
        {"POST", "/", "GET"},
        {"POST", "/_raft/health", "GET"},
        {"DELETE", "/_raft/sync-status", "GET"},
        {"PUT", "/_raft/resync_stats", "GET"},
        {"GET", "/_raft/force-resync", "POST"},
        {"GET", "/_raft/transfer-leader", "POST"},
        {"PUT", "/_raft/members", "GET, POST, DELETE"},
        {"GET", "/_raft/members/3", "DELETE"},
        {"GET", "/_raft/append", "POST"},
        {"DELETE", "/_raft/snapshot", "GET, POST"},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        http_simple(fx->port, wrong[i].method, wrong[i].path, NULL, &r);
        gwt_expect_error(&r, 405, "method_not_allowed");
        gwt_expect_header(&r, "Allow", wrong[i].allow);
        http_free(&r);
    }
    /* HEAD: headers only, then the server still answers */
    http_simple(fx->port, "HEAD", "/status", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_int_equal(r.len, 0);
    http_free(&r);
    http_simple(fx->port, "GET", "/status", NULL, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
}

static void test_body_limits(void** state) {
    struct fx* fx = *state;
    size_t big = (size_t)2 << 20;
    char* body = malloc(big + 1);
    memset(body, 'a', big);
    body[big] = '\0';
    struct http_resp r;
    http_simple(fx->port, "POST", "/api/kv", body, &r);
    gwt_expect_error(&r, 413, "body_too_large");
    http_free(&r);

    struct http_req req = {.method = "POST",
                           .path = "/api/kv",
                           .body = body,
                           .body_len = big,
                           .chunked = true};
    http_do(fx->port, &req, &r);
    gwt_expect_error(&r, 413, "body_too_large");
    http_free(&r);

    /* just under the limit (1 MiB + 64 KiB) is fine */
    size_t vlen = (size_t)1 << 20;
    snprintf(body, big, "{\"key\":\"big\",\"value\":\"");
    size_t off = strlen(body);
    memset(body + off, 'v', vlen);
    snprintf(body + off + vlen, big - off - vlen, "\"}");
    http_simple(fx->port, "POST", "/api/kv", body, &r);
    json_t* e = gwt_expect_json(&r, 201);
    assert_int_equal(strlen(gwt_str(e, "value")), vlen);
    json_decref(e);
    http_free(&r);
    req.body_len = strlen(body);
    http_do(fx->port, &req, &r); /* chunked, under the limit */
    json_decref(gwt_expect_json(&r, 201));
    http_free(&r);
    free(body);

    /* still serving */
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    json_decref(gwt_expect_json(&r, 200));
    http_free(&r);
}

static void test_node_statuses(void** state) {
    struct fx* fx = *state;
    static const char create_body[] = "{\"key\":\"s\",\"value\":\"v\"}";
    static const struct {
        int status;
        unsigned count;
        long http;
        const char* code;
    } cases[] = {
        {SKEIN__CLIENT_RESPONSE__STATUS__NO_QUORUM, 1000, 503, "no_quorum"},
        {SKEIN__CLIENT_RESPONSE__STATUS__DISK_FULL, 1, 507, "disk_full"},
        {SKEIN__CLIENT_RESPONSE__STATUS__BAD_REQUEST, 1, 400, "bad_request"},
        {SKEIN__CLIENT_RESPONSE__STATUS__INTERNAL, 1, 500, "internal"},
        {SKEIN__CLIENT_RESPONSE__STATUS__UNKNOWN_OUTCOME, 1000, 504,
         "outcome_unknown"},
        {SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER, 1000, 503, "not_leader"},
        {SKEIN__CLIENT_RESPONSE__STATUS__NOT_FOUND, 1, 404, "not_found"},
    };
    struct http_resp r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mock_force_status(fx->mock, cases[i].status, cases[i].count);
        double t0 = gwt_now();
        http_simple(fx->port, "POST", "/api/kv", create_body, &r);
        double took = gwt_now() - t0;
        gwt_expect_error(&r, cases[i].http, cases[i].code);
        assert_true(took < 2.5); /* within the 2 s request timeout */
        http_free(&r);
    }
    mock_force_status(fx->mock, 0, 0);

    /* one UNKNOWN_OUTCOME is retried with the same request id */
    unsigned before = mock_entry_count(fx->mock);
    unsigned reqs = mock_client_requests(fx->mock);
    mock_force_status(fx->mock, SKEIN__CLIENT_RESPONSE__STATUS__UNKNOWN_OUTCOME,
                      1);
    const char* key[] = {"Idempotency-Key: retry-me", NULL};
    request(fx, "POST", "/api/kv", create_body, key, &r);
    json_decref(gwt_expect_json(&r, 201));
    http_free(&r);
    assert_int_equal(mock_client_requests(fx->mock), reqs + 2);
    assert_int_equal(mock_entry_count(fx->mock), before + 1);

    /* a follower with no leader to name: writes 503, reads still work */
    mock_set_leader(fx->mock, false, 0, NULL);
    http_simple(fx->port, "POST", "/api/kv", create_body, &r);
    gwt_expect_error(&r, 503, "not_leader");
    http_free(&r);
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    json_decref(gwt_expect_json(&r, 200));
    http_free(&r);
    mock_set_leader(fx->mock, true, 0, NULL);
}

/* ---- /status and /_raft ------------------------------------------------ */

static void test_status(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "GET", "/status", NULL, &r);
    json_t* s = gwt_expect_json(&r, 200);
    assert_int_equal(gwt_int(s, "node_id"), 1);
    assert_string_equal(gwt_str(s, "state"), "Leader");
    assert_string_equal(gwt_str(s, "role"), "leader");
    assert_int_equal(gwt_int(s, "term"), 3);
    assert_string_equal(gwt_str(s, "state_hash"), "feedfacecafebeef");
    gwt_int(s, "commit_index");
    gwt_int(s, "last_applied");
    gwt_int(s, "entry_count");
    assert_int_equal(json_array_size(json_object_get(s, "followers")), 2);
    json_t* conf = json_object_get(s, "configuration");
    assert_int_equal(json_array_size(json_object_get(conf, "members")), 3);
    json_t* gw = json_object_get(s, "gateway");
    json_t* n0 = json_array_get(json_object_get(gw, "nodes"), 0);
    assert_string_equal(gwt_str(n0, "url"), fx->url);
    assert_true(json_is_true(json_object_get(n0, "connected")));
    json_decref(s);
    http_free(&r);

    http_simple(fx->port, "GET", "/status?node=1", NULL, &r);
    json_decref(gwt_expect_json(&r, 200));
    http_free(&r);
    http_simple(fx->port, "GET", "/status?node=42", NULL, &r);
    gwt_expect_error(&r, 404, "unknown_node");
    http_free(&r);
}

/* Asserts that obj has exactly these keys first (seed fields) and
 * maybe more. */
static void expect_keys(json_t* obj, const char* const* keys) {
    for (const char* const* k = keys; *k != NULL; k++) {
        if (json_object_get(obj, *k) == NULL) {
            print_error("missing seed field %s\n", *k);
        }
        assert_non_null(json_object_get(obj, *k));
    }
}

static void test_raft_views(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "GET", "/_raft/health", NULL, &r);
    json_t* h = gwt_expect_json(&r, 200);
    static const char* const hk[] = {
        "node_id",      "state",     "term", "commit_index",
        "last_applied", "followers", NULL};
    expect_keys(h, hk);
    assert_string_equal(gwt_str(h, "state"), "Leader");
    json_t* f = json_object_get(h, "followers");
    assert_true(json_is_object(f));
    assert_string_equal(gwt_str(f, "127.0.0.1:8002"), "healthy");
    assert_string_equal(gwt_str(f, "127.0.0.1:8003"), "lagging");
    json_decref(h);
    http_free(&r);

    http_simple(fx->port, "GET", "/_raft/sync-status", NULL, &r);
    json_t* s = gwt_expect_json(&r, 200);
    static const char* const sk[] = {"node_id", "is_leader", "commit_index",
                                     "followers", NULL};
    expect_keys(s, sk);
    assert_true(json_is_true(json_object_get(s, "is_leader")));
    json_t* f0 = json_array_get(json_object_get(s, "followers"), 0);
    static const char* const fk[] = {
        "address", "health",          "last_replicated_index",
        "lag",     "last_latency_ms", "consecutive_failures",
        NULL};
    expect_keys(f0, fk);
    assert_string_equal(gwt_str(f0, "address"), "127.0.0.1:8002");
    assert_string_equal(gwt_str(f0, "health"), "healthy");
    assert_int_equal(gwt_int(f0, "lag"), 0);
    assert_int_equal(gwt_int(f0, "last_latency_ms"), 3);
    json_decref(s);
    http_free(&r);

    http_simple(fx->port, "GET", "/_raft/resync_stats", NULL, &r);
    json_t* rs = gwt_expect_json(&r, 200);
    static const char* const rk[] = {"node_id", "is_leader", "resync_stats",
                                     NULL};
    expect_keys(rs, rk);
    json_t* st = json_object_get(rs, "resync_stats");
    assert_int_equal(gwt_int(st, "snapshots_created"), 2);
    assert_int_equal(gwt_int(st, "send_attempts"), 3);
    assert_int_equal(gwt_int(st, "send_successes"), 2);
    assert_int_equal(gwt_int(st, "send_failures"), 1);
    json_decref(rs);
    http_free(&r);
}

static void test_force_resync(void** state) {
    struct fx* fx = *state;
    static const struct {
        const char* target;
        uint64_t id;
    } ok[] = {
        {"127.0.0.1:8003", 3},
        {"127.0.0.1:8002", 2},
        {"tcp://127.0.0.1:9002", 2},
        {"127.0.0.1:9003", 3},
        {"3", 3},
    };
    struct http_resp r;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/_raft/force-resync?target=%s",
                 ok[i].target);
        http_simple(fx->port, "POST", path, NULL, &r);
        json_t* j = gwt_expect_json(&r, 200);
        /* seed 004: target, success, message */
        assert_string_equal(gwt_str(j, "target"), ok[i].target);
        assert_true(json_is_true(json_object_get(j, "success")));
        assert_true(strlen(gwt_str(j, "message")) > 0);
        assert_int_equal(mock_last_force_resync(fx->mock), ok[i].id);
        json_decref(j);
        http_free(&r);
    }
    http_simple(fx->port, "POST", "/_raft/force-resync?target=10.9.9.9:1", NULL,
                &r);
    gwt_expect_error(&r, 404, "unknown_target");
    http_free(&r);
    http_simple(fx->port, "POST", "/_raft/force-resync", NULL, &r);
    gwt_expect_error(&r, 400, "missing_param");
    http_free(&r);
    http_simple(fx->port, "POST", "/_raft/force-resync?target=1", NULL, &r);
    gwt_expect_error(&r, 400, "bad_param"); /* the leader itself */
    http_free(&r);

    mock_set_leader(fx->mock, false, 0, NULL);
    http_simple(fx->port, "POST", "/_raft/force-resync?target=2", NULL, &r);
    gwt_expect_error(&r, 503, "not_leader");
    http_free(&r);
    mock_set_leader(fx->mock, true, 0, NULL);
}

static void test_transfer_leader(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=auto", NULL, &r);
    json_t* j = gwt_expect_json(&r, 200);
    /* follower 2 has the least lag (0) */
    assert_int_equal(gwt_int(j, "to"), 2);
    assert_int_equal(gwt_int(j, "from"), 1);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_int_equal(mock_last_transfer(fx->mock), 2);
    json_decref(j);
    http_free(&r);

    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=3", NULL, &r);
    json_decref(gwt_expect_json(&r, 200));
    assert_int_equal(mock_last_transfer(fx->mock), 3);
    http_free(&r);

    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=1", NULL, &r);
    json_decref(gwt_expect_json(&r, 200)); /* already the leader */
    http_free(&r);

    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=99", NULL, &r);
    gwt_expect_error(&r, 404, "unknown_node");
    http_free(&r);
    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=x", NULL, &r);
    gwt_expect_error(&r, 400, "bad_param");
    http_free(&r);
    http_simple(fx->port, "POST", "/_raft/transfer-leader", NULL, &r);
    gwt_expect_error(&r, 400, "missing_param");
    http_free(&r);

    /* a follower: auto needs the leader's view; the answer names it */
    mock_set_leader(fx->mock, false, 2, NULL);
    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=auto", NULL, &r);
    json_t* e = gwt_expect_json(&r, 503);
    assert_string_equal(gwt_str(e, "code"), "not_leader");
    assert_int_equal(gwt_int(e, "leader_id"), 2);
    assert_string_equal(gwt_str(e, "leader_address"), "127.0.0.1:8002");
    json_decref(e);
    http_free(&r);
    /* an explicit id goes to the node, which (here) refuses: 503 */
    http_simple(fx->port, "POST", "/_raft/transfer-leader?to=3", NULL, &r);
    gwt_expect_error(&r, 503, "not_leader");
    http_free(&r);
    mock_set_leader(fx->mock, true, 0, NULL);
}

static size_t members(struct fx* fx,
                      const char* method,
                      const char* path,
                      const char* body,
                      long status) {
    struct http_resp r;
    http_simple(fx->port, method, path, body, &r);
    json_t* j = gwt_expect_json(&r, status);
    size_t n = json_array_size(json_object_get(j, "members"));
    json_decref(j);
    http_free(&r);
    return n;
}

static void test_members(void** state) {
    struct fx* fx = *state;
    assert_int_equal(members(fx, "GET", "/_raft/members", NULL, 200), 3);
    assert_int_equal(members(fx, "POST", "/_raft/members",
                             "{\"id\":4,\"address\":\"tcp://127.0.0.1:9004\","
                             "\"http_address\":\"127.0.0.1:8004\"}",
                             200),
                     4);
    struct http_resp r;
    http_simple(fx->port, "GET", "/_raft/members", NULL, &r);
    json_t* j = gwt_expect_json(&r, 200);
    json_t* m4 = json_array_get(json_object_get(j, "members"), 3);
    assert_int_equal(gwt_int(m4, "id"), 4);
    assert_string_equal(gwt_str(m4, "role"), "learner");
    assert_string_equal(gwt_str(m4, "address"), "tcp://127.0.0.1:9004");
    assert_string_equal(gwt_str(m4, "http_address"), "127.0.0.1:8004");
    json_decref(j);
    http_free(&r);

    static const struct {
        const char* body;
        const char* code;
    } bad[] = {
        {"{\"id\":\"x\",\"address\":\"tcp://a:1\"}", "wrong_type"},
        {"{\"id\":-1,\"address\":\"tcp://a:1\"}", "wrong_type"},
        {"{\"id\":5,\"address\":7}", "wrong_type"},
        {"{\"id\":5,\"address\":\"tcp://a:1\",\"learner\":1}", "wrong_type"},
        {"{\"id\":5}", "missing_field"},
        {"{}", "missing_field"},
        {"[]", "not_object"},
        {"{", "bad_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_simple(fx->port, "POST", "/_raft/members", bad[i].body, &r);
        gwt_expect_error(&r, 400, bad[i].code);
        http_free(&r);
    }
    assert_int_equal(members(fx, "DELETE", "/_raft/members/4", NULL, 200), 3);
    assert_int_equal(members(fx, "DELETE", "/_raft/members?id=3", NULL, 200),
                     2);
    assert_int_equal(members(fx, "DELETE", "/_raft/members", "{\"id\":2}", 200),
                     1);
    http_simple(fx->port, "DELETE", "/_raft/members/77", NULL, &r);
    gwt_expect_error(&r, 404, "not_found");
    http_free(&r);
    http_simple(fx->port, "DELETE", "/_raft/members", NULL, &r);
    gwt_expect_error(&r, 400, "missing_param");
    http_free(&r);
    http_simple(fx->port, "DELETE", "/_raft/members?id=abc", NULL, &r);
    gwt_expect_error(&r, 400, "bad_param");
    http_free(&r);
}

/* Every sample line: name{labels} value. */
static void expect_prometheus(const char* text) {
    const char* p = text;
    while (*p != '\0') {
        const char* eol = strchr(p, '\n');
        assert_non_null(eol);
        if (*p != '#') {
            const char* sp = memchr(p, ' ', (size_t)(eol - p));
            assert_non_null(sp);
            char* end;
            strtod(sp + 1, &end);
            assert_ptr_equal(end, eol);
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        }
        p = eol + 1;
    }
}

static void test_metrics_and_dashboard(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    json_decref(create(fx, "m", "v"));
    http_simple(fx->port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_non_null(http_header(&r, "Content-Type", ct, sizeof ct));
    assert_non_null(strstr(ct, "text/plain"));
    static const char* const want[] = {
        "skein_node_up{node_url=\"",
        "skein_node_role{node_id=\"1\",role=\"leader\"} 1\n",
        "skein_node_term{node_id=\"1\"} 3\n",
        "skein_node_commit_index{node_id=\"1\"} ",
        "skein_node_last_applied{node_id=\"1\"} ",
        "skein_node_last_log_index{node_id=\"1\"} ",
        "skein_follower_lag_entries{node_id=\"1\",follower_id=\"3\","
        "follower=\"127.0.0.1:8003\"} 5\n",
        "skein_follower_health{node_id=\"1\",follower_id=\"3\","
        "follower=\"127.0.0.1:8003\",health=\"lagging\"} 1\n",
        "skein_follower_health{node_id=\"1\",follower_id=\"3\","
        "follower=\"127.0.0.1:8003\",health=\"healthy\"} 0\n",
        "skein_follower_last_latency_seconds{node_id=\"1\",follower_id=\"2\"",
        "skein_resync_snapshots_created_total{node_id=\"1\"} 2\n",
        "skein_gateway_requests_total{route=\"kv_create\",status=\"201\"} ",
        "skein_gateway_request_duration_seconds_bucket{route=\"kv_create\","
        "class=\"2xx\",le=\"+Inf\"} ",
        "skein_gateway_request_duration_seconds_count{route=\"kv_create\"",
        "# TYPE skein_gateway_request_duration_seconds histogram\n",
        "skein_gateway_node_connected{",
        NULL};
    for (const char* const* w = want; *w != NULL; w++) {
        if (strstr(r.body, *w) == NULL) {
            print_error("metrics lack %s\n", *w);
        }
        assert_non_null(strstr(r.body, *w));
    }
    expect_prometheus(r.body);
    http_free(&r);

    http_simple(fx->port, "GET", "/", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(http_header(&r, "Content-Type", ct, sizeof ct));
    assert_non_null(strstr(ct, "text/html"));
    assert_non_null(strstr(r.body, "<html"));
    assert_non_null(strstr(r.body, "fetch('/status'"));
    http_free(&r);
}

/* ---- /_raft/append and /_raft/snapshot --------------------------------- */

static uint8_t* pack_append(size_t* len, bool envelope, uint64_t from) {
    Skein__LogEntry e1 = SKEIN__LOG_ENTRY__INIT, e2 = SKEIN__LOG_ENTRY__INIT;
    Skein__LogEntry* es[2] = {&e1, &e2};
    e1.has_term = e2.has_term = true;
    e1.term = e2.term = 3;
    e1.has_index = e2.has_index = true;
    e1.index = 11;
    e2.index = 12;
    Skein__AppendEntriesRequest ae = SKEIN__APPEND_ENTRIES_REQUEST__INIT;
    ae.has_term = ae.has_prev_log_index = ae.has_prev_log_term = true;
    ae.term = 3;
    ae.prev_log_index = 10;
    ae.prev_log_term = 3;
    ae.n_entries = 2;
    ae.entries = es;
    uint8_t* buf;
    if (envelope) {
        Skein__Envelope env = SKEIN__ENVELOPE__INIT;
        env.has_from = from != 0;
        env.from = from;
        env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES;
        env.append_entries = &ae;
        *len = skein__envelope__get_packed_size(&env);
        buf = malloc(*len);
        skein__envelope__pack(&env, buf);
    } else {
        *len = skein__append_entries_request__get_packed_size(&ae);
        buf = malloc(*len);
        skein__append_entries_request__pack(&ae, buf);
    }
    return buf;
}

static void post_append(struct fx* fx,
                        const char* path,
                        const uint8_t* buf,
                        size_t len,
                        const char* const* headers,
                        struct http_resp* r) {
    struct http_req req = {.method = "POST",
                           .path = path,
                           .body = buf,
                           .body_len = len,
                           .headers = headers};
    http_do(fx->port, &req, r);
}

static void test_append(void** state) {
    struct fx* fx = *state;
    size_t len;
    uint8_t* buf = pack_append(&len, false, 0);
    const char* ct[] = {"Content-Type: application/x-protobuf", NULL};
    struct http_resp r;
    post_append(fx, "/_raft/append?from=5", buf, len, ct, &r);
    assert_int_equal(r.status, 200);
    Skein__Envelope* env =
        skein__envelope__unpack(NULL, r.len, (const uint8_t*)r.body);
    assert_non_null(env);
    assert_int_equal(env->body_case,
                     SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE);
    assert_true(env->append_entries_response->success);
    assert_int_equal(env->append_entries_response->match_index, 12);
    assert_int_equal(env->to, 5);
    skein__envelope__free_unpacked(env, NULL);
    assert_int_equal(mock_last_append_from(fx->mock), 5);
    http_free(&r);

    const char* hdr[] = {"X-Skein-From: 6", NULL};
    post_append(fx, "/_raft/append", buf, len, hdr, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(mock_last_append_from(fx->mock), 6);
    http_free(&r);

    post_append(fx, "/_raft/append", buf, len, NULL, &r);
    gwt_expect_error(&r, 400, "missing_param");
    http_free(&r);
    post_append(fx, "/_raft/append?from=x", buf, len, NULL, &r);
    gwt_expect_error(&r, 400, "bad_param");
    http_free(&r);
    free(buf);

    buf = pack_append(&len, true, 7);
    post_append(fx, "/_raft/append", buf, len, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(mock_last_append_from(fx->mock), 7);
    http_free(&r);
    free(buf);

    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    post_append(fx, "/_raft/append?from=5", junk, sizeof junk, NULL, &r);
    gwt_expect_error(&r, 400, "bad_protobuf");
    http_free(&r);
    post_append(fx, "/_raft/append?from=5", junk, 0, NULL, &r);
    gwt_expect_error(&r, 400, "bad_protobuf");
    http_free(&r);
}

static void test_snapshot(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "GET", "/_raft/snapshot", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, MOCK_SNAPSHOT_BYTES);
    for (size_t i = 0; i < r.len; i++) {
        if ((uint8_t)r.body[i] != mock_snapshot_byte(i)) {
            fail_msg("snapshot byte %zu differs", i);
        }
    }
    gwt_expect_header(&r, "X-Skein-Snapshot-Index", "77");
    gwt_expect_header(&r, "X-Skein-Snapshot-Term", "3");
    gwt_expect_header(&r, "Content-Type", "application/octet-stream");

    /* restore it, with a length and chunked */
    for (int chunked = 0; chunked < 2; chunked++) {
        struct http_resp w;
        struct http_req req = {.method = "POST",
                               .path = "/_raft/snapshot",
                               .body = r.body,
                               .body_len = r.len,
                               .chunked = chunked != 0};
        http_do(fx->port, &req, &w);
        json_t* j = gwt_expect_json(&w, 200);
        assert_true(json_is_true(json_object_get(j, "success")));
        assert_true(json_is_true(json_object_get(j, "restored")));
        assert_int_equal(gwt_int(j, "bytes"), MOCK_SNAPSHOT_BYTES);
        assert_int_equal(gwt_int(j, "last_included_index"),
                         MOCK_SNAPSHOT_INDEX);
        assert_int_equal(mock_restore_matches(fx->mock), 1);
        json_decref(j);
        http_free(&w);
    }
    http_free(&r);

    http_simple(fx->port, "POST", "/_raft/snapshot", NULL, &r);
    gwt_expect_error(&r, 400, "incomplete_body");
    http_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
        T(test_create_and_get),
        T(test_update_and_cas),
        T(test_delete),
        T(test_list_paging_count_random),
        T(test_consistency),
        T(test_idempotency_key),
        T(test_bad_json),
        T(test_routes_and_methods),
        T(test_refuses_until_accepting),
        T(test_body_limits),
        T(test_node_statuses),
        T(test_status),
        T(test_raft_views),
        T(test_force_resync),
        T(test_transfer_leader),
        T(test_members),
        T(test_metrics_and_dashboard),
        T(test_append),
        T(test_snapshot),
#undef T
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
