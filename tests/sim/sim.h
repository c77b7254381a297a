/*
 * sim.h - internals of skein-sim, the deterministic cluster simulator.
 *
 * N real raft cores (node/raft/raft.h) run over a simulated network and a
 * simulated disk (storage/store_mem.h). Everything random comes from one
 * seeded PRNG (struct sim_rng); time is ticks, one simulation step is one
 * tick. After every step the checks of sim_check.c run; the first violation
 * prints "FAIL seed=S step=T invariant=NAME: details" and ends the run.
 *
 * Module layout:
 *   sim_rng.c    PRNG (xoshiro256** seeded by splitmix64)
 *   sim_kv.c     the state machine: a register per key
 *   sim_rkv.c    --real-kv: the real state machine (storage/kv_state.h on
 *                LMDB, snapshots of storage/kv_snapshot.h) instead
 *   sim_net.c    messages in flight, delays, drops, partitions
 *   sim_node.c   the driver of one core: ready batches, disk, crash/restart
 *   sim_check.c  safety invariants and the global history
 *   sim_client.c client writes and reads, membership and transfers
 *   sim_run.c    one seed: fault schedule, steps, liveness phase
 *   sim_bench.c  the core benchmark
 *   sim_main.c   command line
 *   sim_scenario.c  directed scenarios (sim-scenarios), same checks
 *
 * Memory: a struct sim owns everything reachable from it; sim_close frees
 * it all. Single-threaded.
 */
#ifndef SKEIN_SIM_H
#define SKEIN_SIM_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "store_mem.h"

#define SIM_MAX_NODES  7     /* --nodes upper bound */
#define SIM_MAX_KEYS   8     /* registers in the state machine */
#define SIM_MAX_SYNCS  256   /* pending disk syncs per node */
#define SIM_MAX_MSGS   65536 /* messages in flight, beyond: dropped */
#define SIM_MAX_READS  1024  /* client reads pending at once */
#define SIM_MAX_WRITES 4096  /* client writes awaiting their outcome */
#define SIM_WRITE_HDR  9     /* write id (8, little endian) + key (1) */
#define SIM_PAD_MAX    120   /* random padding bytes after the header */

/* --- PRNG (sim_rng.c) --------------------------------------------------- */

/** xoshiro256** state. */
struct sim_rng {
    uint64_t s[4]; /* never all zero */
};

/** Seeds `rng` from `seed` through splitmix64. */
void sim_rng_seed(struct sim_rng* rng, uint64_t seed);
/** Returns the next 64 random bits. */
uint64_t sim_rng_next(struct sim_rng* rng);
/** Returns a uniform value in [0, n); 0 when n == 0. */
uint64_t sim_rng_below(struct sim_rng* rng, uint64_t n);
/** Returns a uniform value in [lo, hi] (lo <= hi). */
uint64_t sim_rng_range(struct sim_rng* rng, uint64_t lo, uint64_t hi);
/** True with probability bp / 10000 (bp = basis points). */
bool sim_rng_chance(struct sim_rng* rng, uint32_t bp);

/* --- state machine (sim_kv.c) ------------------------------------------ */

/** --real-kv: the counters of a real state (struct kv_stats) at one index. */
struct sim_rk_stats {
    raft_index index;      /* applied index */
    raft_term term;        /* applied term */
    uint64_t seq;          /* last seq assigned */
    uint64_t count;        /* live entries */
    uint64_t hash;         /* order-independent state hash */
    raft_index conf_index; /* last CONF entry applied */
};

/** --real-kv: bytes shared by reference (a snapshot file's contents). */
struct sim_blob {
    size_t refs;    /* owners; freed when it drops to 0 */
    size_t size;    /* bytes at data */
    uint8_t data[]; /* the bytes */
};

/** One register: the write that set it and the log index of that write. */
struct sim_kv_slot {
    uint64_t write_id; /* 0 = never written */
    raft_index index;  /* log index of that write */
};

/** The replicated state machine: SIM_MAX_KEYS registers. */
struct sim_kv {
    struct sim_kv_slot slot[SIM_MAX_KEYS];
};

/** A saved snapshot: metadata plus the state machine at meta.index. */
struct sim_snap {
    struct raft_snapshot_meta meta; /* index 0 = none */
    struct sim_kv kv;               /* state at meta.index */
    struct sim_blob* blob;          /* --real-kv: the kv snapshot file, one
                                       reference owned by this copy */
    struct sim_rk_stats rk;         /* --real-kv: its counters */
};

/** A decoded client write. */
struct sim_write_data {
    uint64_t write_id; /* unique, > 0 */
    uint32_t key;      /* < SIM_MAX_KEYS */
};

/**
 * Encodes a write into buf (at least SIM_WRITE_HDR + pad bytes) with `pad`
 * padding bytes derived from the id. Returns the length written.
 */
uint32_t sim_kv_encode(const struct sim_write_data* w,
                       uint32_t pad,
                       uint8_t* buf);
/** Decodes a NORMAL entry's data. Returns false if malformed. */
bool sim_kv_decode(const uint8_t* data,
                   uint32_t len,
                   struct sim_write_data* out);
/**
 * Applies one committed entry at `index` to `kv`. Returns false if a
 * NORMAL entry is malformed (NOOP and CONF entries change nothing).
 */
bool sim_kv_apply(struct sim_kv* kv, const struct raft_entry* e);
/** Order-independent hash of the whole state. */
uint64_t sim_kv_hash(const struct sim_kv* kv);
/** Hash of an entry's type and data (for history and log matching). */
uint64_t sim_entry_hash(const struct raft_entry* e);

/* --- network (sim_net.c) ------------------------------------------------ */

/** A message in flight: a deep copy of a core's message. */
struct sim_msg {
    uint64_t deliver_at;      /* tick of delivery */
    uint64_t seq;             /* send order, breaks ties */
    uint64_t incarnation;     /* reports: the target's incarnation */
    struct raft_message m;    /* entries point into ents[] */
    bool has_snap;            /* SNAPSHOT: carries snap */
    struct sim_snap snap;     /* the sender's saved snapshot */
    struct raft_entry ents[]; /* followed by the entries' data */
};

/* Internal reports travelling back to a sender (not raft messages). */
#define SIM_REPORT_SNAPSHOT_DONE 1000 /* m.from = peer, m.reject = failed */
#define SIM_REPORT_UNREACHABLE   1001 /* m.from = peer */

/** The simulated network: a min-heap of messages by (deliver_at, seq). */
struct sim_net {
    struct sim_msg** heap;   /* owned messages */
    size_t n;                /* messages in flight */
    size_t cap;              /* heap slots */
    uint64_t seq;            /* next send sequence number */
    struct sim_msg** held;   /* for paused nodes, re-queued each tick */
    size_t n_held;           /* used */
    size_t held_cap;         /* slots */
    struct sim_msg* current; /* being delivered, owned */
    /* cut[a][b]: messages from a to b are lost */
    bool cut[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1];
};

struct sim;

/** Frees every message in flight and the heap. */
void sim_net_close(struct sim_net* net);
/**
 * Copies `m` (sent by a core now) into the network, applying drop,
 * duplicate, delay and cuts. Attaches `snap` to SNAPSHOT messages.
 */
void sim_net_send(struct sim* s,
                  const struct raft_message* m,
                  const struct sim_snap* snap);
/** Delivers every message due at s->now. */
void sim_net_deliver(struct sim* s);
/** Removes every cut. */
void sim_net_heal(struct sim_net* net);
/** True if any cut is in place. */
bool sim_net_is_cut(const struct sim_net* net);

/* --- nodes (sim_node.c) ------------------------------------------------- */

/** A pending disk sync: entries up to `upto` durable at tick `at`. */
struct sim_sync {
    uint64_t at;     /* completion tick */
    raft_index upto; /* last entry covered */
};

/** One simulated server: a core, its disk, its state machine. */
struct sim_node {
    raft_node_id id;                      /* 1..N */
    bool up;                              /* running (not crashed) */
    bool paused;                          /* gets no ticks nor messages */
    uint64_t incarnation;                 /* bumped at every restart */
    uint64_t down_until;                  /* crashed: restart tick */
    uint64_t paused_at;                   /* paused: tick the pause began */
    uint64_t paused_until;                /* paused: resume tick */
    struct raft* core;                    /* NULL while crashed */
    struct store_mem* mem;                /* the disk, survives crashes */
    struct store st;                      /* generic view of mem */
    struct raft_storage view;             /* the core's view of mem */
    struct sim_kv kv;                     /* state machine */
    raft_index applied;                   /* state machine applied index */
    struct kv_state* rk;                  /* --real-kv: the open state */
    raft_index handed;                    /* --real-kv: last index the core
                                             handed out (<= applied after a
                                             restart that re-hands) */
    struct sim_snap snap;                 /* saved snapshot, durable */
    bool has_incoming;                    /* a snapshot message was received */
    struct sim_snap incoming;             /* its data, until installed */
    struct sim_sync syncs[SIM_MAX_SYNCS]; /* FIFO of pending syncs */
    size_t sync_head;                     /* oldest pending */
    size_t sync_count;                    /* pending syncs */
    raft_index reported_index;            /* last PERSISTED index stepped */
    raft_term reported_term;              /* and its term */
    raft_term term_floor;                 /* highest term this node announced */
    raft_term vote_term;                  /* term of the last vote it granted */
    raft_node_id vote_for;                /* whom it voted for then */
    raft_term seen_term;                  /* term after the last step */
    raft_index seen_commit;               /* commit after the last step */
    bool seen_leader;                     /* was leader after the last step */
};

/** Creates the disks and starts every core from the bootstrap conf. */
void sim_nodes_init(struct sim* s);
/** Destroys cores and disks. */
void sim_nodes_close(struct sim* s);
/** Starts (or restarts) node `n` from what its disk holds. */
void sim_node_start(struct sim* s, struct sim_node* n);
/** Crashes node `n`: core gone, unsynced writes lost. */
void sim_node_crash(struct sim* s, struct sim_node* n);
/** Steps one event into n's core, then handles every ready batch. */
void sim_node_step(struct sim* s,
                   struct sim_node* n,
                   const struct raft_event* ev);
/** Handles ready batches and due disk syncs until n is quiet. */
void sim_node_pump(struct sim* s, struct sim_node* n);
/** True if `n` runs a core that can take events now. */
bool sim_node_is_live(const struct sim_node* n);

/* --- checks (sim_check.c) ----------------------------------------------- */

/** What the simulation knows about one log index. */
struct sim_hist_ent {
    raft_term term;         /* term of the applied/committed entry, 0 = none */
    uint64_t data_hash;     /* hash of the entry applied there */
    uint64_t state_hash;    /* state machine hash after applying it */
    bool applied;           /* some node applied it (defines the history) */
    bool committed;         /* some node reported it committed */
    raft_term commit_term;  /* lowest term in which it was seen committed */
    raft_term ack_term;     /* acknowledged in this term, 0 = not acked */
    bool rk_known;          /* --real-kv: some node reported rk here */
    struct sim_rk_stats rk; /* --real-kv: state counters at this index */
    bool rk_result_known;   /* --real-kv: some node applied the entry here */
    uint64_t rk_result;     /* --real-kv: digest of that apply's result */
};

/** One (index, term) ever written to a store: for log matching. */
struct sim_lm_ent {
    raft_index index;    /* 0 = empty slot */
    raft_term term;      /* with index, the key */
    uint64_t data_hash;  /* data written there */
    raft_term prev_term; /* term of the entry before it */
};

/** Frees the check tables. */
void sim_check_close(struct sim* s);
/**
 * Ends the run with a failure: prints "FAIL seed=S step=T invariant=NAME:
 * details" and jumps back to sim_run. Never returns.
 */
void sim_fail(struct sim* s, const char* invariant, const char* fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/** Prints a trace line when --trace is on. */
void sim_trace(struct sim* s, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Records entries about to be written to n's store (log matching). */
void sim_check_written(struct sim* s,
                       struct sim_node* n,
                       const struct raft_entry* ents,
                       size_t count);
/** Checks and records one entry applied by n (prefix of one history). */
void sim_check_applied(struct sim* s,
                       struct sim_node* n,
                       const struct raft_entry* e);
/** Checks a snapshot's state against the history before it is used. */
void sim_check_snapshot(struct sim* s,
                        struct sim_node* n,
                        const struct sim_snap* snap,
                        const char* what);
/** Per-event checks on n: terms, commits, leaders. */
void sim_check_node(struct sim* s, struct sim_node* n);
/** Records an acknowledged write at `index` (ack in term `term`). */
void sim_check_acked(struct sim* s, raft_index index, raft_term term);
/** Per-step checks on every live core. */
void sim_check_step(struct sim* s);
/** Returns the history entry for index (growing the table), never NULL. */
struct sim_hist_ent* sim_hist(struct sim* s, raft_index index);

/* --- clients (sim_client.c) --------------------------------------------- */

/** A client write that was proposed and waits for its outcome. */
struct sim_write {
    uint64_t write_id;    /* unique id, also the value */
    uint32_t key;         /* register */
    raft_node_id node;    /* where it was proposed */
    uint64_t incarnation; /* of that node */
    raft_index index;     /* index it got */
    raft_term term;       /* term it got */
    uint32_t cmd;         /* --real-kv: index in the command table */
};

/** A linearizable read in progress. */
struct sim_read {
    uint64_t context;     /* unique request id, 0 = free slot */
    raft_node_id node;    /* where it was asked */
    uint64_t incarnation; /* of that node */
    uint32_t key;         /* register read */
    raft_index min_index; /* index of the latest acked write at invoke */
    uint64_t invoked_at;  /* tick */
    bool has_index;       /* the core gave the read index */
    raft_index index;     /* serve once applied >= index */
    uint64_t min_seq;     /* --real-kv: seq of the latest write to the entry
                             acknowledged at invoke (key = entry number) */
};

/** Client activity for one step (writes, reads, conf, transfers). */
void sim_clients_step(struct sim* s);
/** Called by the driver for each entry n applies (write outcomes). */
void sim_clients_applied(struct sim* s,
                         struct sim_node* n,
                         const struct raft_entry* e);
/** Called by the driver for each rd.reads item of n. */
void sim_clients_read_ready(struct sim* s,
                            struct sim_node* n,
                            const struct raft_read_state* rs);
/** Serves the reads of n whose index is now applied. */
void sim_clients_serve(struct sim* s, struct sim_node* n);
/** Forgets the writes and reads of a crashed node or installed snapshot. */
void sim_clients_forget(struct sim* s, struct sim_node* n, bool crashed);
/** Proposes one write on `n`. Returns the raft error code. */
int sim_client_write(struct sim* s, struct sim_node* n, size_t count);
/** The live leader with the highest term, or NULL. */
struct sim_node* sim_leader(struct sim* s);
/** Membership reconciler: moves the conf toward the desired one. */
void sim_conf_step(struct sim* s);

/* --- one run (sim_run.c) ------------------------------------------------ */

/** Per-seed fault rates and parameters, drawn from the PRNG at start. */
struct sim_params {
    uint32_t drop_bp;         /* message drop, basis points */
    uint32_t dup_bp;          /* message duplicate */
    uint32_t delay_min;       /* ticks */
    uint32_t delay_max;       /* ticks */
    uint32_t partition_bp;    /* chance per step to start a partition */
    uint32_t flap_bp;         /* chance a partition flaps */
    uint32_t crash_bp;        /* chance per step to crash a node */
    uint32_t down_max;        /* crash: ticks down, 1..down_max */
    uint32_t power_bp;        /* chance per step all nodes crash */
    uint32_t pause_bp;        /* chance per step to pause a node */
    uint32_t disk_min;        /* sync latency, ticks */
    uint32_t disk_max;        /* ticks */
    uint32_t write_bp;        /* client write chance per step */
    uint32_t read_bp;         /* client read chance per step */
    uint32_t conf_bp;         /* membership change chance per step */
    uint32_t lease_bp;        /* share of leader reads served by lease */
    uint32_t transfer_bp;     /* leader transfer chance per step */
    uint32_t snapshot_every;  /* applied entries between snapshots */
    uint32_t keys;            /* registers used, <= SIM_MAX_KEYS */
    uint32_t election_ticks;  /* core config */
    uint32_t heartbeat_ticks; /* core config */
    uint32_t max_inflight;    /* core config */
    size_t max_msg_bytes;     /* core config */
    uint64_t max_uncommitted; /* core config: max_uncommitted_entries */
    bool pre_vote;            /* core config */
    bool check_quorum;        /* core config */
};

/** Counters reported in the summary line. */
struct sim_stats {
    uint64_t leaders;             /* distinct (term, leader) elected */
    uint64_t writes_acked;        /* acknowledged writes */
    uint64_t writes_failed;       /* proposals that lost their index */
    uint64_t lease_reads;         /* reads served under the leader lease */
    uint64_t reads_checked;       /* reads served and checked */
    uint64_t crashes;             /* node crashes (power cuts count each) */
    uint64_t snapshots_taken;     /* raft_snapshot_taken calls */
    uint64_t snapshots_installed; /* rd.snapshot installs */
    uint64_t conf_changes;        /* completed membership changes */
    uint64_t partitions;          /* partitions started */
    uint64_t pauses;              /* pauses started */
    uint64_t messages;            /* messages delivered */
};

/** Partition schedule state. */
struct sim_partition {
    bool active;          /* a partition is in place */
    uint64_t until;       /* end tick of the partition episode */
    bool flapping;        /* toggles on and off until `until` */
    uint64_t next_toggle; /* flapping: tick of the next toggle */
    bool on;              /* flapping: currently cut */
    bool cut[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1]; /* the pattern */
};

/** Membership reconciler state. */
struct sim_conf_ctl {
    raft_node_id target; /* node being removed and re-added, 0 = idle */
    int phase;           /* 0 idle, 1 removing, 2 out, 3 adding */
    uint64_t until;      /* phase 2: when to add it back */
};

/** Options of one run. */
struct sim_opts {
    uint64_t seed;  /* the seed */
    uint32_t nodes; /* 3..SIM_MAX_NODES */
    uint64_t steps; /* steps before the liveness phase */
    int mutant;     /* enum raft_mutant */
    bool trace;     /* print every event */
    bool quiet;     /* no header, summary only (--seeds) */
    bool real_kv;   /* --real-kv: the real state machine (sim_rkv.c) */
};

/** The whole simulation. */
struct sim {
    struct sim_opts o;                       /* options */
    struct sim_params p;                     /* per-seed parameters */
    struct sim_rng rng;                      /* the one PRNG */
    uint64_t now;                            /* current tick */
    bool liveness;                           /* liveness phase: no faults */
    struct sim_node node[SIM_MAX_NODES + 1]; /* 1-based */
    struct sim_net net;                      /* messages in flight */
    struct sim_partition part;               /* partition schedule */
    struct sim_conf_ctl conf;                /* membership reconciler */
    struct sim_hist_ent* hist;               /* by index, owned */
    size_t hist_cap;                         /* slots in hist */
    raft_index hist_max;                     /* highest index in hist */
    struct sim_lm_ent* lm;                   /* log matching table, owned */
    size_t lm_cap;                           /* slots, power of two */
    size_t lm_count;                         /* used slots */
    raft_node_id* term_leader;               /* leader by term, owned */
    size_t term_leader_cap;                  /* slots */
    raft_index* acked;                       /* acknowledged indexes, owned */
    size_t acked_count;                      /* used */
    size_t acked_cap;                        /* slots */
    raft_index acked_max[SIM_MAX_KEYS];      /* latest acked write per key */
    struct sim_write writes[SIM_MAX_WRITES]; /* pending writes */
    size_t n_writes;                         /* used */
    struct sim_read reads[SIM_MAX_READS];    /* pending reads */
    size_t n_reads;                          /* used */
    uint64_t next_write_id;                  /* write ids */
    uint64_t next_read_ctx;                  /* read contexts */
    struct sim_stats stats;                  /* counters */
    jmp_buf fail_jmp;                        /* sim_fail jumps here */
    bool failed;                             /* a check failed */
    bool bench;         /* benchmark: no checks, no state machine */
    struct sim_rkv* rk; /* --real-kv state (sim_rkv.c), NULL otherwise */
};

/* --- the real state machine, --real-kv (sim_rkv.c) ----------------------- */

/*
 * In --real-kv mode every node's state machine is a struct kv_state (LMDB,
 * `fast` durability, small map) in a per-run temporary directory (under
 * /dev/shm when it exists), removed when the run ends, fails or is
 * interrupted. Client writes are packed skein.Command entries; snapshots
 * are kv snapshot files, installed through the chunked writer or
 * kv_snapshot_install_file. A crash is a process crash for the state:
 * every committed LMDB transaction survives, and the node restarts with
 * applied = the state's applied index (store_recover.c semantics).
 */

struct kv_state;
struct sim_rkv;

/** Returns a new blob of `size` bytes with one reference, never NULL. */
struct sim_blob* sim_blob_new(size_t size);
/** Adds a reference to b (may be NULL) and returns it. */
struct sim_blob* sim_blob_retain(struct sim_blob* b);
/** Drops a reference to b (may be NULL), freeing it with the last one. */
void sim_blob_release(struct sim_blob* b);

/** Draws the real-kv parameters (own PRNG stream) and allocates s->rk. */
void sim_rkv_params(struct sim* s);
/** Prints the real-kv parameter line of the header. */
void sim_rkv_print_params(const struct sim* s);
/** Creates the run directory and every node's directory. */
void sim_rkv_init(struct sim* s);
/** Closes every state, removes the run directory and frees s->rk. */
void sim_rkv_close(struct sim* s);
/**
 * Opens n's state before its core starts and reconciles it with the log
 * (store_recover.c): sets start->applied, raises the commit index to the
 * state's applied index, sets n->applied and n->handed.
 */
void sim_rkv_node_open(struct sim* s,
                       struct sim_node* n,
                       struct raft_start_state* start);
/** A process crash: closes n's state (committed transactions survive). */
void sim_rkv_node_crash(struct sim* s, struct sim_node* n);
/** Applies committed entries handed out by n's core, with every check. */
void sim_rkv_apply(struct sim* s,
                   struct sim_node* n,
                   const struct raft_entry* ents,
                   size_t count);
/** Writes n's state at n->applied to its snapshot file into snap. */
void sim_rkv_snapshot(struct sim* s, struct sim_node* n, struct sim_snap* snap);
/** Installs n->incoming into n's state (meta already checked). */
void sim_rkv_install(struct sim* s,
                     struct sim_node* n,
                     const struct raft_snapshot_meta* meta);
/** Checks a snapshot's counters against the history at its index. */
void sim_rkv_check_snapshot(struct sim* s,
                            struct sim_node* n,
                            const struct sim_snap* snap,
                            const char* what);
/** Proposes `count` client commands on n. Returns the raft error code. */
int sim_rkv_client_write(struct sim* s, struct sim_node* n, size_t count);
/** Fills a new read's entry and floor; false if there is nothing to read. */
bool sim_rkv_read_pick(struct sim* s, struct sim_read* r);
/** Serves read r from n's state and checks it against the history. */
void sim_rkv_serve(struct sim* s, struct sim_node* n, const struct sim_read* r);
/** True when a and b report the same applied index. */
bool sim_rkv_same_applied(struct sim* s,
                          struct sim_node* a,
                          struct sim_node* b);
/** Low 16 bits of n's state hash (liveness report). */
uint64_t sim_rkv_hash16(struct sim* s, struct sim_node* n);
/** End of the liveness phase: every node's kv_stats equal, kv_verify. */
void sim_rkv_final_check(struct sim* s);
/** Prints the real-kv counters (appended to the summary line). */
void sim_rkv_print_summary(const struct sim* s);

/** Advances the simulation by one tick (faults unless in liveness). */
void sim_step(struct sim* s);
/** Frees `s` and everything it owns. */
void sim_close(struct sim* s);

/**
 * Runs one seed with `opts`: prints the header (unless quiet), the trace
 * (if asked) and the summary or FAIL line. Returns 0 when every check
 * held, 1 on a failure. Allocates and frees its own state.
 */
int sim_run(const struct sim_opts* opts);

/**
 * Runs the core benchmark: 3 cores, no faults, instant disk; proposes
 * `entries` entries in batches and prints entries committed per CPU
 * second. Returns 0, or 1 if the cluster stalled.
 */
int sim_bench(uint64_t entries);

#endif /* SKEIN_SIM_H */
