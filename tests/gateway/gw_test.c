/*
 * gw_test.c - see gw_test.h.
 */
#include "gw_test.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double gwt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void gwt_inproc_url(char* buf, size_t buflen, const char* tag) {
    static unsigned counter;
    snprintf(buf, buflen, "inproc://gwtest-%d-%s-%u", (int)getpid(), tag,
             counter++);
}

struct gw* gwt_start(const char* const* urls,
                     size_t count,
                     const struct gwt_opts* opts,
                     int* port) {
    static const struct gwt_opts none;
    if (opts == NULL) {
        opts = &none;
    }
    struct gw_config c;
    gw_config_init(&c);
    c.listen = "127.0.0.1:0";
    c.node_urls = urls;
    c.node_count = count;
    c.cluster_id = opts->cluster_id;
    c.num_threads = opts->num_threads != 0 ? opts->num_threads : 32;
    c.request_timeout_ms =
        opts->request_timeout_ms != 0 ? opts->request_timeout_ms : 2000;
    c.leader_wait_ms = opts->leader_wait_ms != 0 ? opts->leader_wait_ms : 300;
    c.connect_wait_ms =
        opts->connect_wait_ms != 0 ? opts->connect_wait_ms : 500;
    c.probe_interval_ms = 100;
    c.quiet = 1;
    struct gw* gw = NULL;
    assert_int_equal(gw_start(&c, &gw), GW_OK);
    assert_non_null(gw);
    *port = gw_port(gw);
    assert_true(*port > 0);
    return gw;
}

int gwt_wait_status(int port, const char* path, long status, unsigned ms) {
    double until = gwt_now() + ms / 1000.0;
    do {
        struct http_resp r;
        http_simple(port, "GET", path, NULL, &r);
        long got = r.status;
        http_free(&r);
        if (got == status) {
            return 0;
        }
        usleep(20000);
    } while (gwt_now() < until);
    return -1;
}

json_t* gwt_expect_json(const struct http_resp* r, long status) {
    if (r->status != status) {
        print_error("expected %ld, got %ld: %s\n", status, r->status,
                    r->body != NULL ? r->body : "");
    }
    assert_int_equal(r->status, status);
    char ct[128];
    assert_non_null(http_header(r, "Content-Type", ct, sizeof ct));
    assert_non_null(strstr(ct, "application/json"));
    json_t* j = http_json(r);
    if (j == NULL) {
        print_error("not JSON: %s\n", r->body);
    }
    assert_non_null(j);
    return j;
}

void gwt_expect_error(const struct http_resp* r,
                      long status,
                      const char* code) {
    json_t* j = gwt_expect_json(r, status);
    assert_true(json_is_object(j));
    json_t* e = json_object_get(j, "error");
    json_t* c = json_object_get(j, "code");
    assert_true(json_is_string(e));
    assert_true(json_string_length(e) > 0);
    assert_true(json_is_string(c));
    if (strcmp(json_string_value(c), code) != 0) {
        print_error("expected code %s, got %s (%s)\n", code,
                    json_string_value(c), json_string_value(e));
    }
    assert_string_equal(json_string_value(c), code);
    json_decref(j);
    char buf[64];
    if (status == 503 || status == 504) {
        assert_non_null(http_header(r, "Retry-After", buf, sizeof buf));
    }
}

void gwt_expect_header(const struct http_resp* r,
                       const char* name,
                       const char* value) {
    char buf[512];
    const char* v = http_header(r, name, buf, sizeof buf);
    if (v == NULL) {
        print_error("no header %s in:\n%s\n", name, r->headers);
    }
    assert_non_null(v);
    if (value != NULL) {
        assert_string_equal(v, value);
    }
}

long long gwt_int(json_t* obj, const char* key) {
    json_t* v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        print_error("field %s is not an integer\n", key);
    }
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

const char* gwt_str(json_t* obj, const char* key) {
    json_t* v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        print_error("field %s is not a string\n", key);
    }
    assert_true(json_is_string(v));
    return json_string_value(v);
}
