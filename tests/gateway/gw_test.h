/*
 * gw_test.h - shared fixture helpers for the gateway tests: start a
 * gateway (the real library) in front of mock nodes, and check JSON
 * responses.
 */
#ifndef SKEIN_TEST_GW_TEST_H
#define SKEIN_TEST_GW_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "gw.h"
#include "http_client.h"
#include "mock_node.h"

/* Options of a test gateway (zero = the test default). */
struct gwt_opts {
    unsigned num_threads;        /* default 32 */
    unsigned request_timeout_ms; /* default 2000 */
    unsigned leader_wait_ms;     /* default 300 */
    unsigned connect_wait_ms;    /* default 500 */
    uint64_t cluster_id;
};

/* Starts a gateway on 127.0.0.1:<free port> for these node URLs; fails
 * the test if it cannot. */
struct gw* gwt_start(const char* const* urls,
                     size_t count,
                     const struct gwt_opts* opts,
                     int* port);
/* Waits until GET path answers `status` (at most ms). Returns 0 if so. */
int gwt_wait_status(int port, const char* path, long status, unsigned ms);
/* A fresh unique inproc URL. */
void gwt_inproc_url(char* buf, size_t buflen, const char* tag);
/* Monotonic seconds. */
double gwt_now(void);

/* Asserts the status and a JSON body; returns it (decref it). */
json_t* gwt_expect_json(const struct http_resp* r, long status);
/* Asserts an error response: status, {"error": str, "code": code}. */
void gwt_expect_error(const struct http_resp* r, long status, const char* code);
/* Asserts header `name` exists (and equals `value` unless NULL). */
void gwt_expect_header(const struct http_resp* r,
                       const char* name,
                       const char* value);
/* Integer field of an object (fails if absent or not an integer). */
long long gwt_int(json_t* obj, const char* key);
/* String field of an object (fails if absent or not a string). */
const char* gwt_str(json_t* obj, const char* key);

#endif /* SKEIN_TEST_GW_TEST_H */
