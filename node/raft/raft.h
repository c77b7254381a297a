/*
 * raft.h - the Skein consensus core.
 *
 * A pure Raft state machine: no I/O, no clock, no threads, no global state.
 * Randomness comes from a PRNG seeded by the caller, time comes in ticks, so
 * a run is reproducible from its inputs. The shape follows etcd's raft
 * library: the driver feeds events with raft_step() (a message received, a
 * tick, a proposal, "entries up to N are durable", a snapshot taken), then
 * collects what to do with raft_ready() and acknowledges with
 * raft_advance().
 *
 * DRIVER CONTRACT (the only place it is stated)
 * ---------------------------------------------
 * After raft_ready() returns a batch `rd`, and before raft_advance(), the
 * driver must not call raft_step(). It then, in this order:
 *
 *  1. If rd.snapshot is set, install it (state machine and log replaced by
 *     the snapshot) durably.
 *  2. If rd.hard_state_changed, write rd.hard_state. If rd.must_sync is set
 *     (term or vote changed, or a snapshot was installed) the hard state must
 *     be durable BEFORE any message of this batch leaves the node: a vote or
 *     a term is never announced before it survives a crash.
 *  3. Write rd.entries to the log: every stored entry with an index >=
 *     rd.entries[0].index is replaced (this is how a conflicting suffix is
 *     truncated). The write need not be durable yet.
 *  4. Send rd.messages. They may leave before the entries of step 3 are
 *     durable: the core never acknowledges an entry, to a leader or to its
 *     own commit count, until the driver reports it durable (step 6).
 *  5. Apply rd.committed entries to the state machine, in order. They are
 *     always entries already reported durable. Answer rd.reads once the
 *     state machine has applied up to each read's index.
 *  6. Call raft_advance(). Later, when the entries of step 3 are durable,
 *     step a RAFT_EVENT_PERSISTED event with the index and term of the last
 *     durable entry. Durability is in log order.
 *
 * Every pointer in rd is borrowed from the core and valid until
 * raft_advance(). Every pointer in an event is borrowed for the duration of
 * raft_step(); the core copies what it keeps.
 *
 * STORAGE
 * -------
 * The core reads the durable log through struct raft_storage (implemented by
 * storage/store_mem.c and the LMDB store). Entries the driver has been
 * handed but has not yet reported durable are kept inside the core, so the
 * storage is only asked for indexes it has made durable.
 */
#ifndef SKEIN_RAFT_H
#define SKEIN_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t raft_term;    /* election term, 0 = none */
typedef uint64_t raft_index;   /* log index, first entry is 1, 0 = none */
typedef uint64_t raft_node_id; /* node id, 0 = none */

/**
 * Terms and indexes a message may carry are below this. A real cluster
 * never gets near it (at one election per microsecond a term would need
 * 146,000 years), so a larger value is corruption or forgery: taking such
 * a term would leave the cluster at a term it can never go past, so no
 * leader could ever be elected again.
 */
#define RAFT_VALUE_LIMIT ((uint64_t)1 << 62)

/** Maximum number of members (voters plus learners) in a configuration. */
#define RAFT_MAX_NODES 16
/** Upper bound on AppendEntries messages in flight to one follower. */
#define RAFT_MAX_INFLIGHT 256
/** Upper bound on pending linearizable reads at once. */
#define RAFT_MAX_READS 4096

/** Error codes returned by the core (0 is success). */
#define RAFT_ERRORS(X)                                                     \
    X(RAFT_OK, "ok")                                                       \
    X(RAFT_ENOTLEADER, "not the leader")                                   \
    X(RAFT_ENOLEADER, "no leader known")                                   \
    X(RAFT_ETRANSFER, "leadership transfer in progress")                   \
    X(RAFT_EBUSY, "too many uncommitted entries or pending requests")      \
    X(RAFT_ECONFPENDING, "a configuration change is already in progress")  \
    X(RAFT_ENOTREADY, "leader has not committed an entry of its term yet") \
    X(RAFT_EINVAL, "invalid argument")                                     \
    X(RAFT_ENOTFOUND, "no such member")                                    \
    X(RAFT_EEXIST, "member already exists")                                \
    X(RAFT_ENOTCAUGHTUP, "learner is not caught up")                       \
    X(RAFT_ENOMEM, "out of memory")                                        \
    X(RAFT_ESTORAGE, "storage failed or returned inconsistent data")       \
    X(RAFT_ECOMPACTED, "requested entries were compacted")                 \
    X(RAFT_ETOOBIG, "entry larger than the configured limit")

#define RAFT_ERROR_ENUM(name, text) name,
enum raft_error { RAFT_ERRORS(RAFT_ERROR_ENUM) RAFT_ERROR_COUNT };
#undef RAFT_ERROR_ENUM

/** Returns a static, human-readable text for a raft_error code. */
const char* raft_strerror(int code);

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE,
    RAFT_CANDIDATE,
    RAFT_LEADER,
};

/** Returns "follower", "pre-candidate", "candidate" or "leader". */
const char* raft_role_name(enum raft_role role);

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* client data, opaque to the core */
    RAFT_ENTRY_NOOP = 1,   /* appended by a new leader (Raft §5.4.2, §8) */
    RAFT_ENTRY_CONF = 2,   /* data is an encoded struct raft_conf */
};

/** One log entry. `data` is owned by whoever handed the entry over. */
struct raft_entry {
    raft_term term;
    raft_index index;
    uint32_t type; /* enum raft_entry_type */
    uint32_t len;  /* bytes at data */
    const uint8_t* data;
};

enum raft_member_role { RAFT_VOTER = 0, RAFT_LEARNER = 1 };

/** A cluster configuration: who votes and who only learns. */
struct raft_conf {
    uint32_t count;                   /* members used */
    raft_node_id ids[RAFT_MAX_NODES]; /* member ids, unique, non-zero */
    uint8_t roles[RAFT_MAX_NODES];    /* enum raft_member_role */
};

/** Bytes needed by raft_conf_encode for a conf with `count` members. */
#define RAFT_CONF_ENCODED_MAX (4 + RAFT_MAX_NODES * 9)

/**
 * Encodes `conf` into `buf` (at least RAFT_CONF_ENCODED_MAX bytes).
 * Returns the number of bytes written.
 */
size_t raft_conf_encode(const struct raft_conf* conf, uint8_t* buf);

/**
 * Decodes a conf written by raft_conf_encode. Returns RAFT_OK, or
 * RAFT_EINVAL if the bytes are malformed (wrong length, zero or duplicate
 * id, unknown role, too many members); `out` is then unspecified.
 */
int raft_conf_decode(const uint8_t* buf, size_t len, struct raft_conf* out);

/**
 * Decodes the conf at the start of a CONF entry's data, which may be
 * followed by a driver context. Sets *used to the bytes the conf took.
 * Returns RAFT_OK or RAFT_EINVAL like raft_conf_decode.
 */
int raft_conf_decode_prefix(const uint8_t* buf,
                            size_t len,
                            struct raft_conf* out,
                            size_t* used);

/** Returns the member's role, or -1 if `id` is not in the conf. */
int raft_conf_role(const struct raft_conf* conf, raft_node_id id);

/** Number of voters in `conf`. */
uint32_t raft_conf_voter_count(const struct raft_conf* conf);

/** Metadata of a snapshot: the state machine at one applied index. */
struct raft_snapshot_meta {
    raft_index index;      /* last entry included, 0 = no snapshot */
    raft_term term;        /* term of that entry */
    struct raft_conf conf; /* configuration as of that entry */
};

/** What must survive a crash besides the log (Raft Figure 2). */
struct raft_hard_state {
    raft_term term;
    raft_node_id vote; /* candidate voted for in `term`, 0 = none */
    raft_index commit; /* may be stored lazily; clamped on restart */
};

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* AppendEntries request */
    RAFT_MSG_APPEND_RESP,     /* AppendEntries response */
    RAFT_MSG_VOTE,            /* RequestVote request */
    RAFT_MSG_VOTE_RESP,       /* RequestVote response */
    RAFT_MSG_PREVOTE,         /* pre-vote request (thesis §9.6) */
    RAFT_MSG_PREVOTE_RESP,    /* pre-vote response */
    RAFT_MSG_HEARTBEAT,       /* empty AppendEntries with read context */
    RAFT_MSG_HEARTBEAT_RESP,  /* echoes the read context */
    RAFT_MSG_SNAPSHOT,        /* InstallSnapshot (driver carries data) */
    RAFT_MSG_TIMEOUT_NOW,     /* leader transfer: start election now */
    RAFT_MSG_READ_INDEX,      /* follower asks leader for a read index */
    RAFT_MSG_READ_INDEX_RESP, /* leader answers with the read index */
    RAFT_MSG_TYPE_MAX
};

/** Returns a short name for a message type ("append", "vote", ...). */
const char* raft_msg_type_name(int type);

/**
 * A message between cores. Fields not used by a type are zero. The meaning
 * of the shared fields by type:
 *  APPEND:       log_term/index = previous entry; entries; commit
 *  APPEND_RESP:  index = last matching index on success; on reject,
 *                index = the rejected previous index, reject_hint and
 *                log_term = conflict hint (§5.3 optimization)
 *  (PRE)VOTE:    log_term/index = candidate's last entry; force = transfer
 *  HEARTBEAT:    commit; context = read round
 *  SNAPSHOT:     snapshot metadata; the driver attaches the data
 *  READ_INDEX:   context = the follower's read request id
 *  READ_INDEX_RESP: context, index = read index, reject = refused
 */
struct raft_message {
    uint32_t type; /* enum raft_msg_type */
    raft_node_id from;
    raft_node_id to;
    raft_term term;
    raft_term log_term;
    raft_index index;
    raft_index commit;
    raft_index reject_hint;
    uint64_t context;
    bool reject;
    bool force;
    uint32_t n_entries;
    const struct raft_entry* entries;
    struct raft_snapshot_meta snapshot;
};

/**
 * The log the core reads: entries made durable by the driver. Every call
 * returns RAFT_OK or an error code. Implementations must be consistent with
 * what the driver wrote; the core treats any error as RAFT_ESTORAGE.
 */
struct raft_storage {
    void* ctx;
    /** First index still in the log (compaction boundary + 1). */
    raft_index (*first_index)(void* ctx);
    /** Last index in the log, first_index - 1 when empty. */
    raft_index (*last_index)(void* ctx);
    /**
     * Term of entry `index`, valid for first_index - 1 <= index <=
     * last_index (the entry before the first is the compaction boundary).
     * Returns RAFT_ECOMPACTED below that range.
     */
    int (*term)(void* ctx, raft_index index, raft_term* out);
    /**
     * Fills out[0..*n) with entries [lo, hi), stopping early once more than
     * max_bytes of data were returned (always at least one entry).
     * `out` has room for hi - lo entries. Data pointers stay valid until
     * the next call on this storage. Returns RAFT_ECOMPACTED if lo <
     * first_index.
     */
    int (*entries)(void* ctx,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   struct raft_entry* out,
                   size_t* n);
};

/** Planted bugs, compiled in, off unless the simulator asks (mutants). */
enum raft_mutant {
    RAFT_MUTANT_NONE = 0,
    RAFT_MUTANT_VOTE_NO_LOG_CHECK,    /* grant votes to stale logs */
    RAFT_MUTANT_COMMIT_OLD_TERM,      /* commit by counting any term */
    RAFT_MUTANT_VOTE_BEFORE_DURABLE,  /* reply to votes before the sync */
    RAFT_MUTANT_APPEND_NO_PREV_CHECK, /* skip the previous-entry check */
    RAFT_MUTANT_READ_NO_CONFIRM,      /* release reads without heartbeat */
    RAFT_MUTANT_ACK_BEFORE_DURABLE,   /* acknowledge unsynced entries */
    RAFT_MUTANT_READ_STALE_REQUESTER, /* a follower's ReadIndex request
                                         acknowledges later reads too */
    RAFT_MUTANT_COUNT
};

/** Name of a mutant ("vote-no-log-check", ...); NULL if out of range. */
const char* raft_mutant_name(int mutant);

/** Parameters fixed at raft_init. */
struct raft_config {
    raft_node_id id;                  /* this node, non-zero */
    uint32_t election_ticks;          /* base election timeout, >= 2 */
    uint32_t heartbeat_ticks;         /* heartbeat interval, < election */
    uint64_t seed;                    /* PRNG seed for election timeouts */
    uint32_t max_inflight;            /* appends in flight per follower */
    size_t max_msg_bytes;             /* entry bytes per AppendEntries */
    size_t max_entry_bytes;           /* largest accepted entry */
    uint64_t max_uncommitted_entries; /* leader refuses proposals above */
    size_t max_apply_bytes;           /* committed bytes per ready batch */
    raft_index learner_catchup_gap;   /* promote when match >= last - gap */
    bool pre_vote;                    /* thesis §9.6 */
    bool check_quorum;                /* thesis §6.2 */
    int mutant;                       /* enum raft_mutant, 0 in production */
};

/** Fills `cfg` with production defaults for node `id`. */
void raft_config_default(struct raft_config* cfg, raft_node_id id);

/** Progress replication state of a follower (etcd's tracker design). */
enum raft_progress_state {
    RAFT_PROGRESS_PROBE = 0, /* one append at a time to find the match */
    RAFT_PROGRESS_REPLICATE, /* pipelined appends, bounded in flight */
    RAFT_PROGRESS_SNAPSHOT,  /* waiting for a snapshot to land */
};

/** A leader's view of one member, for status pages and health. */
struct raft_progress_info {
    raft_node_id id;
    uint8_t role;                /* enum raft_member_role */
    uint8_t state;               /* enum raft_progress_state */
    bool recent_active;          /* heard from within the election timeout */
    raft_index match;            /* highest index known replicated */
    raft_index next;             /* next index to send */
    uint32_t inflight;           /* appends in flight */
    uint64_t last_contact_tick;  /* tick of the last response, 0 = never */
    raft_index pending_snapshot; /* snapshot index being sent, or 0 */
};

/** A read whose index is now known (or which failed). */
struct raft_read_state {
    uint64_t context; /* the driver's request id */
    raft_index index; /* serve once applied >= index */
    bool failed;      /* leadership lost: the read was not confirmed */
};

/** Everything the driver must do after a series of steps. */
struct raft_ready {
    bool hard_state_changed;
    bool must_sync; /* hard state / snapshot durable before sending */
    struct raft_hard_state hard_state;
    const struct raft_snapshot_meta* snapshot; /* install, or NULL */
    const struct raft_entry* entries;          /* to append (step 3) */
    size_t n_entries;
    const struct raft_message* messages;
    size_t n_messages;
    const struct raft_entry* committed; /* to apply, in order */
    size_t n_committed;
    const struct raft_read_state* reads;
    size_t n_reads;
};

enum raft_event_type {
    RAFT_EVENT_TICK = 1,      /* one unit of time passed */
    RAFT_EVENT_RECEIVE,       /* a message from a peer */
    RAFT_EVENT_PERSISTED,     /* log durable up to index (with term) */
    RAFT_EVENT_CAMPAIGN,      /* start an election now (tests, tools) */
    RAFT_EVENT_SNAPSHOT_DONE, /* a snapshot to `peer` landed or failed */
    RAFT_EVENT_UNREACHABLE,   /* sending to `peer` failed */
};

struct raft_event {
    uint32_t type;                      /* enum raft_event_type */
    const struct raft_message* message; /* RECEIVE */
    raft_index index;                   /* PERSISTED */
    raft_term term;                     /* PERSISTED */
    raft_node_id peer;                  /* SNAPSHOT_DONE, UNREACHABLE */
    bool ok;                            /* SNAPSHOT_DONE */
};

/** What a restarting node loaded from disk. */
struct raft_start_state {
    struct raft_hard_state hard_state;
    struct raft_snapshot_meta snapshot; /* index 0 if none */
    struct raft_conf bootstrap;         /* used when the log is empty and
                                           there is no snapshot */
    raft_index applied; /* state machine applied index (>= snapshot.index) */
};

struct raft; /* opaque */

/**
 * Creates a core. `storage` must hold the durable log described by
 * `start` and outlive the core. Returns RAFT_OK and sets *out (caller owns
 * it, free with raft_close), or an error code (nothing allocated).
 */
int raft_init(const struct raft_config* cfg,
              const struct raft_storage* storage,
              const struct raft_start_state* start,
              struct raft** out);

/** Frees the core and everything it owns. Accepts NULL. */
void raft_close(struct raft* r);

/** Feeds one event. Returns RAFT_OK or an error code (state unchanged). */
int raft_step(struct raft* r, const struct raft_event* ev);

/** True when raft_ready() has anything to hand out. */
bool raft_has_ready(const struct raft* r);

/**
 * Collects the work accumulated since the last raft_advance() into `rd`.
 * Pointers stay valid until raft_advance(). Call raft_advance() next.
 */
void raft_ready(struct raft* r, struct raft_ready* rd);

/** Acknowledges the batch from raft_ready(): see the driver contract. */
void raft_advance(struct raft* r);

/**
 * Proposes `n` entries of `type` (NORMAL or NOOP) with the given data
 * (copied). On success sets *first_index and *term: the entries got
 * indexes first_index .. first_index + n - 1 in `term`; an entry at such an
 * index with another term means the proposal was lost. Returns
 * RAFT_ENOTLEADER, RAFT_ETRANSFER, RAFT_EBUSY, RAFT_ETOOBIG, RAFT_EINVAL.
 */
int raft_propose(struct raft* r,
                 uint32_t type,
                 const uint8_t* const* data,
                 const uint32_t* lens,
                 size_t n,
                 raft_index* first_index,
                 raft_term* term);

enum raft_conf_change {
    RAFT_CONF_ADD_LEARNER = 1, /* add a non-voting member */
    RAFT_CONF_PROMOTE,         /* make a caught-up learner a voter */
    RAFT_CONF_REMOVE,          /* remove a voter or learner */
};

/**
 * Proposes one single-server membership change (thesis §4.1). Refused with
 * RAFT_ECONFPENDING while an earlier change is uncommitted, RAFT_ENOTREADY
 * before the leader committed an entry of its term, RAFT_ENOTCAUGHTUP when
 * promoting a learner that lags, RAFT_EEXIST / RAFT_ENOTFOUND for bad ids.
 * On success sets *index to the conf entry's index.
 */
int raft_change_conf(struct raft* r,
                     int change,
                     raft_node_id id,
                     raft_index* index);

/**
 * Like raft_change_conf, and appends `context` (at most
 * RAFT_CONF_CONTEXT_MAX bytes, opaque to the core, like etcd's
 * ConfChange.Context) to the conf entry's data, after the encoded conf.
 * The node uses it to carry member addresses.
 */
int raft_change_conf_ctx(struct raft* r,
                         int change,
                         raft_node_id id,
                         const uint8_t* context,
                         size_t context_len,
                         raft_index* index);

/** Largest context accepted by raft_change_conf_ctx. */
#define RAFT_CONF_CONTEXT_MAX 8192
/** Largest data of a CONF entry: the encoded conf plus a context. */
#define RAFT_CONF_DATA_MAX (RAFT_CONF_ENCODED_MAX + RAFT_CONF_CONTEXT_MAX)

/**
 * Asks for a linearizable read (ReadIndex, thesis §6.4). `context` is the
 * driver's unique request id. The result arrives later in rd.reads.
 * Returns RAFT_ENOLEADER when there is no leader to ask, RAFT_EBUSY when
 * too many reads are pending.
 */
int raft_read_index(struct raft* r, uint64_t context);

/**
 * Starts a leadership transfer to `to` (thesis §3.10). Proposals are
 * refused until it completes or aborts (after an election timeout).
 * Returns RAFT_ENOTLEADER, RAFT_EINVAL (self, not a voter) or RAFT_OK.
 */
int raft_transfer_leader(struct raft* r, raft_node_id to);

/**
 * Tells the core the driver saved a snapshot of the state machine at
 * `index` (<= applied) and may compact the log up to there. Sets *meta to
 * the snapshot's metadata (term and conf at index). Returns RAFT_EINVAL if
 * index is beyond what was applied or older than the current snapshot.
 */
int raft_snapshot_taken(struct raft* r,
                        raft_index index,
                        struct raft_snapshot_meta* meta);

/**
 * Makes the leader send its latest snapshot to `to` now, even if the log
 * could still catch it up (an operator's forced resync). Returns
 * RAFT_ENOTLEADER, RAFT_ENOTFOUND (not a member or self), RAFT_ECOMPACTED
 * when no snapshot exists yet (take one first), or RAFT_OK.
 */
int raft_send_snapshot(struct raft* r, raft_node_id to);

/** True if this leader heard from a quorum within the last election
 * timeout, so no other leader can exist (lease for reads, thesis §6.4.1).
 */
bool raft_lease_valid(const struct raft* r);

/* Read-only accessors. */
raft_node_id raft_id(const struct raft* r);
enum raft_role raft_role(const struct raft* r);
raft_term raft_current_term(const struct raft* r);
raft_node_id raft_leader(const struct raft* r);
raft_node_id raft_voted_for(const struct raft* r);
raft_index raft_commit_index(const struct raft* r);
raft_index raft_applied_index(const struct raft* r);
raft_index raft_last_index(const struct raft* r);
raft_index raft_persisted_index(const struct raft* r);
raft_index raft_first_index(const struct raft* r);
raft_node_id raft_transferee(const struct raft* r);
const struct raft_conf* raft_conf(const struct raft* r);
const struct raft_snapshot_meta* raft_snapshot(const struct raft* r);
uint64_t raft_tick_count(const struct raft* r);

/**
 * Term of the entry at `index` in the core's view of the log (durable and
 * not yet durable). Returns RAFT_OK, RAFT_ECOMPACTED, or RAFT_EINVAL when
 * the index is beyond the last entry.
 */
int raft_term_at(struct raft* r, raft_index index, raft_term* out);

/**
 * Copies the leader's view of up to `cap` members into `out`. Returns the
 * number written; 0 when not leader.
 */
size_t raft_progress(const struct raft* r,
                     struct raft_progress_info* out,
                     size_t cap);

/**
 * Checks internal invariants (commit <= last, applied <= commit, progress
 * bounds...). Returns NULL if all hold, else a static description of the
 * first violated one. Used after every step by tests and the simulator.
 */
const char* raft_check_invariants(struct raft* r);

#endif /* SKEIN_RAFT_H */
