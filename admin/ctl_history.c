/*
 * ctl_history.c - history files (JSON lines, format in ctl.h and
 * admin/README-skeinctl.md): the line of one operation, and the parser
 * that `skeinctl check` uses.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char* const ctl_fn_names[] = {"create", "get", "update", "delete"};

const char* ctl_fn_name(enum ctl_fn fn) {
    return (unsigned)fn < 4 ? ctl_fn_names[fn] : "?";
}

void ctl_history_init(struct ctl_history* h) {
    memset(h, 0, sizeof *h);
}

void ctl_history_free(struct ctl_history* h) {
    for (size_t i = 0; i < h->count; i++) {
        free(h->ops[i].id);
        free(h->ops[i].value);
        free(h->ops[i].res_value);
    }
    free(h->ops);
    memset(h, 0, sizeof *h);
}

static char* ctl_dup_json_str(const json_t* v) {
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static const char* ctl_outcome_name(enum ctl_outcome o) {
    switch (o) {
        case CTL_OUT_OK:
            return "ok";
        case CTL_OUT_FAIL:
            return "fail";
        default:
            return "indeterminate";
    }
}

json_t* ctl_hop_json(const struct ctl_hop* op) {
    json_t* o = json_object();
    json_object_set_new(o, "op", json_integer((json_int_t)op->op));
    json_object_set_new(o, "proc", json_integer((json_int_t)op->proc));
    json_object_set_new(o, "f", json_string(ctl_fn_name(op->fn)));
    if (op->id != NULL) {
        json_object_set_new(o, "id", json_string(op->id));
    }
    if (op->value != NULL) {
        json_object_set_new(o, "value", json_string(op->value));
    }
    if (op->has_if_match) {
        json_object_set_new(o, "if_match",
                            json_integer((json_int_t)op->if_match));
    }
    json_object_set_new(o, "invoke_us", json_integer(op->invoke_us));
    if (op->outcome != CTL_OUT_INDETERMINATE) {
        json_object_set_new(o, "complete_us", json_integer(op->complete_us));
    }
    json_object_set_new(o, "outcome",
                        json_string(ctl_outcome_name(op->outcome)));
    if (op->outcome == CTL_OUT_OK) {
        json_t* r = json_object();
        switch (op->res) {
            case CTL_RES_ENTRY:
                json_object_set_new(r, "seq",
                                    json_integer((json_int_t)op->res_seq));
                if (op->res_value != NULL) {
                    json_object_set_new(r, "value", json_string(op->res_value));
                }
                if (op->fn == CTL_F_CREATE && op->id != NULL) {
                    json_object_set_new(r, "id", json_string(op->id));
                }
                break;
            case CTL_RES_NOT_FOUND:
                json_object_set_new(r, "found", json_false());
                break;
            case CTL_RES_CAS_MISMATCH:
                json_object_set_new(r, "cas_mismatch", json_true());
                json_object_set_new(r, "current_seq",
                                    json_integer((json_int_t)op->res_seq));
                break;
            case CTL_RES_DELETED:
                json_object_set_new(r, "deleted", json_true());
                break;
        }
        json_object_set_new(o, "result", r);
    }
    return o;
}

static int ctl_parse_fn(const char* s, enum ctl_fn* fn) {
    for (unsigned i = 0; i < 4; i++) {
        if (strcmp(s, ctl_fn_names[i]) == 0) {
            *fn = (enum ctl_fn)i;
            return 0;
        }
    }
    return -1;
}

static int ctl_parse_outcome(const char* s, enum ctl_outcome* out) {
    if (strcmp(s, "ok") == 0) {
        *out = CTL_OUT_OK;
    } else if (strcmp(s, "fail") == 0) {
        *out = CTL_OUT_FAIL;
    } else if (strcmp(s, "indeterminate") == 0 || strcmp(s, "info") == 0) {
        *out = CTL_OUT_INDETERMINATE;
    } else {
        return -1;
    }
    return 0;
}

/* Reads "result" of an ok operation. Returns NULL or the reason. */
static const char* ctl_parse_result(const json_t* r, struct ctl_hop* op) {
    if (!json_is_object(r)) {
        return "an ok operation needs a \"result\" object";
    }
    json_t* found = json_object_get(r, "found");
    if (json_is_false(found)) {
        op->res = CTL_RES_NOT_FOUND;
        return NULL;
    }
    if (json_is_true(json_object_get(r, "cas_mismatch"))) {
        json_t* cur = json_object_get(r, "current_seq");
        if (!json_is_integer(cur)) {
            return "cas_mismatch needs an integer current_seq";
        }
        op->res = CTL_RES_CAS_MISMATCH;
        op->res_seq = ctl_json_u64(cur);
        return NULL;
    }
    if (op->fn == CTL_F_DELETE) {
        op->res = CTL_RES_DELETED;
        return NULL;
    }
    json_t* seq = json_object_get(r, "seq");
    if (!json_is_integer(seq)) {
        return "the result needs an integer \"seq\" (or found: false, "
               "cas_mismatch: true)";
    }
    op->res = CTL_RES_ENTRY;
    op->res_seq = ctl_json_u64(seq);
    op->res_value = ctl_dup_json_str(json_object_get(r, "value"));
    if (op->fn == CTL_F_CREATE && op->id == NULL) {
        op->id = ctl_dup_json_str(json_object_get(r, "id"));
    }
    return NULL;
}

/* Fills op from one parsed line. Returns NULL or the reason it is bad. */
static const char* ctl_parse_hop(const json_t* o, struct ctl_hop* op) {
    if (!json_is_object(o)) {
        return "not a JSON object";
    }
    json_t* f = json_object_get(o, "f");
    if (!json_is_string(f) || ctl_parse_fn(json_string_value(f), &op->fn)) {
        return "\"f\" must be create, get, update or delete";
    }
    json_t* outc = json_object_get(o, "outcome");
    if (!json_is_string(outc) ||
        ctl_parse_outcome(json_string_value(outc), &op->outcome) != 0) {
        return "\"outcome\" must be ok, fail or indeterminate";
    }
    json_t* inv = json_object_get(o, "invoke_us");
    if (!json_is_integer(inv)) {
        return "\"invoke_us\" must be an integer";
    }
    op->invoke_us = (int64_t)json_integer_value(inv);
    json_t* comp = json_object_get(o, "complete_us");
    if (op->outcome != CTL_OUT_INDETERMINATE) {
        if (!json_is_integer(comp)) {
            return "\"complete_us\" must be an integer (ok and fail)";
        }
        op->complete_us = (int64_t)json_integer_value(comp);
        if (op->complete_us < op->invoke_us) {
            return "complete_us is before invoke_us";
        }
    }
    op->op = ctl_json_u64(json_object_get(o, "op"));
    op->proc = ctl_json_u64(json_object_get(o, "proc"));
    op->id = ctl_dup_json_str(json_object_get(o, "id"));
    op->value = ctl_dup_json_str(json_object_get(o, "value"));
    json_t* im = json_object_get(o, "if_match");
    if (im != NULL && !json_is_null(im)) {
        if (!json_is_integer(im)) {
            return "\"if_match\" must be an integer";
        }
        op->has_if_match = true;
        op->if_match = ctl_json_u64(im);
    }
    if ((op->fn == CTL_F_CREATE || op->fn == CTL_F_UPDATE) &&
        op->value == NULL) {
        return "a create or update needs a string \"value\"";
    }
    if (op->outcome == CTL_OUT_OK) {
        return ctl_parse_result(json_object_get(o, "result"), op);
    }
    return NULL;
}

int ctl_history_parse(const char* text,
                      size_t len,
                      struct ctl_history* h,
                      char* err,
                      size_t errlen) {
    size_t lineno = 0;
    const char* p = text;
    const char* end = text + len;
    while (p < end) {
        const char* nl = memchr(p, '\n', (size_t)(end - p));
        const char* le = nl != NULL ? nl : end;
        lineno++;
        const char* q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) {
            q++;
        }
        if (q < le && *q != '#') {
            json_error_t jerr;
            json_t* o = json_loadb(p, (size_t)(le - p), 0, &jerr);
            if (o == NULL) {
                snprintf(err, errlen, "line %zu: bad JSON: %s", lineno,
                         jerr.text);
                return -1;
            }
            if (h->count == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 256;
                struct ctl_hop* ops = realloc(h->ops, cap * sizeof *ops);
                if (ops == NULL) {
                    json_decref(o);
                    snprintf(err, errlen, "out of memory");
                    return -1;
                }
                h->ops = ops;
                h->cap = cap;
            }
            struct ctl_hop* op = &h->ops[h->count];
            memset(op, 0, sizeof *op);
            op->line = lineno;
            h->count++; /* counted first so that free releases it */
            const char* why = ctl_parse_hop(o, op);
            json_decref(o);
            if (why != NULL) {
                snprintf(err, errlen, "line %zu: %s", lineno, why);
                return -1;
            }
        }
        p = le + 1;
    }
    return 0;
}

int ctl_history_load(const char* path,
                     struct ctl_history* h,
                     char* err,
                     size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16;
    size_t len = 0;
    char* buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char* b = realloc(buf, cap * 2);
            if (b == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    if (buf == NULL || bad) {
        free(buf);
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    int rv = ctl_history_parse(buf, len, h, err, errlen);
    free(buf);
    return rv;
}
