/*
 * raft_conf.c - cluster configurations and their log encoding.
 *
 * Encoding (little endian): u32 count, then per member u64 id, u8 role.
 */
#include "raft.h"

#include <string.h>

static void conf_put_u64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t conf_get_u64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

size_t raft_conf_encode(const struct raft_conf* conf, uint8_t* buf) {
    uint8_t* p = buf;
    uint32_t n = conf->count > RAFT_MAX_NODES ? RAFT_MAX_NODES : conf->count;

    for (int i = 0; i < 4; i++) {
        *p++ = (uint8_t)(n >> (8 * i));
    }
    for (uint32_t i = 0; i < n; i++) {
        conf_put_u64(p, conf->ids[i]);
        p += 8;
        *p++ = conf->roles[i];
    }
    return (size_t)(p - buf);
}

int raft_conf_decode_prefix(const uint8_t* buf,
                            size_t len,
                            struct raft_conf* out,
                            size_t* used) {
    uint32_t n = 0;

    *used = 0;
    if (buf == NULL || len < 4) {
        memset(out, 0, sizeof(*out));
        return RAFT_EINVAL;
    }
    for (int i = 3; i >= 0; i--) {
        n = (n << 8) | buf[i];
    }
    if (n > RAFT_MAX_NODES || len < 4 + (size_t)n * 9) {
        memset(out, 0, sizeof(*out));
        return RAFT_EINVAL;
    }
    if (raft_conf_decode(buf, 4 + (size_t)n * 9, out) != RAFT_OK) {
        return RAFT_EINVAL;
    }
    *used = 4 + (size_t)n * 9;
    return RAFT_OK;
}

int raft_conf_decode(const uint8_t* buf, size_t len, struct raft_conf* out) {
    uint32_t n = 0;

    memset(out, 0, sizeof(*out));
    if (buf == NULL || len < 4) {
        return RAFT_EINVAL;
    }
    for (int i = 3; i >= 0; i--) {
        n = (n << 8) | buf[i];
    }
    if (n > RAFT_MAX_NODES || len != 4 + (size_t)n * 9) {
        return RAFT_EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t* p = buf + 4 + i * 9;
        raft_node_id id = conf_get_u64(p);
        if (id == 0 || p[8] > RAFT_LEARNER || raft_conf_role(out, id) >= 0) {
            memset(out, 0, sizeof(*out));
            return RAFT_EINVAL;
        }
        out->ids[i] = id;
        out->roles[i] = p[8];
        out->count = i + 1;
    }
    return RAFT_OK;
}

int raft_conf_role(const struct raft_conf* conf, raft_node_id id) {
    for (uint32_t i = 0; i < conf->count && i < RAFT_MAX_NODES; i++) {
        if (conf->ids[i] == id) {
            return conf->roles[i];
        }
    }
    return -1;
}

uint32_t raft_conf_voter_count(const struct raft_conf* conf) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < conf->count && i < RAFT_MAX_NODES; i++) {
        n += conf->roles[i] == RAFT_VOTER;
    }
    return n;
}
