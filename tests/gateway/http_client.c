/*
 * http_client.c - see http_client.h.
 */
#include "http_client.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct http_upload {
    const char* data;
    size_t len;
    size_t off;
};

static size_t http_on_body(char* p, size_t size, size_t n, void* arg) {
    struct http_resp* r = arg;
    size_t len = size * n;
    char* nb = realloc(r->body, r->len + len + 1);
    if (nb == NULL) {
        return 0;
    }
    memcpy(nb + r->len, p, len);
    r->body = nb;
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static size_t http_on_header(char* p, size_t size, size_t n, void* arg) {
    struct http_resp* r = arg;
    size_t len = size * n;
    if (r->hlen + len < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, len);
        r->hlen += len;
        r->headers[r->hlen] = '\0';
    }
    return len;
}

/* Feeds a chunked upload in small pieces. */
static size_t http_on_read(char* p, size_t size, size_t n, void* arg) {
    struct http_upload* u = arg;
    size_t want = size * n;
    if (want > 4096) {
        want = 4096;
    }
    if (want > u->len - u->off) {
        want = u->len - u->off;
    }
    memcpy(p, u->data + u->off, want);
    u->off += want;
    return want;
}

int http_do(int port, const struct http_req* req, struct http_resp* out) {
    memset(out, 0, sizeof *out);
    out->body = calloc(1, 1);
    CURL* c = curl_easy_init();
    if (c == NULL) {
        return -1;
    }
    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, req->path);
    struct curl_slist* hdrs = NULL;
    for (const char* const* h = req->headers; h != NULL && *h != NULL; h++) {
        hdrs = curl_slist_append(hdrs, *h);
    }
    struct http_upload up = {req->body, req->body_len, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                     req->timeout_ms > 0 ? req->timeout_ms : 30000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    if (req->body != NULL && req->chunked) {
        hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, http_on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (req->body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)req->body_len);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    } else if (out->status == 0) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    }
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &out->seconds);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return out->status != 0 ? 0 : -1;
}

int http_simple(int port,
                const char* method,
                const char* path,
                const char* body,
                struct http_resp* out) {
    struct http_req req = {.method = method,
                           .path = path,
                           .body = body,
                           .body_len = body != NULL ? strlen(body) : 0};
    return http_do(port, &req, out);
}

const char* http_header(const struct http_resp* r,
                        const char* name,
                        char* buf,
                        size_t buflen) {
    size_t nlen = strlen(name);
    const char* p = r->headers;
    while (*p != '\0') {
        const char* eol = strstr(p, "\r\n");
        size_t llen = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (llen > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char* v = p + nlen + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vlen = llen - (size_t)(v - p);
            if (vlen >= buflen) {
                vlen = buflen - 1;
            }
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            return buf;
        }
        if (eol == NULL) {
            break;
        }
        p = eol + 2;
    }
    return NULL;
}

json_t* http_json(const struct http_resp* r) {
    json_error_t err;
    return json_loadb(r->body, r->len, JSON_DECODE_ANY, &err);
}

void http_free(struct http_resp* r) {
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
