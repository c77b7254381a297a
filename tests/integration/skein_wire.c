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
 *
 * Added for the fault tests (tests/fault/):
 *   skein-wire encode get ID linearizable|lease|stale   read consistency
 *   skein-wire encode list LIMIT [AFTER_ID]       one page of the list
 *   skein-wire encode fault PEER [drop=P] [dup=P] [delay=MS] [jitter=MS]
 *                           [partition] [clear]   transport fault hook on
 *                           the node it is sent to, for messages it sends
 *                           to node PEER ("all": every peer)
 *   skein-wire encode transfer TO                 hand leadership to TO
 *   skein-wire encode member-add ID URL [HTTP] [learner]
 *   skein-wire encode member-remove ID | members
 *   skein-wire decode -v                          status also prints one
 *                                                 "follower ..." line each
 * Admin replies other than status print status=NAME (and leader_hint=,
 * error=, one "member ..." line per member) instead of "reply body 41".
 *
 * A follower's ForwardBatch, as a hostile or confused peer could send it:
 *   skein-wire encode forward-batch creates N PREFIX   N forwarded creates
 *   skein-wire encode forward-batch mixed PREFIX       a create, garbage
 *                                                      bytes, a read, a
 *                                                      request without from
 *   skein-wire encode forward-batch empty | huge      0 or 300 requests
 * and its answer decodes as "forward_batch n=K" then one block per part.
 *   skein-wire encode forward-batch one-way FROM PREFIX
 *       a one-way batch, as member FROM sends it: a tagged create (proposed,
 *       answered by nobody), a tagged read (refused: the leader sends FROM a
 *       ForwardResults), an untagged create (dropped); empty answer
 *
 * Raft batches inside raft batches (EnvelopeBatch), from an unknown node 99:
 *   skein-wire encode raft-batch nested   a batch holding a batch of two
 *                                         heartbeats: one level is opened
 *   skein-wire encode raft-batch deep     three levels: the innermost
 *                                         batch is dropped (counted)
 *
 * A hostile or broken peer (integration_raft_fuzz):
 *   skein-wire encode raft-fuzz SEED FROM  one well-formed protobuf raft
 *       message of a random type from node FROM, its fields drawn from
 *       edge values (0, 1, huge, 2^64-1) and small random ones: entries
 *       with wrong indexes, terms and types and random bytes, snapshot
 *       chunks with random offsets, sizes, members and data
 *   skein-wire encode raft-term FROM TERM  a heartbeat of term TERM from
 *       node FROM (an absurd term must change nothing)
 *   skein-wire encode client-fuzz SEED   one ClientRequest of a random op
 *       with random strings (empty, long, not UTF-8), ids, limits,
 *       consistency values (also ones the enum lacks) and forward tags
 */
#include <inttypes.h>
#include <stdbool.h>
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

static int set_consistency(Skein__ClientRequest* req, const char* name) {
    req->has_consistency = 1;
    if (strcmp(name, "linearizable") == 0) {
        req->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__LINEARIZABLE;
    } else if (strcmp(name, "lease") == 0) {
        req->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__LEASE;
    } else if (strcmp(name, "stale") == 0) {
        req->consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__STALE;
    } else {
        return -1;
    }
    return 0;
}

/* The admin operations of the fault tests; the sub-messages are static so
 * that they outlive this call (one request per process). */
static int encode_admin(Skein__AdminRequest* areq, int argc, char** argv) {
    static Skein__FaultInjectRequest f = SKEIN__FAULT_INJECT_REQUEST__INIT;
    static Skein__TransferLeaderRequest tl =
        SKEIN__TRANSFER_LEADER_REQUEST__INIT;
    static Skein__MemberAddRequest ma = SKEIN__MEMBER_ADD_REQUEST__INIT;
    static Skein__MemberRemoveRequest mr = SKEIN__MEMBER_REMOVE_REQUEST__INIT;
    static Skein__MemberListRequest ml = SKEIN__MEMBER_LIST_REQUEST__INIT;
    const char* op = argv[0];

    if (strcmp(op, "fault") == 0 && argc >= 2) {
        f.has_peer = strcmp(argv[1], "all") != 0;
        f.peer = f.has_peer ? strtoull(argv[1], NULL, 10) : 0;
        for (int i = 2; i < argc; i++) {
            const char* a = argv[i];
            if (strncmp(a, "drop=", 5) == 0) {
                f.has_drop_probability = 1;
                f.drop_probability = strtod(a + 5, NULL);
            } else if (strncmp(a, "dup=", 4) == 0) {
                f.has_duplicate_probability = 1;
                f.duplicate_probability = strtod(a + 4, NULL);
            } else if (strncmp(a, "delay=", 6) == 0) {
                f.has_delay_ms = 1;
                f.delay_ms = (uint32_t)strtoul(a + 6, NULL, 10);
            } else if (strncmp(a, "jitter=", 7) == 0) {
                f.has_jitter_ms = 1;
                f.jitter_ms = (uint32_t)strtoul(a + 7, NULL, 10);
            } else if (strcmp(a, "partition") == 0) {
                f.has_partition = 1;
                f.partition = 1;
            } else if (strcmp(a, "clear") == 0) {
                f.has_clear = 1;
                f.clear = 1;
            } else {
                return -1;
            }
        }
        areq->op_case = SKEIN__ADMIN_REQUEST__OP_FAULT_INJECT;
        areq->fault_inject = &f;
    } else if (strcmp(op, "transfer") == 0 && argc >= 2) {
        tl.has_to = 1;
        tl.to = strtoull(argv[1], NULL, 10);
        areq->op_case = SKEIN__ADMIN_REQUEST__OP_TRANSFER_LEADER;
        areq->transfer_leader = &tl;
    } else if (strcmp(op, "member-add") == 0 && argc >= 3) {
        ma.has_id = 1;
        ma.id = strtoull(argv[1], NULL, 10);
        ma.address = argv[2];
        for (int i = 3; i < argc; i++) {
            if (strcmp(argv[i], "learner") == 0) {
                ma.has_learner = 1;
                ma.learner = 1;
            } else {
                ma.http_address = argv[i];
            }
        }
        areq->op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD;
        areq->member_add = &ma;
    } else if (strcmp(op, "member-remove") == 0 && argc >= 2) {
        mr.has_id = 1;
        mr.id = strtoull(argv[1], NULL, 10);
        areq->op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_REMOVE;
        areq->member_remove = &mr;
    } else if (strcmp(op, "members") == 0) {
        areq->op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_LIST;
        areq->member_list = &ml;
    } else {
        return -1;
    }
    return 0;
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
        if (argc >= 3 && set_consistency(&req, argv[2]) != 0) {
            fprintf(stderr,
                    "skein-wire: consistency is linearizable, lease "
                    "or stale\n");
            return 2;
        }
    } else if (strcmp(op, "list") == 0) {
        if (argc >= 2) {
            l.has_limit = 1;
            l.limit = (uint32_t)strtoul(argv[1], NULL, 10);
        }
        l.after = argc >= 3 ? argv[2] : NULL;
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
    } else if (strcmp(op, "fault") == 0 || strcmp(op, "transfer") == 0 ||
               strncmp(op, "member", 6) == 0) {
        env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
        env.admin_request = &areq;
        if (encode_admin(&areq, argc, argv) != 0) {
            fprintf(stderr, "skein-wire: unknown or incomplete request\n");
            return 2;
        }
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

static int decode(int verbose) {
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
        if (r->truncated) {
            printf("truncated=1\n");
        }
        if (r->has_count) {
            printf("count=%" PRIu64 "\n", r->count);
        }
        if (r->error != NULL) {
            printf("error=%s\n", r->error);
        }
    } else if (env->body_case == SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE &&
               env->admin_response->result_case ==
                   SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS) {
        const Skein__StatusResponse* s = env->admin_response->node_status;
        printf("node_id=%" PRIu64 " role=%d term=%" PRIu64 " leader=%" PRIu64
               " commit=%" PRIu64 " applied=%" PRIu64 " count=%" PRIu64
               " hash=%016" PRIx64 " first=%" PRIu64
               " snapshots_applied=%" PRIu64 " snapshots_sent=%" PRIu64
               " fault_dups=%" PRIu64 " dropped=%" PRIu64
               " forwards_applied=%" PRIu64 " forward_results_sent=%" PRIu64
               " forward_results_unmatched=%" PRIu64 " lingered_rounds=%" PRIu64
               "\n",
               s->node_id, s->role, s->term, s->leader_id, s->commit_index,
               s->last_applied, s->entry_count, s->state_hash,
               s->first_log_index,
               s->resync_stats ? s->resync_stats->snapshots_applied : 0,
               s->resync_stats ? s->resync_stats->send_successes : 0,
               s->fault_dups, s->dropped_messages, s->forwards_applied,
               s->forward_results_sent, s->forward_results_unmatched,
               s->lingered_rounds);
        for (size_t i = 0; verbose && i < s->n_followers; i++) {
            const Skein__FollowerStatus* f = s->followers[i];
            printf("follower id=%" PRIu64
                   " health=%d progress=%d match=%" PRIu64 " next=%" PRIu64
                   " lag=%" PRIu64 " latency_ms=%" PRIu64 " failures=%" PRIu64
                   " inflight=%u\n",
                   f->id, f->health, f->progress_state, f->match_index,
                   f->next_index, f->lag, f->last_latency_ms,
                   f->consecutive_failures, f->inflight);
        }
    } else if (env->body_case == SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE) {
        const Skein__AdminResponse* a = env->admin_response;
        printf("status=%s\n",
               protobuf_c_enum_descriptor_get_value(
                   &skein__client_response__status__descriptor, a->status)
                   ->name);
        if (a->has_leader_hint) {
            printf("leader_hint=%" PRIu64 "\n", a->leader_hint);
        }
        if (a->error != NULL) {
            printf("error=%s\n", a->error);
        }
        if (a->result_case == SKEIN__ADMIN_RESPONSE__RESULT_CONFIGURATION) {
            for (size_t i = 0; i < a->configuration->n_members; i++) {
                const Skein__Member* m = a->configuration->members[i];
                printf("member id=%" PRIu64 " role=%s address=%s\n", m->id,
                       m->role == SKEIN__MEMBER__ROLE__LEARNER ? "learner"
                                                               : "voter",
                       m->address ? m->address : "");
            }
        }
    } else if (env->body_case == SKEIN__ENVELOPE__BODY_FORWARD_BATCH_RESPONSE) {
        const Skein__ForwardBatchResponse* fr = env->forward_batch_response;
        printf("forward_batch n=%zu\n", fr->n_responses);
        for (size_t i = 0; i < fr->n_responses; i++) {
            Skein__Envelope* part = skein__envelope__unpack(
                NULL, fr->responses[i].len, fr->responses[i].data);
            const Skein__ClientResponse* r =
                part != NULL &&
                        part->body_case == SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE
                    ? part->client_response
                    : NULL;
            printf("part %zu status=%s\n", i,
                   r == NULL ? "none"
                             : protobuf_c_enum_descriptor_get_value(
                                   &skein__client_response__status__descriptor,
                                   r->status)
                                   ->name);
            if (part != NULL) {
                skein__envelope__free_unpacked(part, NULL);
            }
        }
    } else {
        printf("reply body %d\n", env->body_case);
    }
    skein__envelope__free_unpacked(env, NULL);
    return 0;
}

/* Packs a forwarded ClientRequest create into out (malloc'd). */
/* from 99 unless forward_from says otherwise (one-way batches). */
static uint64_t forward_from = 99;
static uint64_t forward_tag; /* 0: none */

static void pack_forwarded_create(const char* key,
                                  bool with_from,
                                  ProtobufCBinaryData* out) {
    Skein__CreateOp c = SKEIN__CREATE_OP__INIT;
    Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    c.key = (char*)key;
    c.value = (char*)"fb";
    req.op_case = SKEIN__CLIENT_REQUEST__OP_CREATE;
    req.create = &c;
    req.request_id = (char*)key;
    req.has_forward_tag = forward_tag != 0;
    req.forward_tag = forward_tag;
    env.has_from = with_from;
    env.from = forward_from;
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = &req;
    out->len = skein__envelope__get_packed_size(&env);
    out->data = malloc(out->len + 1);
    skein__envelope__pack(&env, out->data);
}

/* Packs env into *out (malloc'd). */
static void pack_into(const Skein__Envelope* env, ProtobufCBinaryData* out) {
    out->len = skein__envelope__get_packed_size(env);
    out->data = malloc(out->len + 1);
    skein__envelope__pack(env, out->data);
}

static int encode_forward_batch(int argc, char** argv) {
    static ProtobufCBinaryData parts[300];
    static char keys[300][96];
    Skein__ForwardBatch fb = SKEIN__FORWARD_BATCH__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    const char* mode = argc >= 1 ? argv[0] : "";
    size_t n = 0;

    if (strcmp(mode, "creates") == 0 && argc >= 3) {
        n = strtoul(argv[1], NULL, 10);
        if (n > 300) {
            return 2;
        }
        for (size_t i = 0; i < n; i++) {
            snprintf(keys[i], sizeof keys[i], "%s-%zu", argv[2], i);
            pack_forwarded_create(keys[i], true, &parts[i]);
        }
    } else if (strcmp(mode, "mixed") == 0 && argc >= 2) {
        Skein__GetOp g = SKEIN__GET_OP__INIT;
        Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
        Skein__Envelope inner = SKEIN__ENVELOPE__INIT;
        snprintf(keys[0], sizeof keys[0], "%s-ok", argv[1]);
        pack_forwarded_create(keys[0], true, &parts[0]);
        parts[1].data = (uint8_t*)"\xff\xff\xff\x01garbage";
        parts[1].len = 11;
        g.id = (char*)"no-such-id";
        req.op_case = SKEIN__CLIENT_REQUEST__OP_GET;
        req.get = &g;
        inner.has_from = 1;
        inner.from = 99;
        inner.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
        inner.client_request = &req;
        parts[2].len = skein__envelope__get_packed_size(&inner);
        parts[2].data = malloc(parts[2].len + 1);
        skein__envelope__pack(&inner, parts[2].data);
        snprintf(keys[3], sizeof keys[3], "%s-nofrom", argv[1]);
        pack_forwarded_create(keys[3], false, &parts[3]);
        n = 4;
    } else if (strcmp(mode, "one-way") == 0 && argc >= 3) {
        Skein__GetOp g = SKEIN__GET_OP__INIT;
        Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
        Skein__Envelope inner = SKEIN__ENVELOPE__INIT;
        forward_from = strtoull(argv[1], NULL, 10);
        fb.has_one_way = 1;
        fb.one_way = 1;
        forward_tag = 1;
        snprintf(keys[0], sizeof keys[0], "%s-tagged", argv[2]);
        pack_forwarded_create(keys[0], true, &parts[0]);
        g.id = (char*)"no-such-id";
        req.op_case = SKEIN__CLIENT_REQUEST__OP_GET;
        req.get = &g;
        req.has_forward_tag = 1;
        req.forward_tag = 2;
        inner.has_from = 1;
        inner.from = forward_from;
        inner.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
        inner.client_request = &req;
        pack_into(&inner, &parts[1]);
        forward_tag = 0;
        snprintf(keys[2], sizeof keys[2], "%s-untagged", argv[2]);
        pack_forwarded_create(keys[2], true, &parts[2]);
        n = 3;
    } else if (strcmp(mode, "huge") == 0) {
        for (n = 0; n < 300; n++) {
            snprintf(keys[n], sizeof keys[n], "huge-%zu", n);
            pack_forwarded_create(keys[n], true, &parts[n]);
        }
    } else if (strcmp(mode, "empty") != 0) {
        return 2;
    }
    fb.n_requests = n;
    fb.requests = parts;
    env.has_from = 1;
    env.from = forward_from;
    env.body_case = SKEIN__ENVELOPE__BODY_FORWARD_BATCH;
    env.forward_batch = &fb;
    return write_env(&env);
}

/* Wraps `n` packed envelopes in one batch envelope, packed into *out. */
static void pack_batch(ProtobufCBinaryData* parts,
                       size_t n,
                       ProtobufCBinaryData* out) {
    Skein__EnvelopeBatch b = SKEIN__ENVELOPE_BATCH__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    b.n_envelopes = n;
    b.envelopes = parts;
    env.body_case = SKEIN__ENVELOPE__BODY_BATCH;
    env.batch = &b;
    pack_into(&env, out);
}

static int encode_raft_batch(int argc, char** argv) {
    Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    ProtobufCBinaryData beats[2], level1, level2, top;
    const char* mode = argc >= 1 ? argv[0] : "";

    hb.has_term = 1;
    hb.term = 1;
    env.has_from = env.has_to = 1;
    env.from = 99;
    env.to = 0;
    env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    bool deep = strcmp(mode, "deep") == 0;
    int rc;

    if (!deep && strcmp(mode, "nested") != 0) {
        return 2;
    }
    pack_into(&env, &beats[0]);
    pack_into(&env, &beats[1]);
    pack_batch(beats, 2, &level1);
    level2 = level1;
    if (deep) {
        pack_batch(&level1, 1, &level2);
    }
    pack_batch(&level2, 1, &top);
    rc = fwrite(top.data, 1, top.len, stdout) == top.len ? 0 : 1;
    free(beats[0].data);
    free(beats[1].data);
    free(level1.data);
    if (deep) {
        free(level2.data);
    }
    free(top.data);
    return rc;
}

/* xorshift64*: the fuzzer's values come from its seed only. */
static uint64_t fuzz_state;

static uint64_t fuzz_next(void) {
    fuzz_state ^= fuzz_state >> 12;
    fuzz_state ^= fuzz_state << 25;
    fuzz_state ^= fuzz_state >> 27;
    return fuzz_state * 2685821657736338717ULL;
}

/* A field value: an edge case or a small number near a live cluster's. */
static uint64_t fuzz_value(void) {
    static const uint64_t edges[] = {
        0, 1, 2, 3, UINT64_MAX, UINT64_MAX - 1, 1ULL << 63, 1ULL << 32, 100000};
    uint64_t r = fuzz_next();
    if (r % 3 == 0) {
        return edges[(r >> 8) % (sizeof(edges) / sizeof(edges[0]))];
    }
    return (r >> 8) % 40;
}

static bool fuzz_bool(void) {
    return fuzz_next() % 2 == 0;
}

/* Random bytes (owned by the caller), 0..max long. */
static ProtobufCBinaryData fuzz_bytes(size_t max) {
    ProtobufCBinaryData b;
    b.len = (size_t)(fuzz_next() % (max + 1));
    b.data = malloc(b.len + 1);
    for (size_t i = 0; b.data != NULL && i < b.len; i++) {
        b.data[i] = (uint8_t)fuzz_next();
    }
    if (b.data == NULL) {
        b.len = 0;
    }
    return b;
}

static int encode_raft_fuzz(int argc, char** argv) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__AppendEntriesRequest ae = SKEIN__APPEND_ENTRIES_REQUEST__INIT;
    Skein__AppendEntriesResponse aer = SKEIN__APPEND_ENTRIES_RESPONSE__INIT;
    Skein__RequestVoteRequest rv = SKEIN__REQUEST_VOTE_REQUEST__INIT;
    Skein__RequestVoteResponse rvr = SKEIN__REQUEST_VOTE_RESPONSE__INIT;
    Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
    Skein__HeartbeatResponse hbr = SKEIN__HEARTBEAT_RESPONSE__INIT;
    Skein__InstallSnapshotChunk sc = SKEIN__INSTALL_SNAPSHOT_CHUNK__INIT;
    Skein__InstallSnapshotResponse scr = SKEIN__INSTALL_SNAPSHOT_RESPONSE__INIT;
    Skein__TimeoutNow tn = SKEIN__TIMEOUT_NOW__INIT;
    Skein__ReadIndexRequest ri = SKEIN__READ_INDEX_REQUEST__INIT;
    Skein__ReadIndexResponse rir = SKEIN__READ_INDEX_RESPONSE__INIT;
    Skein__Configuration conf = SKEIN__CONFIGURATION__INIT;
    Skein__LogEntry ents[6];
    Skein__LogEntry* entp[6];
    Skein__Member members[5];
    Skein__Member* memp[5];
    ProtobufCBinaryData owned[8];
    size_t n_owned = 0;
    int rc;

    if (argc < 2) {
        return 2;
    }
    fuzz_state = strtoull(argv[0], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    env.has_from = 1;
    env.from = strtoull(argv[1], NULL, 10);
    switch (fuzz_next() % 11) {
        case 0: {
            size_t n = (size_t)(fuzz_next() % 6);
            ae.has_term = fuzz_bool() || fuzz_bool();
            ae.term = fuzz_value();
            ae.has_prev_log_index = fuzz_bool() || fuzz_bool();
            ae.prev_log_index = fuzz_value();
            ae.has_prev_log_term = fuzz_bool() || fuzz_bool();
            ae.prev_log_term = fuzz_value();
            ae.has_leader_commit = fuzz_bool();
            ae.leader_commit = fuzz_value();
            for (size_t i = 0; i < n; i++) {
                skein__log_entry__init(&ents[i]);
                ents[i].has_term = fuzz_bool() || fuzz_bool();
                ents[i].term = fuzz_value();
                ents[i].has_index = fuzz_bool() || fuzz_bool();
                ents[i].index =
                    fuzz_bool() ? ae.prev_log_index + 1 + i : fuzz_value();
                ents[i].has_type = fuzz_bool();
                ents[i].type = (Skein__LogEntry__Type)(fuzz_next() % 4);
                ents[i].has_data = 1;
                ents[i].data = owned[n_owned++] = fuzz_bytes(64);
                entp[i] = &ents[i];
            }
            ae.n_entries = n;
            ae.entries = entp;
            env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES;
            env.append_entries = &ae;
            break;
        }
        case 1:
            aer.has_term = fuzz_bool() || fuzz_bool();
            aer.term = fuzz_value();
            aer.has_success = 1;
            aer.success = fuzz_bool();
            aer.has_match_index = 1;
            aer.match_index = fuzz_value();
            aer.has_rejected_index = 1;
            aer.rejected_index = fuzz_value();
            aer.has_conflict_term = fuzz_bool();
            aer.conflict_term = fuzz_value();
            aer.has_conflict_index = fuzz_bool();
            aer.conflict_index = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE;
            env.append_entries_response = &aer;
            break;
        case 2:
            rv.has_term = rv.has_last_log_index = rv.has_last_log_term = 1;
            rv.term = fuzz_value();
            rv.last_log_index = fuzz_value();
            rv.last_log_term = fuzz_value();
            rv.has_pre_vote = rv.has_leader_transfer = 1;
            rv.pre_vote = fuzz_bool();
            rv.leader_transfer = fuzz_bool();
            env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE;
            env.request_vote = &rv;
            break;
        case 3:
            rvr.has_term = rvr.has_vote_granted = rvr.has_pre_vote = 1;
            rvr.term = fuzz_value();
            rvr.vote_granted = fuzz_bool();
            rvr.pre_vote = fuzz_bool();
            env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE_RESPONSE;
            env.request_vote_response = &rvr;
            break;
        case 4:
            hb.has_term = hb.has_commit = hb.has_context = 1;
            hb.term = fuzz_value();
            hb.commit = fuzz_value();
            hb.context = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &hb;
            break;
        case 5:
            hbr.has_term = hbr.has_context = 1;
            hbr.term = fuzz_value();
            hbr.context = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT_RESPONSE;
            env.heartbeat_response = &hbr;
            break;
        case 6: {
            size_t n = (size_t)(fuzz_next() % 5);
            sc.has_term = sc.has_last_included_index = 1;
            sc.has_last_included_term = 1;
            sc.term = fuzz_value();
            sc.last_included_index = fuzz_value();
            sc.last_included_term = fuzz_value();
            sc.has_offset = sc.has_total_size = sc.has_done = 1;
            sc.offset = fuzz_bool() ? 0 : fuzz_value();
            sc.total_size = fuzz_value();
            sc.done = fuzz_bool();
            sc.has_data = 1;
            sc.data = owned[n_owned++] = fuzz_bytes(2048);
            for (size_t i = 0; i < n; i++) {
                skein__member__init(&members[i]);
                members[i].has_id = 1;
                members[i].id = fuzz_value();
                members[i].has_role = fuzz_bool();
                members[i].role = (Skein__Member__Role)(fuzz_next() % 3);
                static char addr_a[] = "tcp://127.0.0.1:1";
                static char addr_b[] = "";
                members[i].address = fuzz_bool() ? addr_a : addr_b;
                memp[i] = &members[i];
            }
            conf.n_members = n;
            conf.members = memp;
            sc.configuration = fuzz_bool() || n > 0 ? &conf : NULL;
            env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT;
            env.install_snapshot = &sc;
            break;
        }
        case 7:
            scr.has_term = 1;
            scr.term = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT_RESPONSE;
            env.install_snapshot_response = &scr;
            break;
        case 8:
            tn.has_term = 1;
            tn.term = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_TIMEOUT_NOW;
            env.timeout_now = &tn;
            break;
        case 9:
            ri.has_term = ri.has_context = 1;
            ri.term = fuzz_value();
            ri.context = fuzz_value();
            env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX;
            env.read_index = &ri;
            break;
        default:
            rir.has_term = rir.has_context = rir.has_index = 1;
            rir.has_rejected = 1;
            rir.term = fuzz_value();
            rir.context = fuzz_value();
            rir.index = fuzz_value();
            rir.rejected = fuzz_bool();
            env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX_RESPONSE;
            env.read_index_response = &rir;
            break;
    }
    if (fuzz_next() % 8 == 0) {
        env.has_to = 1;
        env.to = fuzz_value();
    }
    rc = write_env(&env);
    for (size_t i = 0; i < n_owned; i++) {
        free(owned[i].data);
    }
    return rc;
}

/* A random string (owned by the caller): printable, or random bytes. */
static char* fuzz_string(size_t max) {
    size_t len = (size_t)(fuzz_next() % (max + 1));
    bool raw = fuzz_next() % 4 == 0;
    char* s = malloc(len + 1);
    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)fuzz_next();
        s[i] = raw ? (char)(b == 0 ? 1 : b) : (char)('a' + b % 26);
    }
    s[len] = '\0';
    return s;
}

static int encode_client_fuzz(int argc, char** argv) {
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
    Skein__CreateOp c = SKEIN__CREATE_OP__INIT;
    Skein__UpdateOp u = SKEIN__UPDATE_OP__INIT;
    Skein__DeleteOp d = SKEIN__DELETE_OP__INIT;
    Skein__GetOp g = SKEIN__GET_OP__INIT;
    Skein__ListOp l = SKEIN__LIST_OP__INIT;
    Skein__CountOp n = SKEIN__COUNT_OP__INIT;
    Skein__RandomIdOp ri = SKEIN__RANDOM_ID_OP__INIT;
    char* owned[6] = {NULL};
    size_t k = 0;
    int rc;

    if (argc < 1) {
        return 2;
    }
    fuzz_state = strtoull(argv[0], NULL, 10) * 0x9E3779B97F4A7C15ULL + 7;
    if (fuzz_bool()) {
        req.request_id = owned[k++] = fuzz_string(fuzz_bool() ? 20 : 200);
    }
    req.has_consistency = fuzz_bool();
    req.consistency = (Skein__ClientRequest__Consistency)(fuzz_next() % 5);
    if (fuzz_next() % 6 == 0) {
        req.has_forward_tag = 1;
        req.forward_tag = fuzz_value();
    }
    switch (fuzz_next() % 7) {
        case 0:
            c.key = fuzz_bool() ? (owned[k++] = fuzz_string(300)) : NULL;
            c.value = fuzz_bool() ? (owned[k++] = fuzz_string(100)) : NULL;
            if (fuzz_next() % 5 == 0) {
                c.id = owned[k++] = fuzz_string(70);
                c.has_source_node = c.has_created_at = 1;
                c.source_node = fuzz_value();
                c.created_at = (int64_t)fuzz_value();
            }
            req.op_case = SKEIN__CLIENT_REQUEST__OP_CREATE;
            req.create = &c;
            break;
        case 1:
            u.id = fuzz_bool() ? (owned[k++] = fuzz_string(70)) : NULL;
            u.key = fuzz_bool() ? (owned[k++] = fuzz_string(300)) : NULL;
            u.value = fuzz_bool() ? (owned[k++] = fuzz_string(100)) : NULL;
            u.has_expected_seq = fuzz_bool();
            u.expected_seq = fuzz_value();
            req.op_case = SKEIN__CLIENT_REQUEST__OP_UPDATE;
            req.update = &u;
            break;
        case 2:
            d.id = fuzz_bool() ? (owned[k++] = fuzz_string(70)) : NULL;
            d.has_expected_seq = fuzz_bool();
            d.expected_seq = fuzz_value();
            req.op_case = SKEIN__CLIENT_REQUEST__OP_DELETE;
            req.delete_ = &d;
            break;
        case 3:
            g.id = fuzz_bool() ? (owned[k++] = fuzz_string(70)) : NULL;
            req.op_case = SKEIN__CLIENT_REQUEST__OP_GET;
            req.get = &g;
            break;
        case 4:
            l.key = fuzz_bool() ? (owned[k++] = fuzz_string(300)) : NULL;
            l.has_limit = fuzz_bool();
            l.limit = (uint32_t)fuzz_value();
            l.after = fuzz_bool() ? (owned[k++] = fuzz_string(70)) : NULL;
            req.op_case = SKEIN__CLIENT_REQUEST__OP_LIST;
            req.list = &l;
            break;
        case 5:
            req.op_case = SKEIN__CLIENT_REQUEST__OP_COUNT;
            req.count = &n;
            break;
        default:
            req.op_case = fuzz_bool() ? SKEIN__CLIENT_REQUEST__OP_RANDOM_ID
                                      : SKEIN__CLIENT_REQUEST__OP__NOT_SET;
            req.random_id = req.op_case ? &ri : NULL;
            break;
    }
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = &req;
    rc = write_env(&env);
    for (size_t i = 0; i < k; i++) {
        free(owned[i]);
    }
    return rc;
}

int main(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[1], "encode") == 0 &&
        strcmp(argv[2], "forward-batch") == 0) {
        return encode_forward_batch(argc - 3, argv + 3);
    }
    if (argc >= 3 && strcmp(argv[1], "encode") == 0 &&
        strcmp(argv[2], "raft-batch") == 0) {
        return encode_raft_batch(argc - 3, argv + 3);
    }
    if (argc >= 3 && strcmp(argv[1], "encode") == 0 &&
        strcmp(argv[2], "raft-fuzz") == 0) {
        return encode_raft_fuzz(argc - 3, argv + 3);
    }
    if (argc >= 3 && strcmp(argv[1], "encode") == 0 &&
        strcmp(argv[2], "client-fuzz") == 0) {
        return encode_client_fuzz(argc - 3, argv + 3);
    }
    if (argc >= 5 && strcmp(argv[1], "encode") == 0 &&
        strcmp(argv[2], "raft-term") == 0) {
        Skein__Envelope env = SKEIN__ENVELOPE__INIT;
        Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
        env.has_from = 1;
        env.from = strtoull(argv[3], NULL, 10);
        hb.has_term = 1;
        hb.term = strtoull(argv[4], NULL, 10);
        env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
        return write_env(&env);
    }
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) {
        return encode(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) {
        return decode(argc >= 3 && strcmp(argv[2], "-v") == 0);
    }
    fprintf(stderr, "usage: skein-wire encode OP ARGS... | decode\n");
    return 2;
}
