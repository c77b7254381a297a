/*
 * http_client.h - a small blocking HTTP client over libcurl for the
 * gateway tests: one request, the status, the body and the headers.
 */
#ifndef SKEIN_TEST_HTTP_CLIENT_H
#define SKEIN_TEST_HTTP_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* One response. Free with http_free. */
struct http_resp {
    long status;        /* HTTP status, 0 if the request failed */
    char* body;         /* NUL-terminated, owned */
    size_t len;         /* bytes in body */
    char headers[8192]; /* raw response header lines */
    size_t hlen;
    double seconds; /* total time of the request */
};

/* What to send. */
struct http_req {
    const char* method; /* "GET", ... */
    const char* path;   /* "/api/kv?limit=2" */
    const void* body;   /* NULL: none */
    size_t body_len;
    bool chunked;               /* send the body with chunked encoding */
    const char* const* headers; /* NULL-terminated "Name: value" list */
    long timeout_ms;            /* 0: 30 s */
};

/* Sends req to 127.0.0.1:port; fills *out (status 0 if no response).
 * Returns 0 if a response came. */
int http_do(int port, const struct http_req* req, struct http_resp* out);
/* Shorthand for a request with an optional NUL-terminated body. */
int http_simple(int port,
                const char* method,
                const char* path,
                const char* body,
                struct http_resp* out);
/* Value of header `name` (case-insensitive) copied into buf, or NULL. */
const char* http_header(const struct http_resp* r,
                        const char* name,
                        char* buf,
                        size_t buflen);
/* Parses the body as JSON (NULL if it does not parse). New reference. */
json_t* http_json(const struct http_resp* r);
/* Frees the body. */
void http_free(struct http_resp* r);

#endif /* SKEIN_TEST_HTTP_CLIENT_H */
