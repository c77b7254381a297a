/*
 * bench_gateway.c - gateway overhead benchmark (not a test): the real
 * gateway in front of a mock node over inproc://, driven by libcurl multi
 * with N keep-alive connections in a closed loop for a few seconds. It
 * measures what the gateway itself costs per request (HTTP parse, JSON,
 * protobuf, one nng round trip), without consensus or disk.
 *
 *   gw-bench [connections] [seconds] [get|create]
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_test.h"

struct conn {
    CURL* easy;
    double start;
};

static size_t discard(char* p, size_t size, size_t n, void* arg) {
    (void)p;
    (void)arg;
    return size * n;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

int main(int argc, char** argv) {
    int nconn = argc > 1 ? atoi(argv[1]) : 64;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    int create = argc > 3 && strcmp(argv[3], "create") == 0;
    if (nconn < 1 || nconn > 1024 || seconds <= 0) {
        fprintf(stderr,
                "usage: gw-bench [connections] [seconds] "
                "[get|create]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[128];
    gwt_inproc_url(url, sizeof url, "bench");
    struct mock_node* m = mock_start(url, 1);
    const char* urls[1] = {url};
    struct gw_config c;
    gw_config_init(&c);
    c.listen = "127.0.0.1:0";
    c.node_urls = urls;
    c.node_count = 1;
    c.quiet = 1;
    struct gw* gw;
    if (m == NULL || gw_start(&c, &gw) != GW_OK) {
        fprintf(stderr, "gw-bench: cannot start\n");
        return 1;
    }
    int port = gw_port(gw);
    gwt_wait_status(port, "/status", 200, 3000);
    char target[128];
    snprintf(target, sizeof target, "http://127.0.0.1:%d%s", port,
             create               ? "/api/kv"
             : getenv("GWB_PATH") ? getenv("GWB_PATH")
                                  : "/api/kv/count?consistency=stale");
    CURLM* multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)nconn);
    struct conn* cs = calloc((size_t)nconn, sizeof *cs);
    size_t cap = 1 << 22, count = 0, errors = 0;
    double* lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < nconn; i++) {
        cs[i].easy = curl_easy_init();
        curl_easy_setopt(cs[i].easy, CURLOPT_URL, target);
        curl_easy_setopt(cs[i].easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(cs[i].easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(cs[i].easy, CURLOPT_PRIVATE, &cs[i]);
        if (create) {
            curl_easy_setopt(cs[i].easy, CURLOPT_POSTFIELDS,
                             "{\"key\":\"bench\",\"value\":\"v\"}");
        }
        cs[i].start = gwt_now();
        curl_multi_add_handle(multi, cs[i].easy);
    }
    double t0 = gwt_now(), end = t0 + seconds;
    int running = nconn;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        CURLMsg* msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            struct conn* cn;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char**)&cn);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE,
                              &status);
            double now = gwt_now();
            if (msg->data.result != CURLE_OK || status >= 300) {
                if (errors++ < 5) {
                    fprintf(stderr,
                            "gw-bench: error: curl %d, HTTP %ld after "
                            "%.3f s\n",
                            (int)msg->data.result, status, now - cn->start);
                }
            } else if (count < cap) {
                lat[count++] = now - cn->start;
            }
            curl_multi_remove_handle(multi, msg->easy_handle);
            if (now < end) {
                cn->start = now;
                curl_multi_add_handle(multi, msg->easy_handle);
                running++;
            }
        }
        if (running > 0) {
            curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
    }
    double took = gwt_now() - t0;
    qsort(lat, count, sizeof *lat, cmp_double);
    printf(
        "%s: %d connections, %.1f s: %.0f req/s, p50 %.2f ms, p99 %.2f "
        "ms, errors %zu\n",
        create ? "POST /api/kv" : "GET /api/kv/count", nconn, took,
        (double)count / took, count ? lat[count / 2] * 1e3 : 0.0,
        count ? lat[(size_t)((double)count * 0.99)] * 1e3 : 0.0, errors);
    if (errors > 0) {
        struct http_resp r;
        http_simple(port, "GET", "/metrics", NULL, &r);
        const char* p = strstr(r.body, "\nskein_gateway_node_requests_total ");
        const char* f = strstr(r.body, "\nskein_gateway_node_failures_total ");
        fprintf(stderr, "gw-bench: mock saw %u requests; gateway%.50s%.50s\n",
                mock_client_requests(m) + mock_admin_requests(m), p ? p : "?",
                f ? f : "?");
        http_free(&r);
    }
    for (int i = 0; i < nconn; i++) {
        curl_easy_cleanup(cs[i].easy);
    }
    free(cs);
    free(lat);
    curl_multi_cleanup(multi);
    gw_stop(gw);
    mock_stop(m);
    curl_global_cleanup();
    return 0;
}
