/*
 * ctl_verify.c - `skeinctl verify` (every node holds the same data) and
 * `skeinctl watch` (a live view of the cluster).
 *
 * verify waits until every node reports the same applied index, then
 * compares the entry count and the state hash each node reports at that
 * index (DESIGN.md "Data model": two nodes at the same applied index must
 * report the same hash). Unlike the seed's tool it fails: on an
 * unreachable node, on nodes that never reach the same applied index
 * before --timeout, and on any count or hash mismatch. --deep also
 * compares the entries themselves (stale reads of every node's list).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

/* ---- verify ---------------------------------------------------------------
 */

/* Reads every entry of a node (stale: its own state) as sorted lines
 * "id key seq value". Returns a JSON array of strings or NULL. */
static json_t* ctl_dump_entries(const char* base, char* err, size_t errlen) {
    json_t* lines = json_array();
    char after[64] = "";
    for (;;) {
        char url[CTL_URL_MAX + 160];
        snprintf(url, sizeof url, "%s/api/kv?consistency=stale&limit=1000%s%s",
                 base, after[0] ? "&after=" : "", after);
        long status;
        json_t* page = ctl_get_json(url, 30000, &status, err, errlen);
        if (!json_is_array(page)) {
            json_decref(page);
            json_decref(lines);
            return NULL;
        }
        size_t i;
        json_t* e;
        json_array_foreach(page, i, e) {
            json_t* id = json_object_get(e, "id");
            json_t* key = json_object_get(e, "key");
            json_t* val = json_object_get(e, "value");
            char* line = NULL;
            size_t n = 0;
            FILE* f = open_memstream(&line, &n);
            if (f == NULL) {
                continue;
            }
            fprintf(f, "%s key=%s seq=%llu value=%s",
                    json_is_string(id) ? json_string_value(id) : "?",
                    json_is_string(key) ? json_string_value(key) : "?",
                    (unsigned long long)ctl_json_u64(json_object_get(e, "seq")),
                    json_is_string(val) ? json_string_value(val) : "?");
            fclose(f);
            json_array_append_new(lines, json_string(line));
            free(line);
            if (json_is_string(id)) {
                snprintf(after, sizeof after, "%s", json_string_value(id));
            }
        }
        size_t got = json_array_size(page);
        json_decref(page);
        if (got < 1000) {
            break;
        }
    }
    return lines;
}

/* Compares two sorted dumps; prints up to 10 differences. Returns the
 * number of differing entries. */
static size_t ctl_diff_dumps(const char* name_a,
                             json_t* a,
                             const char* name_b,
                             json_t* b) {
    size_t i = 0, j = 0, diffs = 0;
    size_t na = json_array_size(a), nb = json_array_size(b);
    while (i < na || j < nb) {
        const char* x = i < na ? json_string_value(json_array_get(a, i)) : NULL;
        const char* y = j < nb ? json_string_value(json_array_get(b, j)) : NULL;
        size_t lx = x ? strcspn(x, " ") : 0, ly = y ? strcspn(y, " ") : 0;
        int c = x == NULL   ? 1
                : y == NULL ? -1
                            : strncmp(x, y, lx < ly ? ly : lx);
        if (c == 0 && strcmp(x, y) == 0) {
            i++, j++;
            continue;
        }
        if (diffs++ < 10) {
            if (c == 0) {
                printf("    differs: %s: %s\n             %s: %s\n", name_a, x,
                       name_b, y);
            } else if (c < 0) {
                printf("    only on %s: %s\n", name_a, x);
            } else {
                printf("    only on %s: %s\n", name_b, y);
            }
        }
        if (c <= 0) {
            i++;
        }
        if (c >= 0) {
            j++;
        }
    }
    return diffs;
}

static int ctl_deep_compare(const struct ctl_nodes* nodes) {
    json_t* ref = NULL;
    int bad = 0;
    for (size_t i = 0; i < nodes->count; i++) {
        char err[256];
        json_t* d = ctl_dump_entries(nodes->url[i], err, sizeof err);
        if (d == NULL) {
            printf("  deep: %s: cannot list entries: %s\n", nodes->name[i],
                   err);
            bad = 1;
            continue;
        }
        if (ref == NULL) {
            ref = d;
            printf("  deep: %s lists %zu entries\n", nodes->name[i],
                   json_array_size(d));
            continue;
        }
        size_t diffs = ctl_diff_dumps(nodes->name[0], ref, nodes->name[i], d);
        printf("  deep: %s lists %zu entries, %zu differ from %s\n",
               nodes->name[i], json_array_size(d), diffs, nodes->name[0]);
        bad |= diffs != 0;
        json_decref(d);
    }
    json_decref(ref);
    return bad;
}

int ctl_cmd_verify(int argc, char** argv) {
    const char *list = NULL, *data = NULL;
    double timeout_s = 30;
    bool json = false, help = false, deep = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help}, {"nodes", CTL_OPT_STR, &list},
        {"data", CTL_OPT_STR, &data},  {"timeout", CTL_OPT_DOUBLE, &timeout_s},
        {"json", CTL_OPT_FLAG, &json}, {"deep", CTL_OPT_FLAG, &deep},
    };
    struct ctl_nodes nodes;
    if (ctl_parse_opts("verify", argc - 1, argv + 1, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0) {
        return 2;
    }
    if (help) {
        printf(
            "usage: skeinctl verify [--nodes URL,...] [--timeout S] "
            "[--deep] [--json]\n"
            "Waits until every node reports the same applied index, then "
            "compares entry\ncounts and state hashes. Exit 0 only when "
            "every node answers and all agree.\n");
        return 0;
    }
    if (ctl_nodes_resolve(list, data, &nodes) != 0) {
        return 2;
    }
    struct ctl_status st[CTL_MAX_NODES];
    int64_t deadline = ctl_now_ms() + (int64_t)(timeout_s * 1000);
    bool same_index = false;
    int ref = -1; /* first node that answered: the reference */
    int64_t t0 = ctl_now_ms();
    for (;;) {
        bool all_up = true;
        same_index = true;
        ref = -1;
        for (size_t i = 0; i < nodes.count; i++) {
            ctl_fetch_status(nodes.url[i], 2000, &st[i]);
            all_up = all_up && st[i].ok;
            if (st[i].ok && ref < 0) {
                ref = (int)i;
            }
            same_index = same_index && (!st[i].ok || st[i].last_applied ==
                                                         st[ref].last_applied);
        }
        if (all_up && same_index) {
            break;
        }
        if (ctl_now_ms() >= deadline) {
            break;
        }
        ctl_sleep_ms(100);
    }
    int64_t waited = ctl_now_ms() - t0;
    bool ok = same_index;
    size_t down = 0;
    json_t* arr = json_array();
    for (size_t i = 0; i < nodes.count; i++) {
        const char* verdict = "OK";
        if (!st[i].ok) {
            verdict = "DOWN";
            down++;
        } else if (!same_index) {
            verdict = "APPLIED INDEX DIFFERS";
        } else if (st[i].entry_count != st[ref].entry_count) {
            verdict = "COUNT MISMATCH";
            ok = false;
        } else if (strcmp(st[i].state_hash, st[ref].state_hash) != 0) {
            verdict = "HASH MISMATCH";
            ok = false;
        }
        json_t* o = json_object();
        json_object_set_new(o, "node", json_string(nodes.name[i]));
        json_object_set_new(o, "verdict", json_string(verdict));
        if (st[i].ok) {
            json_object_set_new(o, "node_id",
                                json_integer((json_int_t)st[i].node_id));
            json_object_set_new(o, "role", json_string(st[i].role));
            json_object_set_new(o, "last_applied",
                                json_integer((json_int_t)st[i].last_applied));
            json_object_set_new(o, "entry_count",
                                json_integer((json_int_t)st[i].entry_count));
            json_object_set_new(o, "state_hash", json_string(st[i].state_hash));
            if (!json) {
                printf(
                    "%-21s node %-3llu %-9s applied %-9llu entries %-9llu "
                    "hash %-16s %s\n",
                    nodes.name[i], (unsigned long long)st[i].node_id,
                    st[i].role, (unsigned long long)st[i].last_applied,
                    (unsigned long long)st[i].entry_count, st[i].state_hash,
                    verdict);
            }
        } else {
            json_object_set_new(o, "error", json_string(st[i].error));
            if (!json) {
                printf("%-21s DOWN: %s\n", nodes.name[i], st[i].error);
            }
        }
        json_array_append_new(arr, o);
    }
    int deep_bad = 0;
    if (deep && down == 0) {
        deep_bad = ctl_deep_compare(&nodes);
    }
    ok = ok && down == 0 && deep_bad == 0;
    if (json) {
        json_t* o = json_object();
        json_object_set_new(o, "consistent", json_boolean(ok));
        json_object_set_new(o, "nodes", arr);
        json_object_set_new(o, "waited_ms", json_integer(waited));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        json_decref(arr);
        if (ok) {
            printf(
                "verify: OK: %zu nodes agree at applied index %llu: %llu "
                "entries, state hash %s\n",
                nodes.count, (unsigned long long)st[0].last_applied,
                (unsigned long long)st[0].entry_count, st[0].state_hash);
        } else if (down > 0) {
            printf("verify: FAILED: %zu of %zu nodes unreachable\n", down,
                   nodes.count);
        } else if (!same_index) {
            printf(
                "verify: FAILED: applied indexes still differ after "
                "%.1f s\n",
                timeout_s);
        } else {
            printf("verify: FAILED: nodes disagree at applied index %llu\n",
                   (unsigned long long)st[ref].last_applied);
        }
    }
    return ok ? 0 : 1;
}

/* ---- watch ----------------------------------------------------------------
 */

static volatile sig_atomic_t ctl_watch_stop;

static void ctl_watch_signal(int sig) {
    (void)sig;
    ctl_watch_stop = 1;
}

/* The leader's view of one follower, from /_raft/sync-status. */
struct ctl_follower_view {
    bool known;
    char health[16];
    uint64_t lag;
    uint64_t latency_ms;
};

static void ctl_follower_views(const char* leader_url,
                               const struct ctl_nodes* nodes,
                               const struct ctl_status* st,
                               struct ctl_follower_view* fv) {
    char url[CTL_URL_MAX + 32];
    char err[160];
    long status;
    memset(fv, 0, sizeof *fv * nodes->count);
    snprintf(url, sizeof url, "%s/_raft/sync-status", leader_url);
    json_t* doc = ctl_get_json(url, 1000, &status, err, sizeof err);
    json_t* fs = doc != NULL ? json_object_get(doc, "followers") : NULL;
    size_t k;
    json_t* f;
    json_array_foreach(fs, k, f) {
        json_t* addr = json_object_get(f, "address");
        uint64_t id = ctl_json_u64(json_object_get(f, "id"));
        for (size_t i = 0; i < nodes->count; i++) {
            bool match =
                (json_is_string(addr) &&
                 strcmp(json_string_value(addr), nodes->name[i]) == 0) ||
                (st[i].ok && st[i].node_id == id &&
                 json_object_get(f, "id") != NULL);
            if (!match) {
                continue;
            }
            json_t* h = json_object_get(f, "health");
            fv[i].known = true;
            snprintf(fv[i].health, sizeof fv[i].health, "%s",
                     json_is_string(h) ? json_string_value(h) : "?");
            fv[i].lag = ctl_json_u64(json_object_get(f, "lag"));
            fv[i].latency_ms =
                ctl_json_u64(json_object_get(f, "last_latency_ms"));
        }
    }
    json_decref(doc);
}

/* The members of the cluster `leader_url` belongs to (its configuration's
 * http addresses), for `watch --leader URL`. Returns 0 or -1. */
static int ctl_nodes_from_leader(const char* leader_url,
                                 struct ctl_nodes* nodes) {
    struct ctl_nodes one;
    if (ctl_nodes_parse(leader_url, &one) != 0) {
        return -1;
    }
    char url[CTL_URL_MAX + 16];
    char err[160];
    long status;
    snprintf(url, sizeof url, "%s/status", one.url[0]);
    json_t* doc = ctl_get_json(url, 2000, &status, err, sizeof err);
    json_t* members =
        json_object_get(json_object_get(doc, "configuration"), "members");
    char list[CTL_MAX_NODES * 64] = "";
    size_t off = 0;
    size_t i;
    json_t* m;
    json_array_foreach(members, i, m) {
        json_t* h = json_object_get(m, "http_address");
        if (json_is_string(h) && json_string_length(h) > 0 &&
            off + json_string_length(h) + 2 < sizeof list) {
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s",
                                    off ? "," : "", json_string_value(h));
        }
    }
    json_decref(doc);
    if (off == 0) {
        *nodes = one; /* no configuration: watch that node alone */
        return 0;
    }
    return ctl_nodes_parse(list, nodes);
}

int ctl_cmd_watch(int argc, char** argv) {
    const char *list = NULL, *data = NULL, *leader_opt = NULL;
    double interval = 1;
    long count = 0;
    bool help = false;
    const struct ctl_opt opts[] = {
        {"help", CTL_OPT_FLAG, &help},
        {"nodes", CTL_OPT_STR, &list},
        {"leader", CTL_OPT_STR, &leader_opt},
        {"data", CTL_OPT_STR, &data},
        {"interval", CTL_OPT_DOUBLE, &interval},
        {"count", CTL_OPT_LONG, &count},
    };
    struct ctl_nodes nodes;
    if (ctl_parse_opts("watch", argc - 1, argv + 1, opts,
                       sizeof opts / sizeof opts[0], NULL, 0, NULL) != 0 ||
        interval <= 0) {
        return 2;
    }
    if (help) {
        printf(
            "usage: skeinctl watch [--nodes URL,...] [--interval S] "
            "[--count N]\n"
            "A live view of every node: role, term, commit/applied, lag "
            "and health (as the\nleader sees it), writes/s. Redrawn in "
            "place on a terminal; plain lines otherwise.\n");
        return 0;
    }
    if (list == NULL && leader_opt != NULL
            ? ctl_nodes_from_leader(leader_opt, &nodes) != 0
            : ctl_nodes_resolve(list, data, &nodes) != 0) {
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ctl_watch_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool tty = isatty(1);
    struct ctl_status st[CTL_MAX_NODES];
    struct ctl_follower_view fv[CTL_MAX_NODES];
    uint64_t prev_seq[CTL_MAX_NODES] = {0};
    int64_t prev_t = 0;
    for (long tick = 0; !ctl_watch_stop && (count == 0 || tick < count);
         tick++) {
        int64_t t = ctl_now_us();
        int leader = -1;
        for (size_t i = 0; i < nodes.count; i++) {
            ctl_fetch_status(nodes.url[i], 1000, &st[i]);
            if (st[i].ok && strcmp(st[i].role, "leader") == 0) {
                leader = (int)i;
            }
        }
        if (leader >= 0) {
            ctl_follower_views(nodes.url[leader], &nodes, st, fv);
        } else {
            memset(fv, 0, sizeof fv);
        }
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(when, sizeof when, "%H:%M:%S", &tm);
        if (tty) {
            printf("\033[H\033[J");
            printf(
                "skeinctl watch: %zu nodes, every %.1f s, %s (Ctrl-C "
                "quits)\n\n",
                nodes.count, interval, when);
        }
        if (tty || tick == 0) {
            printf("%s%-21s %-4s %-9s %6s %9s %9s %7s %-9s %9s %8s\n",
                   tty ? "" : "time     ", "NODE", "ID", "ROLE", "TERM",
                   "COMMIT", "APPLIED", "LAG", "HEALTH", "WRITES/S", "ENTRIES");
        }
        double dt = prev_t > 0 ? (double)(t - prev_t) / 1e6 : 0;
        for (size_t i = 0; i < nodes.count; i++) {
            if (!tty) {
                printf("%s ", when);
            }
            if (!st[i].ok) {
                printf("%-21s DOWN (%s)\n", nodes.name[i], st[i].error);
                continue;
            }
            double wps = dt > 0 && st[i].write_seq >= prev_seq[i]
                             ? (double)(st[i].write_seq - prev_seq[i]) / dt
                             : 0;
            prev_seq[i] = st[i].write_seq;
            char lag[24] = "-";
            const char* health = (int)i == leader ? "leader" : "?";
            if (fv[i].known) {
                snprintf(lag, sizeof lag, "%llu",
                         (unsigned long long)fv[i].lag);
                health = fv[i].health;
            }
            printf("%-21s %-4llu %-9s %6llu %9llu %9llu %7s %-9s %9.0f %8llu\n",
                   nodes.name[i], (unsigned long long)st[i].node_id, st[i].role,
                   (unsigned long long)st[i].term,
                   (unsigned long long)st[i].commit_index,
                   (unsigned long long)st[i].last_applied, lag, health, wps,
                   (unsigned long long)st[i].entry_count);
        }
        if (leader < 0) {
            printf("%sno leader\n", tty ? "\n" : "");
        }
        fflush(stdout);
        prev_t = t;
        if (count != 0 && tick + 1 >= count) {
            break;
        }
        int64_t sleep_ms =
            (int64_t)(interval * 1000) - (ctl_now_us() - t) / 1000;
        while (sleep_ms > 0 && !ctl_watch_stop) {
            int64_t step = sleep_ms < 100 ? sleep_ms : 100;
            ctl_sleep_ms(step);
            sleep_ms -= step;
        }
    }
    return 0;
}
