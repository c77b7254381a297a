/*
 * raft.c - the Skein consensus core (see raft.h for the driver contract).
 *
 * Structure follows etcd's raft: role changes go through become_*(), every
 * incoming message passes a common term check (step_message) and then a
 * per-role handler; may-act helpers are named maybe_*. References such as
 * "§5.3" are to the Raft paper, "thesis §9.6" to Ongaro's dissertation.
 */
#include "raft.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "raft_log.h"
#include "raft_progress.h"
#include "raft_quorum.h"

/* Heartbeat rounds whose send tick is remembered for the lease. */
#define RAFT_HB_ROUNDS 64
/* Confs remembered so truncation and snapshots can find older ones. */
#define RAFT_CONF_HISTORY 8
/* Largest entry batch accepted in one message (bounds allocation). */
#define RAFT_MAX_MSG_ENTRIES 65536
/* Arena chunk size for per-batch copies. */
#define RAFT_ARENA_CHUNK (256 * 1024)

struct raft_arena_chunk {
    struct raft_arena_chunk* next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

struct raft_conf_entry {
    raft_index index;      /* log index of the conf entry, 0 = bootstrap */
    struct raft_conf conf; /* the configuration it holds */
};

/* A linearizable read waiting for its index to be confirmed. */
struct raft_pending_read {
    uint64_t context;  /* requester's id */
    raft_node_id from; /* requesting node, self for local reads */
    raft_index index;  /* commit index when registered */
    uint64_t seq;      /* heartbeat round that must be acknowledged */
};

struct raft {
    struct raft_config cfg;
    struct raft_log log;

    /* Persistent state (Figure 2). */
    raft_term term;
    raft_node_id vote;
    raft_index commit;
    struct raft_hard_state handed_hs; /* last hard state handed out */
    bool must_sync;                   /* term/vote/snapshot changed */

    enum raft_role role;
    raft_node_id leader;
    raft_index persisted; /* last index durable and matching the view */
    raft_index applied;   /* last index handed out for apply */

    uint64_t ticks;
    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;
    uint64_t rng;

    /* Membership: history[n_history - 1] is the latest conf in the log. */
    struct raft_conf_entry history[RAFT_CONF_HISTORY];
    uint32_t n_history;
    struct raft_snapshot_meta snapshot; /* latest snapshot known */

    /* Candidate state: votes[i] for history's latest conf ids[i]. */
    uint8_t votes[RAFT_MAX_NODES]; /* 0 none, 1 granted, 2 rejected */

    /* Leader state. */
    struct raft_progress prs[RAFT_MAX_NODES];
    uint32_t n_prs;
    raft_node_id transferee;
    bool lease_revoked;    /* TIMEOUT_NOW sent this term: no lease */
    bool start_guard;      /* first election timeout after start */
    raft_index noop_index; /* first entry of this leader's term */

    /* Follower acknowledgement tracking (ack only durable entries). */
    raft_index ack_target; /* highest index verified against the leader */
    raft_index acked;      /* highest index acknowledged to it */

    /* ReadIndex (thesis §6.4). */
    struct raft_pending_read* reads; /* ring of RAFT_MAX_READS */
    uint32_t reads_start;
    uint32_t n_reads_pending;
    uint64_t read_seq;                       /* last read/heartbeat round */
    uint64_t hb_rounds[RAFT_HB_ROUNDS];      /* recent rounds ... */
    uint64_t hb_round_ticks[RAFT_HB_ROUNDS]; /* ... and when they left */
    uint64_t read_seq_sent;                  /* last round broadcast */
    uint64_t read_acks[RAFT_MAX_NODES];      /* per prs[i]: round acked */
    raft_node_id last_read_requester;        /* mutant read-stale-requester */

    /* Output accumulated until raft_advance(). */
    struct raft_message* msgs;
    size_t n_msgs;
    size_t cap_msgs;
    struct raft_read_state* ready_reads;
    size_t n_ready_reads;
    size_t cap_ready_reads;
    struct raft_arena_chunk* arena;
    bool out_of_memory; /* an output could not be recorded */
};

/* ------------------------------------------------------------------ */
/* Names                                                               */

const char* raft_strerror(int code) {
#define RAFT_ERROR_TEXT(name, text) text,
    static const char* const texts[] = {RAFT_ERRORS(RAFT_ERROR_TEXT)};
#undef RAFT_ERROR_TEXT
    if (code < 0 || code >= RAFT_ERROR_COUNT) {
        return "unknown error";
    }
    return texts[code];
}

const char* raft_role_name(enum raft_role role) {
    switch (role) {
        case RAFT_FOLLOWER:
            return "follower";
        case RAFT_PRE_CANDIDATE:
            return "pre-candidate";
        case RAFT_CANDIDATE:
            return "candidate";
        case RAFT_LEADER:
            return "leader";
    }
    return "unknown";
}

const char* raft_msg_type_name(int type) {
    static const char* const names[] = {
        "none",
        "append",
        "append-resp",
        "vote",
        "vote-resp",
        "prevote",
        "prevote-resp",
        "heartbeat",
        "hb-resp",
        "snapshot",
        "timeout-now",
        "read-index",
        "read-index-resp",
    };
    if (type <= 0 || type >= RAFT_MSG_TYPE_MAX) {
        return "invalid";
    }
    return names[type];
}

const char* raft_mutant_name(int mutant) {
    static const char* const names[] = {
        "none",
        "vote-no-log-check",
        "commit-old-term",
        "vote-before-durable",
        "append-no-prev-check",
        "read-no-confirm",
        "ack-before-durable",
        "read-stale-requester",
    };
    if (mutant < 0 || mutant >= RAFT_MUTANT_COUNT) {
        return NULL;
    }
    return names[mutant];
}

void raft_config_default(struct raft_config* cfg, raft_node_id id) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->election_ticks = 10;
    cfg->heartbeat_ticks = 1;
    cfg->seed = id;
    cfg->max_inflight = 64;
    cfg->max_msg_bytes = 1024 * 1024;
    cfg->max_entry_bytes = 1024 * 1024;
    cfg->max_uncommitted_entries = 100000;
    cfg->max_apply_bytes = 16 * 1024 * 1024;
    cfg->learner_catchup_gap = 100;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static bool mutant(const struct raft* r, enum raft_mutant m) {
    return r->cfg.mutant == (int)m;
}

/* splitmix64: tiny, seedable, good enough for timeouts. */
static uint64_t raft_random(struct raft* r) {
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* §5.2: "election timeouts are chosen randomly from a fixed interval". */
static void reset_randomized_timeout(struct raft* r) {
    r->randomized_timeout = r->cfg.election_ticks +
                            (uint32_t)(raft_random(r) % r->cfg.election_ticks);
}

static const struct raft_conf* current_conf(const struct raft* r) {
    return &r->history[r->n_history - 1].conf;
}

static raft_index current_conf_index(const struct raft* r) {
    return r->history[r->n_history - 1].index;
}

static bool is_voter(const struct raft* r, raft_node_id id) {
    return raft_conf_role(current_conf(r), id) == RAFT_VOTER;
}

static raft_term term_at(const struct raft* r, raft_index index) {
    raft_term t = 0;
    (void)raft_log_term(&r->log, index, &t);
    return t;
}

static raft_index last_index(const struct raft* r) {
    return raft_log_last_index(&r->log);
}

static void* arena_alloc(struct raft* r, size_t size) {
    struct raft_arena_chunk* c = r->arena;
    size_t aligned =
        (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);

    if (aligned == 0) {
        aligned = sizeof(max_align_t);
    }
    if (c == NULL || c->cap - c->used < aligned) {
        size_t cap = aligned > RAFT_ARENA_CHUNK ? aligned : RAFT_ARENA_CHUNK;
        c = malloc(sizeof(*c) + cap);
        if (c == NULL) {
            r->out_of_memory = true;
            return NULL;
        }
        c->next = r->arena;
        c->used = 0;
        c->cap = cap;
        r->arena = c;
    }
    {
        void* p = (char*)c->data + c->used;
        c->used += aligned;
        return p;
    }
}

/* Frees all chunks but one, which is kept for the next batch. */
static void arena_reset(struct raft* r) {
    struct raft_arena_chunk* c = r->arena;

    if (c == NULL) {
        return;
    }
    while (c->next != NULL) {
        struct raft_arena_chunk* n = c->next;
        c->next = n->next;
        free(n);
    }
    if (c->cap > RAFT_ARENA_CHUNK) {
        free(c);
        r->arena = NULL;
        return;
    }
    c->used = 0;
}

static bool grow(void** p, size_t* cap, size_t need, size_t elem) {
    size_t n = *cap;
    void* q;

    if (need <= n) {
        return true;
    }
    while (n < need) {
        n = n == 0 ? 16 : n * 2;
    }
    q = realloc(*p, n * elem);
    if (q == NULL) {
        return false;
    }
    *p = q;
    *cap = n;
    return true;
}

static struct raft_message* new_message(struct raft* r,
                                        uint32_t type,
                                        raft_node_id to) {
    struct raft_message* m;

    if (!grow((void**)&r->msgs, &r->cap_msgs, r->n_msgs + 1,
              sizeof(*r->msgs))) {
        r->out_of_memory = true;
        return NULL;
    }
    m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->cfg.id;
    m->to = to;
    m->term = r->term;
    return m;
}

static void push_ready_read(struct raft* r,
                            uint64_t context,
                            raft_index index,
                            bool failed) {
    struct raft_read_state* s;

    if (!grow((void**)&r->ready_reads, &r->cap_ready_reads,
              r->n_ready_reads + 1, sizeof(*r->ready_reads))) {
        r->out_of_memory = true;
        return;
    }
    s = &r->ready_reads[r->n_ready_reads++];
    s->context = context;
    s->index = index;
    s->failed = failed;
}

/* ------------------------------------------------------------------ */
/* Membership                                                          */

static struct raft_progress* progress_of(struct raft* r, raft_node_id id) {
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return &r->prs[i];
        }
    }
    return NULL;
}

static uint32_t progress_slot(const struct raft* r, raft_node_id id) {
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return i;
        }
    }
    return RAFT_MAX_NODES;
}

/* Makes the leader's progress set match the current conf, keeping the
 * progress of members that stay. */
static void sync_progress_with_conf(struct raft* r) {
    const struct raft_conf* conf = current_conf(r);
    struct raft_progress old[RAFT_MAX_NODES];
    uint64_t old_acks[RAFT_MAX_NODES];
    uint32_t n_old = r->n_prs;

    memcpy(old, r->prs, sizeof(old));
    memcpy(old_acks, r->read_acks, sizeof(old_acks));
    r->n_prs = 0;
    for (uint32_t i = 0; i < conf->count; i++) {
        struct raft_progress* p = &r->prs[r->n_prs];
        bool found = false;
        for (uint32_t j = 0; j < n_old; j++) {
            if (old[j].id == conf->ids[i]) {
                *p = old[j];
                r->read_acks[r->n_prs] = old_acks[j];
                found = true;
            }
        }
        if (!found) {
            raft_progress_init(p, conf->ids[i], last_index(r),
                               r->cfg.max_inflight);
            p->recent_active = true;
            r->read_acks[r->n_prs] = 0;
        }
        r->n_prs++;
    }
}

/* Records a conf found at `index` of the log (§4.1: a server uses the
 * latest configuration in its log, committed or not). */
static void push_conf(struct raft* r,
                      raft_index index,
                      const struct raft_conf* conf) {
    if (r->n_history == RAFT_CONF_HISTORY) {
        memmove(&r->history[0], &r->history[1],
                (RAFT_CONF_HISTORY - 1) * sizeof(r->history[0]));
        r->n_history--;
    }
    r->history[r->n_history].index = index;
    r->history[r->n_history].conf = *conf;
    r->n_history++;
    if (r->role == RAFT_LEADER) {
        sync_progress_with_conf(r);
    }
}

/* Forgets confs at or after `index` (their entries were truncated). */
static void truncate_confs(struct raft* r, raft_index index) {
    uint32_t before = r->n_history;

    while (r->n_history > 1 && r->history[r->n_history - 1].index >= index) {
        r->n_history--;
    }
    if (before != r->n_history && r->role == RAFT_LEADER) {
        sync_progress_with_conf(r);
    }
}

/* Conf in effect at `index`, or NULL if no longer remembered. */
static const struct raft_conf* conf_at(const struct raft* r, raft_index index) {
    for (uint32_t i = r->n_history; i > 0; i--) {
        if (r->history[i - 1].index <= index) {
            return &r->history[i - 1].conf;
        }
    }
    return NULL;
}

/* Scans appended entries for confs. */
static void note_appended_confs(struct raft* r,
                                const struct raft_entry* e,
                                size_t n) {
    for (size_t i = 0; i < n; i++) {
        struct raft_conf conf;
        if (e[i].type != RAFT_ENTRY_CONF) {
            continue;
        }
        size_t used;
        if (raft_conf_decode_prefix(e[i].data, e[i].len, &conf, &used) ==
            RAFT_OK) {
            push_conf(r, e[i].index, &conf);
        }
    }
}

/* Appends to the view, keeping the conf history in line. */
static int log_append(struct raft* r, const struct raft_entry* e, size_t n) {
    int rv;

    if (n == 0) {
        return RAFT_OK;
    }
    if (e[0].index <= last_index(r)) {
        truncate_confs(r, e[0].index);
        if (r->persisted >= e[0].index) {
            r->persisted = e[0].index - 1;
        }
    }
    rv = raft_log_append(&r->log, e, n);
    if (rv != RAFT_OK) {
        return rv;
    }
    note_appended_confs(r, e, n);
    return RAFT_OK;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */

static struct raft_pending_read* read_at(struct raft* r, uint32_t i) {
    return &r->reads[(r->reads_start + i) % RAFT_MAX_READS];
}

/* Fails every pending read: leadership was lost before confirmation. */
static void fail_pending_reads(struct raft* r) {
    for (uint32_t i = 0; i < r->n_reads_pending; i++) {
        struct raft_pending_read* rd = read_at(r, i);
        if (rd->from == 0) {
            continue; /* already answered */
        }
        if (rd->from == r->cfg.id) {
            push_ready_read(r, rd->context, 0, true);
        } else {
            struct raft_message* m =
                new_message(r, RAFT_MSG_READ_INDEX_RESP, rd->from);
            if (m != NULL) {
                m->context = rd->context;
                m->reject = true;
            }
        }
    }
    r->n_reads_pending = 0;
    r->reads_start = 0;
}

static void release_read(struct raft* r, const struct raft_pending_read* rd) {
    if (rd->from == r->cfg.id) {
        push_ready_read(r, rd->context, rd->index, false);
    } else {
        struct raft_message* m =
            new_message(r, RAFT_MSG_READ_INDEX_RESP, rd->from);
        if (m != NULL) {
            m->context = rd->context;
            m->index = rd->index;
        }
    }
}

/* Number of voters (self and `requester` included) that acknowledged
 * round `seq`. */
static uint32_t read_acks_for(const struct raft* r,
                              uint64_t seq,
                              raft_node_id requester) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (!is_voter(r, r->prs[i].id)) {
            continue;
        }
        if (r->prs[i].id == r->cfg.id || r->prs[i].id == requester ||
            r->read_acks[i] >= seq) {
            n++;
        }
    }
    return n;
}

/*
 * The voter that asked for a read index acknowledges the leader with the
 * request itself (ours, on top of thesis §6.4 step 3). The request left the
 * follower after the reads it carries arrived there, in a term no higher
 * than the leader's, so the follower had not voted for a newer leader
 * before those reads began; together with heartbeat answers sent after the
 * index was recorded, a majority that had not moved on proves that no
 * newer leader committed anything those reads must see. In a 3-node
 * cluster the leader and the requester are that majority: a follower's
 * read costs no heartbeat round. The acknowledgement counts for the
 * requester's own reads only: reads registered later may postdate it.
 */
static raft_node_id read_requester(const struct raft* r,
                                   const struct raft_pending_read* rd) {
    if (rd->from == r->cfg.id) {
        return mutant(r, RAFT_MUTANT_READ_STALE_REQUESTER)
                   ? r->last_read_requester
                   : 0;
    }
    return rd->from;
}

/* Thesis §6.4 step 3: a read is released once a quorum answered a
 * heartbeat round sent after the read was registered. Reads wait until the
 * leader committed an entry of its term (step 1), marked by seq == 0. */
static void maybe_release_reads(struct raft* r) {
    uint32_t quorum = raft_quorum_size(raft_conf_voter_count(current_conf(r)));
    bool ready = term_at(r, r->commit) == r->term;
    bool no_confirm = mutant(r, RAFT_MUTANT_READ_NO_CONFIRM);

    for (uint32_t i = 0; i < r->n_reads_pending; i++) {
        struct raft_pending_read* rd = read_at(r, i);
        if (rd->from == 0) {
            continue; /* answered */
        }
        if (rd->seq == 0) {
            if (!ready) {
                continue;
            }
            rd->index = r->commit;
            /* UINT64_MAX: no round answered yet, only self and the
             * requester count. */
            if (!no_confirm &&
                read_acks_for(r, UINT64_MAX, read_requester(r, rd)) < quorum) {
                rd->seq = ++r->read_seq; /* asks for a round */
                continue;
            }
        } else if (!no_confirm &&
                   read_acks_for(r, rd->seq, read_requester(r, rd)) < quorum) {
            continue;
        }
        release_read(r, rd);
        rd->from = 0;
    }
    while (r->n_reads_pending > 0 && read_at(r, 0)->from == 0) {
        r->reads_start = (r->reads_start + 1) % RAFT_MAX_READS;
        r->n_reads_pending--;
    }
}

static int leader_register_read(struct raft* r,
                                uint64_t context,
                                raft_node_id from) {
    struct raft_pending_read* rd;

    if (r->n_reads_pending >= RAFT_MAX_READS) {
        return RAFT_EBUSY;
    }
    rd = read_at(r, r->n_reads_pending++);
    rd->context = context;
    rd->from = from;
    rd->index = 0;
    rd->seq = 0;
    maybe_release_reads(r);
    return RAFT_OK;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

struct copy_ctx {
    struct raft* r;
    struct raft_entry* out;
    size_t n;
    size_t cap;
};

static bool copy_entry(void* arg, const struct raft_entry* e) {
    struct copy_ctx* c = arg;
    struct raft_entry* d;

    if (c->n == c->cap) {
        return false;
    }
    d = &c->out[c->n];
    *d = *e;
    if (e->len > 0) {
        uint8_t* data = arena_alloc(c->r, e->len);
        if (data == NULL) {
            return false;
        }
        memcpy(data, e->data, e->len);
        d->data = data;
    } else {
        d->data = NULL;
    }
    c->n++;
    return true;
}

/* Copies up to `max_bytes` of entries [lo, hi) into the arena. */
static int copy_entries(struct raft* r,
                        raft_index lo,
                        raft_index hi,
                        size_t max_bytes,
                        struct raft_entry** out,
                        size_t* n) {
    struct copy_ctx c = {r, NULL, 0, 0};
    int rv;

    *out = NULL;
    *n = 0;
    if (hi <= lo) {
        return RAFT_OK;
    }
    c.cap = (size_t)(hi - lo);
    if (c.cap > RAFT_MAX_MSG_ENTRIES) {
        c.cap = RAFT_MAX_MSG_ENTRIES;
    }
    c.out = arena_alloc(r, c.cap * sizeof(*c.out));
    if (c.out == NULL) {
        return RAFT_ENOMEM;
    }
    rv = raft_log_visit(&r->log, lo, hi, max_bytes, copy_entry, &c);
    if (rv != RAFT_OK) {
        return rv;
    }
    if (r->out_of_memory) {
        return RAFT_ENOMEM;
    }
    *out = c.out;
    *n = c.n;
    return RAFT_OK;
}

static void send_snapshot(struct raft* r, struct raft_progress* pr) {
    struct raft_message* m;

    if (r->snapshot.index == 0) {
        return; /* nothing compacted without a snapshot: cannot happen */
    }
    m = new_message(r, RAFT_MSG_SNAPSHOT, pr->id);
    if (m == NULL) {
        return;
    }
    m->snapshot = r->snapshot;
    raft_progress_become_snapshot(pr, r->snapshot.index);
}

/* Sends the next AppendEntries to `pr` if its progress allows; with
 * `send_if_empty` also when there is nothing new (to carry commit). */
static bool maybe_send_append(struct raft* r,
                              struct raft_progress* pr,
                              bool send_if_empty) {
    raft_index prev = pr->next - 1;
    raft_term prev_term = 0;
    struct raft_entry* ents = NULL;
    size_t n = 0;
    struct raft_message* m;
    int rv;

    if (raft_progress_is_paused(pr)) {
        return false;
    }
    rv = raft_log_term(&r->log, prev, &prev_term);
    if (rv == RAFT_OK) {
        rv = copy_entries(r, pr->next, last_index(r) + 1, r->cfg.max_msg_bytes,
                          &ents, &n);
    }
    if (rv == RAFT_ECOMPACTED) {
        send_snapshot(r, pr);
        return true;
    }
    if (rv != RAFT_OK) {
        return false;
    }
    if (n == 0 && !send_if_empty) {
        return false;
    }
    m = new_message(r, RAFT_MSG_APPEND, pr->id);
    if (m == NULL) {
        return false;
    }
    m->index = prev;
    m->log_term = prev_term;
    m->entries = ents;
    m->n_entries = (uint32_t)n;
    m->commit = r->commit;
    if (n > 0 || pr->state == RAFT_PROGRESS_PROBE) {
        raft_progress_sent(pr, prev + n);
    }
    return true;
}

/* Streams to a follower while its window allows. */
static void send_appends(struct raft* r, struct raft_progress* pr) {
    /* Bounded: each send either pauses the progress or exhausts the log. */
    for (uint32_t i = 0; i <= r->cfg.max_inflight; i++) {
        if (!maybe_send_append(r, pr, false)) {
            break;
        }
        if (pr->state != RAFT_PROGRESS_REPLICATE) {
            break;
        }
    }
}

static void bcast_append(struct raft* r, bool send_if_empty) {
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress* pr = &r->prs[i];
        if (pr->id == r->cfg.id) {
            continue;
        }
        if (send_if_empty) {
            if (maybe_send_append(r, pr, true) &&
                pr->state == RAFT_PROGRESS_REPLICATE) {
                send_appends(r, pr);
            }
        } else {
            send_appends(r, pr);
        }
    }
}

/* Every heartbeat round gets a fresh number (shared with read sequence
 * numbers, so a round confirms every read registered before it) and its
 * send tick is remembered: the lease runs from when a round LEFT, not
 * from when its answer arrived (thesis §6.4.1; F6 in FINDINGS.md).
 * `to[i]` says whether prs[i] gets it. */
static void send_heartbeat_round(struct raft* r, const bool* to) {
    uint64_t round = ++r->read_seq;

    r->hb_rounds[round % RAFT_HB_ROUNDS] = round;
    r->hb_round_ticks[round % RAFT_HB_ROUNDS] = r->ticks;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress* pr = &r->prs[i];
        struct raft_message* m;
        if (pr->id == r->cfg.id || !to[i]) {
            continue;
        }
        m = new_message(r, RAFT_MSG_HEARTBEAT, pr->id);
        if (m == NULL) {
            return;
        }
        /* Never tell a follower to commit past what it is known to hold. */
        m->commit = pr->match < r->commit ? pr->match : r->commit;
        m->context = round;
    }
    r->read_seq_sent = round;
}

static void bcast_heartbeat(struct raft* r) {
    bool to[RAFT_MAX_NODES];

    for (uint32_t i = 0; i < r->n_prs; i++) {
        to[i] = true;
    }
    send_heartbeat_round(r, to);
}

/*
 * A round that only confirms reads goes to just enough voters to make a
 * quorum with the leader: those that answered the latest rounds (ours, on
 * top of thesis §6.4 step 3). Every answer costs a message in and out, and
 * in a 3-node cluster one answer is all a round needs. Should a chosen
 * voter not answer, the periodic heartbeat, which goes to everyone and
 * confirms every read registered before it, releases the reads.
 */
static void send_read_round(struct raft* r) {
    uint32_t quorum = raft_quorum_size(raft_conf_voter_count(current_conf(r)));
    bool to[RAFT_MAX_NODES];
    uint32_t chosen = 1; /* the leader itself */

    memset(to, 0, sizeof(to));
    while (chosen < quorum) {
        int best = -1;
        for (uint32_t i = 0; i < r->n_prs; i++) {
            raft_node_id id = r->prs[i].id;
            if (to[i] || id == r->cfg.id || !is_voter(r, id)) {
                continue;
            }
            if (best < 0 || r->read_acks[i] > r->read_acks[best]) {
                best = (int)i;
            }
        }
        if (best < 0) {
            break;
        }
        to[best] = true;
        chosen++;
    }
    send_heartbeat_round(r, to);
}

static void send_timeout_now(struct raft* r, raft_node_id to) {
    /* The target may campaign whenever the message lands, and voters grant
     * a forced vote despite our lease: no lease for the rest of the term
     * (F4 in tests/sim/FINDINGS.md). */
    r->lease_revoked = true;
    (void)new_message(r, RAFT_MSG_TIMEOUT_NOW, to);
}

/* ------------------------------------------------------------------ */
/* Commit                                                              */

static void become_follower(struct raft* r,
                            raft_term term,
                            raft_node_id leader);

/* After a conf entry commits, a leader that is no longer a voter steps
 * down (thesis §4.2.2). */
static void maybe_step_down_removed(struct raft* r) {
    if (r->role == RAFT_LEADER && current_conf_index(r) <= r->commit &&
        !is_voter(r, r->cfg.id)) {
        become_follower(r, r->term, 0);
    }
}

/* §5.3/§5.4.2: advance commit to the index a majority of voters hold, but
 * only by counting an entry of the current term. */
static bool maybe_commit(struct raft* r) {
    raft_index matches[RAFT_MAX_NODES];
    uint32_t n = 0;
    raft_index q;

    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (!is_voter(r, r->prs[i].id)) {
            continue;
        }
        matches[n++] =
            r->prs[i].id == r->cfg.id ? r->persisted : r->prs[i].match;
    }
    q = raft_quorum_committed_index(matches, n);
    if (q <= r->commit) {
        return false;
    }
    if (term_at(r, q) != r->term && !mutant(r, RAFT_MUTANT_COMMIT_OLD_TERM)) {
        return false;
    }
    r->commit = q;
    maybe_release_reads(r);
    maybe_step_down_removed(r);
    return true;
}

static void commit_to(struct raft* r, raft_index index) {
    if (index > last_index(r)) {
        index = last_index(r);
    }
    if (index > r->commit) {
        r->commit = index;
    }
}

/* ------------------------------------------------------------------ */
/* Roles                                                               */

static void reset_for_term(struct raft* r, raft_term term) {
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
        r->must_sync = true;
        r->lease_revoked = false;
    }
    /* Reads in flight were tied to the old leadership: fail them. */
    fail_pending_reads(r);
    r->leader = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    reset_randomized_timeout(r);
    r->transferee = 0;
    r->ack_target = 0;
    r->acked = 0;
    memset(r->votes, 0, sizeof(r->votes));
}

static void become_follower(struct raft* r,
                            raft_term term,
                            raft_node_id leader) {
    reset_for_term(r, term);
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->n_prs = 0;
}

static void become_leader(struct raft* r) {
    struct raft_entry noop;
    raft_index last = last_index(r);

    reset_for_term(r, r->term);
    r->role = RAFT_LEADER;
    r->leader = r->cfg.id;
    r->n_prs = 0;
    memset(r->read_acks, 0, sizeof(r->read_acks));
    r->last_read_requester = 0;
    r->n_reads_pending = 0;
    r->reads_start = 0;
    sync_progress_with_conf(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        raft_progress_init(&r->prs[i], r->prs[i].id, last, r->cfg.max_inflight);
        r->prs[i].recent_active = true;
        if (r->prs[i].id == r->cfg.id) {
            r->prs[i].match = r->persisted;
            raft_progress_become_replicate(&r->prs[i]);
        }
    }
    /* §5.4.2 / §8: commit an entry of the new term to learn what is
     * committed and to unblock reads and conf changes. */
    memset(&noop, 0, sizeof(noop));
    noop.term = r->term;
    noop.index = last + 1;
    noop.type = RAFT_ENTRY_NOOP;
    if (log_append(r, &noop, 1) != RAFT_OK) {
        r->out_of_memory = true;
        return;
    }
    r->noop_index = noop.index;
    bcast_append(r, false);
    (void)maybe_commit(r); /* a single voter commits alone once durable */
}

static uint32_t vote_tally(const struct raft* r, uint8_t what) {
    const struct raft_conf* conf = current_conf(r);
    uint32_t n = 0;
    for (uint32_t i = 0; i < conf->count; i++) {
        n += conf->roles[i] == RAFT_VOTER && r->votes[i] == what;
    }
    return n;
}

static void record_vote(struct raft* r, raft_node_id id, bool granted) {
    const struct raft_conf* conf = current_conf(r);
    for (uint32_t i = 0; i < conf->count; i++) {
        if (conf->ids[i] == id && r->votes[i] == 0) {
            r->votes[i] = granted ? 1 : 2;
        }
    }
}

static void campaign(struct raft* r, bool pre_vote, bool force);

static void check_election_result(struct raft* r) {
    uint32_t voters = raft_conf_voter_count(current_conf(r));
    enum raft_vote_result res =
        raft_quorum_vote_result(voters, vote_tally(r, 1), vote_tally(r, 2));

    if (res == RAFT_VOTE_WON) {
        if (r->role == RAFT_PRE_CANDIDATE) {
            campaign(r, false, false);
        } else {
            become_leader(r);
        }
    } else if (res == RAFT_VOTE_LOST) {
        become_follower(r, r->term, 0);
    }
}

/* §5.2 "To begin an election, a follower increments its current term and
 * transitions to candidate state"; with PreVote (thesis §9.6) it first
 * asks whether it could win, without touching its term. */
static void campaign(struct raft* r, bool pre_vote, bool force) {
    const struct raft_conf* conf = current_conf(r);
    raft_term vote_term;
    uint32_t type;

    if (pre_vote) {
        reset_for_term(r, r->term);
        r->role = RAFT_PRE_CANDIDATE;
        vote_term = r->term + 1;
        type = RAFT_MSG_PREVOTE;
    } else {
        reset_for_term(r, r->term + 1);
        r->role = RAFT_CANDIDATE;
        r->vote = r->cfg.id;
        vote_term = r->term;
        type = RAFT_MSG_VOTE;
    }
    r->n_prs = 0;
    record_vote(r, r->cfg.id, true);
    for (uint32_t i = 0; i < conf->count; i++) {
        struct raft_message* m;
        if (conf->roles[i] != RAFT_VOTER || conf->ids[i] == r->cfg.id) {
            continue;
        }
        m = new_message(r, type, conf->ids[i]);
        if (m == NULL) {
            return;
        }
        m->term = vote_term;
        m->index = last_index(r);
        m->log_term = raft_log_last_term(&r->log);
        m->force = force;
    }
    check_election_result(r);
}

static bool promotable(const struct raft* r) {
    return is_voter(r, r->cfg.id) && !r->log.has_snapshot;
}

/* ------------------------------------------------------------------ */
/* Handlers                                                            */

/* §5.4.1 election restriction: the candidate's log must be at least as
 * up-to-date as ours (last term, then last index). */
static bool log_up_to_date(const struct raft* r,
                           raft_term last_term,
                           raft_index last) {
    raft_term my_term = raft_log_last_term(&r->log);

    if (mutant(r, RAFT_MUTANT_VOTE_NO_LOG_CHECK)) {
        return true;
    }
    return last_term > my_term ||
           (last_term == my_term && last >= last_index(r));
}

static void handle_vote_request(struct raft* r, const struct raft_message* m) {
    bool pre = m->type == RAFT_MSG_PREVOTE;
    /* §5.2 "each server will vote for at most one candidate in a given
     * term"; a pre-vote for a future term binds nothing. */
    bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
                    (pre && m->term > r->term);
    struct raft_message* resp;

    resp = new_message(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP,
                       m->from);
    if (resp == NULL) {
        return;
    }
    if (can_vote && log_up_to_date(r, m->log_term, m->index)) {
        resp->term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            if (r->vote != m->from) {
                r->vote = m->from;
                /* The vote must be durable before this reply leaves. */
                r->must_sync =
                    r->must_sync || !mutant(r, RAFT_MUTANT_VOTE_BEFORE_DURABLE);
            }
        }
    } else {
        resp->reject = true;
    }
}

/* Last index <= `index` whose term is <= `term` (conflict search). */
static raft_index find_conflict_by_term(const struct raft* r,
                                        raft_index index,
                                        raft_term term) {
    raft_index last = last_index(r);

    if (index > last) {
        index = last;
    }
    for (;;) {
        raft_term t;
        int rv = raft_log_term(&r->log, index, &t);
        if (rv != RAFT_OK || t <= term || index == 0) {
            return index;
        }
        index--;
    }
}

/* Acknowledges to the leader everything verified and durable. */
static void maybe_ack(struct raft* r, bool always) {
    raft_index idx = r->ack_target;
    struct raft_message* m;

    if (r->leader == 0 || r->role != RAFT_FOLLOWER) {
        return;
    }
    if (!mutant(r, RAFT_MUTANT_ACK_BEFORE_DURABLE) && idx > r->persisted) {
        idx = r->persisted;
    }
    if (idx <= r->acked && !always) {
        return;
    }
    m = new_message(r, RAFT_MSG_APPEND_RESP, r->leader);
    if (m == NULL) {
        return;
    }
    m->index = idx;
    if (idx > r->acked) {
        r->acked = idx;
    }
}

/* First index where `e` disagrees with the log, or 0. */
static raft_index find_conflict(const struct raft* r,
                                const struct raft_entry* e,
                                size_t n) {
    raft_index last = last_index(r);
    for (size_t i = 0; i < n; i++) {
        if (e[i].index > last || term_at(r, e[i].index) != e[i].term) {
            return e[i].index;
        }
    }
    return 0;
}

static int handle_append(struct raft* r, const struct raft_message* m) {
    raft_index last_new = m->index + m->n_entries;
    raft_term prev_term = 0;
    int rv;

    if (m->index < r->commit) {
        /* Everything up to commit already matches (§5.3). */
        if (r->commit > r->ack_target) {
            r->ack_target = r->commit;
        }
        maybe_ack(r, true);
        return RAFT_OK;
    }
    rv = raft_log_term(&r->log, m->index, &prev_term);
    if (mutant(r, RAFT_MUTANT_APPEND_NO_PREV_CHECK) && rv == RAFT_OK) {
        prev_term = m->log_term;
    }
    if (rv != RAFT_OK || prev_term != m->log_term) {
        /* §5.3 consistency check failed: reject with a hint so the leader
         * can skip a whole term per round trip. */
        raft_index hint = find_conflict_by_term(r, m->index, m->log_term);
        struct raft_message* resp =
            new_message(r, RAFT_MSG_APPEND_RESP, m->from);
        if (resp != NULL) {
            resp->reject = true;
            resp->index = m->index;
            resp->reject_hint = hint;
            resp->log_term = term_at(r, hint);
        }
        return RAFT_OK;
    }
    {
        raft_index conflict = find_conflict(r, m->entries, m->n_entries);
        if (conflict != 0) {
            if (conflict <= r->commit) {
                /* The leader contradicts a committed entry: refuse it. */
                return RAFT_EINVAL;
            }
            rv = log_append(r, &m->entries[conflict - m->index - 1],
                            (size_t)(last_new - conflict + 1));
            if (rv != RAFT_OK) {
                return rv;
            }
        }
    }
    commit_to(r, m->commit < last_new ? m->commit : last_new);
    if (last_new > r->ack_target) {
        r->ack_target = last_new;
    }
    /* Every AppendEntries gets an answer, even a repeat of something
     * already acknowledged: the earlier answer may have been lost (F3). */
    maybe_ack(r, true);
    return RAFT_OK;
}

static void handle_heartbeat(struct raft* r, const struct raft_message* m) {
    struct raft_message* resp;

    commit_to(r, m->commit);
    resp = new_message(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (resp != NULL) {
        resp->context = m->context;
    }
}

static void handle_snapshot(struct raft* r, const struct raft_message* m) {
    const struct raft_snapshot_meta* s = &m->snapshot;

    if (s->index <= r->commit) {
        if (r->commit > r->ack_target) {
            r->ack_target = r->commit;
        }
        maybe_ack(r, true);
        return;
    }
    if (term_at(r, s->index) == s->term && s->index <= last_index(r)) {
        /* We hold the snapshot's last entry: keep the log (§7). */
        commit_to(r, s->index);
        if (s->index > r->ack_target) {
            r->ack_target = s->index;
        }
        maybe_ack(r, true);
        return;
    }
    /* Discard the log and take the snapshot (§7). The driver installs it
     * durably before any message of this batch leaves. */
    raft_log_restore(&r->log, s);
    r->n_history = 0;
    push_conf(r, s->index, &s->conf);
    r->snapshot = *s;
    r->commit = s->index;
    r->applied = s->index;
    r->persisted = s->index;
    r->must_sync = true;
    r->ack_target = s->index;
    maybe_ack(r, true);
}

static void handle_append_response(struct raft* r,
                                   struct raft_progress* pr,
                                   const struct raft_message* m) {
    if (m->reject) {
        raft_index hint = m->reject_hint;
        if (m->log_term > 0) {
            hint = find_conflict_by_term(r, m->reject_hint, m->log_term);
        }
        if (raft_progress_maybe_decrease(pr, m->index, hint)) {
            if (pr->state == RAFT_PROGRESS_REPLICATE) {
                raft_progress_become_probe(pr);
            }
            (void)maybe_send_append(r, pr, false);
        }
        return;
    }
    {
        if (!raft_progress_maybe_update(pr, m->index)) {
            /* A probe answered with exactly the known match proves the
             * logs agree up to it: stream from there instead of waiting
             * in PROBE for an answer that raises match (sim F7, etcd's
             * rule). */
            if (pr->state == RAFT_PROGRESS_PROBE && m->index == pr->match) {
                raft_progress_become_replicate(pr);
                send_appends(r, pr);
            }
            return;
        }
        if (pr->state == RAFT_PROGRESS_PROBE) {
            raft_progress_become_replicate(pr);
        } else if (pr->state == RAFT_PROGRESS_SNAPSHOT &&
                   pr->match >= pr->pending_snapshot) {
            raft_progress_become_probe(pr);
            raft_progress_become_replicate(pr);
        } else if (pr->state == RAFT_PROGRESS_REPLICATE) {
            raft_inflights_free_to(&pr->inflights, m->index);
        }
        if (maybe_commit(r)) {
            if (r->role != RAFT_LEADER) {
                return;
            }
            bcast_append(r, true);
        } else {
            send_appends(r, pr);
        }
        if (pr->id == r->transferee && pr->match == last_index(r)) {
            send_timeout_now(r, pr->id);
        }
    }
}

static int step_leader(struct raft* r, const struct raft_message* m) {
    struct raft_progress* pr = progress_of(r, m->from);
    uint32_t slot = progress_slot(r, m->from);

    if (m->type == RAFT_MSG_READ_INDEX) {
        r->last_read_requester = m->from;
        if (r->transferee != 0 ||
            leader_register_read(r, m->context, m->from) != RAFT_OK) {
            struct raft_message* resp =
                new_message(r, RAFT_MSG_READ_INDEX_RESP, m->from);
            if (resp != NULL) {
                resp->context = m->context;
                resp->reject = true;
            }
        }
        return RAFT_OK;
    }
    if (pr == NULL) {
        return RAFT_OK; /* not a member (anymore) */
    }
    switch (m->type) {
        case RAFT_MSG_APPEND_RESP:
            if (m->index > last_index(r)) {
                return RAFT_EINVAL; /* acknowledges what we never sent */
            }
            pr->recent_active = true;
            pr->last_contact_tick = r->ticks;
            handle_append_response(r, pr, m);
            break;
        case RAFT_MSG_HEARTBEAT_RESP:
            pr->recent_active = true;
            pr->last_contact_tick = r->ticks;
            pr->probe_sent = false;
            if (m->context != 0 &&
                r->hb_rounds[m->context % RAFT_HB_ROUNDS] == m->context &&
                r->hb_round_ticks[m->context % RAFT_HB_ROUNDS] >
                    pr->lease_tick) {
                pr->lease_tick = r->hb_round_ticks[m->context % RAFT_HB_ROUNDS];
            }
            if (m->context > r->read_acks[slot] &&
                m->context <= r->read_seq_sent) {
                r->read_acks[slot] = m->context;
            }
            if (pr->match < last_index(r)) {
                send_appends(r, pr);
            }
            maybe_release_reads(r);
            break;
        default:
            break; /* stale votes, or another leader's traffic in our term */
    }
    return RAFT_OK;
}

static int step_candidate(struct raft* r, const struct raft_message* m) {
    uint32_t want = r->role == RAFT_PRE_CANDIDATE ? RAFT_MSG_PREVOTE_RESP
                                                  : RAFT_MSG_VOTE_RESP;
    switch (m->type) {
        case RAFT_MSG_APPEND:
        case RAFT_MSG_HEARTBEAT:
        case RAFT_MSG_SNAPSHOT:
            /* §5.2: a candidate that hears from a legitimate leader of its
             * term returns to follower state. */
            become_follower(r, m->term, m->from);
            r->election_elapsed = 0;
            if (m->type == RAFT_MSG_APPEND) {
                return handle_append(r, m);
            }
            if (m->type == RAFT_MSG_HEARTBEAT) {
                handle_heartbeat(r, m);
            } else {
                handle_snapshot(r, m);
            }
            return RAFT_OK;
        default:
            break;
    }
    if (m->type == want) {
        record_vote(r, m->from, !m->reject);
        check_election_result(r);
    }
    return RAFT_OK;
}

/* Releases a follower read the leader answered, if this node asked it. */
static void follower_read_answered(struct raft* r,
                                   const struct raft_message* m) {
    for (uint32_t i = 0; i < r->n_reads_pending; i++) {
        struct raft_pending_read* rd = read_at(r, i);
        if (rd->from == r->cfg.id && rd->context == m->context) {
            push_ready_read(r, m->context, m->index, m->reject);
            rd->from = 0; /* answered */
            break;
        }
    }
    while (r->n_reads_pending > 0 && read_at(r, 0)->from == 0) {
        r->reads_start = (r->reads_start + 1) % RAFT_MAX_READS;
        r->n_reads_pending--;
    }
}

static int step_follower(struct raft* r, const struct raft_message* m) {
    switch (m->type) {
        case RAFT_MSG_APPEND:
            r->election_elapsed = 0;
            r->leader = m->from;
            return handle_append(r, m);
        case RAFT_MSG_HEARTBEAT:
            r->election_elapsed = 0;
            r->leader = m->from;
            handle_heartbeat(r, m);
            break;
        case RAFT_MSG_SNAPSHOT:
            r->election_elapsed = 0;
            r->leader = m->from;
            handle_snapshot(r, m);
            break;
        case RAFT_MSG_TIMEOUT_NOW:
            /* Thesis §3.10: the transfer target starts an election at once,
             * skipping PreVote and the leader lease. */
            if (promotable(r)) {
                campaign(r, false, true);
            }
            break;
        case RAFT_MSG_READ_INDEX_RESP:
            follower_read_answered(r, m);
            break;
        case RAFT_MSG_READ_INDEX: {
            struct raft_message* resp =
                new_message(r, RAFT_MSG_READ_INDEX_RESP, m->from);
            if (resp != NULL) {
                resp->context = m->context;
                resp->reject = true;
            }
            break;
        }
        default:
            break;
    }
    return RAFT_OK;
}

/* Rejects messages no correct peer sends; they change nothing. */
static bool message_is_valid(const struct raft* r,
                             const struct raft_message* m) {
    if (m == NULL || m->type == 0 || m->type >= RAFT_MSG_TYPE_MAX) {
        return false;
    }
    if (m->from == 0 || m->from == r->cfg.id || m->term == 0) {
        return false;
    }
    if (m->term >= RAFT_VALUE_LIMIT || m->log_term >= RAFT_VALUE_LIMIT ||
        m->index >= RAFT_VALUE_LIMIT || m->commit >= RAFT_VALUE_LIMIT ||
        m->reject_hint >= RAFT_VALUE_LIMIT ||
        m->snapshot.index >= RAFT_VALUE_LIMIT ||
        m->snapshot.term >= RAFT_VALUE_LIMIT) {
        return false;
    }
    if (m->to != 0 && m->to != r->cfg.id) {
        return false;
    }
    if (m->n_entries > 0) {
        if (m->type != RAFT_MSG_APPEND || m->entries == NULL ||
            m->n_entries > RAFT_MAX_MSG_ENTRIES) {
            return false;
        }
        for (uint32_t i = 0; i < m->n_entries; i++) {
            const struct raft_entry* e = &m->entries[i];
            raft_term prev = i == 0 ? m->log_term : m->entries[i - 1].term;
            if (e->index != m->index + 1 + i || e->term < prev ||
                e->term > m->term || e->type > RAFT_ENTRY_CONF ||
                e->len > r->cfg.max_entry_bytes ||
                (e->len > 0 && e->data == NULL)) {
                return false;
            }
        }
    }
    if (m->type == RAFT_MSG_APPEND && m->log_term > m->term) {
        return false;
    }
    if (m->type == RAFT_MSG_SNAPSHOT &&
        (m->snapshot.index == 0 || m->snapshot.term == 0 ||
         m->snapshot.term > m->term || m->snapshot.conf.count == 0 ||
         m->snapshot.conf.count > RAFT_MAX_NODES)) {
        return false;
    }
    return true;
}

/* The term rules shared by every role (§5.1, thesis §6.2 and §9.6). */
static int step_message(struct raft* r, const struct raft_message* m) {
    if (m->term > r->term) {
        bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
        if (vote_req && !m->force && r->cfg.check_quorum &&
            (r->leader != 0 || r->start_guard) &&
            r->election_elapsed < r->cfg.election_ticks) {
            /* Within a leader's lease: a disruptive candidate is ignored
             * (thesis §4.2.3). */
            return RAFT_OK;
        }
        if (m->type == RAFT_MSG_PREVOTE ||
            (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* Pre-votes never change terms. */
        } else if (m->type == RAFT_MSG_APPEND ||
                   m->type == RAFT_MSG_HEARTBEAT ||
                   m->type == RAFT_MSG_SNAPSHOT) {
            become_follower(r, m->term, m->from);
        } else {
            become_follower(r, m->term, 0);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
            /* Tell a stale leader about the new term so it steps down. */
            (void)new_message(r, RAFT_MSG_APPEND_RESP, m->from);
        } else if (m->type == RAFT_MSG_PREVOTE) {
            struct raft_message* resp =
                new_message(r, RAFT_MSG_PREVOTE_RESP, m->from);
            if (resp != NULL) {
                resp->reject = true;
            }
        }
        return RAFT_OK;
    }
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        handle_vote_request(r, m);
        return RAFT_OK;
    }
    switch (r->role) {
        case RAFT_LEADER:
            return step_leader(r, m);
        case RAFT_CANDIDATE:
        case RAFT_PRE_CANDIDATE:
            return step_candidate(r, m);
        default:
            return step_follower(r, m);
    }
}

/* ------------------------------------------------------------------ */
/* Ticks and local events                                              */

static uint32_t active_voters(const struct raft* r) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (is_voter(r, r->prs[i].id) &&
            (r->prs[i].id == r->cfg.id || r->prs[i].recent_active)) {
            n++;
        }
    }
    return n;
}

/* Appends lost in REPLICATE are never answered, and nothing else would
 * resend them: a follower whose match has not moved for half an election
 * timeout while it lags goes back to PROBE, which resends from match + 1
 * (F2 in tests/sim/FINDINGS.md). */
static void maybe_unstall(struct raft* r, struct raft_progress* pr) {
    uint32_t limit = r->cfg.election_ticks / 2;

    if (pr->id == r->cfg.id || pr->state != RAFT_PROGRESS_REPLICATE ||
        pr->match >= last_index(r)) {
        pr->stall_ticks = 0;
        pr->stall_match = pr->match;
        return;
    }
    if (pr->match != pr->stall_match) {
        pr->stall_match = pr->match;
        pr->stall_ticks = 0;
        return;
    }
    if (++pr->stall_ticks >= (limit < 2 ? 2 : limit)) {
        pr->stall_ticks = 0;
        raft_progress_become_probe(pr);
        (void)maybe_send_append(r, pr, false);
    }
}

static void tick_leader(struct raft* r) {
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        uint32_t voters = raft_conf_voter_count(current_conf(r));
        r->election_elapsed = 0;
        /* CheckQuorum (thesis §6.2): a leader that did not hear from a
         * majority within an election timeout steps down. */
        if (r->cfg.check_quorum &&
            active_voters(r) < raft_quorum_size(voters)) {
            become_follower(r, r->term, 0);
            return;
        }
        for (uint32_t i = 0; i < r->n_prs; i++) {
            if (r->prs[i].id != r->cfg.id) {
                r->prs[i].recent_active = false;
            }
        }
        /* Thesis §3.10: abort a transfer that did not finish in time. */
        r->transferee = 0;
    }
    for (uint32_t i = 0; i < r->n_prs; i++) {
        maybe_unstall(r, &r->prs[i]);
    }
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress* pr = &r->prs[i];
        /* A snapshot that never landed is retried from PROBE. */
        if (pr->state == RAFT_PROGRESS_SNAPSHOT &&
            ++pr->snapshot_ticks >= 2 * r->cfg.election_ticks) {
            raft_progress_become_probe(pr);
        }
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        bcast_heartbeat(r);
    }
}

static void tick_election(struct raft* r) {
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        r->start_guard = false;
    }
    if (promotable(r) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        campaign(r, r->cfg.pre_vote, false);
    }
}

static void on_persisted(struct raft* r, raft_index index, raft_term term) {
    if (!raft_log_stable_to(&r->log, index, term)) {
        return; /* stale: the entry was replaced since */
    }
    if (index <= r->persisted) {
        return;
    }
    r->persisted = index;
    if (r->role == RAFT_LEADER) {
        struct raft_progress* self = progress_of(r, r->cfg.id);
        if (self != NULL) {
            (void)raft_progress_maybe_update(self, index);
        }
        if (maybe_commit(r) && r->role == RAFT_LEADER) {
            bcast_append(r, true);
        }
    } else {
        maybe_ack(r, false);
    }
}

int raft_step(struct raft* r, const struct raft_event* ev) {
    if (ev == NULL) {
        return RAFT_EINVAL;
    }
    switch (ev->type) {
        case RAFT_EVENT_TICK:
            r->ticks++;
            if (r->role == RAFT_LEADER) {
                tick_leader(r);
            } else {
                tick_election(r);
            }
            return RAFT_OK;
        case RAFT_EVENT_RECEIVE:
            if (!message_is_valid(r, ev->message)) {
                return RAFT_EINVAL;
            }
            return step_message(r, ev->message);
        case RAFT_EVENT_PERSISTED:
            on_persisted(r, ev->index, ev->term);
            return RAFT_OK;
        case RAFT_EVENT_CAMPAIGN:
            if (r->role != RAFT_LEADER && promotable(r)) {
                campaign(r, r->cfg.pre_vote, false);
            }
            return RAFT_OK;
        case RAFT_EVENT_SNAPSHOT_DONE:
        case RAFT_EVENT_UNREACHABLE: {
            struct raft_progress* pr;
            if (r->role != RAFT_LEADER ||
                (pr = progress_of(r, ev->peer)) == NULL) {
                return RAFT_OK;
            }
            if (ev->type == RAFT_EVENT_UNREACHABLE) {
                if (pr->state == RAFT_PROGRESS_REPLICATE) {
                    raft_progress_become_probe(pr);
                }
            } else if (pr->state == RAFT_PROGRESS_SNAPSHOT) {
                if (!ev->ok) {
                    pr->pending_snapshot = 0;
                }
                raft_progress_become_probe(pr);
            }
            return RAFT_OK;
        }
        default:
            return RAFT_EINVAL;
    }
}

/* ------------------------------------------------------------------ */
/* Driver requests                                                     */

int raft_propose(struct raft* r,
                 uint32_t type,
                 const uint8_t* const* data,
                 const uint32_t* lens,
                 size_t n,
                 raft_index* first_index,
                 raft_term* term) {
    struct raft_entry stack[64];
    struct raft_entry* e = stack;
    raft_index first = last_index(r) + 1;
    int rv;

    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (r->transferee != 0) {
        return RAFT_ETRANSFER;
    }
    if (n == 0 || n > RAFT_MAX_MSG_ENTRIES ||
        (type != RAFT_ENTRY_NORMAL && type != RAFT_ENTRY_NOOP)) {
        return RAFT_EINVAL;
    }
    if (last_index(r) - r->commit + n > r->cfg.max_uncommitted_entries) {
        return RAFT_EBUSY;
    }
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > r->cfg.max_entry_bytes) {
            return RAFT_ETOOBIG;
        }
        if (lens[i] > 0 && data[i] == NULL) {
            return RAFT_EINVAL;
        }
    }
    if (n > 64) {
        e = malloc(n * sizeof(*e));
        if (e == NULL) {
            return RAFT_ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        e[i].term = r->term;
        e[i].index = first + i;
        e[i].type = type;
        e[i].len = lens[i];
        e[i].data = data[i];
    }
    rv = log_append(r, e, n);
    if (e != stack) {
        free(e);
    }
    if (rv != RAFT_OK) {
        return rv;
    }
    if (first_index != NULL) {
        *first_index = first;
    }
    if (term != NULL) {
        *term = r->term;
    }
    bcast_append(r, false);
    return RAFT_OK;
}

static int check_conf_change(const struct raft* r,
                             int change,
                             raft_node_id id,
                             struct raft_conf* next) {
    int role = raft_conf_role(current_conf(r), id);

    *next = *current_conf(r);
    if (id == 0) {
        return RAFT_EINVAL;
    }
    switch (change) {
        case RAFT_CONF_ADD_LEARNER:
            if (role >= 0) {
                return RAFT_EEXIST;
            }
            if (next->count >= RAFT_MAX_NODES) {
                return RAFT_EBUSY;
            }
            next->ids[next->count] = id;
            next->roles[next->count] = RAFT_LEARNER;
            next->count++;
            return RAFT_OK;
        case RAFT_CONF_PROMOTE: {
            const struct raft_progress* pr = NULL;
            if (role < 0) {
                return RAFT_ENOTFOUND;
            }
            if (role == RAFT_VOTER) {
                return RAFT_EEXIST;
            }
            for (uint32_t i = 0; i < r->n_prs; i++) {
                if (r->prs[i].id == id) {
                    pr = &r->prs[i];
                }
            }
            if (pr == NULL ||
                pr->match + r->cfg.learner_catchup_gap < last_index(r)) {
                return RAFT_ENOTCAUGHTUP;
            }
            for (uint32_t i = 0; i < next->count; i++) {
                if (next->ids[i] == id) {
                    next->roles[i] = RAFT_VOTER;
                }
            }
            return RAFT_OK;
        }
        case RAFT_CONF_REMOVE: {
            uint32_t j = 0;
            if (role < 0) {
                return RAFT_ENOTFOUND;
            }
            if (role == RAFT_VOTER && raft_conf_voter_count(next) == 1) {
                return RAFT_EINVAL; /* the last voter cannot leave */
            }
            for (uint32_t i = 0; i < next->count; i++) {
                if (next->ids[i] != id) {
                    next->ids[j] = next->ids[i];
                    next->roles[j] = next->roles[i];
                    j++;
                }
            }
            next->count = j;
            next->ids[j] = 0;
            next->roles[j] = 0;
            return RAFT_OK;
        }
        default:
            return RAFT_EINVAL;
    }
}

int raft_change_conf_ctx(struct raft* r,
                         int change,
                         raft_node_id id,
                         const uint8_t* context,
                         size_t context_len,
                         raft_index* index) {
    struct raft_conf next;
    uint8_t buf[RAFT_CONF_ENCODED_MAX + RAFT_CONF_CONTEXT_MAX];
    struct raft_entry e;
    int rv;

    if (context_len > RAFT_CONF_CONTEXT_MAX ||
        (context_len > 0 && context == NULL)) {
        return RAFT_EINVAL;
    }
    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (r->transferee != 0) {
        return RAFT_ETRANSFER;
    }
    /* Thesis §4.1: one change at a time, and only once this leader has
     * committed an entry of its own term (the fix to the bug in §4.1). */
    if (current_conf_index(r) > r->commit) {
        return RAFT_ECONFPENDING;
    }
    if (term_at(r, r->commit) != r->term) {
        return RAFT_ENOTREADY;
    }
    rv = check_conf_change(r, change, id, &next);
    if (rv != RAFT_OK) {
        return rv;
    }
    memset(&e, 0, sizeof(e));
    e.term = r->term;
    e.index = last_index(r) + 1;
    e.type = RAFT_ENTRY_CONF;
    e.len = (uint32_t)raft_conf_encode(&next, buf);
    if (context_len > 0) {
        memcpy(buf + e.len, context, context_len);
        e.len += (uint32_t)context_len;
    }
    e.data = buf;
    rv = log_append(r, &e, 1);
    if (rv != RAFT_OK) {
        return rv;
    }
    if (index != NULL) {
        *index = e.index;
    }
    bcast_append(r, false);
    return RAFT_OK;
}

int raft_change_conf(struct raft* r,
                     int change,
                     raft_node_id id,
                     raft_index* index) {
    return raft_change_conf_ctx(r, change, id, NULL, 0, index);
}

int raft_read_index(struct raft* r, uint64_t context) {
    struct raft_message* m;

    if (r->role == RAFT_LEADER) {
        return leader_register_read(r, context, r->cfg.id);
    }
    if (r->leader == 0 || r->role != RAFT_FOLLOWER) {
        return RAFT_ENOLEADER;
    }
    if (r->n_reads_pending >= RAFT_MAX_READS) {
        return RAFT_EBUSY;
    }
    /* Thesis §6.4.1 (reads on followers): ask the leader for its index.
     * The request is remembered so that only a real answer is released and
     * a leader change fails it. */
    m = new_message(r, RAFT_MSG_READ_INDEX, r->leader);
    if (m == NULL) {
        return RAFT_ENOMEM;
    }
    m->context = context;
    {
        struct raft_pending_read* rd = read_at(r, r->n_reads_pending++);
        rd->context = context;
        rd->from = r->cfg.id;
        rd->index = 0;
        rd->seq = 0;
    }
    return RAFT_OK;
}

int raft_transfer_leader(struct raft* r, raft_node_id to) {
    struct raft_progress* pr;

    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (to == r->cfg.id || !is_voter(r, to) ||
        (pr = progress_of(r, to)) == NULL) {
        return RAFT_EINVAL;
    }
    if (r->transferee == to) {
        return RAFT_OK;
    }
    r->transferee = to;
    r->election_elapsed = 0; /* the abort timer (see tick_leader) */
    if (pr->match == last_index(r)) {
        send_timeout_now(r, to);
    } else {
        send_appends(r, pr);
    }
    return RAFT_OK;
}

int raft_snapshot_taken(struct raft* r,
                        raft_index index,
                        struct raft_snapshot_meta* meta) {
    const struct raft_conf* conf;
    raft_term t;

    if (index > r->applied || index <= r->snapshot.index) {
        return RAFT_EINVAL;
    }
    if (raft_log_term(&r->log, index, &t) != RAFT_OK) {
        return RAFT_EINVAL;
    }
    conf = conf_at(r, index);
    if (conf == NULL) {
        return RAFT_EINVAL;
    }
    r->snapshot.index = index;
    r->snapshot.term = t;
    r->snapshot.conf = *conf;
    if (meta != NULL) {
        *meta = r->snapshot;
    }
    return RAFT_OK;
}

int raft_send_snapshot(struct raft* r, raft_node_id to) {
    struct raft_progress* pr;

    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (to == r->cfg.id || (pr = progress_of(r, to)) == NULL) {
        return RAFT_ENOTFOUND;
    }
    if (r->snapshot.index == 0) {
        return RAFT_ECOMPACTED;
    }
    send_snapshot(r, pr);
    return RAFT_OK;
}

bool raft_lease_valid(const struct raft* r) {
    uint32_t n = 0;
    uint64_t horizon;

    if (r->role != RAFT_LEADER || !r->cfg.check_quorum || r->transferee != 0 ||
        r->lease_revoked) {
        return false;
    }
    /* Followers refuse votes for an election timeout after hearing from
     * us; count contacts well inside that window. */
    horizon = r->cfg.election_ticks / 2;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct raft_progress* pr = &r->prs[i];
        if (!is_voter(r, pr->id)) {
            continue;
        }
        if (pr->id == r->cfg.id ||
            (pr->lease_tick > 0 && r->ticks - pr->lease_tick < horizon)) {
            n++;
        }
    }
    return n >= raft_quorum_size(raft_conf_voter_count(current_conf(r))) &&
           term_at(r, r->commit) == r->term;
}

/* ------------------------------------------------------------------ */
/* Ready / advance                                                     */

static raft_index apply_limit(const struct raft* r) {
    /* Only entries this node holds durably are applied, so a crash never
     * leaves the state machine ahead of the log. */
    return r->commit < r->persisted ? r->commit : r->persisted;
}

/* The last heartbeat round is still waiting for its quorum and left less
 * than a heartbeat interval ago. Reads registered meanwhile wait for it and
 * then share the next round: under load one round is in flight at a time
 * instead of one per ready batch, which costs each follower a message in
 * and out per round. A round that was lost is replaced by the next
 * heartbeat tick. */
static bool read_round_in_flight(const struct raft* r) {
    uint64_t s = r->read_seq_sent;
    uint32_t quorum = raft_quorum_size(raft_conf_voter_count(current_conf(r)));

    if (s == 0 || r->hb_rounds[s % RAFT_HB_ROUNDS] != s ||
        read_acks_for(r, s, 0) >= quorum) {
        return false;
    }
    return r->ticks - r->hb_round_ticks[s % RAFT_HB_ROUNDS] <
           r->cfg.heartbeat_ticks;
}

static bool read_round_pending(const struct raft* r) {
    return r->role == RAFT_LEADER && r->read_seq > r->read_seq_sent &&
           !read_round_in_flight(r);
}

bool raft_has_ready(const struct raft* r) {
    const struct raft_entry* e;
    struct raft_hard_state hs = {r->term, r->vote, r->commit};

    return r->n_msgs > 0 || r->n_ready_reads > 0 ||
           raft_log_unhanded(&r->log, &e) > 0 ||
           (r->log.has_snapshot && !r->log.snapshot_handed) ||
           memcmp(&hs, &r->handed_hs, sizeof(hs)) != 0 ||
           r->applied < apply_limit(r) || read_round_pending(r);
}

/* Data bytes of a message's entries. */
static size_t message_bytes(const struct raft_message* m) {
    size_t bytes = 0;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        bytes += m->entries[i].len;
    }
    return bytes;
}

/* Folds `m` into `into` when both are appends to the same follower and
 * `m` continues exactly where `into` ends: the follower then receives
 * what the two would have told it, in one message. Returns true if
 * merged. */
static bool merge_appends(struct raft* r,
                          struct raft_message* into,
                          const struct raft_message* m) {
    struct raft_entry* ents;
    size_t n = (size_t)into->n_entries + m->n_entries;

    if (into->type != RAFT_MSG_APPEND || m->type != RAFT_MSG_APPEND ||
        into->term != m->term || m->index != into->index + into->n_entries ||
        message_bytes(into) + message_bytes(m) > r->cfg.max_msg_bytes) {
        return false;
    }
    if (m->n_entries > 0) {
        ents = arena_alloc(r, n * sizeof(*ents));
        if (ents == NULL) {
            return false;
        }
        if (into->n_entries > 0) {
            memcpy(ents, into->entries, into->n_entries * sizeof(*ents));
        }
        memcpy(ents + into->n_entries, m->entries,
               m->n_entries * sizeof(*ents));
        into->entries = ents;
        into->n_entries = (uint32_t)n;
    }
    if (m->commit > into->commit) {
        into->commit = m->commit;
    }
    return true;
}

/* Acknowledgements are cumulative: of two successes to the same leader,
 * the later (covering at least as much) is all it needs. */
static bool merge_acks(struct raft_message* into,
                       const struct raft_message* m) {
    if (into->type != RAFT_MSG_APPEND_RESP || m->type != RAFT_MSG_APPEND_RESP ||
        into->reject || m->reject || into->term != m->term ||
        m->index < into->index) {
        return false;
    }
    *into = *m;
    return true;
}

/* Under load a round often holds several appends (or acknowledgements)
 * for the same peer; each message costs the driver a network round trip,
 * so they are folded when the result is equivalent. Only a message that
 * directly follows another to the same peer is folded, so the order of
 * what each peer receives never changes. */
static void coalesce_messages(struct raft* r) {
    size_t kept = 0;

    for (size_t i = 0; i < r->n_msgs; i++) {
        struct raft_message* m = &r->msgs[i];
        bool merged = false;
        for (size_t j = kept; j-- > 0;) {
            struct raft_message* prev = &r->msgs[j];
            if (prev->to != m->to) {
                continue;
            }
            merged = merge_appends(r, prev, m) || merge_acks(prev, m);
            break;
        }
        if (!merged) {
            if (kept != i) {
                r->msgs[kept] = *m;
            }
            kept++;
        }
    }
    r->n_msgs = kept;
}

void raft_ready(struct raft* r, struct raft_ready* rd) {
    struct raft_hard_state hs;

    memset(rd, 0, sizeof(*rd));
    memset(&hs, 0, sizeof(hs));
    if (read_round_pending(r)) {
        /* One heartbeat round confirms every read registered so far. It
         * does not replace the periodic heartbeat: it may skip voters. */
        send_read_round(r);
    }
    hs.term = r->term;
    hs.vote = r->vote;
    hs.commit = r->commit;
    rd->hard_state = hs;
    rd->hard_state_changed = memcmp(&hs, &r->handed_hs, sizeof(hs)) != 0;
    rd->must_sync = r->must_sync;
    if (r->log.has_snapshot && !r->log.snapshot_handed) {
        rd->snapshot = &r->log.snapshot;
        r->log.snapshot_handed = true;
    }
    rd->n_entries = raft_log_unhanded(&r->log, &rd->entries);
    raft_log_mark_handed(&r->log);
    if (r->applied < apply_limit(r)) {
        struct raft_entry* ents;
        size_t n;
        if (copy_entries(r, r->applied + 1, apply_limit(r) + 1,
                         r->cfg.max_apply_bytes, &ents, &n) == RAFT_OK) {
            rd->committed = ents;
            rd->n_committed = n;
            if (n > 0) {
                r->applied = ents[n - 1].index;
            }
        }
    }
    coalesce_messages(r);
    rd->messages = r->msgs;
    rd->n_messages = r->n_msgs;
    rd->reads = r->ready_reads;
    rd->n_reads = r->n_ready_reads;
    r->handed_hs = hs;
}

void raft_advance(struct raft* r) {
    r->must_sync = false;
    r->n_msgs = 0;
    r->n_ready_reads = 0;
    arena_reset(r);
    r->out_of_memory = false;
    if (r->log.has_snapshot && r->log.snapshot_handed) {
        /* The driver installed it: storage now starts after it. */
        r->log.has_snapshot = false;
        r->log.snapshot_handed = false;
    }
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

/* Rebuilds the conf history from the snapshot and the log's conf
 * entries. Bounded by the log length, done once at start. */
static int load_confs(struct raft* r, const struct raft_start_state* start) {
    raft_index lo = raft_log_first_index(&r->log);
    raft_index hi = last_index(r) + 1;

    /* Confs up to the snapshot are summed up by the snapshot's conf. */
    if (lo <= start->snapshot.index) {
        lo = start->snapshot.index + 1;
    }

    r->n_history = 0;
    push_conf(
        r, start->snapshot.index,
        start->snapshot.index > 0 ? &start->snapshot.conf : &start->bootstrap);
    while (lo < hi) {
        struct raft_entry* ents;
        size_t n;
        int rv = copy_entries(r, lo, hi, 1024 * 1024, &ents, &n);
        if (rv != RAFT_OK) {
            return rv;
        }
        if (n == 0) {
            return RAFT_ESTORAGE;
        }
        note_appended_confs(r, ents, n);
        lo = ents[n - 1].index + 1;
        arena_reset(r);
    }
    return RAFT_OK;
}

static int validate_config(const struct raft_config* cfg) {
    if (cfg->id == 0 || cfg->election_ticks < 2 || cfg->heartbeat_ticks == 0 ||
        cfg->heartbeat_ticks >= cfg->election_ticks || cfg->max_inflight == 0 ||
        cfg->max_msg_bytes == 0 || cfg->max_apply_bytes == 0 ||
        cfg->max_uncommitted_entries == 0 || cfg->mutant < 0 ||
        cfg->mutant >= RAFT_MUTANT_COUNT) {
        return RAFT_EINVAL;
    }
    return RAFT_OK;
}

int raft_init(const struct raft_config* cfg,
              const struct raft_storage* storage,
              const struct raft_start_state* start,
              struct raft** out) {
    struct raft* r;
    raft_index last;
    int rv;

    *out = NULL;
    if (cfg == NULL || storage == NULL || start == NULL ||
        validate_config(cfg) != RAFT_OK) {
        return RAFT_EINVAL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return RAFT_ENOMEM;
    }
    r->reads = calloc(RAFT_MAX_READS, sizeof(*r->reads));
    if (r->reads == NULL) {
        free(r);
        return RAFT_ENOMEM;
    }
    r->cfg = *cfg;
    if (r->cfg.max_inflight > RAFT_MAX_INFLIGHT) {
        r->cfg.max_inflight = RAFT_MAX_INFLIGHT;
    }
    r->rng = cfg->seed;
    raft_log_init(&r->log, storage);
    r->snapshot = start->snapshot;
    r->term = start->hard_state.term;
    r->vote = start->hard_state.vote;
    last = last_index(r);
    if (last < start->snapshot.index) {
        rv = RAFT_ESTORAGE; /* the log must reach the snapshot */
        goto fail;
    }
    rv = load_confs(r, start);
    if (rv != RAFT_OK) {
        goto fail;
    }
    /* The stored commit may run ahead of a log that lost unsynced
     * entries; what the state machine applied was durable, so it is. */
    r->commit =
        start->hard_state.commit < last ? start->hard_state.commit : last;
    r->applied = start->applied;
    if (r->commit < start->snapshot.index) {
        r->commit = start->snapshot.index;
    }
    if (r->applied < start->snapshot.index || r->applied > last) {
        rv = RAFT_EINVAL;
        goto fail;
    }
    if (r->commit < r->applied) {
        r->commit = r->applied;
    }
    r->persisted = last;
    r->role = RAFT_FOLLOWER;
    /* A restarted node may have heard from a leader just before it went
     * down: it refuses (pre)votes for one election timeout, as if it had,
     * so no lease held by that leader is undercut (F5). A node that never
     * saw a term cannot have heard from a leader. */
    r->start_guard = start->hard_state.term > 0;
    r->handed_hs.term = r->term;
    r->handed_hs.vote = r->vote;
    r->handed_hs.commit = r->commit;
    reset_randomized_timeout(r);
    *out = r;
    return RAFT_OK;
fail:
    raft_close(r);
    return rv;
}

void raft_close(struct raft* r) {
    if (r == NULL) {
        return;
    }
    raft_log_close(&r->log);
    arena_reset(r);
    free(r->arena);
    free(r->msgs);
    free(r->ready_reads);
    free(r->reads);
    free(r);
}

/* ------------------------------------------------------------------ */
/* Accessors                                                           */

raft_node_id raft_id(const struct raft* r) {
    return r->cfg.id;
}

enum raft_role raft_role(const struct raft* r) {
    return r->role;
}

raft_term raft_current_term(const struct raft* r) {
    return r->term;
}

raft_node_id raft_leader(const struct raft* r) {
    return r->leader;
}

raft_node_id raft_voted_for(const struct raft* r) {
    return r->vote;
}

raft_index raft_commit_index(const struct raft* r) {
    return r->commit;
}

raft_index raft_applied_index(const struct raft* r) {
    return r->applied;
}

raft_index raft_last_index(const struct raft* r) {
    return last_index(r);
}

raft_index raft_persisted_index(const struct raft* r) {
    return r->persisted;
}

raft_index raft_first_index(const struct raft* r) {
    return raft_log_first_index(&r->log);
}

raft_node_id raft_transferee(const struct raft* r) {
    return r->transferee;
}

const struct raft_conf* raft_conf(const struct raft* r) {
    return current_conf(r);
}

const struct raft_snapshot_meta* raft_snapshot(const struct raft* r) {
    return &r->snapshot;
}

uint64_t raft_tick_count(const struct raft* r) {
    return r->ticks;
}

int raft_term_at(struct raft* r, raft_index index, raft_term* out) {
    return raft_log_term(&r->log, index, out);
}

size_t raft_progress(const struct raft* r,
                     struct raft_progress_info* out,
                     size_t cap) {
    size_t n = 0;

    if (r->role != RAFT_LEADER) {
        return 0;
    }
    for (uint32_t i = 0; i < r->n_prs && n < cap; i++) {
        const struct raft_progress* pr = &r->prs[i];
        struct raft_progress_info* o = &out[n++];
        memset(o, 0, sizeof(*o));
        o->id = pr->id;
        o->role = (uint8_t)raft_conf_role(current_conf(r), pr->id);
        o->state = pr->state;
        o->recent_active = pr->id == r->cfg.id || pr->recent_active;
        o->match = pr->id == r->cfg.id ? r->persisted : pr->match;
        o->next = pr->next;
        o->inflight = pr->inflights.count;
        o->last_contact_tick =
            pr->id == r->cfg.id ? r->ticks : pr->last_contact_tick;
        o->pending_snapshot = pr->pending_snapshot;
    }
    return n;
}

const char* raft_check_invariants(struct raft* r) {
    raft_index last = last_index(r);

    if (r->commit > last) {
        return "commit index beyond the last log index";
    }
    if (r->applied > r->commit) {
        return "applied index beyond the commit index";
    }
    if (r->applied > r->persisted) {
        return "applied an entry that is not durable";
    }
    if (r->persisted > last) {
        return "persisted index beyond the last log index";
    }
    if (r->snapshot.index > r->applied) {
        return "snapshot beyond the applied index";
    }
    if (r->role == RAFT_LEADER && r->leader != r->cfg.id) {
        return "leader does not name itself leader";
    }
    if (r->role != RAFT_FOLLOWER && r->leader != 0 && r->leader != r->cfg.id) {
        return "candidate still names a leader";
    }
    if (r->vote != 0 && r->role == RAFT_CANDIDATE && r->vote != r->cfg.id) {
        return "candidate voted for another node";
    }
    if (r->n_history == 0 || r->n_history > RAFT_CONF_HISTORY) {
        return "configuration history empty or overflowing";
    }
    for (uint32_t i = 1; i < r->n_history; i++) {
        if (r->history[i].index <= r->history[i - 1].index) {
            return "configuration history out of order";
        }
    }
    if (r->role == RAFT_LEADER) {
        for (uint32_t i = 0; i < r->n_prs; i++) {
            const struct raft_progress* pr = &r->prs[i];
            if (pr->match > last) {
                return "follower match beyond the leader's log";
            }
            if (pr->id != r->cfg.id && pr->next <= pr->match) {
                return "follower next index not after its match";
            }
            if (pr->next > last + 1) {
                return "follower next index beyond the leader's log";
            }
            if (pr->inflights.count > pr->inflights.cap) {
                return "more appends in flight than allowed";
            }
        }
        if (r->noop_index >= raft_log_first_index(&r->log) &&
            term_at(r, r->noop_index) != r->term) {
            return "leader lost the entry that opened its term";
        }
    }
    return NULL;
}
