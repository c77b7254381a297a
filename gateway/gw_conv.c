/*
 * gw_conv.c - protobuf messages to JSON, in the shapes users know.
 *
 * Entries follow seed 000 (KVEntry: id, key, value, seq, source_node,
 * created_at as an RFC 3339 UTC string, like chrono's DateTime<Utc>); the
 * /_raft/... objects follow seed 004. Fields may be added, never renamed.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gw_internal.h"

json_t* gw_json_u64(uint64_t v) {
    if (v <= (uint64_t)INT64_MAX) {
        return json_integer((json_int_t)v);
    }
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return json_string(buf);
}

/* "2025-11-22T02:04:05.123Z" from milliseconds since the epoch. */
static void gw_rfc3339(int64_t ms, char* buf, size_t buflen) {
    int64_t secs = ms / 1000;
    int64_t frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, buflen, "1970-01-01T00:00:00.000Z");
        return;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, buflen, "%s.%03dZ", date, (int)frac);
}

/* A string field, "" when unset (jansson refuses NULL). */
static json_t* gw_json_str(const char* s) {
    json_t* j = json_string(s != NULL ? s : "");
    /* Invalid UTF-8 from a node must not make the whole reply fail. */
    return j != NULL ? j : json_string("");
}

json_t* gw_entry_json(const Skein__KVEntry* e) {
    json_t* o = json_object();
    if (o == NULL || e == NULL) {
        return o;
    }
    char when[40];
    gw_rfc3339(e->created_at, when, sizeof when);
    json_object_set_new(o, "id", gw_json_str(e->id));
    json_object_set_new(o, "key", gw_json_str(e->key));
    json_object_set_new(o, "value", gw_json_str(e->value));
    json_object_set_new(o, "seq", gw_json_u64(e->seq));
    json_object_set_new(o, "source_node", gw_json_u64(e->source_node));
    json_object_set_new(o, "created_at", json_string(when));
    json_object_set_new(o, "created_at_ms", json_integer(e->created_at));
    return o;
}

const char* gw_role_name(int role) {
    switch (role) {
        case SKEIN__STATUS_RESPONSE__ROLE__LEADER:
            return "leader";
        case SKEIN__STATUS_RESPONSE__ROLE__CANDIDATE:
            return "candidate";
        case SKEIN__STATUS_RESPONSE__ROLE__PRE_CANDIDATE:
            return "pre_candidate";
        case SKEIN__STATUS_RESPONSE__ROLE__FOLLOWER:
            return "follower";
        default:
            return "unknown";
    }
}

const char* gw_state_name(int role) {
    /* Seed 004 knows three states; a pre-candidate is campaigning. */
    switch (role) {
        case SKEIN__STATUS_RESPONSE__ROLE__LEADER:
            return "Leader";
        case SKEIN__STATUS_RESPONSE__ROLE__CANDIDATE:
        case SKEIN__STATUS_RESPONSE__ROLE__PRE_CANDIDATE:
            return "Candidate";
        default:
            return "Follower";
    }
}

const char* gw_health_name(int health) {
    switch (health) {
        case SKEIN__FOLLOWER_STATUS__HEALTH__HEALTHY:
            return "healthy";
        case SKEIN__FOLLOWER_STATUS__HEALTH__LAGGING:
            return "lagging";
        case SKEIN__FOLLOWER_STATUS__HEALTH__DESYNCED:
            return "desynced";
        default:
            return "unknown";
    }
}

static const char* gw_member_role_name(int role) {
    return role == SKEIN__MEMBER__ROLE__LEARNER ? "learner" : "voter";
}

static const char* gw_progress_name(int state) {
    switch (state) {
        case SKEIN__FOLLOWER_STATUS__PROGRESS_STATE__REPLICATE:
            return "replicate";
        case SKEIN__FOLLOWER_STATUS__PROGRESS_STATE__SNAPSHOT:
            return "snapshot";
        default:
            return "probe";
    }
}

json_t* gw_member_json(const Skein__Member* m) {
    json_t* o = json_object();
    if (o == NULL || m == NULL) {
        return o;
    }
    json_object_set_new(o, "id", gw_json_u64(m->id));
    json_object_set_new(o, "role", json_string(gw_member_role_name(m->role)));
    json_object_set_new(o, "address", gw_json_str(m->address));
    json_object_set_new(o, "http_address", gw_json_str(m->http_address));
    return o;
}

json_t* gw_configuration_json(const Skein__Configuration* c) {
    json_t* o = json_object();
    json_t* arr = json_array();
    if (c != NULL) {
        for (size_t i = 0; i < c->n_members; i++) {
            json_array_append_new(arr, gw_member_json(c->members[i]));
        }
    }
    json_object_set_new(o, "members", arr);
    return o;
}

const char* gw_follower_address(const Skein__FollowerStatus* f,
                                char* buf,
                                size_t buflen) {
    if (f->http_address != NULL && f->http_address[0] != '\0') {
        return f->http_address;
    }
    if (f->address != NULL && f->address[0] != '\0') {
        return f->address;
    }
    snprintf(buf, buflen, "node-%llu", (unsigned long long)f->id);
    return buf;
}

json_t* gw_follower_json(const Skein__FollowerStatus* f) {
    json_t* o = json_object();
    if (o == NULL || f == NULL) {
        return o;
    }
    char name[32];
    /* seed 004's fields first */
    json_object_set_new(o, "address",
                        json_string(gw_follower_address(f, name, sizeof name)));
    json_object_set_new(o, "health", json_string(gw_health_name(f->health)));
    json_object_set_new(o, "last_replicated_index",
                        gw_json_u64(f->match_index));
    json_object_set_new(o, "lag", gw_json_u64(f->lag));
    json_object_set_new(o, "last_latency_ms", gw_json_u64(f->last_latency_ms));
    json_object_set_new(o, "consecutive_failures",
                        gw_json_u64(f->consecutive_failures));
    /* Skein's additions */
    json_object_set_new(o, "id", gw_json_u64(f->id));
    json_object_set_new(o, "nng_address", gw_json_str(f->address));
    json_object_set_new(o, "role", json_string(gw_member_role_name(f->role)));
    json_object_set_new(o, "match_index", gw_json_u64(f->match_index));
    json_object_set_new(o, "next_index", gw_json_u64(f->next_index));
    json_object_set_new(o, "progress_state",
                        json_string(gw_progress_name(f->progress_state)));
    json_object_set_new(o, "inflight", json_integer(f->inflight));
    return o;
}

json_t* gw_resync_stats_json(const Skein__ResyncStats* s) {
    static const Skein__ResyncStats empty = SKEIN__RESYNC_STATS__INIT;
    if (s == NULL) {
        s = &empty;
    }
    json_t* o = json_object();
    json_object_set_new(o, "snapshots_created",
                        gw_json_u64(s->snapshots_created));
    json_object_set_new(o, "send_attempts", gw_json_u64(s->send_attempts));
    json_object_set_new(o, "send_successes", gw_json_u64(s->send_successes));
    json_object_set_new(o, "send_failures", gw_json_u64(s->send_failures));
    json_object_set_new(o, "snapshots_received",
                        gw_json_u64(s->snapshots_received));
    json_object_set_new(o, "snapshots_applied",
                        gw_json_u64(s->snapshots_applied));
    return o;
}

bool gw_status_leader_known(const Skein__StatusResponse* s) {
    if (s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER) {
        return true; /* it leads itself */
    }
    return s->has_leader_known ? s->leader_known != 0 : s->leader_id != 0;
}

json_t* gw_leader_json(const Skein__StatusResponse* s) {
    if (s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER) {
        return gw_json_u64(s->node_id);
    }
    return gw_status_leader_known(s) ? gw_json_u64(s->leader_id) : json_null();
}

json_t* gw_status_json(const Skein__StatusResponse* s) {
    json_t* o = json_object();
    if (o == NULL) {
        return NULL;
    }
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->state_hash);
    json_object_set_new(o, "node_id", gw_json_u64(s->node_id));
    json_object_set_new(o, "state", json_string(gw_state_name(s->role)));
    json_object_set_new(o, "role", json_string(gw_role_name(s->role)));
    json_object_set_new(
        o, "is_leader",
        json_boolean(s->role == SKEIN__STATUS_RESPONSE__ROLE__LEADER));
    json_object_set_new(o, "term", gw_json_u64(s->term));
    json_object_set_new(o, "leader_id", gw_leader_json(s));
    json_object_set_new(o, "leader_known",
                        json_boolean(gw_status_leader_known(s)));
    json_object_set_new(o, "commit_index", gw_json_u64(s->commit_index));
    json_object_set_new(o, "last_applied", gw_json_u64(s->last_applied));
    json_object_set_new(o, "first_log_index", gw_json_u64(s->first_log_index));
    json_object_set_new(o, "last_log_index", gw_json_u64(s->last_log_index));
    json_object_set_new(o, "snapshot_index", gw_json_u64(s->snapshot_index));
    json_object_set_new(o, "snapshot_term", gw_json_u64(s->snapshot_term));
    json_object_set_new(o, "state_hash", json_string(hash));
    json_object_set_new(o, "entry_count", gw_json_u64(s->entry_count));
    json_object_set_new(o, "write_seq", gw_json_u64(s->write_seq));
    json_object_set_new(o, "uptime_ms", gw_json_u64(s->uptime_ms));
    json_object_set_new(o, "address", gw_json_str(s->address));
    json_object_set_new(o, "http_address", gw_json_str(s->http_address));
    json_object_set_new(o, "cpus", gw_json_str(s->cpus));
    json_object_set_new(o, "dropped_messages",
                        gw_json_u64(s->dropped_messages));
    json_t* fsync = json_object();
    json_object_set_new(fsync, "count", gw_json_u64(s->fsync_count));
    json_object_set_new(fsync, "us_sum", gw_json_u64(s->fsync_us_sum));
    json_object_set_new(fsync, "us_max", gw_json_u64(s->fsync_us_max));
    json_object_set_new(o, "fsync", fsync);
    json_t* batching = json_object();
    json_object_set_new(batching, "forwarded_writes",
                        gw_json_u64(s->forwarded_writes));
    json_object_set_new(batching, "forward_requests",
                        gw_json_u64(s->forward_requests));
    json_object_set_new(batching, "forwards_applied",
                        gw_json_u64(s->forwards_applied));
    json_object_set_new(batching, "forward_results_sent",
                        gw_json_u64(s->forward_results_sent));
    json_object_set_new(batching, "forward_results_unmatched",
                        gw_json_u64(s->forward_results_unmatched));
    json_object_set_new(batching, "lingered_rounds",
                        gw_json_u64(s->lingered_rounds));
    json_object_set_new(batching, "raft_sent", gw_json_u64(s->raft_sent));
    json_object_set_new(batching, "raft_piggybacked",
                        gw_json_u64(s->raft_piggybacked));
    json_object_set_new(batching, "read_index_requests",
                        gw_json_u64(s->read_index_requests));
    json_object_set_new(o, "batching", batching);
    json_t* faults = json_object();
    json_object_set_new(faults, "drops", gw_json_u64(s->fault_drops));
    json_object_set_new(faults, "dups", gw_json_u64(s->fault_dups));
    json_object_set_new(o, "fault_injection", faults);
    json_t* staged = json_object();
    json_object_set_new(staged, "upload_id",
                        gw_json_u64(s->restore_staged_upload));
    json_object_set_new(staged, "bytes", gw_json_u64(s->restore_staged_bytes));
    json_object_set_new(o, "restore_staging", staged);
    json_object_set_new(o, "configuration",
                        gw_configuration_json(s->configuration));
    json_t* followers = json_array();
    for (size_t i = 0; i < s->n_followers; i++) {
        json_array_append_new(followers, gw_follower_json(s->followers[i]));
    }
    json_object_set_new(o, "followers", followers);
    json_object_set_new(o, "resync_stats",
                        gw_resync_stats_json(s->resync_stats));
    return o;
}
