/*
 * ctl.h - skeinctl's internal interfaces (prefix ctl_).
 *
 * skeinctl is the operator's tool for a Skein cluster (issue 5; the seeds'
 * "bombarder"): it starts and stops local clusters, shows their health,
 * drives load and chaos against them, verifies that every node holds the
 * same data and checks recorded histories for linearizability.
 *
 *   ctl_main.c     command dispatch, usage
 *   ctl_util.c     option parsing, clocks, node URLs, synchronous HTTP,
 *                  cluster directories, processes
 *   ctl_hist.c     latency histogram
 *   ctl_history.c  history files: writer and parser (JSON lines)
 *   ctl_check.c    linearizability checker (Wing-Gong / Lowe)
 *   ctl_load.c     flood, burst, mixed, storm, bench: the libcurl engine
 *   ctl_chaos.c    kills, pauses and transport faults during a run
 *   ctl_cluster.c  cluster start/stop/status/sync-status/resync/...
 *   ctl_verify.c   verify and watch
 *
 * Everything here is internal: the command line is the interface.
 * Unless a comment says otherwise, functions are called from the main
 * thread only; the chaos thread uses only ctl_util.c and ctl_chaos.c.
 */
#ifndef SKEIN_CTL_H
#define SKEIN_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

/* Most nodes one command talks to. */
#define CTL_MAX_NODES 16
/* Longest URL of a node, e.g. "http://127.0.0.1:8080". */
#define CTL_URL_MAX 128
/* Longest path kept in a cluster directory. */
#define CTL_PATH_MAX 1024
/* Most arguments of one node command line. */
#define CTL_MAX_ARGS 48

/* ---- ctl_util.c: options ---------------------------------------------- */

/* Kinds of command-line option. */
enum ctl_opt_kind {
    CTL_OPT_FLAG,   /* no value: sets a bool */
    CTL_OPT_LONG,   /* integer value: sets a long */
    CTL_OPT_DOUBLE, /* decimal value: sets a double */
    CTL_OPT_STR,    /* string value: sets a const char * (borrowed argv) */
};

/* One option a command accepts. */
struct ctl_opt {
    const char* name;       /* without the leading "--" */
    enum ctl_opt_kind kind; /* what the value is */
    void* out;              /* bool *, long *, double * or const char ** */
};

/*
 * ctl_parse_opts - parse argv[0..argc) as "--name value", "--name=value"
 * or "--flag" against opts[0..count). Positional arguments (not starting
 * with "--") are stored in pos[0..pos_max) and counted in *pos_count
 * (pos may be NULL when the command takes none).
 * Returns 0, or -1 after printing what is wrong to stderr (prefixed with
 * `cmd`).
 */
int ctl_parse_opts(const char* cmd,
                   int argc,
                   char** argv,
                   const struct ctl_opt* opts,
                   size_t count,
                   char** pos,
                   size_t pos_max,
                   size_t* pos_count);

/* ctl_strlcpy - copy src into dst[size], truncating; always terminated. */
void ctl_strlcpy(char* dst, const char* src, size_t size);

/* ---- ctl_util.c: time and random -------------------------------------- */

/* ctl_now_us - monotonic clock in microseconds. */
int64_t ctl_now_us(void);
/* ctl_now_ms - monotonic clock in milliseconds. */
int64_t ctl_now_ms(void);
/* ctl_sleep_ms - sleep `ms` milliseconds (restarts after signals). */
void ctl_sleep_ms(int64_t ms);

/* A small seeded PRNG (splitmix64 + xorshift), one per thread. */
struct ctl_rng {
    uint64_t s; /* state, never 0 after ctl_rng_seed */
};
/* ctl_rng_seed - seed r; seed 0 picks one from the clock and pid. */
void ctl_rng_seed(struct ctl_rng* r, uint64_t seed);
/* ctl_rng_next - the next 64 random bits. */
uint64_t ctl_rng_next(struct ctl_rng* r);
/* ctl_rng_below - uniform in [0, n); n must be > 0. */
uint64_t ctl_rng_below(struct ctl_rng* r, uint64_t n);
/* ctl_uuid - a random RFC 4122 version 4 UUID, text form, in out[37]. */
void ctl_uuid(struct ctl_rng* r, char out[37]);

/* ---- ctl_util.c: nodes and HTTP --------------------------------------- */

/* A set of node base URLs. */
struct ctl_nodes {
    size_t count;                          /* 0..CTL_MAX_NODES */
    char url[CTL_MAX_NODES][CTL_URL_MAX];  /* "http://host:port" */
    char name[CTL_MAX_NODES][CTL_URL_MAX]; /* "host:port" */
};

/*
 * ctl_nodes_parse - fill *nodes from a comma-separated list: each item an
 * URL ("http://h:p"), "h:p", or a bare port (127.0.0.1 assumed).
 * Returns 0, or -1 after printing why.
 */
int ctl_nodes_parse(const char* list, struct ctl_nodes* nodes);

/*
 * ctl_nodes_resolve - the nodes a command talks to: `list` when non-NULL,
 * else the cluster recorded in `data_dir` (ctl_data_dir when NULL) by
 * `cluster start`, else the seed default 8080,8081,8082.
 * Returns 0, or -1 after printing why.
 */
int ctl_nodes_resolve(const char* list,
                      const char* data_dir,
                      struct ctl_nodes* nodes);

/* The result of one synchronous HTTP request. */
struct ctl_http_res {
    long status;     /* HTTP status, 0 when no response */
    char* body;      /* response body, NUL-terminated, owned (may be "") */
    size_t body_len; /* bytes in body */
    char error[160]; /* curl's error when status == 0 */
};

/*
 * ctl_http - one blocking HTTP request (a new connection each time: for
 * the few admin calls; load goes through ctl_load.c). `body` may be NULL;
 * a JSON body is sent with Content-Type application/json.
 * Returns 0 when a response came (any status), -1 otherwise (res->error
 * says why). Either way res must be released with ctl_http_res_free.
 * Thread-safe (curl_global_init must have run: ctl_main does it).
 */
int ctl_http(const char* method,
             const char* url,
             const char* body,
             long timeout_ms,
             struct ctl_http_res* res);
/* ctl_http_res_free - release res->body and reset *res. */
void ctl_http_res_free(struct ctl_http_res* res);

/*
 * ctl_get_json - GET url and parse the body as JSON. Returns a new
 * reference (caller decrefs) when the status is 2xx and the body parses,
 * else NULL with *status_out set (0: no response) and err filled.
 */
json_t* ctl_get_json(const char* url,
                     long timeout_ms,
                     long* status_out,
                     char* err,
                     size_t errlen);

/* Fields of one node's GET /status that skeinctl uses. */
struct ctl_status {
    bool ok;               /* the node answered with a status */
    uint64_t node_id;      /* node_id */
    char role[24];         /* "leader", "follower", ... */
    uint64_t term;         /* term */
    uint64_t leader_id;    /* leader_id, 0 = unknown */
    uint64_t commit_index; /* commit_index */
    uint64_t last_applied; /* last_applied */
    uint64_t entry_count;  /* entry_count */
    uint64_t write_seq;    /* write_seq */
    char state_hash[40];   /* state_hash, hex text */
    char error[160];       /* why !ok */
};

/*
 * ctl_fetch_status - GET base_url/status into *st (st->ok false and
 * st->error set when the node does not answer). Thread-safe.
 */
void ctl_fetch_status(const char* base_url,
                      long timeout_ms,
                      struct ctl_status* st);

/*
 * ctl_find_leader - index in `nodes` of the node that reports itself
 * leader (the highest term wins), or -1. Thread-safe.
 */
int ctl_find_leader(const struct ctl_nodes* nodes, long timeout_ms);

/* ctl_json_u64 - a JSON integer or decimal string as u64 (0 otherwise). */
uint64_t ctl_json_u64(const json_t* v);

/* ---- ctl_util.c: cluster directories and processes -------------------- */

/* One node of a local cluster made by `cluster start`. */
struct ctl_member {
    uint64_t id; /* node id */
    int port;    /* HTTP port (nng on port + 1000) */
    int argc;    /* arguments of its command line */
    char argv[CTL_MAX_ARGS][CTL_PATH_MAX / 4]; /* its command line */
    pid_t pid;                                 /* last known pid, 0 = none */
};

/* A local cluster: DIR/cluster.conf plus DIR/node-<id>.pid. */
struct ctl_cluster {
    char dir[CTL_PATH_MAX];                /* absolute directory */
    size_t count;                          /* members */
    struct ctl_member node[CTL_MAX_NODES]; /* by position */
};

/* ctl_data_dir - the default cluster directory: $SKEIN_DATA or "data". */
const char* ctl_data_dir(void);

/*
 * ctl_cluster_load - read DIR/cluster.conf and the pid files into *c.
 * Returns 0, or -1 (quietly when `quiet`) if there is no cluster there.
 */
int ctl_cluster_load(const char* dir, struct ctl_cluster* c, bool quiet);
/* ctl_cluster_save - write DIR/cluster.conf. Returns 0 or -1 (printed). */
int ctl_cluster_save(const struct ctl_cluster* c);
/* ctl_member_save_pid - write DIR/node-<id>.pid. Returns 0 or -1. */
int ctl_member_save_pid(const struct ctl_cluster* c,
                        const struct ctl_member* m);

/*
 * ctl_member_spawn - start member m in the background (own session,
 * stdin from /dev/null, stdout and stderr appended to DIR/node-<id>.log),
 * record its pid in m->pid and the pid file. Returns 0 or -1 (printed).
 * Thread-safe with respect to other ctl_ calls (fork from any thread).
 */
int ctl_member_spawn(const struct ctl_cluster* c, struct ctl_member* m);

/*
 * ctl_pid_alive - true when pid runs (a zombie counts as dead). Reaps it
 * when it is our child.
 */
bool ctl_pid_alive(pid_t pid);

/*
 * ctl_pid_stop - send `sig` to pid and wait up to wait_ms for it to die;
 * after that, SIGKILL and wait again. Returns 0 once it is dead, -1 if it
 * survives. sig 0 means SIGKILL at once.
 */
int ctl_pid_stop(pid_t pid, int sig, int64_t wait_ms);

/* ctl_port_free - true when 127.0.0.1:port can be bound now. */
bool ctl_port_free(int port);

/* ctl_self_dir - directory of the running skeinctl binary into buf. */
int ctl_self_dir(char* buf, size_t buflen);

/* ctl_node_bin - path of skein-node: $SKEIN_NODE_BIN, else next to
 * skeinctl, else "skein-node" (from PATH). */
void ctl_node_bin(char* buf, size_t buflen);

/* ---- ctl_hist.c: latency histogram ------------------------------------ */

/* Sub-buckets per power of two: relative error at most 1/32. */
#define CTL_HIST_SUB_BITS 5
#define CTL_HIST_SUB      (1u << CTL_HIST_SUB_BITS)
/* Powers of two covered: values up to 2^40 us (about 12 days). */
#define CTL_HIST_MAGS    41
#define CTL_HIST_BUCKETS (CTL_HIST_MAGS * CTL_HIST_SUB)

/*
 * A log-linear histogram of non-negative integer values (microseconds):
 * values below CTL_HIST_SUB are exact, larger ones land in a bucket no
 * wider than 1/32 of its lower bound, so any percentile is reported within
 * about 3 % of the truth. Fixed size, no allocation.
 */
struct ctl_hist {
    uint64_t count;                    /* values recorded */
    uint64_t sum;                      /* their sum (saturating) */
    uint64_t min;                      /* smallest, UINT64_MAX if none */
    uint64_t max;                      /* largest, 0 if none */
    uint64_t bucket[CTL_HIST_BUCKETS]; /* counts per bucket */
};

/* ctl_hist_init - empty h. */
void ctl_hist_init(struct ctl_hist* h);
/* ctl_hist_record - add one value. */
void ctl_hist_record(struct ctl_hist* h, uint64_t value);
/* ctl_hist_merge - add every value of src to dst. */
void ctl_hist_merge(struct ctl_hist* dst, const struct ctl_hist* src);
/*
 * ctl_hist_percentile - the value at percentile p (0..100]: the upper
 * bound of the bucket holding the ceil(p/100 * count)-th smallest value,
 * clamped to [min, max]. 0 for an empty histogram.
 */
uint64_t ctl_hist_percentile(const struct ctl_hist* h, double p);
/* ctl_hist_mean - the mean, 0 for an empty histogram. */
double ctl_hist_mean(const struct ctl_hist* h);
/* ctl_hist_bucket_of - index of the bucket holding value (for tests). */
size_t ctl_hist_bucket_of(uint64_t value);
/* ctl_hist_bucket_high - largest value of bucket i (for tests). */
uint64_t ctl_hist_bucket_high(size_t i);

/* ---- ctl_history.c: histories ----------------------------------------- */

/*
 * The history format (one JSON object per line, documented in
 * admin/README-skeinctl.md):
 *
 *   {"op": 12, "proc": 3, "f": "update", "id": "<uuid>", "key": "k7",
 *    "value": "v12", "if_match": 41, "node": "127.0.0.1:8081",
 *    "attempts": 2, "invoke_us": 1234, "complete_us": 5678,
 *    "outcome": "ok", "http": 200, "result": {"seq": 57, "value": "v12"}}
 *
 * f: create | get | update | delete. outcome: ok (the node answered and
 * the answer is the result), fail (it certainly did not take effect) or
 * indeterminate (a write that may or may not have taken effect; no
 * complete_us, no result). result: for an entry {"seq", "value"} (create
 * adds "id"), {"found": false} for 404, {"cas_mismatch": true,
 * "current_seq": N} for 412, {"deleted": true} for a delete.
 */

/* Operation kinds. */
enum ctl_fn { CTL_F_CREATE, CTL_F_GET, CTL_F_UPDATE, CTL_F_DELETE };
/* Outcomes. */
enum ctl_outcome { CTL_OUT_OK, CTL_OUT_FAIL, CTL_OUT_INDETERMINATE };
/* What an ok operation returned. */
enum ctl_result_kind {
    CTL_RES_ENTRY,        /* an entry: seq and value (and id) */
    CTL_RES_NOT_FOUND,    /* 404 */
    CTL_RES_CAS_MISMATCH, /* 412 with current_seq */
    CTL_RES_DELETED,      /* delete succeeded */
};

/* One operation of a history. */
struct ctl_hop {
    uint64_t op;         /* operation number, unique in the file */
    uint64_t proc;       /* client (slot) that ran it */
    enum ctl_fn fn;      /* what it did */
    char* id;            /* entry id (create: from the result), or NULL */
    char* value;         /* value written (create/update), or NULL */
    bool has_if_match;   /* conditional write */
    uint64_t if_match;   /* expected seq */
    int64_t invoke_us;   /* when it was sent first */
    int64_t complete_us; /* when the final answer came (ok/fail only) */
    enum ctl_outcome outcome;
    enum ctl_result_kind res; /* ok only */
    uint64_t res_seq;         /* ENTRY: seq; CAS_MISMATCH: current_seq */
    char* res_value;          /* ENTRY: value (may be NULL if not returned) */
    size_t line;              /* line number in the file (1-based) */
};

/* A parsed history. */
struct ctl_history {
    struct ctl_hop* ops; /* owned */
    size_t count;        /* ops used */
    size_t cap;          /* ops allocated */
};

/* ctl_history_init - empty h. */
void ctl_history_init(struct ctl_history* h);
/* ctl_history_free - release everything h owns. */
void ctl_history_free(struct ctl_history* h);
/*
 * ctl_history_parse - parse JSON lines from `text` (len bytes) and append
 * them to h. Blank lines are skipped. Returns 0, or -1 with err filled
 * (line number and reason).
 */
int ctl_history_parse(const char* text,
                      size_t len,
                      struct ctl_history* h,
                      char* err,
                      size_t errlen);
/* ctl_history_load - ctl_history_parse of a whole file. */
int ctl_history_load(const char* path,
                     struct ctl_history* h,
                     char* err,
                     size_t errlen);
/*
 * ctl_hop_json - op as one history line (without newline). New reference.
 */
json_t* ctl_hop_json(const struct ctl_hop* op);
/* ctl_fn_name - "create", "get", "update", "delete". */
const char* ctl_fn_name(enum ctl_fn fn);

/* ---- ctl_check.c: linearizability ------------------------------------- */

/* Verdicts. */
enum ctl_verdict {
    CTL_LINEARIZABLE = 0,
    CTL_NOT_LINEARIZABLE = 1,
    CTL_UNDECIDED = 3, /* the search budget ran out */
};

/* Limits and results of a check. */
struct ctl_check_opts {
    uint64_t step_budget; /* search steps per key (0 = 20 million) */
    bool minimize;        /* find a smallest offending sub-history */
};

/* The report on one key that is not linearizable. */
struct ctl_check_bad {
    char* id;       /* the key (entry id), owned */
    size_t* ops;    /* indices into the history, invoke order, owned */
    size_t count;   /* how many */
    bool minimal;   /* 1-minimal: removing any one op makes it pass */
    size_t key_ops; /* operations of the key in the whole history */
};

/* The result of ctl_check. */
struct ctl_check_result {
    enum ctl_verdict verdict;  /* the worst over all keys */
    size_t keys;               /* keys checked */
    size_t ops_checked;        /* operations that took part */
    size_t ops_ignored;        /* failed reads/writes, ops without id */
    size_t indeterminate;      /* indeterminate writes considered */
    uint64_t steps;            /* search steps, all keys */
    size_t undecided_keys;     /* keys whose search ran out of budget */
    struct ctl_check_bad* bad; /* non-linearizable keys, owned */
    size_t bad_count;
};

/*
 * ctl_check - check h key by key (each entry id is a register: create
 * writes it, update writes it (compare-and-swap with if_match), delete
 * removes it, get reads it; an indeterminate write may take effect at any
 * point after its invocation, or never). Fills *res (release with
 * ctl_check_result_free) and returns res->verdict.
 */
enum ctl_verdict ctl_check(const struct ctl_history* h,
                           const struct ctl_check_opts* opts,
                           struct ctl_check_result* res);
/* ctl_check_result_free - release what res owns. */
void ctl_check_result_free(struct ctl_check_result* res);
/* ctl_check_print - print res (and the offending sub-histories) to out. */
void ctl_check_print(FILE* out,
                     const struct ctl_history* h,
                     const struct ctl_check_result* res);

/* ---- commands --------------------------------------------------------- */

/*
 * The commands. Each takes the arguments from the command name on
 * (argv[0] is "cluster", "flood", ...) and returns the process exit
 * status: 0 success, 1 a failed check or operation, 2 bad usage.
 */
/* ctl_cmd_cluster - `cluster SUBCOMMAND ...` (ctl_cluster.c). */
int ctl_cmd_cluster(int argc, char** argv);
/* ctl_cmd_load - flood, burst, mixed and storm (ctl_load.c). */
int ctl_cmd_load(int argc, char** argv);
/* ctl_cmd_bench - the throughput/latency table (ctl_load.c). */
int ctl_cmd_bench(int argc, char** argv);
/* ctl_cmd_verify - same data on every node (ctl_verify.c). */
int ctl_cmd_verify(int argc, char** argv);
/* ctl_cmd_watch - the live view (ctl_verify.c). */
int ctl_cmd_watch(int argc, char** argv);
/* ctl_cmd_check - linearizability of a history file (ctl_check.c); exits
 * with the ctl_verdict. */
int ctl_cmd_check(int argc, char** argv);

/* ---- ctl_chaos.c ------------------------------------------------------ */

/* Chaos settings (storm --chaos). */
struct ctl_chaos_opts {
    const char* data_dir;   /* the cluster made by cluster start */
    double kill_interval_s; /* seconds between events */
    long leader_pct;        /* % of kills aimed at the leader */
    long stop_pct;          /* % of events that SIGSTOP instead */
    long stop_ms;           /* how long a SIGSTOP lasts */
    const char* net_fault;  /* "drop=P,delay=MS,jitter=MS,peer=ID,
                               node=ID" or NULL */
    uint64_t seed;          /* PRNG seed */
    bool quiet;             /* no event lines on stderr */
};

/* Counters of a chaos run. */
struct ctl_chaos_stats {
    uint64_t kills;            /* SIGKILLs sent */
    uint64_t leader_kills;     /* of which to the leader of the moment */
    uint64_t stops;            /* SIGSTOP/SIGCONT pauses */
    uint64_t restarts;         /* nodes restarted and answering */
    uint64_t restart_failures; /* restarts that did not answer in time */
    uint64_t faults;           /* transport faults injected */
    uint64_t fault_errors;     /* fault requests refused or failed */
};

struct ctl_chaos;

/*
 * ctl_chaos_start - start the chaos thread. Returns 0 and *out, or -1
 * after printing why (no cluster in data_dir, ...).
 */
int ctl_chaos_start(const struct ctl_chaos_opts* opts, struct ctl_chaos** out);
/*
 * ctl_chaos_stop - stop the thread, restart any node it left down or
 * paused, clear injected faults, fill *stats and free c.
 */
void ctl_chaos_stop(struct ctl_chaos* c, struct ctl_chaos_stats* stats);

/*
 * ctl_chaos_events - how many chaos events (kills, pauses, restarts) have
 * completed so far. Thread-safe.
 */
uint64_t ctl_chaos_events(struct ctl_chaos* c);

/*
 * ctl_fault_inject - send a FaultInjectRequest to the node whose nng URL
 * is `nng_url` (its admin hook), for what it sends to node `peer`
 * (CTL_ALL_PEERS: to every peer; node ids start at 0). Returns 0, or -1
 * with err filled.
 */
#define CTL_ALL_PEERS UINT64_MAX
int ctl_fault_inject(const char* nng_url,
                     uint64_t peer,
                     double drop,
                     uint32_t delay_ms,
                     uint32_t jitter_ms,
                     bool partition,
                     bool clear,
                     char* err,
                     size_t errlen);

#endif /* SKEIN_CTL_H */
