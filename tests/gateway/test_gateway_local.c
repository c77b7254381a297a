/*
 * test_gateway_local.c - the embedded gateway's path to a node in its own
 * process (gw_config.local_call: a function call, no socket), and the
 * HTTP framing of responses written in one piece: keep-alive on HTTP/1.1,
 * "Connection: close" and a closed connection on HTTP/1.0 or when the
 * client asks, no body on HEAD.
 *
 * The node is a fake local_call whose behaviour each test picks: answer,
 * never answer in time, answer garbage, refuse.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "gw_test.h"
#include "skein.pb-c.h"

enum fake_mode { FAKE_ANSWER, FAKE_TIMEOUT, FAKE_GARBAGE, FAKE_REFUSE };

static atomic_int fake_mode;
static atomic_int fake_client_calls;
static const uint64_t fake_count = 42;

/* Packs env into a malloc'd buffer for the gateway. */
static void fake_pack(const Skein__Envelope* env,
                      uint8_t** reply,
                      size_t* reply_len) {
    *reply_len = skein__envelope__get_packed_size(env);
    *reply = malloc(*reply_len > 0 ? *reply_len : 1);
    assert_non_null(*reply);
    skein__envelope__pack(env, *reply);
}

/* A node in the gateway's process: a leader that knows one count. */
static int fake_local_call(void* arg,
                           const uint8_t* data,
                           size_t len,
                           uint32_t timeout_ms,
                           uint8_t** reply,
                           size_t* reply_len) {
    (void)arg;
    Skein__Envelope* req = skein__envelope__unpack(NULL, len, data);
    if (req == NULL) {
        return -2;
    }
    Skein__Envelope out = SKEIN__ENVELOPE__INIT;
    Skein__AdminResponse ar = SKEIN__ADMIN_RESPONSE__INIT;
    Skein__StatusResponse st = SKEIN__STATUS_RESPONSE__INIT;
    Skein__ClientResponse cr = SKEIN__CLIENT_RESPONSE__INIT;
    int rv = 0;
    if (req->body_case == SKEIN__ENVELOPE__BODY_ADMIN_REQUEST) {
        /* the gateway's status probe */
        st.has_node_id = 1;
        st.node_id = 1;
        st.has_role = 1;
        st.role = SKEIN__STATUS_RESPONSE__ROLE__LEADER;
        st.has_leader_known = 1;
        st.leader_known = 1;
        st.has_leader_id = 1;
        st.leader_id = 1;
        ar.has_status = 1;
        ar.status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
        ar.result_case = SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS;
        ar.node_status = &st;
        out.body_case = SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE;
        out.admin_response = &ar;
        fake_pack(&out, reply, reply_len);
    } else if (req->body_case == SKEIN__ENVELOPE__BODY_CLIENT_REQUEST) {
        atomic_fetch_add(&fake_client_calls, 1);
        switch (atomic_load(&fake_mode)) {
            case FAKE_TIMEOUT:
                usleep((timeout_ms < 50 ? timeout_ms : 50) * 1000u);
                rv = -3;
                break;
            case FAKE_GARBAGE:
                *reply_len = 3;
                *reply = malloc(3);
                memset(*reply, 0xff, 3);
                break;
            case FAKE_REFUSE:
                rv = -1;
                break;
            default:
                cr.has_status = 1;
                cr.status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
                cr.has_count = 1;
                cr.count = fake_count;
                out.body_case = SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
                out.client_response = &cr;
                fake_pack(&out, reply, reply_len);
                break;
        }
    } else {
        rv = -2;
    }
    skein__envelope__free_unpacked(req, NULL);
    return rv;
}

struct fx {
    struct gw* gw;
    int port;
};

static int fx_setup(void** state) {
    static const char* const urls[1] = {"inproc://gwtest-local-unused"};
    struct fx* fx = calloc(1, sizeof *fx);
    struct gw_config c;
    gw_config_init(&c);
    c.listen = "127.0.0.1:0";
    c.node_urls = urls;
    c.node_count = 1;
    c.num_threads = 8;
    c.request_timeout_ms = 1500;
    c.leader_wait_ms = 300;
    c.probe_interval_ms = 100;
    c.quiet = 1;
    c.local_call = fake_local_call;
    c.local_arg = NULL;
    atomic_store(&fake_mode, FAKE_ANSWER);
    atomic_store(&fake_client_calls, 0);
    assert_int_equal(gw_start(&c, &fx->gw), GW_OK);
    fx->port = gw_port(fx->gw);
    assert_int_equal(gwt_wait_status(fx->port, "/api/kv/count", 200, 3000), 0);
    *state = fx;
    return 0;
}

static int fx_teardown(void** state) {
    struct fx* fx = *state;
    gw_stop(fx->gw);
    free(fx);
    return 0;
}

/* ---- raw HTTP over one TCP connection ---------------------------------- */

static int raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr*)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void raw_send(int fd, const char* text) {
    size_t len = strlen(text);
    assert_int_equal(send(fd, text, len, 0), (ssize_t)len);
}

/*
 * Reads one response (headers, then Content-Length bytes unless
 * head_only) into buf. Returns the bytes read.
 */
static size_t raw_read_response(int fd, char* buf, size_t cap, bool head_only) {
    size_t len = 0;
    char* end = NULL;
    while (end == NULL) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        assert_true(n > 0);
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf);
    const char* cl = strstr(buf, "Content-Length: ");
    assert_non_null(cl);
    size_t body = head_only ? 0 : strtoul(cl + 16, NULL, 10);
    while (len < head + body) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        assert_true(n > 0);
        len += (size_t)n;
        buf[len] = '\0';
    }
    assert_int_equal(len, head + body); /* nothing beyond this response */
    return len;
}

/* ---- tests ------------------------------------------------------------- */

static void test_local_answer(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    json_t* doc = gwt_expect_json(&r, 200);
    assert_int_equal(gwt_int(doc, "count"), (long long)fake_count);
    gwt_expect_header(&r, "Content-Type", "application/json");
    gwt_expect_header(&r, "Cache-Control", "no-store");
    json_decref(doc);
    http_free(&r);
    assert_true(atomic_load(&fake_client_calls) >= 1);
}

static void test_local_timeout_is_503(void** state) {
    struct fx* fx = *state;
    atomic_store(&fake_mode, FAKE_TIMEOUT);
    double t0 = gwt_now();
    struct http_resp r;
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    assert_true(r.status == 503 || r.status == 504);
    gwt_expect_header(&r, "Retry-After", NULL);
    http_free(&r);
    /* bounded by the request timeout, never a hang */
    assert_true(gwt_now() - t0 < 5.0);
}

static void test_local_write_timeout_is_unknown(void** state) {
    struct fx* fx = *state;
    atomic_store(&fake_mode, FAKE_TIMEOUT);
    struct http_resp r;
    http_simple(fx->port, "POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}",
                &r);
    assert_true(r.status == 503 || r.status == 504);
    json_t* doc = http_json(&r);
    assert_non_null(doc);
    const char* code = json_string_value(json_object_get(doc, "code"));
    assert_non_null(code);
    assert_non_null(strstr(code, "unknown"));
    json_decref(doc);
    http_free(&r);
}

static void test_local_garbage_and_refusal(void** state) {
    struct fx* fx = *state;
    struct http_resp r;
    atomic_store(&fake_mode, FAKE_GARBAGE);
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    assert_true(r.status >= 500);
    json_t* doc = http_json(&r);
    assert_non_null(doc); /* a JSON error, not a crash */
    json_decref(doc);
    http_free(&r);
    atomic_store(&fake_mode, FAKE_REFUSE);
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    assert_int_equal(r.status, 503);
    http_free(&r);
    atomic_store(&fake_mode, FAKE_ANSWER);
    http_simple(fx->port, "GET", "/api/kv/count", NULL, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
}

static void test_keep_alive_one_connection(void** state) {
    struct fx* fx = *state;
    char buf[8192];
    int fd = raw_connect(fx->port);
    for (int i = 0; i < 3; i++) {
        raw_send(fd, "GET /api/kv/count HTTP/1.1\r\nHost: x\r\n\r\n");
        raw_read_response(fd, buf, sizeof buf, false);
        assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
        assert_non_null(strstr(buf, "Connection: keep-alive\r\n"));
        assert_non_null(strstr(buf, "Date: "));
        assert_non_null(strstr(buf, "\r\n\r\n{\"count\":42}\n"));
    }
    /* an error answer keeps the connection too */
    raw_send(fd, "GET /api/nope HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_read_response(fd, buf, sizeof buf, false);
    assert_non_null(strstr(buf, "HTTP/1.1 404 "));
    raw_send(fd, "HEAD /api/kv/count HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_read_response(fd, buf, sizeof buf, true);
    assert_non_null(strstr(buf, "HTTP/1.1 405 "));
    assert_non_null(strstr(buf, "Allow: GET"));
    raw_send(fd, "GET /api/kv/count HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_read_response(fd, buf, sizeof buf, false);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    close(fd);
}

static void test_close_when_asked(void** state) {
    struct fx* fx = *state;
    char buf[8192];
    const char* requests[2] = {
        "GET /api/kv/count HTTP/1.0\r\n\r\n",
        "GET /api/kv/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"};
    for (int i = 0; i < 2; i++) {
        int fd = raw_connect(fx->port);
        raw_send(fd, requests[i]);
        raw_read_response(fd, buf, sizeof buf, false);
        assert_non_null(strstr(buf, " 200 OK\r\n"));
        assert_non_null(strstr(buf, "Connection: close\r\n"));
        assert_non_null(strstr(buf, "{\"count\":42}"));
        /* and the server closes it */
        assert_int_equal(recv(fd, buf, sizeof buf, 0), 0);
        close(fd);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
        T(test_local_answer),
        T(test_local_timeout_is_503),
        T(test_local_write_timeout_is_unknown),
        T(test_local_garbage_and_refusal),
        T(test_keep_alive_one_connection),
        T(test_close_when_asked),
#undef T
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
