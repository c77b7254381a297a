#!/usr/bin/env bash
# Initial election: a fresh cluster of N nodes (default 3) elects exactly one
# leader that every node follows, and it commits writes sent to a follower.
BIN=${1:?usage: sc_election.sh BIN_DIR [NODES]}
N=${2:-3}
source "$(dirname "$0")/lib.sh"
F_NAME="election_$N"

f_start_cluster "$N"
t0=$(f_now_ms) # every node answers: the processes are up
leader=$(f_wait_leader 10 "${F_MEMBERS[@]}") || f_fail "no leader within 10 s of start"
f_timing election_ms $(($(f_now_ms) - t0))
f_ok "node $leader leads term $(f_field "$leader" term); all $N nodes agree"
follower=$(( leader % N + 1 ))
f_write_n "$follower" 10 e
f_ok "10 writes through follower $follower committed"
f_finish
