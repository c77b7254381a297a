/*
 * test_proto_roundtrip.c - skein.proto survives packing and unpacking.
 *
 * Every kind of Envelope body is packed, unpacked and compared field by
 * field; garbage, truncated and hostile inputs must make the unpacker
 * return NULL (or a well-formed message) without crashing. Run under
 * ASan+UBSan by deploy/test.sh, so a bad read in the decoder fails here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "skein.pb-c.h"

#define CLUSTER_ID 0x5ce1u
#define FROM_NODE  1u
#define TO_NODE    2u

/* Fills the envelope header every test shares. */
static void envelope_header(Skein__Envelope* env) {
    env->has_cluster_id = 1;
    env->cluster_id = CLUSTER_ID;
    env->has_from = 1;
    env->from = FROM_NODE;
    env->has_to = 1;
    env->to = TO_NODE;
}

/*
 * Packs `env`, unpacks the bytes, checks the header and the body kind, and
 * returns the unpacked copy (free it with skein__envelope__free_unpacked).
 */
static Skein__Envelope* roundtrip(const Skein__Envelope* env) {
    size_t size = skein__envelope__get_packed_size(env);
    uint8_t* buf = malloc(size > 0 ? size : 1);
    assert_non_null(buf);
    assert_int_equal(skein__envelope__pack(env, buf), size);

    Skein__Envelope* out = skein__envelope__unpack(NULL, size, buf);
    free(buf);
    assert_non_null(out);
    assert_true(out->has_cluster_id);
    assert_int_equal(out->cluster_id, CLUSTER_ID);
    assert_int_equal(out->from, FROM_NODE);
    assert_int_equal(out->to, TO_NODE);
    assert_int_equal(out->body_case, env->body_case);
    return out;
}

static void test_append_entries(void** state) {
    /* A NORMAL entry whose data is an encoded Command, as in the log. */
    Skein__CreateOp create = SKEIN__CREATE_OP__INIT;
    char create_key[] = "k1";
    create.key = create_key;
    char create_value[] = "v1";
    create.value = create_value;
    char create_id[] = "123e4567-e89b-12d3-a456-426614174000";
    create.id = create_id;
    create.has_source_node = 1;
    create.source_node = 3;
    create.has_created_at = 1;
    create.created_at = 1700000000123;
    Skein__Command cmd = SKEIN__COMMAND__INIT;
    char cmd_request_id[] = "req-1";
    cmd.request_id = cmd_request_id;
    cmd.op_case = SKEIN__COMMAND__OP_CREATE;
    cmd.create = &create;
    uint8_t cmd_buf[256];
    size_t cmd_len = skein__command__get_packed_size(&cmd);
    assert_true(cmd_len <= sizeof(cmd_buf));
    skein__command__pack(&cmd, cmd_buf);

    uint8_t conf_data[] = {0, 1, 2, 0xff};
    Skein__LogEntry e1 = SKEIN__LOG_ENTRY__INIT;
    e1.has_term = e1.has_index = e1.has_type = e1.has_data = 1;
    e1.term = 7;
    e1.index = 42;
    e1.type = SKEIN__LOG_ENTRY__TYPE__NORMAL;
    e1.data.data = cmd_buf;
    e1.data.len = cmd_len;
    Skein__LogEntry e2 = SKEIN__LOG_ENTRY__INIT;
    e2.has_term = e2.has_index = e2.has_type = e2.has_data = 1;
    e2.term = 7;
    e2.index = 43;
    e2.type = SKEIN__LOG_ENTRY__TYPE__CONF;
    e2.data.data = conf_data;
    e2.data.len = sizeof(conf_data);
    Skein__LogEntry* entries[] = {&e1, &e2};

    Skein__AppendEntriesRequest req = SKEIN__APPEND_ENTRIES_REQUEST__INIT;
    req.has_term = req.has_prev_log_index = req.has_prev_log_term = 1;
    req.has_leader_commit = 1;
    req.term = 7;
    req.prev_log_index = 41;
    req.prev_log_term = 6;
    req.leader_commit = 40;
    req.n_entries = 2;
    req.entries = entries;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES;
    env.append_entries = &req;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__AppendEntriesRequest* r = out->append_entries;
    assert_int_equal(r->term, 7);
    assert_int_equal(r->prev_log_index, 41);
    assert_int_equal(r->prev_log_term, 6);
    assert_int_equal(r->leader_commit, 40);
    assert_int_equal(r->n_entries, 2);
    assert_int_equal(r->entries[0]->index, 42);
    assert_int_equal(r->entries[0]->type, SKEIN__LOG_ENTRY__TYPE__NORMAL);
    assert_int_equal(r->entries[1]->index, 43);
    assert_int_equal(r->entries[1]->term, 7);
    assert_int_equal(r->entries[1]->type, SKEIN__LOG_ENTRY__TYPE__CONF);
    assert_int_equal(r->entries[1]->data.len, sizeof(conf_data));
    assert_memory_equal(r->entries[1]->data.data, conf_data, sizeof(conf_data));

    /* The entry payload decodes back into the same Command. */
    Skein__Command* c = skein__command__unpack(NULL, r->entries[0]->data.len,
                                               r->entries[0]->data.data);
    assert_non_null(c);
    assert_string_equal(c->request_id, "req-1");
    assert_int_equal(c->op_case, SKEIN__COMMAND__OP_CREATE);
    assert_string_equal(c->create->key, "k1");
    assert_string_equal(c->create->value, "v1");
    assert_string_equal(c->create->id, create.id);
    assert_int_equal(c->create->source_node, 3);
    assert_int_equal(c->create->created_at, 1700000000123);
    skein__command__free_unpacked(c, NULL);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_append_entries_response(void** state) {
    Skein__AppendEntriesResponse resp = SKEIN__APPEND_ENTRIES_RESPONSE__INIT;
    resp.has_term = resp.has_success = resp.has_rejected_index = 1;
    resp.has_conflict_term = resp.has_conflict_index = 1;
    resp.term = 9;
    resp.success = 0;
    resp.rejected_index = 100;
    resp.conflict_term = 4;
    resp.conflict_index = 77;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_APPEND_ENTRIES_RESPONSE;
    env.append_entries_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__AppendEntriesResponse* r = out->append_entries_response;
    assert_int_equal(r->term, 9);
    assert_true(r->has_success);
    assert_false(r->success);
    assert_false(r->has_match_index);
    assert_int_equal(r->rejected_index, 100);
    assert_int_equal(r->conflict_term, 4);
    assert_int_equal(r->conflict_index, 77);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_request_vote(void** state) {
    Skein__RequestVoteRequest req = SKEIN__REQUEST_VOTE_REQUEST__INIT;
    req.has_term = req.has_last_log_index = req.has_last_log_term = 1;
    req.has_pre_vote = req.has_leader_transfer = 1;
    req.term = 12;
    req.last_log_index = 500;
    req.last_log_term = 11;
    req.pre_vote = 1;
    req.leader_transfer = 1;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE;
    env.request_vote = &req;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__RequestVoteRequest* r = out->request_vote;
    assert_int_equal(r->term, 12);
    assert_int_equal(r->last_log_index, 500);
    assert_int_equal(r->last_log_term, 11);
    assert_true(r->pre_vote);
    assert_true(r->leader_transfer);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_request_vote_response(void** state) {
    Skein__RequestVoteResponse resp = SKEIN__REQUEST_VOTE_RESPONSE__INIT;
    resp.has_term = resp.has_vote_granted = resp.has_pre_vote = 1;
    resp.term = 12;
    resp.vote_granted = 1;
    resp.pre_vote = 1;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_REQUEST_VOTE_RESPONSE;
    env.request_vote_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->request_vote_response->term, 12);
    assert_true(out->request_vote_response->vote_granted);
    assert_true(out->request_vote_response->pre_vote);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_heartbeat(void** state) {
    Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
    hb.has_term = hb.has_commit = hb.has_context = 1;
    hb.term = 3;
    hb.commit = 17;
    hb.context = UINT64_MAX;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->heartbeat->term, 3);
    assert_int_equal(out->heartbeat->commit, 17);
    assert_true(out->heartbeat->context == UINT64_MAX);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_heartbeat_response(void** state) {
    Skein__HeartbeatResponse hb = SKEIN__HEARTBEAT_RESPONSE__INIT;
    hb.has_term = hb.has_context = 1;
    hb.term = 3;
    hb.context = 99;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT_RESPONSE;
    env.heartbeat_response = &hb;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->heartbeat_response->term, 3);
    assert_int_equal(out->heartbeat_response->context, 99);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_install_snapshot(void** state) {
    Skein__Member voter = SKEIN__MEMBER__INIT;
    voter.has_id = voter.has_role = 1;
    voter.id = 1;
    voter.role = SKEIN__MEMBER__ROLE__VOTER;
    char voter_address[] = "tcp://127.0.0.1:7001";
    voter.address = voter_address;
    Skein__Member learner = SKEIN__MEMBER__INIT;
    learner.has_id = learner.has_role = 1;
    learner.id = 4;
    learner.role = SKEIN__MEMBER__ROLE__LEARNER;
    Skein__Member* members[] = {&voter, &learner};
    Skein__Configuration conf = SKEIN__CONFIGURATION__INIT;
    conf.n_members = 2;
    conf.members = members;

    uint8_t data[300];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 7);
    }
    Skein__InstallSnapshotChunk chunk = SKEIN__INSTALL_SNAPSHOT_CHUNK__INIT;
    chunk.has_term = chunk.has_last_included_index = 1;
    chunk.has_last_included_term = chunk.has_offset = chunk.has_data = 1;
    chunk.has_done = chunk.has_total_size = 1;
    chunk.term = 5;
    chunk.last_included_index = 1000;
    chunk.last_included_term = 4;
    chunk.configuration = &conf;
    chunk.offset = 65536;
    chunk.data.data = data;
    chunk.data.len = sizeof(data);
    chunk.done = 1;
    chunk.total_size = 65536 + sizeof(data);
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT;
    env.install_snapshot = &chunk;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__InstallSnapshotChunk* c = out->install_snapshot;
    assert_int_equal(c->term, 5);
    assert_int_equal(c->last_included_index, 1000);
    assert_int_equal(c->last_included_term, 4);
    assert_int_equal(c->offset, 65536);
    assert_true(c->done);
    assert_int_equal(c->total_size, 65536 + sizeof(data));
    assert_int_equal(c->data.len, sizeof(data));
    assert_memory_equal(c->data.data, data, sizeof(data));
    assert_non_null(c->configuration);
    assert_int_equal(c->configuration->n_members, 2);
    assert_int_equal(c->configuration->members[0]->id, 1);
    assert_string_equal(c->configuration->members[0]->address,
                        "tcp://127.0.0.1:7001");
    assert_int_equal(c->configuration->members[1]->id, 4);
    assert_int_equal(c->configuration->members[1]->role,
                     SKEIN__MEMBER__ROLE__LEARNER);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_install_snapshot_response(void** state) {
    Skein__InstallSnapshotResponse resp =
        SKEIN__INSTALL_SNAPSHOT_RESPONSE__INIT;
    resp.has_term = resp.has_last_included_index = resp.has_next_offset = 1;
    resp.has_success = resp.has_done = 1;
    resp.term = 5;
    resp.last_included_index = 1000;
    resp.next_offset = 65836;
    resp.success = 1;
    resp.done = 1;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_INSTALL_SNAPSHOT_RESPONSE;
    env.install_snapshot_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__InstallSnapshotResponse* r = out->install_snapshot_response;
    assert_int_equal(r->term, 5);
    assert_int_equal(r->last_included_index, 1000);
    assert_int_equal(r->next_offset, 65836);
    assert_true(r->success);
    assert_true(r->done);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_timeout_now(void** state) {
    Skein__TimeoutNow tn = SKEIN__TIMEOUT_NOW__INIT;
    tn.has_term = 1;
    tn.term = 8;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_TIMEOUT_NOW;
    env.timeout_now = &tn;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->timeout_now->term, 8);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_read_index(void** state) {
    Skein__ReadIndexRequest req = SKEIN__READ_INDEX_REQUEST__INIT;
    req.has_term = req.has_context = 1;
    req.term = 8;
    req.context = 0x1234567890abcdefu;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX;
    env.read_index = &req;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->read_index->term, 8);
    assert_true(out->read_index->context == 0x1234567890abcdefu);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_read_index_response(void** state) {
    Skein__ReadIndexResponse resp = SKEIN__READ_INDEX_RESPONSE__INIT;
    resp.has_term = resp.has_context = resp.has_index = 1;
    resp.has_rejected = 1;
    resp.term = 8;
    resp.context = 77;
    resp.index = 1234;
    resp.rejected = 1;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_READ_INDEX_RESPONSE;
    env.read_index_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    assert_int_equal(out->read_index_response->term, 8);
    assert_int_equal(out->read_index_response->context, 77);
    assert_int_equal(out->read_index_response->index, 1234);
    assert_true(out->read_index_response->rejected);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_client_request_update(void** state) {
    Skein__UpdateOp update = SKEIN__UPDATE_OP__INIT;
    char update_id[] = "123e4567-e89b-12d3-a456-426614174000";
    update.id = update_id;
    char update_value[] = "new value";
    update.value = update_value;
    update.has_expected_seq = 1;
    update.expected_seq = 41;
    Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
    char req_request_id[] = "idem-7";
    req.request_id = req_request_id;
    req.op_case = SKEIN__CLIENT_REQUEST__OP_UPDATE;
    req.update = &update;
    req.has_consistency = 1;
    req.consistency = SKEIN__CLIENT_REQUEST__CONSISTENCY__STALE;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = &req;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__ClientRequest* r = out->client_request;
    assert_string_equal(r->request_id, "idem-7");
    assert_int_equal(r->op_case, SKEIN__CLIENT_REQUEST__OP_UPDATE);
    assert_string_equal(r->update->id, update.id);
    assert_string_equal(r->update->value, "new value");
    assert_null(r->update->key);
    assert_true(r->update->has_expected_seq);
    assert_int_equal(r->update->expected_seq, 41);
    assert_int_equal(r->consistency, SKEIN__CLIENT_REQUEST__CONSISTENCY__STALE);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_client_request_list_defaults(void** state) {
    /* Consistency left unset reads as LINEARIZABLE, the safe default. */
    Skein__ListOp list = SKEIN__LIST_OP__INIT;
    char list_key[] = "user:1";
    list.key = list_key;
    list.has_limit = 1;
    list.limit = 50;
    char list_after[] = "00000000-0000-0000-0000-000000000001";
    list.after = list_after;
    Skein__ClientRequest req = SKEIN__CLIENT_REQUEST__INIT;
    req.op_case = SKEIN__CLIENT_REQUEST__OP_LIST;
    req.list = &list;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_REQUEST;
    env.client_request = &req;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__ClientRequest* r = out->client_request;
    assert_int_equal(r->op_case, SKEIN__CLIENT_REQUEST__OP_LIST);
    assert_string_equal(r->list->key, "user:1");
    assert_int_equal(r->list->limit, 50);
    assert_string_equal(r->list->after, list.after);
    assert_false(r->has_consistency);
    assert_int_equal(r->consistency,
                     SKEIN__CLIENT_REQUEST__CONSISTENCY__LINEARIZABLE);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_client_response(void** state) {
    Skein__KVEntry a = SKEIN__KVENTRY__INIT;
    char a_id[] = "123e4567-e89b-12d3-a456-426614174000";
    a.id = a_id;
    char a_key[] = "k";
    a.key = a_key;
    char a_value[] = "v";
    a.value = a_value;
    a.has_seq = a.has_source_node = a.has_created_at = 1;
    a.seq = 1;
    a.source_node = 2;
    a.created_at = -5; /* int64 survives sign */
    Skein__KVEntry b = a;
    char b_id[] = "123e4567-e89b-12d3-a456-426614174001";
    b.id = b_id;
    b.seq = 2;
    b.created_at = INT64_MAX;
    Skein__KVEntry* entries[] = {&a, &b};
    Skein__ClientResponse resp = SKEIN__CLIENT_RESPONSE__INIT;
    char resp_request_id[] = "idem-8";
    resp.request_id = resp_request_id;
    resp.has_status = 1;
    resp.status = SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER;
    resp.has_leader_hint = 1;
    resp.leader_hint = 3;
    char resp_leader_address[] = "127.0.0.1:8082";
    resp.leader_address = resp_leader_address;
    resp.n_entries = 2;
    resp.entries = entries;
    resp.has_truncated = 1;
    resp.truncated = 1;
    resp.has_count = 1;
    resp.count = 2;
    char resp_error[] = "not the leader";
    resp.error = resp_error;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
    env.client_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__ClientResponse* r = out->client_response;
    assert_string_equal(r->request_id, "idem-8");
    assert_int_equal(r->status, SKEIN__CLIENT_RESPONSE__STATUS__NOT_LEADER);
    assert_int_equal(r->leader_hint, 3);
    assert_string_equal(r->leader_address, "127.0.0.1:8082");
    assert_int_equal(r->n_entries, 2);
    assert_string_equal(r->entries[0]->id, a.id);
    assert_string_equal(r->entries[0]->key, "k");
    assert_string_equal(r->entries[0]->value, "v");
    assert_int_equal(r->entries[0]->seq, 1);
    assert_int_equal(r->entries[0]->source_node, 2);
    assert_true(r->entries[0]->created_at == -5);
    assert_string_equal(r->entries[1]->id, b.id);
    assert_true(r->entries[1]->created_at == INT64_MAX);
    assert_true(r->truncated);
    assert_int_equal(r->count, 2);
    assert_string_equal(r->error, "not the leader");
    assert_null(r->entry);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_client_response_status_fails_safe(void** state) {
    /* A response whose sender forgot the status must not read as OK. */
    Skein__ClientResponse resp = SKEIN__CLIENT_RESPONSE__INIT;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_CLIENT_RESPONSE;
    env.client_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    assert_false(out->client_response->has_status);
    assert_int_equal(out->client_response->status,
                     SKEIN__CLIENT_RESPONSE__STATUS__INTERNAL);
    skein__envelope__free_unpacked(out, NULL);
}

static void test_admin_request(void** state) {
    Skein__FaultInjectRequest fault = SKEIN__FAULT_INJECT_REQUEST__INIT;
    fault.has_peer = fault.has_drop_probability = fault.has_delay_ms = 1;
    fault.has_partition = 1;
    fault.peer = 3;
    fault.drop_probability = 0.25;
    fault.delay_ms = 40;
    fault.partition = 1;
    Skein__AdminRequest req = SKEIN__ADMIN_REQUEST__INIT;
    req.op_case = SKEIN__ADMIN_REQUEST__OP_FAULT_INJECT;
    req.fault_inject = &fault;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_REQUEST;
    env.admin_request = &req;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__AdminRequest* r = out->admin_request;
    assert_int_equal(r->op_case, SKEIN__ADMIN_REQUEST__OP_FAULT_INJECT);
    assert_int_equal(r->fault_inject->peer, 3);
    assert_true(r->fault_inject->drop_probability == 0.25);
    assert_int_equal(r->fault_inject->delay_ms, 40);
    assert_true(r->fault_inject->partition);
    assert_false(r->fault_inject->has_clear);
    skein__envelope__free_unpacked(out, NULL);

    /* And a membership change. */
    Skein__MemberAddRequest add = SKEIN__MEMBER_ADD_REQUEST__INIT;
    add.has_id = 1;
    add.id = 5;
    char add_address[] = "tcp://127.0.0.1:7005";
    add.address = add_address;
    req.op_case = SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD;
    req.member_add = &add;
    out = roundtrip(&env);
    assert_int_equal(out->admin_request->op_case,
                     SKEIN__ADMIN_REQUEST__OP_MEMBER_ADD);
    assert_int_equal(out->admin_request->member_add->id, 5);
    assert_string_equal(out->admin_request->member_add->address,
                        "tcp://127.0.0.1:7005");
    skein__envelope__free_unpacked(out, NULL);
}

static void test_admin_response(void** state) {
    Skein__FollowerStatus f = SKEIN__FOLLOWER_STATUS__INIT;
    f.has_id = f.has_health = f.has_match_index = f.has_lag = 1;
    f.has_progress_state = 1;
    f.id = 2;
    char f_address[] = "127.0.0.1:8081";
    f.address = f_address;
    f.health = SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING;
    f.progress_state = SKEIN__FOLLOWER_STATUS__PROGRESS_STATE__REPLICATE;
    f.match_index = 140;
    f.lag = 10;
    Skein__FollowerStatus* followers[] = {&f};
    Skein__ResyncStats stats = SKEIN__RESYNC_STATS__INIT;
    stats.has_send_failures = 1;
    stats.send_failures = 1;
    Skein__StatusResponse st = SKEIN__STATUS_RESPONSE__INIT;
    st.has_node_id = st.has_role = st.has_term = st.has_commit_index = 1;
    st.has_state_hash = 1;
    st.node_id = 1;
    st.role = SKEIN__STATUS_RESPONSE__ROLE__LEADER;
    st.term = 4;
    st.commit_index = 150;
    st.state_hash = 0xdeadbeefcafef00du;
    st.n_followers = 1;
    st.followers = followers;
    st.resync_stats = &stats;
    Skein__AdminResponse resp = SKEIN__ADMIN_RESPONSE__INIT;
    resp.has_status = 1;
    resp.status = SKEIN__CLIENT_RESPONSE__STATUS__OK;
    resp.result_case = SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS;
    resp.node_status = &st;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_ADMIN_RESPONSE;
    env.admin_response = &resp;

    Skein__Envelope* out = roundtrip(&env);
    const Skein__AdminResponse* r = out->admin_response;
    assert_int_equal(r->status, SKEIN__CLIENT_RESPONSE__STATUS__OK);
    assert_int_equal(r->result_case, SKEIN__ADMIN_RESPONSE__RESULT_NODE_STATUS);
    const Skein__StatusResponse* s = r->node_status;
    assert_int_equal(s->node_id, 1);
    assert_int_equal(s->role, SKEIN__STATUS_RESPONSE__ROLE__LEADER);
    assert_int_equal(s->term, 4);
    assert_int_equal(s->commit_index, 150);
    assert_true(s->state_hash == 0xdeadbeefcafef00du);
    assert_int_equal(s->n_followers, 1);
    assert_int_equal(s->followers[0]->health,
                     SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING);
    assert_int_equal(s->followers[0]->progress_state,
                     SKEIN__FOLLOWER_STATUS__PROGRESS_STATE__REPLICATE);
    assert_int_equal(s->followers[0]->match_index, 140);
    assert_string_equal(s->followers[0]->address, "127.0.0.1:8081");
    assert_non_null(s->resync_stats);
    assert_int_equal(s->resync_stats->send_failures, 1);
    skein__envelope__free_unpacked(out, NULL);
}

/* Unpacks `len` bytes that are not a valid Envelope: must give NULL. */
static void expect_rejected(const uint8_t* buf, size_t len) {
    Skein__Envelope* out = skein__envelope__unpack(NULL, len, buf);
    assert_null(out);
}

static void test_garbage_rejected(void** state) {
    /* Field 1 with wire type 7, which does not exist. */
    const uint8_t bad_wire_type[] = {0x0f, 0x01};
    expect_rejected(bad_wire_type, sizeof(bad_wire_type));

    /* A varint that never ends (11 continuation bytes). */
    uint8_t long_varint[12];
    long_varint[0] = 0x08; /* field 1, varint */
    memset(long_varint + 1, 0xff, sizeof(long_varint) - 1);
    expect_rejected(long_varint, sizeof(long_varint));

    /* Body field 10 claims 100 bytes but only 2 follow. */
    const uint8_t short_body[] = {0x52, 100, 0x08, 0x01};
    expect_rejected(short_body, sizeof(short_body));

    /* A length prefix near 2^64. */
    const uint8_t huge_len[] = {0x52, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0x01};
    expect_rejected(huge_len, sizeof(huge_len));

    /* All 0xff. */
    uint8_t ones[64];
    memset(ones, 0xff, sizeof(ones));
    expect_rejected(ones, sizeof(ones));

    /* Field number 0 is reserved. */
    const uint8_t field_zero[] = {0x00, 0x01};
    expect_rejected(field_zero, sizeof(field_zero));
}

static void test_truncated_rejected(void** state) {
    /* Every strict prefix of a valid message that cuts a field is refused;
     * prefixes ending on a field boundary are valid and must decode. */
    Skein__Heartbeat hb = SKEIN__HEARTBEAT__INIT;
    hb.has_term = hb.has_commit = hb.has_context = 1;
    hb.term = 300;
    hb.commit = 70000;
    hb.context = UINT64_MAX;
    Skein__Envelope env = SKEIN__ENVELOPE__INIT;
    envelope_header(&env);
    env.body_case = SKEIN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    uint8_t buf[128];
    size_t size = skein__envelope__get_packed_size(&env);
    assert_true(size <= sizeof(buf));
    skein__envelope__pack(&env, buf);

    size_t refused = 0;
    for (size_t len = 0; len < size; len++) {
        Skein__Envelope* out = skein__envelope__unpack(NULL, len, buf);
        if (out == NULL) {
            refused++;
        } else {
            skein__envelope__free_unpacked(out, NULL);
        }
    }
    /* The body is the last field and carries most of the bytes. */
    assert_true(refused >= size / 2);
    /* The last byte belongs to the body: cutting it must be refused. */
    expect_rejected(buf, size - 1);
}

static void test_random_bytes_do_not_crash(void** state) {
    /* Deterministic xorshift64 so a failure reproduces. Random input may
     * happen to be valid; all that matters is no crash and no leak (ASan
     * checks both), and that mostly it is refused. */
    uint64_t x = 0x9e3779b97f4a7c15u;
    uint8_t buf[256];
    size_t refused = 0;
    const size_t rounds = 20000;
    for (size_t round = 0; round < rounds; round++) {
        size_t len = (size_t)(x % sizeof(buf)) + 1;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        Skein__Envelope* out = skein__envelope__unpack(NULL, len, buf);
        if (out == NULL) {
            refused++;
        } else {
            /* Whatever was accepted must pack again cleanly. */
            size_t size = skein__envelope__get_packed_size(out);
            uint8_t* again = malloc(size > 0 ? size : 1);
            assert_non_null(again);
            assert_int_equal(skein__envelope__pack(out, again), size);
            free(again);
            skein__envelope__free_unpacked(out, NULL);
        }
    }
    assert_true(refused > rounds / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_entries),
        cmocka_unit_test(test_append_entries_response),
        cmocka_unit_test(test_request_vote),
        cmocka_unit_test(test_request_vote_response),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_heartbeat_response),
        cmocka_unit_test(test_install_snapshot),
        cmocka_unit_test(test_install_snapshot_response),
        cmocka_unit_test(test_timeout_now),
        cmocka_unit_test(test_read_index),
        cmocka_unit_test(test_read_index_response),
        cmocka_unit_test(test_client_request_update),
        cmocka_unit_test(test_client_request_list_defaults),
        cmocka_unit_test(test_client_response),
        cmocka_unit_test(test_client_response_status_fails_safe),
        cmocka_unit_test(test_admin_request),
        cmocka_unit_test(test_admin_response),
        cmocka_unit_test(test_garbage_rejected),
        cmocka_unit_test(test_truncated_rejected),
        cmocka_unit_test(test_random_bytes_do_not_crash),
    };
    return cmocka_run_group_tests_name("proto_roundtrip", tests, NULL, NULL);
}
