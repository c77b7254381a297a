/*
 * test_gateway_cluster.c - the gateway in front of several mock nodes:
 * NOT_LEADER following, reads spread over nodes, a node that is down,
 * silent or dies mid-request (answered within the deadline, never a hang),
 * cluster ids, configuration errors, 256 concurrent keep-alive
 * connections, and hostile input that must not crash anything.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw_test.h"
#include "skein.pb-c.h"

/* A loopback TCP port nobody listens on (right now). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr*)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr*)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static long post_create(int port, const char* key, struct http_resp* r) {
    char body[128];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"v\"}", key);
    http_simple(port, "POST", "/api/kv", body, r);
    return r->status;
}

/* Waits until the gateway learned `count` node ids (its status shows). */
static void wait_ids(int port, size_t count) {
    double until = gwt_now() + 3.0;
    while (gwt_now() < until) {
        struct http_resp r;
        http_simple(port, "GET", "/status", NULL, &r);
        json_t* j = http_json(&r);
        json_t* nodes = json_object_get(json_object_get(j, "gateway"), "nodes");
        size_t known = 0;
        for (size_t i = 0; i < json_array_size(nodes); i++) {
            known +=
                json_is_integer(json_object_get(json_array_get(nodes, i), "id"))
                    ? 1
                    : 0;
        }
        json_decref(j);
        http_free(&r);
        if (known >= count) {
            return;
        }
        usleep(50000);
    }
    fail_msg("the gateway did not learn the node ids");
}

static void test_not_leader_follow(void** state) {
    (void)state;
    char ua[128], ub[128];
    gwt_inproc_url(ua, sizeof ua, "a");
    gwt_inproc_url(ub, sizeof ub, "b");
    struct mock_node* a = mock_start(ua, 1);
    struct mock_node* b = mock_start(ub, 2);
    mock_set_leader(a, false, 2, ub);
    const char* urls[2] = {ua, ub};
    int port;
    struct gw* gw = gwt_start(urls, 2, NULL, &port);
    assert_int_equal(gwt_wait_status(port, "/status", 200, 3000), 0);

    struct http_resp r;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(post_create(port, "follow", &r), 201);
        http_free(&r);
    }
    assert_int_equal(mock_entry_count(b), 10);
    assert_int_equal(mock_entry_count(a), 0);

    /* reads are spread over both nodes */
    unsigned a0 = mock_client_requests(a), b0 = mock_client_requests(b);
    for (int i = 0; i < 20; i++) {
        http_simple(port, "GET", "/api/kv/count?consistency=stale", NULL, &r);
        assert_int_equal(r.status, 200);
        http_free(&r);
    }
    assert_true(mock_client_requests(a) >= a0 + 5);
    assert_true(mock_client_requests(b) >= b0 + 5);

    /* /status and /_raft/health describe the leader */
    http_simple(port, "GET", "/_raft/health", NULL, &r);
    json_t* h = gwt_expect_json(&r, 200);
    assert_int_equal(gwt_int(h, "node_id"), 2);
    assert_string_equal(gwt_str(h, "state"), "Leader");
    json_decref(h);
    http_free(&r);

    /* leadership moves to node 1; node 2 names it by id only */
    wait_ids(port, 2);
    mock_set_leader(b, false, 1, NULL);
    mock_set_leader(a, true, 0, NULL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(post_create(port, "moved", &r), 201);
        http_free(&r);
    }
    assert_int_equal(mock_entry_count(a), 5);
    assert_int_equal(mock_entry_count(b), 10);

    /* nobody leads: 503 not_leader within leader_wait, never a hang */
    mock_set_leader(a, false, 0, NULL);
    double t0 = gwt_now();
    post_create(port, "none", &r);
    gwt_expect_error(&r, 503, "not_leader");
    assert_true(gwt_now() - t0 < 2.0);
    http_free(&r);

    gw_stop(gw);
    mock_stop(a);
    mock_stop(b);
}

static void test_node_down_then_up(void** state) {
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", free_port());
    const char* urls[1] = {url};
    int port;
    struct gw* gw = gwt_start(urls, 1, NULL, &port);
    struct http_resp r;

    static const struct {
        const char* method;
        const char* path;
        const char* body;
    } reqs[] = {
        {"GET", "/api/kv/some-id", NULL},
        {"POST", "/api/kv", "{\"key\":\"k\",\"value\":\"v\"}"},
        {"GET", "/api/kv", NULL},
        {"GET", "/status", NULL},
        {"GET", "/_raft/health", NULL},
        {"POST", "/_raft/force-resync?target=2", NULL},
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        double t0 = gwt_now();
        http_simple(port, reqs[i].method, reqs[i].path, reqs[i].body, &r);
        /* connect_wait is 500 ms; the request timeout 2 s */
        assert_true(gwt_now() - t0 < 1.5);
        gwt_expect_error(&r, 503, "unavailable");
        http_free(&r);
    }
    http_simple(port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "skein_node_up{node_url=\""));
    assert_non_null(strstr(r.body, "\"} 0\n"));
    http_free(&r);

    /* the node comes up: the gateway reconnects by itself */
    struct mock_node* m = mock_start(url, 1);
    assert_non_null(m);
    assert_int_equal(gwt_wait_status(port, "/api/kv/count", 200, 5000), 0);
    assert_int_equal(post_create(port, "up", &r), 201);
    http_free(&r);

    /* and goes down again */
    mock_stop(m);
    assert_int_equal(gwt_wait_status(port, "/api/kv/count", 503, 5000), 0);
    gw_stop(gw);
}

static void test_silent_node(void** state) {
    (void)state;
    char url[128];
    gwt_inproc_url(url, sizeof url, "silent");
    struct mock_node* m = mock_start(url, 1);
    const char* urls[1] = {url};
    struct gwt_opts o = {.request_timeout_ms = 1500};
    int port;
    struct gw* gw = gwt_start(urls, 1, &o, &port);
    assert_int_equal(gwt_wait_status(port, "/status", 200, 3000), 0);
    mock_set_silent(m, true);

    struct http_resp r;
    double t0 = gwt_now();
    post_create(port, "lost", &r);
    double took = gwt_now() - t0;
    /* sent, never answered: the outcome is unknown, never a success */
    gwt_expect_error(&r, 504, "outcome_unknown");
    assert_true(took >= 1.2 && took < 2.5);
    http_free(&r);

    t0 = gwt_now();
    http_simple(port, "GET", "/api/kv/count", NULL, &r);
    took = gwt_now() - t0;
    gwt_expect_error(&r, 503, "unavailable");
    assert_true(took < 2.5);
    http_free(&r);
    gw_stop(gw);
    mock_stop(m);
}

struct bg_post {
    int port;
    struct http_resp r;
    double took;
};

static void* bg_post_main(void* arg) {
    struct bg_post* b = arg;
    double t0 = gwt_now();
    const char* key[] = {"Idempotency-Key: dies-mid-request", NULL};
    struct http_req req = {.method = "POST",
                           .path = "/api/kv",
                           .body = "{\"key\":\"k\",\"value\":\"v\"}",
                           .body_len = 23,
                           .headers = key};
    http_do(b->port, &req, &b->r);
    b->took = gwt_now() - t0;
    return NULL;
}

static void test_node_dies_mid_request(void** state) {
    (void)state;
    char ua[128], ub[128];
    gwt_inproc_url(ua, sizeof ua, "dies");
    gwt_inproc_url(ub, sizeof ub, "stays");
    struct mock_node* a = mock_start(ua, 1);
    struct mock_node* b = mock_start(ub, 2);
    mock_set_leader(b, false, 1, ua);
    const char* urls[2] = {ua, ub};
    struct gwt_opts o = {.request_timeout_ms = 6000};
    int port;
    struct gw* gw = gwt_start(urls, 2, &o, &port);
    assert_int_equal(gwt_wait_status(port, "/status", 200, 3000), 0);
    wait_ids(port, 2);

    mock_set_delay(a, 4000);
    struct bg_post bg = {.port = port};
    pthread_t t;
    pthread_create(&t, NULL, bg_post_main, &bg);
    usleep(300000);
    mock_stop(a); /* the leader dies holding the write */
    pthread_join(t, NULL);
    /* The connection loss is noticed at once; the write is retried on the
     * other node (NOT_LEADER, its leader is gone), then answered
     * outcome_unknown well before the 6 s deadline. */
    gwt_expect_error(&bg.r, 504, "outcome_unknown");
    assert_true(bg.took < 3.0);
    char seen[64];
    mock_last_request_id(b, seen, sizeof seen);
    assert_string_equal(seen, "dies-mid-request");
    http_free(&bg.r);
    gw_stop(gw);
    mock_stop(b);
}

static void test_cluster_id(void** state) {
    (void)state;
    char url[128];
    gwt_inproc_url(url, sizeof url, "cid");
    struct mock_node* m = mock_start(url, 1);
    mock_set_cluster_id(m, 6);
    const char* urls[1] = {url};
    struct gwt_opts o = {.cluster_id = 5};
    int port;
    struct gw* gw = gwt_start(urls, 1, &o, &port);
    struct http_resp r;
    http_simple(port, "GET", "/api/kv/count", NULL, &r);
    gwt_expect_error(&r, 502, "bad_reply");
    http_free(&r);
    mock_set_cluster_id(m, 5);
    assert_int_equal(gwt_wait_status(port, "/api/kv/count", 200, 3000), 0);
    gw_stop(gw);
    mock_stop(m);
}

static void test_bad_config(void** state) {
    (void)state;
    struct gw_config c;
    struct gw* gw = (struct gw*)1;
    const char* good[1] = {"inproc://gwtest-config"};
    const char* noscheme[1] = {"127.0.0.1:9000"};
    gw_config_init(&c);
    c.quiet = 1;
    c.node_urls = good;
    c.node_count = 1;
    assert_int_equal(gw_start(&c, &gw), GW_EINVAL); /* no listen */
    assert_null(gw);
    c.listen = "127.0.0.1:0";
    c.node_count = 0;
    assert_int_equal(gw_start(&c, &gw), GW_EINVAL);
    c.node_count = GW_MAX_NODES + 1;
    assert_int_equal(gw_start(&c, &gw), GW_EINVAL);
    c.node_count = 1;
    c.node_urls = noscheme;
    assert_int_equal(gw_start(&c, &gw), GW_EINVAL);
    c.node_urls = good;
    assert_int_equal(gw_start(&c, &gw), GW_OK);
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", gw_port(gw));
    struct gw_config c2 = c;
    struct gw* gw2 = NULL;
    c2.listen = taken;
    assert_int_equal(gw_start(&c2, &gw2), GW_ELISTEN);
    assert_null(gw2);
    gw_stop(gw);
    gw_stop(NULL);
    assert_int_equal(gw_port(NULL), -1);
    assert_non_null(gw_strerror(GW_ELISTEN));
    assert_non_null(gw_strerror(12345));
}

/* ---- 256 concurrent keep-alive connections ------------------------------ */

struct xfer {
    CURL* easy;
    size_t bytes;
};

static size_t xfer_write(char* p, size_t size, size_t n, void* arg) {
    (void)p;
    ((struct xfer*)arg)->bytes += size * n;
    return size * n;
}

/* One round: every handle does one GET at once. Returns new connections. */
static long run_round(CURLM* multi, struct xfer* xs, int n) {
    for (int i = 0; i < n; i++) {
        curl_multi_add_handle(multi, xs[i].easy);
    }
    int running = 1;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        if (running > 0) {
            curl_multi_poll(multi, NULL, 0, 200, NULL);
        }
    }
    long connects = 0;
    CURLMsg* msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        assert_int_equal(msg->msg, CURLMSG_DONE);
        assert_int_equal(msg->data.result, CURLE_OK);
        long status = 0, c = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(msg->easy_handle, CURLINFO_NUM_CONNECTS, &c);
        assert_int_equal(status, 200);
        connects += c;
    }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(multi, xs[i].easy);
    }
    return connects;
}

static void test_256_keep_alive_connections(void** state) {
    (void)state;
    enum { N = 256, ROUNDS = 4 };
    char url[128];
    gwt_inproc_url(url, sizeof url, "load");
    struct mock_node* m = mock_start(url, 1);
    mock_set_delay(m, 20); /* keep the requests overlapping */
    const char* urls[1] = {url};
    struct gwt_opts o = {.num_threads = GW_DEFAULT_THREADS,
                         .request_timeout_ms = 10000};
    int port;
    struct gw* gw = gwt_start(urls, 1, &o, &port);
    assert_int_equal(gwt_wait_status(port, "/status", 200, 3000), 0);

    CURLM* multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)N);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)N + 16);
    struct xfer* xs = calloc(N, sizeof *xs);
    char target[96];
    snprintf(target, sizeof target,
             "http://127.0.0.1:%d/api/kv/count?consistency=stale", port);
    for (int i = 0; i < N; i++) {
        xs[i].easy = curl_easy_init();
        curl_easy_setopt(xs[i].easy, CURLOPT_URL, target);
        curl_easy_setopt(xs[i].easy, CURLOPT_WRITEFUNCTION, xfer_write);
        curl_easy_setopt(xs[i].easy, CURLOPT_WRITEDATA, &xs[i]);
        curl_easy_setopt(xs[i].easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(xs[i].easy, CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(xs[i].easy, CURLOPT_NOSIGNAL, 1L);
    }
    long connects = 0;
    double worst = 0;
    for (int round = 0; round < ROUNDS; round++) {
        double t0 = gwt_now();
        connects += run_round(multi, xs, N);
        double took = gwt_now() - t0;
        worst = took > worst ? took : worst;
    }
    print_message(
        "256 connections x %d rounds: %ld connects, slowest "
        "round %.3f s\n",
        ROUNDS, connects, worst);
    /* every round after the first reuses the same 256 connections */
    assert_true(connects >= N && connects <= N + 16);
    assert_true(worst < 5.0);
    for (int i = 0; i < N; i++) {
        curl_easy_cleanup(xs[i].easy);
    }
    free(xs);
    curl_multi_cleanup(multi);
    gw_stop(gw);
    mock_stop(m);
}

/* ---- hostile input ----------------------------------------------------- */

static uint32_t rng_state = 12345;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Sends raw bytes on a fresh TCP connection and reads until close or a
 * short timeout. */
static void raw_send(int port, const char* data, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr*)&a, sizeof a) == 0) {
        ssize_t w = write(fd, data, len);
        (void)w;
        char buf[4096];
        while (read(fd, buf, sizeof buf) > 0) {
        }
    }
    close(fd);
}

static void test_hostile_input(void** state) {
    (void)state;
    char url[128];
    gwt_inproc_url(url, sizeof url, "fuzz");
    struct mock_node* m = mock_start(url, 1);
    const char* urls[1] = {url};
    int port;
    struct gw* gw = gwt_start(urls, 1, NULL, &port);
    assert_int_equal(gwt_wait_status(port, "/status", 200, 3000), 0);
    static const char* const methods[] = {"GET", "POST", "PUT", "DELETE"};
    static const char* const paths[] = {
        "/api/kv",
        "/api/kv/x",
        "/_raft/members",
        "/_raft/append",
        "/_raft/members/1",
        "/api/kv?limit=%ff",
        "/api/kv/%00abc",
        "/api/kv?key=%00",
        "/_raft/force-resync?target=",
        "/status?node=%ff",
        "/api/kv/..%2f..%2fetc",
        "/_raft/snapshot?node=x",
    };
    static const char* const seeds[] = {
        "{\"key\":\"k\",\"value\":\"v\"}",
        "{\"id\":1,\"address\":\"tcp://x:1\"}",
        "{\"value\":\"v\"}",
        "[]",
        "{}",
        "\"\\ud800\"",
        "{\"a\":[[[[[[[[[[]]]]]]]]]]}",
    };
    char body[2048];
    for (int i = 0; i < 400; i++) {
        const char* seed = seeds[rnd() % (sizeof seeds / sizeof seeds[0])];
        size_t len = strlen(seed);
        memcpy(body, seed, len);
        int flips = (int)(rnd() % 4);
        for (int f = 0; f < flips && len > 0; f++) {
            body[rnd() % len] = (char)(rnd() & 0xff);
        }
        if (rnd() % 5 == 0) {
            size_t extra = rnd() % 512;
            for (size_t k = 0; k < extra; k++) {
                body[len++] = (char)(rnd() & 0xff);
            }
        }
        struct http_req req = {
            .method = methods[rnd() % 4],
            .path = paths[rnd() % (sizeof paths / sizeof paths[0])],
            .body = body,
            .body_len = len,
            .chunked = rnd() % 3 == 0,
            .timeout_ms = 5000};
        struct http_resp r;
        http_do(port, &req, &r);
        assert_true(r.status >= 200 && r.status < 600);
        if (r.status >= 400 && r.status != 404) {
            /* every error is JSON with error and code */
            json_t* j = http_json(&r);
            assert_non_null(j);
            assert_true(json_is_string(json_object_get(j, "code")));
            json_decref(j);
        }
        http_free(&r);
    }
    /* raw garbage on the socket: civetweb answers or closes */
    static const char* const raw[] = {
        "\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "POST /api/kv HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "POST /api/kv HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /api/kv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST /api/kv HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"k",
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        raw_send(port, raw[i], strlen(raw[i]));
    }
    char junk[1024];
    for (int i = 0; i < 20; i++) {
        for (size_t k = 0; k < sizeof junk; k++) {
            junk[k] = (char)(rnd() & 0xff);
        }
        raw_send(port, junk, sizeof junk);
    }
    /* a header block far over civetweb's limit */
    size_t hb = 64 * 1024;
    char* huge = malloc(hb);
    memset(huge, 'a', hb);
    memcpy(huge, "GET / HTTP/1.1\r\nX: ", 19);
    raw_send(port, huge, hb);
    free(huge);

    struct http_resp r;
    http_simple(port, "GET", "/status", NULL, &r);
    assert_int_equal(r.status, 200); /* still alive */
    http_free(&r);
    gw_stop(gw);
    mock_stop(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_not_leader_follow),
        cmocka_unit_test(test_node_down_then_up),
        cmocka_unit_test(test_silent_node),
        cmocka_unit_test(test_node_dies_mid_request),
        cmocka_unit_test(test_cluster_id),
        cmocka_unit_test(test_256_keep_alive_connections),
        cmocka_unit_test(test_hostile_input),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
