/*
 * ctl_main.c - skeinctl's entry point: dispatches to the commands.
 */
#include <signal.h>
#include <string.h>

#include <curl/curl.h>

#include "ctl.h"

static void ctl_usage(FILE* out) {
    fprintf(out,
            "usage: skeinctl COMMAND [OPTIONS]   (skeinctl COMMAND --help)\n"
            "\n"
            "Cluster management:\n"
            "  cluster start [--nodes 3] [--port 8080] [--data DIR]   start "
            "a local cluster\n"
            "  cluster stop [--data DIR]                 stop it (SIGTERM, "
            "then SIGKILL)\n"
            "  cluster status [--nodes URLs]             health and entry "
            "counts\n"
            "  cluster sync-status [--leader URL]        per-follower sync "
            "status\n"
            "  cluster resync --leader URL --target ADDR force a snapshot "
            "resync\n"
            "  cluster transfer-leader [--to ID|auto]    hand leadership "
            "over\n"
            "  cluster add-node | remove-node --id N     membership\n"
            "Stress tests (--nodes URLs, default: the local cluster):\n"
            "  flood --count N --concurrency C           concurrent creates "
            "to the leader\n"
            "  burst --size N --bursts B --pause MS      batched writes with "
            "pauses\n"
            "  mixed --count N                           a mix of CRUD "
            "operations\n"
            "  storm --count N --concurrency C --read-pct P   random ops on "
            "random nodes\n"
            "  storm --chaos --kill-interval S           storm + node "
            "kills/restarts\n"
            "Diagnostics:\n"
            "  verify [--nodes URLs] [--timeout S]       every node holds the "
            "same data\n"
            "  watch [--interval S]                      live health view\n"
            "  bench [--connections 1,16,64,256] [--duration S] [--read]\n"
            "  check FILE                                linearizability of "
            "a --history file\n");
}

int main(int argc, char** argv) {
    if (argc < 2) {
        ctl_usage(stderr);
        return 2;
    }
    const char* cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        ctl_usage(stdout);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "skeinctl: curl_global_init failed\n");
        return 1;
    }
    int rv;
    if (strcmp(cmd, "cluster") == 0) {
        rv = ctl_cmd_cluster(argc - 1, argv + 1);
    } else if (strcmp(cmd, "flood") == 0 || strcmp(cmd, "burst") == 0 ||
               strcmp(cmd, "mixed") == 0 || strcmp(cmd, "storm") == 0) {
        rv = ctl_cmd_load(argc - 1, argv + 1);
    } else if (strcmp(cmd, "bench") == 0) {
        rv = ctl_cmd_bench(argc - 1, argv + 1);
    } else if (strcmp(cmd, "verify") == 0) {
        rv = ctl_cmd_verify(argc - 1, argv + 1);
    } else if (strcmp(cmd, "watch") == 0) {
        rv = ctl_cmd_watch(argc - 1, argv + 1);
    } else if (strcmp(cmd, "check") == 0) {
        rv = ctl_cmd_check(argc - 1, argv + 1);
    } else {
        fprintf(stderr, "skeinctl: unknown command '%s'\n\n", cmd);
        ctl_usage(stderr);
        rv = 2;
    }
    curl_global_cleanup();
    return rv;
}
