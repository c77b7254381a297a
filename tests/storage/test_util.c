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

static uint8_t* tu_pack(Skein__Command* cmd, uint32_t* len) {
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
