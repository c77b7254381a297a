/*
 * test_util.c - helpers for the storage tests (see test_util.h).
 */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skein.pb-c.h"
#include "store_env.h"

static void tu_die(const char* what) {
    fprintf(stderr, "test_util: %s\n", what);
    abort();
}

char* tu_mkdtemp(const char* tag) {
    const char* tmp = getenv("TMPDIR");
    char buf[512];

    snprintf(buf, sizeof(buf), "%s/skein-%s-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", tag);
    if (mkdtemp(buf) == NULL) {
        tu_die("mkdtemp failed");
    }
    char* p = strdup(buf);
    if (p == NULL) {
        tu_die("out of memory");
    }
    return p;
}

void tu_rmtree(char* path) {
    if (path == NULL) {
        return;
    }
    store_rmtree(path);
    free(path);
}

char* tu_path(const char* dir, const char* name) {
    char* p = store_path_join(dir, name);
    if (p == NULL) {
        tu_die("out of memory");
    }
    return p;
}

uint64_t tu_rand(uint64_t* state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t tu_below(uint64_t* state, uint64_t n) {
    return n == 0 ? 0 : tu_rand(state) % n;
}

static uint8_t tu_pattern(raft_index index, raft_term term, uint32_t i) {
    return (uint8_t)(index * 131 + term * 7 + i * 3 + (i >> 8));
}

void tu_entry(struct raft_entry* e,
              raft_index index,
              raft_term term,
              uint8_t* buf,
              uint32_t len) {
    for (uint32_t i = 0; i < len; i++) {
        buf[i] = tu_pattern(index, term, i);
    }
    e->index = index;
    e->term = term;
    e->type = RAFT_ENTRY_NORMAL;
    e->len = len;
    e->data = len > 0 ? buf : NULL;
}

bool tu_entry_ok(const struct raft_entry* e) {
    for (uint32_t i = 0; i < e->len; i++) {
        if (e->data[i] != tu_pattern(e->index, e->term, i)) {
            return false;
        }
    }
    return true;
}

uint8_t* tu_pack(Skein__Command* cmd, uint32_t* len) {
    size_t n = skein__command__get_packed_size(cmd);
    uint8_t* buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        tu_die("out of memory");
    }
    skein__command__pack(cmd, buf);
    *len = (uint32_t)n;
    return buf;
}

uint8_t* tu_cmd_create(const char* request_id,
                       const char* id,
                       const char* key,
                       const char* value,
                       uint32_t* len) {
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__CreateOp op = SKEIN__CREATE_OP__INIT;

    cmd.request_id = (char*)request_id;
    cmd.op_case = SKEIN__COMMAND__OP_CREATE;
    cmd.create = &op;
    op.id = (char*)id;
    op.key = (char*)key;
    op.value = (char*)value;
    op.has_source_node = 1;
    op.source_node = 1;
    op.has_created_at = 1;
    op.created_at = 1000 + (int64_t)strlen(id);
    return tu_pack(&cmd, len);
}

uint8_t* tu_cmd_update(const char* request_id,
                       const char* id,
                       const char* key,
                       const char* value,
                       int64_t expected_seq,
                       uint32_t* len) {
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__UpdateOp op = SKEIN__UPDATE_OP__INIT;

    cmd.request_id = (char*)request_id;
    cmd.op_case = SKEIN__COMMAND__OP_UPDATE;
    cmd.update = &op;
    op.id = (char*)id;
    op.key = (char*)key;
    op.value = (char*)value;
    if (expected_seq >= 0) {
        op.has_expected_seq = 1;
        op.expected_seq = (uint64_t)expected_seq;
    }
    return tu_pack(&cmd, len);
}

uint8_t* tu_cmd_delete(const char* request_id, const char* id, uint32_t* len) {
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__DeleteOp op = SKEIN__DELETE_OP__INIT;

    cmd.request_id = (char*)request_id;
    cmd.op_case = SKEIN__COMMAND__OP_DELETE;
    cmd.delete_ = &op;
    op.id = (char*)id;
    return tu_pack(&cmd, len);
}

void tu_gen_entry(raft_index index,
                  raft_term term,
                  struct raft_entry* e,
                  uint8_t** owned) {
    uint64_t h = index * 0x9e3779b97f4a7c15ULL ^ term * 0xbf58476d1ce4e5b9ULL;
    uint64_t r = tu_rand(&h);
    uint64_t pick = r % 100;
    char id[32], key[32], value[64], rid[32];
    raft_index other = index > 1 ? 1 + (r >> 16) % (index - 1) : 1;

    memset(e, 0, sizeof(*e));
    e->index = index;
    e->term = term;
    e->type = RAFT_ENTRY_NORMAL;
    snprintf(rid, sizeof(rid), "r-%llu", (unsigned long long)index);
    snprintf(value, sizeof(value), "value-%llu-%llu-%llx",
             (unsigned long long)index, (unsigned long long)term,
             (unsigned long long)(r >> 8));
    if (pick < 55) {
        snprintf(id, sizeof(id), "id-%llu", (unsigned long long)index);
        snprintf(key, sizeof(key), "k%llu", (unsigned long long)(index % 50));
        *owned = tu_cmd_create(rid, id, key, value, &e->len);
    } else if (pick < 70) {
        snprintf(id, sizeof(id), "id-%llu", (unsigned long long)other);
        snprintf(key, sizeof(key), "k%llu", (unsigned long long)(r % 7));
        *owned = tu_cmd_update(rid, id, pick < 62 ? key : NULL, value,
                               pick < 66 ? -1 : (int64_t)(r % 5), &e->len);
    } else if (pick < 80) {
        snprintf(id, sizeof(id), "id-%llu", (unsigned long long)other);
        *owned = tu_cmd_delete(rid, id, &e->len);
    } else if (pick < 88) {
        /* A retry: an earlier request id, with another payload. */
        snprintf(rid, sizeof(rid), "r-%llu",
                 (unsigned long long)(index > 20 ? index - 1 - r % 20 : 1));
        snprintf(id, sizeof(id), "id-%llu", (unsigned long long)index);
        *owned = tu_cmd_create(rid, id, "retry", value, &e->len);
    } else if (pick < 93) {
        uint32_t n = (uint32_t)(r % 40);
        *owned = malloc(n + 1);
        for (uint32_t i = 0; i < n; i++) {
            (*owned)[i] = (uint8_t)tu_rand(&h);
        }
        e->len = n;
    } else if (pick < 98) {
        e->type = RAFT_ENTRY_NOOP;
        *owned = NULL;
    } else {
        struct raft_conf conf;
        memset(&conf, 0, sizeof(conf));
        conf.count = 3;
        for (uint32_t i = 0; i < 3; i++) {
            conf.ids[i] = i + 1 + index % 3;
        }
        *owned = malloc(RAFT_CONF_ENCODED_MAX);
        e->len = (uint32_t)raft_conf_encode(&conf, *owned);
        e->type = RAFT_ENTRY_CONF;
    }
    e->data = *owned;
}

uint8_t* tu_cmd_delete_cas(const char* request_id,
                           const char* id,
                           uint64_t expected_seq,
                           uint32_t* len) {
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    Skein__DeleteOp op = SKEIN__DELETE_OP__INIT;

    cmd.request_id = (char*)request_id;
    cmd.op_case = SKEIN__COMMAND__OP_DELETE;
    cmd.delete_ = &op;
    op.id = (char*)id;
    op.has_expected_seq = 1;
    op.expected_seq = expected_seq;
    return tu_pack(&cmd, len);
}

void tu_rss_kib(long* rss, long* hwm, long* anon, long* file) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];

    *rss = *hwm = *anon = *file = -1;
    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        sscanf(line, "VmRSS: %ld", rss);
        sscanf(line, "VmHWM: %ld", hwm);
        sscanf(line, "RssAnon: %ld", anon);
        sscanf(line, "RssFile: %ld", file);
    }
    fclose(f);
}

double tu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
