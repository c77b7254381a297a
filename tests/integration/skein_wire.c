/*
 * skein_wire.c - encodes one request Envelope to stdout, or decodes a reply
 * Envelope from stdin to text, so that raw nng tools (nngcat) can talk to a
 * node: the internal-tooling path.
 *
 *   skein-wire encode create KEY VALUE [REQUEST_ID] > req.bin
 *   skein-wire encode get|delete ID
 *   skein-wire encode update ID VALUE [EXPECTED_SEQ]
 *   skein-wire encode count | list | status
 *   skein-wire decode < reply.bin
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skein.pb-c.h"

static int write_env(const Skein__Envelope* env) {
    size_t len = skein__envelope__get_packed_size(env);
    uint8_t* buf = malloc(len + 1);
    int rv;

    if (buf == NULL) {
        return 1;
    }
    skein__envelope__pack(env, buf);
    rv = fwrite(buf, 1, len, stdout) == len ? 0 : 1;
    free(buf);
    return rv;
}

static int encode(int argc, char** argv) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
    Skein__AdminRequest areq = SKEIN__ADMIN_REQUEST__INIT;
    Skein__CreateOp c = SKEIN__CREATE_OP__INIT;
    Skein__UpdateOp u = SKEIN__UPDATE_OP__INIT;
    Skein__DeleteOp d = SKEIN__DELETE_OP__INIT;
    Skein__GetOp g = SKEIN__GET_OP__INIT;
    Skein__ListOp l = SKEIN__LIST_OP__INIT;
    Skein__CountOp cnt = SKEIN__COUNT_OP__INIT;
    Skein__StatusRequest st = SKEIN__STATUS_REQUEST__INIT;
    const char* op = argc > 0 ? argv[0] : "";

    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = &req;
    if (strcmp(op, "create") == 0 && argc >= 3) {
        c.key = argv[1];
        c.value = argv[2];
        req.request_id = argc >= 4 ? argv[3] : NULL;
        req.op_case = SKEIN__CLIENT_REQUEST__OP_CREATE;
        req.create = &c;
    } else if (strcmp(op, "update") == 0 && argc >= 3) {
        u.id = argv[1];
        u.value = argv[2];
        if (argc >= 4) {
            u.has_expected_seq = 1;
            u.expected_seq = strtoull(argv[3], NULL, 10);
        }
        req.op_case = SKEIN__CLIENT_REQUEST__OP_UPDATE;
        req.update = &u;
    } else if (strcmp(op, "delete") == 0 && argc >= 2) {
        d.id = argv[1];
        req.op_case = SKEIN__CLIENT_REQUEST__OP_DELETE;
        req.delete_ = &d;
    } else if (strcmp(op, "get") == 0 && argc >= 2) {
        g.id = argv[1];
        req.op_case = SKEIN__CLIENT_REQUEST__OP_GET;
        req.get = &g;
    } else if (strcmp(op, "list") == 0) {
        req.op_case = SKEIN__CLIENT_REQUEST__OP_LIST;
        req.list = &l;
    } else if (strcmp(op, "count") == 0) {
        req.op_case = SKEIN__CLIENT_REQUEST__OP_COUNT;
        req.count = &cnt;
    } else if (strcmp(op, "status") == 0) {
        env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
        env.admin_request = &areq;
        areq.op_case = SKEIN__ADMIN_REQUEST__OP_STATUS;
        areq.status = &st;
    } else {
        fprintf(stderr, "skein-wire: unknown or incomplete request\n");
        return 2;
    }
    return write_env(&env);
}

static void print_entry(const Skein__KVEntry* e) {
    printf("entry id=%s key=%s value=%s seq=%" PRIu64 " source_node=%" PRIu64
           " created_at=%" PRId64 "\n",
           e->id ? e->id : "", e->key ? e->key : "", e->value ? e->value : "",
           e->seq, e->source_node, e->created_at);
}

static int decode(void) {
    static uint8_t buf[64 << 20];
    size_t len = fread(buf, 1, sizeof(buf), stdin);
    Skein__Envelope* env = skein__envelope__unpack(NULL, len, buf);

    if (env == NULL) {
        printf("undecodable reply (%zu bytes)\n", len);
        return 1;
    }
    if (env->body_case == SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE) {
        const Skein__ClientResponse* r = env->client_response;
        printf("status=%s\n",
               protobuf_c_enum_descriptor_get_value(
                   &skein__client_response__status__descriptor, r->status)
                   ->name);
        if (r->entry != NULL) {
            print_entry(r->entry);
        }
        for (size_t i = 0; i < r->n_entries; i++) {
            print_entry(r->entries[i]);
        }
        if (r->has_count) {
            printf("count=%" PRIu64 "\n", r->count);
        }
        if (r->error != NULL) {
            printf("error=%s\n", r->error);
        }
    } else if (env->body_case == SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE &&
               env->admin_response->node_status != NULL) {
        const Skein__StatusResponse* s = env->admin_response->node_status;
        printf("node_id=%" PRIu64 " role=%d term=%" PRIu64 " leader=%" PRIu64
               " commit=%" PRIu64 " applied=%" PRIu64 " count=%" PRIu64
               " hash=%016" PRIx64 " first=%" PRIu64
               " snapshots_applied=%" PRIu64 " snapshots_sent=%" PRIu64 "\n",
               s->node_id, s->role, s->term, s->leader_id, s->commit_index,
               s->last_applied, s->entry_count, s->state_hash,
               s->first_log_index,
               s->resync_stats ? s->resync_stats->snapshots_applied : 0,
               s->resync_stats ? s->resync_stats->send_successes : 0);
    } else {
        printf("reply body %d\n", env->body_case);
    }
    skein__envelope__free_unpacked(env, NULL);
    return 0;
}

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) {
        return encode(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) {
        return decode();
    }
    fprintf(stderr, "usage: skein-wire encode OP ARGS... | decode\n");
    return 2;
}
