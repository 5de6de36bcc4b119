//! What `lab --help` and `lab --help-scenario` print: the options, a legend of every column,
//! and the scenario format with every key, threshold and rule.

use std::fmt::Write as _;

use crate::lab::report::COLUMNS;

/// The command line.
pub const USAGE: &str = "\
usage: lab [--scenario NAME|FILE]... [--stack a,b,c] [--settings FILE]
           [--settings-for STACK FILE]... [--json FILE] [--svg DIR] [--seed N]
           [--quick] [--wide] [--jobs N]
       lab --list | --help | --help-scenario

  --scenario NAME|FILE  run this built-in scenario (see --list) or scenario file
                        (repeatable); default: the built-in suite
  --stack LIST          stacks to run, comma-separated, from:
                        unprotected,naive,tower,tower-resilience,seawall (default: all)
  --settings FILE       the seawall stack's ClientStackConfig, as TOML (the file format a
                        service loads); default: ClientStackConfig::default(). The peers get
                        the equivalent settings where the concept exists
  --settings-for STACK FILE
                        settings for one stack: seawall takes a ClientStackConfig, tower and
                        tower-resilience take the lab's peer settings (the `settings` of
                        their rows in --json shows the keys)
  --json FILE           write the report as JSON (every figure, verdict, series, and every
                        stack's effective settings)
  --svg DIR             write one SVG timeline per scenario cell into DIR
  --seed N              the master seed of every random stream (default 1)
  --quick               shorten every scenario to 5 s before its first event and 10 s after
                        its last (for CI)
  --wide                show every column (the default table fits 120 columns)
  --jobs N              runs at once (default: the machine's cores); no number depends on it
  --list                list the built-in scenarios
  --help-scenario       the scenario file format, every threshold, and how each is measured

Every stack gets the workload's deadline as its total timeout (the unprotected one nothing
else). The peers
see 5xx and 429 as errors and do not read Retry-After (their crates have no such concept); a
tower-resilience row whose breaker opened, or whose outlier ejection went on past its ejection
time, is marked invalid (`!`, no verdicts counted): it times both with std::time::Instant,
which the paused clock does not move.

exit status: 0 when every seawall verdict passes or is a known failure of its scenario, 1 when
one fails unexpectedly, 2 on a usage or file error";

/// `--help`: the usage and the legend of the columns.
pub fn help() -> String {
    let mut out = String::from(USAGE);
    out.push_str("\n\ncolumns (the default table shows those marked *; --wide shows all):\n");
    for (name, default, meaning) in COLUMNS {
        let mark = if default { '*' } else { ' ' };
        let _ = writeln!(out, "  {mark} {name:<10} {meaning}");
    }
    out.push_str(
        "\nverdict lines: `pass`, `FAIL` (fails the run) or `FAIL*` (a known failure of the \
         scenario, with its reason; it does not fail the run); `[feature check: …]` marks a \
         verdict only a feature can pass.\n",
    );
    out
}

/// `--help-scenario`: the scenario format.
pub const SCENARIO: &str = r#"A scenario is a TOML file. Every key, with its default:

id = "my-db"                 # letters, digits, `-` and `_`
description = "what it shows"
duration = "60s"             # how long requests are sent, (0s, 1h]

[workload]
mode = "open"                # or "closed"
rate = 1000                  # open loop: requests per second over every client, (0, 100000]
arrivals = "uniform"         # open loop: or "poisson" (seeded)
phases = [{ start = "20s", end = "50s", rate = 1500 }]   # open loop: other rates, default none
concurrency = 64             # closed loop only: callers over every client, [clients, 100000]
think = "0ms"                # closed loop only: a caller's wait after an answer
clients = 1                  # independent client stacks sharing the downstream, [1, 10000]
keys = 1                     # keys (shards) each client's requests spread over, round-robin
deadline = "1s"              # each request's total budget

[downstream]
latency = { kind = "uniform", min = "8ms", max = "12ms" }   # the default; or
        # { kind = "fixed", value = "10ms" }, { kind = "long_tail", median = "10ms", p99 = "80ms" }
workers = 11                 # calls served at once; default: no capacity model, no queue
queue_limit = 1000           # calls that may wait for a worker; default unbounded
degrade_above = 22           # queue depth past which service slows down; default never
degraded = 0.8               # share of speed kept while degraded
quota = { rate = 300, burst = 50, retry_after = "2s" }   # default none
refuse = { status = 503, retry_after = "1s" }            # how a full queue answers
error_cost = "0ms"           # how long an `error` or `status` fault holds a worker
endpoints = 1                # replicas, each with its own workers, queue and latency draws,
                             # [1, 64]; the quota is over all of them

[[faults]]                   # as many as needed
kind = "error"               # see the kinds below
rate = 1.0                   # share of calls hit, (0, 1] (not for `capacity`)
start = "20s"
end = "30s"                  # or flapping = { down = "5s", up = "5s", cycles = 6 }
keys = [0]                   # default every key (not for `capacity`)
endpoints = [0]              # default every endpoint
# kind-specific keys:
latency = { kind = "fixed", value = "2s" }    # `slow`
from = "20ms"                                 # `latency_ramp`
to = "70ms"                                   # `latency_ramp`
code = 503                                    # `status`, in [400, 599]
retry_after = "1s"                            # `status`, optional
workers = 6                                   # `capacity`, at most downstream.workers

[matrix]                     # optional: the scenario runs once per combination (cell)
rate = [100, 1000, 10000]
clients = [1, 100, 1000]
latency_scale = [1, 5]

[stacks]                     # how the stacks meet endpoints and tails; default none of these
balance = "p2c"              # or "round_robin", or per stack: { seawall = "p2c", naive = "p2c" };
                             # default p2c (by pending calls) for tower, tower-resilience and
                             # seawall, round-robin for unprotected and naive
hedge = { delay = "20ms" }   # the seawall stack's `hedge` section when its settings have none;
                             # the tower stack hedges with tower::hedge at the same percentile
                             # (a fixed delay: seawall-hedge's default p95); tower-resilience
                             # with its hedge at the same fixed delay (it has no percentile
                             # delay, so with one it does not hedge)
outlier = {}                 # seawall-outlier's ejection under the seawall stack's p2c balancer;
                             # tower-resilience's outlier detection under its own, with the same
                             # failures in a row, ejection times and share (tower has none: it
                             # shows a stack without the feature)

[thresholds]                 # each one present is a verdict (see below)
amplification_fault_max = 1.1

[known_failing]              # verdicts the seawall stack is known to fail: printed as FAIL*,
detect_max = "one line on why"                    # they do not fail the run
recover_max = { reason = "why", cells = ["clients=1000", "rate=100 clients=100"] }

[features]                   # verdicts only a feature can pass, labelled in the output
only_faulty_keys_open = "per-key breakers"

FAULT KINDS
  error         the call fails with a transport error (a reset connection): at once, or after
                holding a worker for `error_cost`
  hang          the call never returns and holds no worker (a lost packet)
  slow          the answer comes `latency` later, holding no worker (a slow network); with an
                error fault at once, the error arrives after the delay
  status        the call is answered with status `code` (and `Retry-After: retry_after`): at
                once, or after holding a worker for `error_cost`
  latency_ramp  the whole service time goes from `from` to `to` over the window and holds a
                worker (the downstream got slower)
  capacity      the workers drop to `workers` for the window: calls in service finish, new
                calls see the reduced workers

WHAT THE DOWNSTREAM DOES WITH A CALL, in this order
  1. every fault active for the call's key draws its own die, in file order; windows of
     different kinds that overlap all apply, and faults may target different keys;
  2. a `hang` that hit: no answer;
  3. over the quota (a token bucket of `burst` refilled at `rate`/s, shared by every client):
     429 at once, with `Retry-After: retry_after`, or without it the time until a token,
     rounded up to whole seconds (at least 1 s); quota answers take no worker;
  4. an `error` or `status` that hit (the first in file order) with no `error_cost`: that
     answer at once;
  5. the call waits for a worker in FIFO order; with the queue full it is refused at once with
     `refuse` (default 503 without Retry-After; refusals take no worker and no error_cost);
     it holds the worker for `error_cost` (a costly error or status), the ramp's value, or the
     healthy latency (divided by `degraded` while the queue is past `degrade_above`);
  6. `slow` faults that hit delay the answer.
  A call its client abandons keeps its worker, as on a real server.

LOAD
  Open loop: `rate` is the total over every client, split evenly; each client's arrivals start
  at a random offset within one of its gaps. Latency runs from each request's intended send
  time (no coordinated omission). Closed loop: `concurrency` callers over every client (dealt
  in turn), each starting at a random instant in the first 100 ms, each sending its next call
  `think` after an answer, and at least 1 ms after a call answered at the instant it was sent;
  `rate`, `arrivals` and `phases` are not allowed. Each client stack is independent (its own
  budget, breaker, bulkhead), as N replicas of a caller are. Every stack, the unprotected one
  included, gets `deadline` as its total timeout: it is the caller's budget.

MATRIX
  `rate` scales the workload rate, its phases, the workers (capacity faults too) and the quota
  by the same factor (the downstream stays provisioned the same relative to its load; workers
  round up); `clients` sets the client count; `latency_scale` scales the downstream's latency,
  the faults' latencies, `error_cost`, the workers (capacity stays the same), the deadline and
  every time threshold. Every verdict must hold in every cell. A cell is named by its values:
  `outage-fleet [rate=100 clients=1000]`.

THRESHOLDS (each checked for every stack; the seawall stack's decide the exit status)
  "The fault span" runs from the first fault window or load phase to the end of the last;
  "after" from there to the end of the run. Goodput counts successes within the deadline;
  the attainable rate is, per 100 ms, min(offered load, downstream capacity, quota), where
  capacity is workers / mean service time in effect then (reduced by a capacity fault,
  raised by a latency ramp); in closed loop the offered load is what was sent. A quota's
  burst is served on top of its rate, so goodput against a quota can pass 100%.
  amplification_max          attempts at the downstream per request, whole run
  amplification_fault_max    the same for requests sent during faults and load phases
  amplification_open_max     the same for those sent while their breaker was open
  amplification_after_max    the same for requests sent after the fault span
  detect_max                 the median client's time from the span's start to its first
                             fast rejection (a failure with no attempt) or breaker not closed;
                             a client that never detects counts as never
  detect_calls_max           the median client's failed calls (attempts that brought no
                             success) from the span's start until it detected (or the span
                             ended)
  detect_calls_p99_max       the same for the 99th-percentile client
  recover_max                from the span's end to the first instant from which 5 seconds in
                             a row each have a rate of successes within the deadline of at
                             least 99% of before the span
  fast_fail_p99_max          p99 latency of fast rejections during faults
  p99_max, p999_max          latency of the requests sent during the span (the run without one)
  p99_after_max              p99 latency of the requests sent after the span
  false_open_time_max        time a breaker was open while the downstream was healthy for the
                             key of its requests, summed over breakers
  false_open_ratio_max       share of requests sent while healthy within the span that the
                             stack rejected itself
  rejections_max             requests the stack rejected itself
  bulkhead_rejections_max    requests a bulkhead or load shedder rejected
  inflight_max               most calls in flight at the downstream at once
  inflight_within_limit      true: each client's calls in flight at the downstream never
                             exceed its stack's concurrency limit
  breaker_opens_max          times a breaker opened, over every client and key
  transitions_per_cycle_max  transitions (opening, closing) of the busiest breaker per
                             flapping cycle
  success_fault_min          success rate of requests sent during faults and load phases
  success_min                success rate, whole run
  healthy_keys_success_min   success rate of keys no fault hits, during the span
  only_faulty_keys_open      true: requests of exactly the faulty keys met an open breaker
  false_timeout_max          share of requests sent while healthy that timed out
  goodput_min                goodput during the span over the attainable rate
  goodput_after_min          goodput after the span over the attainable rate
  accepted_p99_ratio_max     p99 of successes during the span over their p99 before it
  early_retries_max          retries (a request's second attempt or later) a client sent to a
                             key before a Retry-After it had received for that key expired
  eject_detect_max           the median client's time from the span's start to its first
                             request sent with an endpoint ejected (several endpoints only)
  ejected_max                most endpoints a client had ejected when it sent a request
  healthy_endpoints_success_min  share of the attempts at endpoints no fault hits, during the
                             span, that they served with a success within the deadline
"#;
