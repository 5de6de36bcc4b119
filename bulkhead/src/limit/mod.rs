//! Adaptive limit algorithms, as Netflix's `concurrency-limits` defines them.
//!
//! A fixed limit has to be guessed, and a guess is wrong as soon as the downstream slows
//! down, scales out or shares its capacity with someone else. An adaptive limit measures
//! instead: each finished call is a sample of its latency, of how many calls were in flight
//! when it started, and of whether it dropped (failed, was rejected further in, or took too
//! long). By Little's law a downstream at capacity answers more slowly as concurrency grows,
//! so latency that rises with the limit says the limit is too high.
//!
//! - [AIMD](aimd) is loss-based: it only learns from drops. Good for clients, which see their
//!   downstream's errors and timeouts.
//! - [Vegas](vegas) and [Gradient2](gradient2) are latency-based: they shrink the limit as
//!   soon as latency rises, before anything fails. Good for servers protecting themselves.
//!
//! Samples are gathered in windows, as Netflix's `WindowedLimit` does: a window of at least
//! ten calls is summed up as its average latency, its largest in-flight count and whether any
//! call dropped, and only that summary moves the limit. Moving the limit on every call would
//! let one slow burst (every call of which is slow) cut the limit once per call, down to the
//! minimum.
//!
//! Each algorithm is a plain state machine over samples (no clock, no locks), which keeps
//! them easy to check against Netflix's definitions.
//!
//! # The Little's-law floor
//!
//! A latency-based algorithm reads rising latency as a queue it caused, and cuts the limit. A
//! downstream that got slower without being overloaded (a colder cache, a longer query) also
//! answers later, and there the cut only rejects calls the downstream would have served: at an
//! arrival rate λ and a mean latency W, Little's law says λ × W calls are in flight on average,
//! whatever the limit. So, for all three algorithms alike, a window that shows no sign of
//! overload lifts the limit to at least
//!
//! `floor = 1.25 × λW + 3 × √(λW)`
//!
//! - `3 × √(λW)`: with arrivals at random, the calls in flight vary around λW as a Poisson
//!   count (an M/G/∞ queue), which stays under this about 99.9 % of the time;
//! - `1.25`: the latency may rise by a quarter during the next window before the floor follows.
//!
//! Overload shows as an overload refusal (429, 503 with Retry-After, `RESOURCE_EXHAUSTED`),
//! a call shed further in (a breaker, a timeout), or calls that did not finish as fast as they
//! came: more than 5 % of the window's arrivals either rejected by this bulkhead or still
//! piling up in flight (past the count's own noise, see "A count's noise is no backlog"). In
//! such a window the floor does not apply and the algorithm alone moves the limit, down. A
//! plain failure is a drop for the algorithm, which backs off, but not overload: a downstream
//! failing 30 % of its calls in a brownout is not asking for fewer of them, and a limit under
//! Little's law there only turns its successes away too. λ counts the calls this bulkhead
//! rejected too, so the floor is what the offered load needs, not what the limit let in; W
//! counts the time calls cancelled before their answer (by a timeout further out) held their
//! slots, so 5 % of calls hanging until a 100 ms timeout raise the floor as they raise the
//! calls in flight. The floor never exceeds the algorithm's maximum:
//! set that maximum to at least the highest rate times the highest latency the client must
//! carry.
//!
//! # Slow start
//!
//! A limit that starts low and grows by a few calls a window takes minutes to reach what a
//! busy client needs: at 10 000 calls a second and 20 ms, Little's law asks for 200 calls in
//! flight, and Vegas's `+6` a one-second window gets there from 20 in 30 s, turning away
//! 80–95 % of the calls meanwhile. The floor does not help, since a window in which the limit
//! turned calls away is not one without overload.
//!
//! What tells "my own limit is the bottleneck" from "the downstream queues" is whether the
//! latency rose with the calls let in. A window in which the limit turned away more than 5 %
//! of the arrivals, while those it admitted finished as fast as they came and the mean latency
//! stayed within `f(limit) = max(1, ⌊log10 limit⌋)` queued calls of the lowest window mean
//! seen (Vegas's estimate `limit × (1 − base / mean)`, and the band in which Vegas itself
//! grows fastest), shows a limit too low for a downstream that is not queueing: it doubles the
//! limit, as TCP's slow start does each round trip, up to the offered load's floor.
//!
//! A window's mean is itself noisy: a long tail's latencies spread about as wide as their
//! mean, so over `n` calls the mean wanders by `1/√n` of itself. A rise of the mean over the
//! lowest one within three standard errors of their difference (each the window's deviation
//! over `√n`) is therefore read as no rise at all; a rise beyond it is real, and is read in
//! full. At a median of 50 ms and a p99 of 400 ms (deviation ≈ 1.1 × mean) 570 calls a window
//! give a standard error of 4.6 %: a mean of 70.7 ms against the lowest, 64.8 ms, read as
//! 40 × (1 − 64.8 / 70.7) = 3.3 queued calls and ended slow start at 40, against a floor of
//! 115; its rise (5.9 ms) is within 3 × √2 × 4.6 % (13 ms) and reads none. Vegas's own
//! estimate allows the same noise, or it cuts such a limit by a few calls a window (80 calls
//! read 7 queued against its `6f = 6`). A real queue stands far outside this noise: 20 calls
//! on 11 workers of 8–12 ms wait about 8 ms, while the standard error over 1000 calls is
//! 0.1 ms. Only the test is noisy, not the size of a queue: shaving three standard errors off
//! every rise, real or not, would read a queue that formed within the first window (its mean,
//! 87.5 ms, the lowest; then 100 ms, 16 standard errors above) as 11 calls instead of 13, and
//! keep a limit of 100 on 10 workers.
//!
//! A downstream at its knee makes the calls past its workers wait, so the first doubling past
//! the knee shows as a queue: 20 calls on 11 workers of 10 ms keep 9 waiting, a mean near
//! 18 ms and an estimate of 9 calls against `f = 1`. That window ends slow start and, as TCP's
//! `ssthresh`, half the limit of the last overloaded window (a queue while turning calls away,
//! a drop, a backlog) caps later doublings; above it only the algorithm's own rule moves the
//! limit. At 10 000 calls a second and 20 ms the limit goes 20, 40, 80, 160, then the floor
//! (292) in five windows instead of thirty. Gradient2 has no slow start: its long-term average
//! latency would take the queue of one doubling past the knee as the new normal.
//!
//! # A tail is no queue
//!
//! A window's mean rises with a queue and with a tail alike: one call in ten answering 100 ms
//! late doubles a 10 ms mean, which Vegas reads as half the limit queued. Whether that rise
//! counts depends on the window's calls: up to 80 calls a window the tail's spread (a
//! deviation of 30 ms) keeps it within three standard errors; at 200 a second it counts, but
//! a limit of 20 is five times the 4 calls Little's law asks and never binds; at 10 000 the
//! standard error is 0.3 ms and the limit is what Little's law asked before the tail. Whether
//! the downstream queues does not depend on the rate: a queue delays every call behind it, the
//! fastest too, and a tail leaves the others as fast as before. So a window whose mean shows a
//! queue while the fastest of the last 16 to 32 successes shows none (the window's completions
//! a second times their wait over the fastest seen, Little's law over the queue alone, at most
//! `f(limit)` calls: the test a call that finds the limit full makes) is read as a window
//! without a queue: the floor, or slow start while the limit turns calls away, lift the limit
//! over Vegas's cut. At 10 000 calls a second with 30 % of calls failing and 10 % answering
//! 100 ms late (the lab's `overlap`), Vegas read `163 × (1 − 10.5 / 18.7) = 71` queued, and the
//! drops took the limit from 163 to 121, two a window, while Little's law asked ~205 in flight:
//! 67 000 calls turned away in the fault. Now its first window doubles the limit to 305 and the
//! floor holds it at 295–309.
//!
//! A tail's late calls are also still in flight when a window closes: `λ × p × L` of them for a
//! share `p` answering `L` late, against the window's `λ × T` arrivals, so once `p × L` passes
//! 5 % of the window `T` they read as calls piling up, the backlog of an overload. At 1000
//! calls a second, 10 % answering 500 ms late in a 1 s window, with 30 % failing (the variant
//! `overlap-slow-500ms`), that window set slow start's threshold to half its limit (22) while
//! Little's law asked ~100: 4326 calls turned away in the fault, against ~100 at 480 ms late
//! (4.8 %). A window with such a tail's mean therefore sets no threshold and lets slow start go
//! on, as when only the limit turns calls away; a backlog at a flat mean (calls that hang)
//! still waits, and so does one whose fastest answers show a queue.
//!
//! # A count's noise is no backlog
//!
//! The backlog test reads the calls in flight at a window's two ends, and those are two
//! readings of one count, which differ with no backlog at all: with arrivals at random the
//! calls at work are a Poisson count, and two readings `T` apart differ by about
//! `√(2λ × min(T, W))`, `λ` the pace calls leave at; at a steady pace, by the call that
//! arrives at the instant another answers. Where a window holds thousands of calls that is
//! well within 5 % of them (1000 calls a second of 10 ms: `3 × √20 = 13` against 50), but at
//! a few calls a window 5 % is less than one call: at 10 calls a second of 2 s, a window that
//! opened with 20 in flight and closed with 21 "admitted" 11 and answered 10, a backlog. On
//! the lab's `slow-2s-deadline-3s-300rps [clients=30]` (each client 10 calls a second, 10 ms
//! stepping to 2 s) such a window came in 4 of the 30 clients (seed 1) once the recent
//! successes were all slow; Vegas, against the latency before the step, cut the limit from
//! 39 to 3, and the calls it turned away left a gap in the answers a latency later that read
//! as a backlog again: a cut every 3.2 s for the whole step. With arrivals at random such
//! windows come in most clients: the same step with Poisson arrivals turned 1980–2450 calls
//! away in 20 s (seeds 1–3).
//!
//! So in a window whose mean latency is within three standard errors of the last window's
//! (the latency held), the calls left in flight up to `3 × √(2λ × min(T, W))`, `λ` its
//! completions a second, count as answered. A queue that builds raises the latency window
//! after window (a fleet's 1500 calls a second against 1100 served add 0.36 s of wait a
//! window) and keeps the 5 % test; calls that hang while the others answer as fast pile up
//! past the noise (5 % of 1000 a second: 50 a window against `3 × √(2 × 1000 × 0.01) = 13`),
//! and so do 10 calls a second of 2 s that leave 40 in flight where 20 were (20 against 13.4).
//!
//! # Nothing answered yet is no backlog
//!
//! When the latency steps up, the calls in flight rise to Little's law at the new latency
//! before any of them can answer: at 20 calls a second stepping from 10 ms to 3 s, the window
//! holding the step answered 13 calls at 10 ms, heard nothing for 3 s, and closed at the first
//! slow answer with 20 in flight where 1 was (the limit full, 42 turned away). That is a real
//! rise, not a count's noise, and it read as a backlog: slow start's threshold went to half
//! the limit (10), the next window (a tail, its fastest answers still at 10 ms) lifted the
//! limit only to it while Little's law asked 60, and Vegas cut it to 3 once the recent
//! successes were all slow (the lab's scratch `3 s, 600/s [30]`: 0.42 against 0.95).
//!
//! A call let in after the latency rose cannot have answered before that latency has passed.
//! So the backlog test (and `limited`, the limit turning calls away while those it admitted
//! keep up) counts as at work the calls left in flight up to the window's admissions a second
//! times the rise of the slowest of the last 16 to 32 successes over the last window's mean
//! (at most the window's length): Little's law over the rise. The window is still not served
//! (the floor does not lift the limit on calls that have not answered), and Vegas still reads
//! its mean. Calls that hang past the latency the downstream has shown are no part of the rise
//! and stay a backlog, and so do calls that pile up at a latency that held (the slowest recent
//! success no slower than the last mean: 20 calls piling up at 2 s where 20 were). A queue
//! whose answers come slower window after window satisfies Little's law too, its calls in
//! flight those that came since the latest answer's call; its rising mean is what Vegas reads
//! and cuts (a queue delays the fastest answers too: no tail), with the threshold set as before.
//!
//! # A slower downstream at a held latency
//!
//! A downstream that got uniformly slower while the limit did not bind completes what it is
//! offered, so its completions do not fall and the rule below that reads a slower downstream
//! from them never fires: the latency without a queue stays the one from before the step,
//! and once the recent successes are all slow, any window that is not served (Poisson peaks
//! of the calls in flight finding the limit full, a count's noise past 5 %) reads as a queue
//! of nearly the whole limit, which Vegas cuts to its minimum. At 10 calls a second stepping
//! from 10 ms to 2 s with arrivals at random, every client of 30 met such windows: 2 s of
//! calls turned away each time, until a cut's check lifted the limit back.
//!
//! A queue that builds raises the latency window after window; one behind our own calls or a
//! fleet's that stands still leaves calls piling up in flight. So a window at a mean within
//! three standard errors of the last window's (the latency held), without a drop, that
//! Vegas's estimate reads as a queue, takes that mean as the latency without a queue, and its
//! fastest recent success as the fastest seen: the downstream's own latency now. It does so
//! once it is served (no sign of overload), for the windows after it; and, before the
//! algorithm reads it, when it only turned calls away while the last window was served at
//! that latency, or only turned calls away at a mean that stepped up past 1.5 × the window's
//! before (the slower-downstream rule's rise) and that its fastest answers showed was a tail,
//! and none of its calls piled up: the first window at a step's new latency is no held one,
//! and at 10 calls a second of 2 s the next one turning one call of 16 away at the Poisson
//! peaks of its calls in flight was otherwise cut to the minimum; at 20 calls a second of 3 s
//! no window is served before that (Little's law asks 60, slow start's first lift gives 40),
//! and the window after the step's tail window, its recent successes all slow, was cut from
//! 40 to 3 (the lab's scratch `3 s, 600/s [30]`). A queue that builds delays the fastest
//! answers too (no tail), and one that stands still does not step its mean up. Calls that
//! then pile up past the count's noise at a held latency (see "A count's noise is no
//! backlog") are a backlog that latency hides, not the downstream's pace: the latency
//! without a queue and the fastest seen go back to what they were before the first such
//! rebase, and the algorithm cuts from there, as without it. A latency that falls below the
//! base lowers it as before.
//!
//! # The first window's censored tail
//!
//! The first window opens with few calls in flight (the guess's at most), so the calls it
//! sums are nearly all its own, and the long ones are the likelier to be still in flight at
//! its close: a call that arrives at `a` in a window of `T` is summed if `L ≤ T − a`. With
//! arrivals at a steady rate and `L < T`, a call of latency `L` is summed with weight
//! `(T − L) / T`, so the window's mean is `E[L(T − L)] / E[T − L] = μ − σ² / (T − μ)` whatever
//! the tail's shape: low by the latencies' variance over the window left after a mean call.
//! Later windows are not: the calls a window leaves in flight finish in the next, in the
//! proportion its own late calls leave. A long tail at a median of 50 ms and a p99 of 400 ms
//! (μ = 74.5 ms, σ = 82 ms) reads 7.3 ms low in a 1 s window; the next windows then read the
//! unbiased mean as a queue whenever their noise adds a few milliseconds (`long-tail
//! [latency_scale=5]`, seed 3 with the start's noise allowance below: 62.9 ms and then
//! 81.5 ms ended slow start at a limit of 10, against a floor of ~130). The first window's
//! mean therefore has `s² / (T − m)` added back, with `m` and `s²` the mean and variance of
//! the calls it summed. That leaves
//! `−(κ₃ + 2σ⁴ / (T − μ)) / (T − μ)²`, with `κ₃` the latencies' third central moment: 3 ms of
//! the 7.3 above, and less than 0.1 ms at a median of 10 ms and a p99 of 80 ms. The
//! derivation needs the calls to finish well within the window: where the mean and three
//! deviations pass it, the mean is taken as it is. It also needs their latencies not to climb
//! through the window: a queue that builds in it (1500 calls a second on 10 workers of 10 ms
//! fill 100 slots in 0.2 s) leaves its latest calls the slowest, the fastest recent success
//! slower than the window's mean, and its calls in flight a queue's, which no base should take
//! in; such a window's mean is taken as it is.
//!
//! The same calls in flight make the first window look like a backlog: it admits `λT` calls
//! and leaves `λμ` of them at work when it closes, so it finishes `1 − μ / T` of its arrivals,
//! short of the 95 % an overload's test asks whenever `μ > 0.05 T` (7.5 % at 74.5 ms), and set
//! slow start's threshold to half the guess (10) at the start of a healthy downstream. Later
//! windows leave as many calls in flight as they found. So the first window's backlog test
//! excuses the calls in flight it added up to Little's law at its pace and mean (`λ × W`);
//! calls that pile up past that (calls that hang, a queue) are still a backlog.
//!
//! # A slower downstream, or a queue behind our own calls
//!
//! Both raise the latency while the limit turns calls away, and Vegas's estimate reads both
//! as a queue. Throughput tells them apart. A downstream that queues at its capacity keeps
//! completing calls at that capacity, whatever the latency; one that got slower completes
//! `limit / latency` a second at a pinned limit, so its completions fall as its latency rises.
//! A window whose mean latency rose more than 1.5 × the last window's, and whose completions
//! a second fell by more than the square root of that rise, is a slower downstream: the
//! limit goes to Little's law at the offered load (the larger of the two windows' arrivals a
//! second, since our own rejections and a breaker further out hide some of it, times the new
//! latency, with the floor's headroom, capped at the maximum), and the new latency becomes
//! the latency without a queue. Completions that held, or fell by less (a capacity degrading
//! under a queue loses a fifth), are a queue and the algorithm cuts as before. At 1000 calls
//! a second stepping from 10 ms to 200 ms, with the limit at 23: completions fall from 1000 to
//! 115 a second while latency rises 20 ×, and the limit goes to 293 in one window.
//!
//! One window cannot tell a slower downstream from one that lost capacity (half its workers
//! at a pinned limit also halve completions and double latency), so the raise is a probe: the
//! next window keeps it only if completions rose by half the raise (at most by a quarter);
//! otherwise the limit, and the latency without a queue, go back to what they were, and the
//! algorithm cuts from there.
//!
//! # A call that finds the limit full
//!
//! A window learns after a second; the call that finds the limit full needs an answer now. A
//! queue in front of the downstream delays every call behind it, the fastest too, while a share
//! of calls that hang (until a timeout further out) or come late leaves the others as fast as
//! before. So such a call is let in over the limit when the fastest of the last 16 to 32
//! successes shows no queue (at most `f(in_flight)` calls, counted as below), a success
//! finished within four of those latencies, and the limit is under its maximum. Turning it
//! away could only lose a call the downstream serves at its pace:
//! 5 % of 1000 calls a second hanging for 160 ms hold 8 slots more than the floor learned
//! before the fault, and Poisson peaks of the calls in flight reach 30–35 against a healthy
//! floor of 23. The fastest recent success lags a queue that builds meanwhile by a round trip,
//! so at most one call over the limit per call that finished (four in a burst) comes in, and
//! each raise lasts until the next call finishes: at 1500 calls a second against 1100 served,
//! unpaced raises let in 26 calls against a limit of 15 and doubled the accepted latency.
//!
//! The queue is counted by Little's law over the queue alone: the last window's completions a
//! second times how much slower the fastest recent success is than the fastest seen (the
//! calls that arrive while one waits). Vegas's own estimate at the calls in flight, `in_flight
//! × (1 − fastest seen / fastest recent)`, counts the calls that hang as queued too: at the
//! onset of 10 % of calls hanging, 20 calls in flight younger than the held age below and a
//! fastest recent success of 13 ms against 9 ms read as 6.2 queued, where 1000 completions a
//! second waiting 4 ms more are a queue of 4. Both agree when every call in flight is at work
//! (1500 calls a second on 11 workers: 20 in flight waiting ~8 ms read 8.9 and 8.8). Before a
//! window has paced the completions, Vegas's estimate counts.
//!
//! Calls that hang are let in for more directly: a call in flight older than twice the
//! slowest of those 16 to 32 successes, while the fastest shows no queue Vegas would cut
//! (`6f`), is held, not queued, and counts against the maximum only (the limit is raised by
//! the held calls until the next call finishes). A call waiting in a queue is no older than
//! the slowest success that waited in it, so the age alone tells them apart; the slowest of
//! 16 to 32 successes is near their 97th percentile, and twice it covers an exponential tail
//! to beyond its 99.9th. A queue also slows every success, the slowest too, which raises the
//! age a call must reach, and a large one is never excused. So are the calls in flight beyond
//! what Little's law puts at work, the floor of the completions a second times the slowest
//! recent success: those that have not hung long enough to be told by their age. At 1000
//! calls a second, 10 % hanging until a 1 s deadline and successes of 8–12 ms, 100 calls hang
//! at once against ~11 answering: paced by the calls that finish, 0.9 credits per arrival fell
//! 0.1 a call short (697 turned away); held by age (four times the slowest success at first)
//! the onset still turned 2–3 away, and at 20 % hanging the calls younger than that age turned
//! away 50; now none. The retries of the hung calls bring the downstream to its 1100 calls a
//! second, so the fastest recent success reads 10–13 ms against 9 ms: a queue of 1–4 calls,
//! more than `f`, which is why the band is Vegas's cut rather than its band of no queue.
//! Calls are counted by the time slice (a 64th of the sample window) they started in, one
//! atomic bucket per slice, and summed only when a call finds the limit full.
//!
//! When no call finished at all, success or failure, within four of those latencies, nothing
//! shows a queue: a downstream that stepped from 10 ms to a latency `L` answers nothing from
//! about four times its fastest success after the step until the first slow answer, and a
//! black hole answers nothing ever. The limit then does what a fixed limit at its maximum
//! would: while calls past the held age below and younger ones are in flight, a call comes in
//! up to the maximum. Reading the silence as a black hole and letting nothing in turned away
//! every call from then to the first slow answer but the limit's few: 149 of 200 at 1000
//! calls a second of 10 ms stepping to 200 ms. A black hole is the attempt timeout's and the
//! breaker's to handle, with any limit. A failure that came back (an error, a refusal, a call
//! shed further in) is an answer, and keeps the limit as it is; so does a limit full of held
//! calls alone, which has let nothing in for a held age.
//!
//! Before the first window closes, the limit is the configured guess (20 by default), with
//! nothing measured behind it: a call that finds it full comes in unless the recent successes
//! show a queue Vegas would cut (`6f` at the calls in flight) beyond the Poisson noise of the
//! calls at work (`3 × √(calls − queued)`, the floor's own room) or, after 16 successes, none
//! is recent (then as above); before 16 there is nothing to judge by, and a fixed limit would
//! let it in. At 2000 calls a second of 10 ms the calls in flight average 21 and peak at 35 in
//! the first second, which turned ~50 away against the guess of 20 and its four calls of
//! credit. The noise matters once many calls are in flight: they vary around λW as a Poisson
//! count, and a downstream provisioned with 10 % headroom queues their peaks. At 3000 calls a
//! second of 40–60 ms on 165 workers, ~150 in flight, such a peak delayed the fastest recent
//! success by 7 ms, which Vegas reads as `151 × (1 − 41/48) = 22` queued against `6f = 12`:
//! 6–15 calls turned away in the first second (66–124 at 5000 a second), which a fixed limit
//! admits and the floor, once a window has closed, makes room for (`3 × √(151 − 22) = 34`). The
//! noise is that of the calls at work, not of those in flight, or an overload's own queue would
//! widen it: twice what 10 workers serve puts 20 calls in flight, 10 of them queued, against
//! `3 × √10 = 9.5`. Not for Gradient2 (see "Slow start").
//!
//! # At the maximum
//!
//! A limit at its maximum that turns calls away while Little's law at the offered load asks
//! for more than the maximum cannot tell a slower downstream from one that lost capacity: at a
//! pinned limit both complete fewer calls as their latency rises, and the probe that tells
//! them apart is a raise, which the maximum forbids. Vegas would read the rise over the lowest
//! window mean as a queue and cut; a cut to probe with costs a round trip of calls turned
//! away. Such a window, without a drop, holds the maximum, as a fixed limit would. At 10 000
//! calls a second and a latency ramping from 20 to 120 ms (1200 calls in flight needed, 1000
//! allowed), Vegas read 1000 × (1 − 20/105) ≈ 810 queued calls at 105 ms and cut once: 2782
//! calls turned away in that second against the fixed limit's 1210, until the cut's check
//! lifted it back.
//!
//! When the recent successes do show a queue, three faster moves than a window's end:
//! - recent successes more than twice as slow as a queue behind our own calls could make
//!   them are a slower downstream: the limit goes at once to Little's law at the last
//!   window's offered load and the recent latency, as the probe above. A call waits behind
//!   no more of our calls than were in flight when it was admitted, which each sample
//!   carries, and they drain at the pace the downstream served: the bound is the fastest
//!   seen plus the most calls in flight at the admission of a call of the open window (the
//!   latest success among them), over the more completions a second of the last two
//!   windows. The calls in flight *now* would count the calls let in during a silence (see
//!   above), which no success that answered waited behind; and the window that held the
//!   silence completed fewer calls than the downstream serves. At 1000 calls a second
//!   stepping from 10 ms to 200 ms (the lab's `slow-200ms`), the first 16 to 32 slow
//!   successes were admitted with at most 18 in flight, while 188 are in flight when they
//!   answer: a queue could add 18 ms, not 188, and the limit goes from 23 to 293 at once
//!   instead of turning ~125 calls away until the window closes; at 100 calls a second
//!   stepping to 800 ms, 22 in flight at admission over 100 completions a second (not the 54 of the
//!   window with the silence) allow 230 ms against 800. The window then closes on the new
//!   latency alone;
//! - every recent success 1.5 × slower than the last window's mean closes the window (of at
//!   least 10 samples) at the next call, so an overload's onset is cut within tens of
//!   milliseconds, and a slower downstream's first window of slow calls is read at once;
//! - a cut to half the limit or less is checked a round trip later, at the cut's latency or
//!   at the slowest recent one if that rose since: a queue behind our own calls shrinks with
//!   them, so the fastest success since falls at least halfway back to the latency without a
//!   queue; if it did not, the downstream got slower, and the limit goes to Little's law at
//!   the last window's offered load and the new latency, as a probe that the next window
//!   keeps only if completions follow. At 1000 calls a second stepping from 10 ms to 200 ms,
//!   the cut (23 to 4) comes ~0.1 s after the first slow answers and the lift (to ~290) 0.4 s
//!   later, instead of a window or two. The round trip is the slowest recent one because the
//!   calls let in before the cut wait behind the backlog it is to shorten: at an overload's
//!   onset, three clients at 1500 calls a second against 11 workers of 10 ms each checked
//!   their cuts at 25–27 ms while answers still took 44–48 ms, read a slower downstream, and
//!   held ~55 calls waiting (past the 22 where that downstream serves a fifth less) with the
//!   queue's latency as their latency without a queue. A window that closes before the check
//!   and holds the limit at or under the cut keeps the check pending (a raise above the cut,
//!   a new cut or a slower downstream's lift replace it): at 10 calls a second stepping to 2 s
//!   the check comes 4 s after the cut, and the one-second windows closing in between,
//!   turning calls away at the cut's limit of 3, erased it, which held the limit at 3 for the
//!   rest of the step (Poisson arrivals, seed 1).

pub(crate) mod aimd;
mod bounds;
pub(crate) mod gradient2;
mod tally;
pub(crate) mod vegas;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use seawall_core::config::ConfigError;
use serde::{Deserialize, Serialize};

pub use self::aimd::AimdConfig;
use self::bounds::Bounds;
pub(crate) use self::bounds::MAX_LIMIT;
pub use self::gradient2::Gradient2Config;
pub(crate) use self::tally::Tally;
pub use self::vegas::VegasConfig;

/// An adaptive limit algorithm, as Netflix's `concurrency-limits` defines it.
///
/// Written in configuration as `{ "aimd": { ... } }`, `{ "vegas": { ... } }` or
/// `{ "gradient2": { ... } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveLimit {
    /// Loss-based: grows by one while calls succeed, shrinks by a ratio on a drop. For clients.
    Aimd(AimdConfig),
    /// Latency-based, after TCP Vegas: estimates the queue from how far latency rose above the
    /// no-load latency. For servers.
    Vegas(VegasConfig),
    /// Latency-based: scales the limit by the ratio of long-term to current latency. For
    /// servers.
    Gradient2(Gradient2Config),
}

impl AdaptiveLimit {
    /// The limit before any call has been observed.
    pub fn initial(&self) -> usize {
        self.bounds().initial
    }

    fn bounds(&self) -> &Bounds {
        match self {
            Self::Aimd(c) => &c.bounds,
            Self::Vegas(c) => &c.bounds,
            Self::Gradient2(c) => &c.bounds,
        }
    }

    /// The smallest limit the algorithm may set.
    pub fn min(&self) -> usize {
        self.bounds().min
    }

    /// The largest limit the algorithm may set.
    pub fn max(&self) -> usize {
        self.bounds().max
    }

    /// The name of the algorithm, as written in configuration.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Aimd(_) => "aimd",
            Self::Vegas(_) => "vegas",
            Self::Gradient2(_) => "gradient2",
        }
    }

    /// Checks the settings; errors name their field within `adaptive.<algorithm>`.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|e| e.within(&format!("adaptive.{}", self.kind())))
    }

    fn check(&self) -> Result<(), ConfigError> {
        match self {
            Self::Aimd(c) => c.check(),
            Self::Vegas(c) => c.check(),
            Self::Gradient2(c) => c.check(),
        }
    }
}

impl From<AimdConfig> for AdaptiveLimit {
    fn from(config: AimdConfig) -> Self {
        Self::Aimd(config)
    }
}

impl From<VegasConfig> for AdaptiveLimit {
    fn from(config: VegasConfig) -> Self {
        Self::Vegas(config)
    }
}

impl From<Gradient2Config> for AdaptiveLimit {
    fn from(config: Gradient2Config) -> Self {
        Self::Gradient2(config)
    }
}

/// Windows with fewer samples are skipped.
const MIN_WINDOW_SAMPLES: u32 = 10;
/// How far the latency may rise within one window before the floor follows.
const FLOOR_HEADROOM: f64 = 1.25;
/// Standard deviations of the calls in flight (a Poisson count) the floor leaves room for.
const FLOOR_DEVIATIONS: f64 = 3.0;

/// Little's-law floor for `in_flight` calls in flight on average: room for the latency's rise
/// within a window and for the count's noise.
fn floor_for(in_flight: f64) -> usize {
    (FLOOR_HEADROOM * in_flight + FLOOR_DEVIATIONS * in_flight.sqrt()).ceil() as usize
}
/// Standard errors by which two window means may differ before the difference is read as a
/// queue: 3 leaves about one window in a thousand of a latency that did not change.
const NOISE_DEVIATIONS: f64 = 3.0;
/// The share of a window's arrivals that may be rejected or left in flight before the window
/// counts as overloaded.
const BACKLOG_TOLERANCE: f64 = 0.05;
/// Calls faster than this say nothing about the downstream (cache hits, local answers).
const MIN_RTT: Duration = Duration::from_micros(100);
/// How far a window's mean latency must rise over the last window's before its completions
/// are read as a slower downstream or a queue.
const LATENCY_RISE: f64 = 1.5;
/// How much a raise for a slower downstream must lift completions a second, at most, to stay.
const PROBE_GAIN: f64 = 1.25;
/// The successes in each half of the recent ones whose fastest shows a queue or none.
const RECENT_SUCCESSES: u32 = 16;
/// How many calls may be let in over the limit between two that finish: arrivals come in
/// bursts (a retry beside a first attempt), and a call over the limit at no queue is one the
/// downstream serves.
const RAISE_BURST: u32 = 4;
/// How many times slower than a queue behind the calls in flight could make them the recent
/// successes must be to show a slower downstream.
const SLOWER_MARGIN: f64 = 2.0;
/// How many recent latencies may pass without a success before the recent ones are stale.
const STALE_AFTER: u32 = 4;
/// How many times the slowest recent success a call in flight must have lasted to count as
/// held (hung until a timeout further out) rather than queued, while no queue shows: the
/// slowest of 16 to 32 successes is near their 97th percentile, and twice it covers an
/// exponential tail to beyond its 99.9th.
const HELD_AGE: u32 = 2;
/// The queue, in `f(calls)`, from which the calls younger than that age are not excused:
/// Vegas's own cut. Below it the age alone tells a held call, since a call waiting in a queue
/// is no older than the slowest success that waited in it.
const HELD_QUEUE: f64 = 6.0;
/// The deviations of the first window's latencies over their mean within which its calls
/// must finish for its censored tail to be added back (see "The first window's censored tail").
const CENSORED_SPAN: f64 = 3.0;

/// An algorithm fed with one summary per window of samples.
#[derive(Debug)]
pub(crate) struct Windowed {
    algorithm: Algorithm,
    length: Duration,
    /// The open window's sums and the recent successes, which finished calls add to without
    /// the lock this is behind.
    tally: Arc<Tally>,
    /// When the current window began, and the calls in flight then.
    started: Option<(Instant, usize)>,
    /// The limit in force.
    limit: usize,
    /// The lowest window mean latency seen: the latency without a queue.
    base: Option<Duration>,
    /// The standard error of that window's mean, in seconds.
    base_error: f64,
    /// Half the limit at which a window last showed overload: slow start stops there, as
    /// TCP's does at its `ssthresh`.
    threshold: usize,
    /// The last window's completions and arrivals a second, and its mean latency.
    last: Option<Pace>,
    /// The more completions a second of the last two windows: the pace a queue behind our
    /// own calls drains at, read past a window that a slower downstream's silence thinned.
    drain: f64,
    /// A limit raised for a slower downstream, kept only if the next window's completions
    /// follow it.
    probe: Option<Probe>,
    /// A cut to half the limit or less, to be checked a round trip later.
    cut: Option<Cut>,
    /// The algorithm's maximum.
    max: usize,
    /// What a rebase at a served, held latency replaced, to go back to if calls pile up at
    /// that latency (see "A slower downstream at a held latency").
    rebased: Option<Rebased>,
    /// The last window was served.
    served: bool,
    /// The last window's latency stepped up past the last but one's, at a mean its fastest
    /// answers showed was a tail, while it only turned calls away.
    stepped: bool,
}

/// The latency without a queue, its standard error and the fastest success seen, before a
/// rebase at a served, held latency.
#[derive(Debug, Clone, Copy)]
struct Rebased {
    base: Option<Duration>,
    base_error: f64,
    fastest: Option<Duration>,
}

/// A cut to half the limit or less. If the calls let in after it are no faster, the latency
/// was not a queue behind our own calls but a slower downstream.
#[derive(Debug, Clone, Copy)]
struct Cut {
    at: Instant,
    /// The limit it set.
    to: usize,
    /// The fastest recent success when it was made.
    fastest: Duration,
}

/// The fastest of the last 16 to 32 successes, and when the latest finished, as a [`Tally`]
/// holds them. A queue in front of the downstream delays every call, the fastest too; a share
/// of slow or hung calls does not delay the others.
#[derive(Debug, Default, Clone, Copy)]
struct Recent {
    current: Option<Duration>,
    previous: Option<Duration>,
    latest: Option<Instant>,
    /// The slowest of the current and the previous successes.
    current_max: Duration,
    previous_max: Duration,
    /// When the latest call finished, success or failure.
    answered: Option<Instant>,
}

impl Recent {
    /// The fastest of the last successes, however long ago.
    fn min(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(c), Some(p)) => Some(c.min(p)),
            (c, p) => c.or(p),
        }
    }

    /// The slowest of at least 16 successes.
    fn slowest(&self) -> Option<Duration> {
        self.previous
            .map(|_| self.previous_max.max(self.current_max))
    }

    /// The fastest of at least 16 successes, the latest `now` is still recent to.
    fn fastest(&self, now: Instant) -> Option<Duration> {
        let previous = self.previous?;
        let fastest = self.current.map_or(previous, |c| c.min(previous));
        let since = now.saturating_duration_since(self.latest?);
        (since <= fastest * STALE_AFTER).then_some(fastest)
    }

    /// Whether no call finished, success or failure, within four of the fastest of at least
    /// 16 successes.
    fn silent(&self, now: Instant) -> bool {
        let (Some(previous), Some(answered)) = (self.previous, self.answered) else {
            return false;
        };
        let fastest = self.current.map_or(previous, |c| c.min(previous));
        now.saturating_duration_since(answered) > fastest * STALE_AFTER
    }
}

/// What a raise for a slower downstream replaced, to go back to if completions do not follow.
#[derive(Debug, Clone, Copy)]
struct Probe {
    limit: usize,
    base: Option<Duration>,
    base_error: f64,
    fastest: Option<Duration>,
    /// Completions a second that must be reached to keep the raise.
    target: f64,
}

/// How fast a window's calls came and went.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pace {
    completed: f64,
    offered: f64,
    mean: Duration,
    /// The standard error of the window's mean latency, in seconds.
    error: f64,
}

impl Pace {
    /// Whether `now`, a window whose latency rose well above this one's, shows a downstream
    /// that got slower rather than a queue behind our own calls: at a pinned limit `L` a
    /// slower downstream completes `L / latency` a second, so completions fall with the rise,
    /// while a queue keeps them at the downstream's capacity. Completions falling by more
    /// than the square root of the latency's rise is the first; holding, the second.
    fn slowed(&self, now: &Pace) -> bool {
        let rise = now.mean.as_secs_f64() / self.mean.as_secs_f64().max(1e-9);
        rise > LATENCY_RISE
            && now.completed * now.completed * rise < self.completed * self.completed
    }
}

/// A window's sums, when it closes.
#[derive(Debug, Default)]
struct Window {
    sum: Duration,
    /// The sum of the squared latencies, in seconds², for the mean's standard error.
    sum_squares: f64,
    count: u32,
    /// Every call that finished, those too fast to be a sample included.
    finished: u64,
    max_in_flight: usize,
    dropped: bool,
    /// A call was refused for overload, here or further in.
    overload: bool,
}

/// What the bulkhead counted while a window was open, read when it closes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    /// Calls in flight now.
    pub(crate) in_flight: usize,
    /// Calls this bulkhead rejected during the window.
    pub(crate) rejected: u64,
    /// Calls cancelled during the window before their answer (a timeout further out).
    pub(crate) cancelled: u64,
    /// How long those cancelled calls held their slots, in all.
    pub(crate) cancelled_time: Duration,
}

/// What a closed window says about the demand on the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Demand {
    /// The limit Little's law asks for at the offered rate (rejected calls included).
    floor: usize,
    /// No sign of overload: nearly every arrival finished.
    served: bool,
    /// The calls let in did not finish as fast as they came: they piled up in flight.
    backlog: bool,
    /// The limit itself turned calls away, while those it admitted finished as fast as they
    /// came.
    limited: bool,
    /// Completions and arrivals a second, and the mean latency.
    pace: Pace,
}

/// Reads a window of `elapsed` in which `finished` calls ended, `in_flight_before` were in
/// flight at its start and `load` at its end; `mean` is the window's mean latency and its
/// standard error. In the `first` window the calls in flight rise from the start's few to
/// those at work, which the backlog test excuses (see "The first window's censored tail"); in
/// a `flat` one (the latency held since the last window) the calls left in flight within the
/// count's noise count as answered (see "A count's noise is no backlog"); with the slowest
/// recent success and the last window's mean `shown`, the calls let in within the latency's
/// rise are no backlog (see "Nothing answered yet is no backlog").
fn demand(
    (elapsed, in_flight_before): (Duration, usize),
    finished: u64,
    load: Load,
    (mean, error): (Duration, f64),
    first: bool,
    flat: bool,
    shown: Option<(Duration, Duration)>,
) -> Option<Demand> {
    // Cancelled calls left without an answer: neither served nor piling up, but they held
    // their slots, which Little's law counts.
    let admitted = (finished + load.in_flight as u64).saturating_sub(in_flight_before as u64);
    let arrivals = admitted + load.rejected;
    if elapsed.is_zero() {
        return None;
    }
    let busy = mean.as_secs_f64() * finished as f64 + load.cancelled_time.as_secs_f64();
    let mean = busy / (finished + load.cancelled).max(1) as f64;
    let seconds = elapsed.as_secs_f64();
    let rate = (arrivals + load.cancelled) as f64 / seconds;
    let in_flight = rate * mean;
    let at_work = if first {
        ((load.in_flight as f64).min(in_flight) - in_flight_before as f64).max(0.0)
    } else {
        0.0
    };
    let completed = finished as f64 / seconds;
    let piled = load.in_flight.saturating_sub(in_flight_before) as f64;
    // At a latency that held since the last window, the calls in flight at its two ends are
    // two readings of one count at work, which differ with no backlog at all: those left in
    // flight within that noise count as answered (see "A count's noise is no backlog").
    let noise = if flat {
        piled.min(FLOOR_DEVIATIONS * (2.0 * completed * mean.min(seconds)).sqrt())
    } else {
        0.0
    };
    // Calls admitted within the latency the downstream has shown could not have answered yet:
    // Little's law at that latency over the last window's mean puts them at work, not in a
    // backlog (see "Nothing answered yet is no backlog").
    let young = shown.map_or(0.0, |(slowest, last)| {
        let rise = slowest.saturating_sub(last).min(elapsed).as_secs_f64();
        piled.min(admitted as f64 / seconds * rise)
    });
    let keeps_up = |n: u64, at_work: f64| {
        finished as f64 + at_work + noise >= (1.0 - BACKLOG_TOLERANCE) * n as f64
    };
    let admitted_kept_up = keeps_up(admitted, at_work.max(young));
    Some(Demand {
        floor: floor_for(in_flight),
        served: keeps_up(arrivals, at_work),
        backlog: !admitted_kept_up,
        limited: load.rejected as f64 > BACKLOG_TOLERANCE * arrivals as f64 && admitted_kept_up,
        pace: Pace {
            completed,
            offered: rate,
            mean: Duration::from_secs_f64(mean),
            error,
        },
    })
}

impl Window {
    /// The standard error of the window's mean latency, in seconds: the latencies' own
    /// spread over `√n`.
    fn standard_error(&self) -> f64 {
        (self.variance() / f64::from(self.count.max(1))).sqrt()
    }

    /// The sample variance of the window's latencies, in seconds².
    fn variance(&self) -> f64 {
        let n = f64::from(self.count);
        if self.count < 2 {
            return 0.0;
        }
        let mean = self.sum.as_secs_f64() / n;
        (self.sum_squares / n - mean * mean).max(0.0) * n / (n - 1.0)
    }
}

impl Windowed {
    pub(crate) fn new(config: &AdaptiveLimit, length: Duration) -> Self {
        Self::with_tally(config, length, Arc::new(Tally::new()))
    }

    fn with_tally(config: &AdaptiveLimit, length: Duration, tally: Arc<Tally>) -> Self {
        Self {
            algorithm: Algorithm::new(config),
            length,
            tally,
            started: None,
            limit: config.initial(),
            base: None,
            base_error: 0.0,
            threshold: usize::MAX,
            last: None,
            drain: 0.0,
            probe: None,
            cut: None,
            max: config.max(),
            rebased: None,
            served: false,
            stepped: false,
        }
    }

    /// Starts over as [`new`](Self::new), on the same tally, emptied.
    pub(crate) fn restart(&mut self, config: &AdaptiveLimit, length: Duration) {
        self.tally.reset();
        *self = Self::with_tally(config, length, self.tally.clone());
    }

    /// What finished calls add to without the lock this is behind.
    pub(crate) fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// A call found the limit full with `in_flight` calls, `held` of them older than
    /// [`held_age`](Self::held_age): the limit that lets it in, if any.
    ///
    /// - Calls are held and the younger ones are under the limit with no queue showing, or
    ///   nothing answered at all (success or failure) within four recent latencies and some
    ///   of the younger ones are in flight: the limit is raised by the held calls (when
    ///   nothing answered, to the calls in flight) until the next call finishes.
    /// - The fastest recent successes show no queue (`in_flight × (1 − fastest seen / fastest
    ///   recent) ≤ f`, Vegas's band of no queue) and the limit is under `max`: such a call is
    ///   demand the downstream serves at its pace, as when a share of calls hangs until a
    ///   timeout, and turning it away is never better. The raise lasts until the next call
    ///   finishes, which checks again.
    /// - A cut to half or less was made a round trip ago at its latency (or at the slowest
    ///   recent one, if longer: until then answers may come from calls let in before the cut,
    ///   behind the backlog it is to shorten), and the fastest success since is still more
    ///   than halfway from the latency without a queue to the one at the cut: the cut did not
    ///   shorten a queue, so the downstream got slower. The limit goes to Little's law at the
    ///   offered load and the new latency, as a probe.
    ///
    /// Otherwise, when every recent success is 1.5 × slower than the last window's mean, the
    /// window of at least 10 samples closes at the next sample: a queue or a slower downstream
    /// is acted on within a few round trips rather than at the end of a window.
    pub(crate) fn full(
        &mut self,
        now: Instant,
        in_flight: usize,
        held: usize,
        max: usize,
    ) -> Option<usize> {
        let successes = self.tally.recent();
        if self.base.is_none()
            && self.algorithm.slow_starts()
            && in_flight < max
            && self.no_queue_yet(&successes, now, in_flight)
        {
            self.tally.raise();
            return Some((in_flight + 1).max(self.limit));
        }
        let Some(recent) = successes.fastest(now) else {
            // Nothing answered at all shows no queue (see "A call that finds the limit full"):
            // while calls past the held age and younger ones are in flight, calls come in up
            // to the maximum, as against a fixed limit.
            let active = in_flight.saturating_sub(held);
            return (successes.silent(now) && held > 0 && active > 0 && in_flight < max).then(
                || {
                    self.tally.raise();
                    (in_flight + 1).max(self.limit)
                },
            );
        };
        let fastest = self.tally.fastest()?;
        let wait = recent.saturating_sub(fastest).as_secs_f64();
        // By Little's law a queue holds the calls that arrive while one waits in it: the
        // completions a second times the wait. The calls in flight would count calls that
        // hang (until a timeout further out) as queued too.
        let queue = |calls: usize| match self.last {
            Some(last) => last.completed * wait,
            None => vegas_queue(calls, fastest, recent),
        };
        // And the calls at work are at most the completions a second times the slowest
        // recent success's latency, with the floor's room for their noise: the rest are held.
        let held = match (self.last, successes.slowest()) {
            (Some(last), Some(slowest)) => {
                let at_work = floor_for(last.completed * slowest.as_secs_f64());
                held.max(in_flight.saturating_sub(at_work))
            }
            _ => held,
        };
        // Calls held past any recent success's latency, while the others show no queue Vegas
        // would cut, hang (until a timeout further out): a call in a queue is no older than
        // the slowest success that waited in it. They count against the maximum, not the
        // limit, without waiting for calls to finish.
        let active = in_flight.saturating_sub(held);
        let active_queue = queue(active);
        if held > 0
            && active < self.limit
            && in_flight < max
            && active_queue <= HELD_QUEUE * log10_root(active as f64)
        {
            self.tally.raise();
            return Some((self.limit + held).min(max));
        }
        // Calls let in over the limit are paced by the calls that finish: the fastest recent
        // success lags a queue that builds meanwhile.
        if in_flight < max
            && queue(in_flight) <= log10_root(in_flight as f64)
            && self.tally.take_credit()
        {
            self.tally.raise();
            return Some((in_flight + 1).max(self.limit));
        }
        if let Some(lift) = self.slower(&successes, recent, fastest, in_flight, max) {
            return Some(lift);
        }
        let round_trip = successes.slowest().unwrap_or(recent);
        if let Some(cut) = self.cut
            && now.saturating_duration_since(cut.at) >= 2 * cut.fastest.max(round_trip)
        {
            self.cut = None;
            if let Some(last) = self.last
                && 2 * recent > fastest + cut.fastest
            {
                let lift = floor_for(last.offered * recent.as_secs_f64());
                if lift > self.limit {
                    return Some(self.lift_as_probe(recent, lift, cut.to));
                }
            }
        }
        if self.tally.samples() >= MIN_WINDOW_SAMPLES
            && self
                .last
                .is_some_and(|last| recent.as_secs_f64() > LATENCY_RISE * last.mean.as_secs_f64())
        {
            self.tally.end_window_at(now);
        }
        None
    }

    /// Whether a call that finds the limit full before any window closed may come in: the
    /// limit is then the configured guess, with nothing measured behind it, so only a queue
    /// Vegas would cut (`6f` by its estimate at the calls in flight) beyond the Poisson noise of
    /// the calls at work (`3 × √(calls − queued)`, as the floor allows) turns calls away; before
    /// 16 successes there is nothing to judge by, and after them none recent is a black hole.
    /// Not for Gradient2, as its slow start: its long-term latency would take the queue of a
    /// burst let in at once as the new normal.
    fn no_queue_yet(&self, recent: &Recent, now: Instant, in_flight: usize) -> bool {
        match (recent.fastest(now), self.tally.fastest()) {
            (Some(recent), Some(fastest)) => {
                let calls = in_flight as f64;
                let queue = vegas_queue(in_flight, fastest, recent);
                queue
                    <= (HELD_QUEUE * log10_root(calls))
                        .max(FLOOR_DEVIATIONS * (calls - queue).sqrt())
            }
            _ => recent.previous.is_none(),
        }
    }

    /// How old a call in flight must be to count as held rather than queued: `HELD_AGE` times
    /// the slowest of the recent successes, none before there are 16 of them.
    pub(crate) fn held_age(&self) -> Option<Duration> {
        self.tally
            .recent()
            .slowest()
            .map(|slowest| slowest * HELD_AGE)
    }

    /// Recent successes far slower than the calls in flight could queue behind one another
    /// are a slower downstream: the limit goes at once to Little's law at the last window's
    /// offered load and the recent latency, as a probe.
    ///
    /// A queue behind our own calls drains at the pace the downstream served them (the more
    /// completions a second of the last two windows, as one of them may hold a silence), so a
    /// call admitted with `n` calls in flight waits at most `n / completed` over the latency
    /// without a queue; at a pinned limit Little's law holds the latency to that whatever the
    /// downstream's share of other callers. `n` is the most calls in flight at the admission
    /// of a call that finished in the open window, when the latest success is one of them;
    /// otherwise the calls in flight now. At 1000 calls a second stepping from 10 ms to
    /// 400 ms with 24 in flight, a queue would add 24 ms; 400 ms is sixteen times the 33 ms,
    /// and the limit goes to `1.25 × 400 + 3 × √400 = 560` when the first 16 slow successes
    /// are in, instead of a cut, a round trip (800 ms) and the lift. A queue at an overload
    /// (1500 calls a second on 11 workers of 10 ms, limit 38, completions falling from 1000
    /// to 880 a second) waits 43 ms against `9 + 38` ms: the rule needs twice that.
    fn slower(
        &mut self,
        successes: &Recent,
        recent: Duration,
        fastest: Duration,
        in_flight: usize,
        max: usize,
    ) -> Option<usize> {
        let last = self.last?;
        // The latest success is one of the recent ones, and the fastest of them was no slower:
        // if it finished in the open window, that window's most calls in flight at a call's
        // admission bound what it queued behind.
        let ahead = match (self.started, successes.latest) {
            (Some((start, _)), Some(latest)) if latest > start => self.tally.max_in_flight(),
            _ => in_flight,
        };
        let queued = fastest.as_secs_f64() + ahead as f64 / self.drain.max(1.0);
        let recent_secs = recent.as_secs_f64();
        if self.probe.is_some()
            || recent_secs <= LATENCY_RISE * last.mean.as_secs_f64()
            || recent_secs <= SLOWER_MARGIN * queued
        {
            return None;
        }
        let lift = floor_for(last.offered * recent_secs).min(max);
        if lift <= self.limit {
            return None;
        }
        self.cut = None;
        // The window's latencies so far mix the old latency with the new; the window closes
        // on the new one alone, or its mean would read a queue against a base it lowered.
        self.tally.take_latencies();
        Some(self.lift_as_probe(recent, lift, self.limit))
    }

    /// Sets the limit to `lift` at once for a downstream now answering in `recent`, as a probe
    /// kept only if completions follow: it asks for what a limit of `from` completes at the new
    /// latency, raised by half the raise (at most by a quarter).
    fn lift_as_probe(&mut self, recent: Duration, lift: usize, from: usize) -> usize {
        let before = self.limit;
        let raise = lift as f64 / before.max(1) as f64;
        self.probe = Some(Probe {
            limit: before,
            base: self.base,
            base_error: self.base_error,
            fastest: self.tally.fastest(),
            target: from as f64 / recent.as_secs_f64()
                * (1.0 + (raise - 1.0) / 2.0).min(PROBE_GAIN),
        });
        self.base = Some(recent);
        self.base_error = 0.0;
        self.algorithm.rebase(recent);
        self.tally.set_fastest(Some(recent));
        self.limit = self.algorithm.set(lift);
        self.limit
    }

    /// Adds one finished call; returns the limit when a window closed and moved it. A call
    /// `dropped` failed or was refused; `overload` says the refusal was for overload. `load` is
    /// read only when a window closes.
    #[cfg(test)]
    pub(crate) fn sample(
        &mut self,
        now: Instant,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
        overload: bool,
        load: impl FnOnce() -> Load,
    ) -> Option<usize> {
        let at = self.tally.time(now);
        let rtt = seawall_core::time::nanos(rtt);
        self.tally.record(at, rtt, in_flight, dropped, overload);
        self.settle(now, load)
    }

    /// After a call that finished at `now` was added to the tally: takes back a raise that let
    /// a call in, and closes the window if it ended. Returns the limit when either moved it.
    pub(crate) fn settle(&mut self, now: Instant, load: impl FnOnce() -> Load) -> Option<usize> {
        let raised = self.tally.take_raised();
        if !self.tally.window_ends(self.tally.time(now)) {
            return raised.then_some(self.limit);
        }
        self.tally.end_window_at(now + self.length);
        let w = self.tally.take_window();
        let load = load();
        let started = self.started.replace((now, load.in_flight));
        if w.count < MIN_WINDOW_SAMPLES {
            return raised.then_some(self.limit);
        }
        let mut average = w.sum / w.count;
        let error = w.standard_error();
        let first = self.base.is_none();
        if first
            && let Some((start, _)) = started
            && self
                .tally
                .recent()
                .min()
                .is_some_and(|fastest| fastest < average)
        {
            average = uncensored(average, w.variance(), now.saturating_duration_since(start));
        }
        if self.base.is_none_or(|base| average < base) {
            self.base = Some(average);
            self.base_error = error;
        }
        // A mean within its noise of the last window's: the latency held.
        let flat = self.last.is_some_and(|last| {
            average.as_secs_f64() - last.mean.as_secs_f64()
                <= NOISE_DEVIATIONS * error.hypot(last.error)
        });
        let demand = match started {
            Some((start, in_flight_before)) if !w.overload => {
                let elapsed = now.saturating_duration_since(start);
                let mean = (average, error);
                let shown = self
                    .tally
                    .recent()
                    .slowest()
                    .zip(self.last.map(|last| last.mean));
                demand(
                    (elapsed, in_flight_before),
                    w.finished,
                    load,
                    mean,
                    first,
                    flat,
                    shown,
                )
            }
            _ => None,
        };
        let last_served = std::mem::replace(
            &mut self.served,
            !w.dropped && demand.is_some_and(|d| d.served),
        );
        // Calls piling up at a latency taken as the downstream's own: a backlog at a held
        // latency, which the base from before the rebase shows as a queue.
        if flat
            && demand.is_some_and(|d| d.backlog)
            && let Some(r) = self.rebased.take()
        {
            self.base = r.base;
            self.base_error = r.base_error;
            self.tally.set_fastest(r.fastest);
            if let Some(base) = r.base {
                self.algorithm.rebase(base);
            }
        } else if flat
            && (last_served || self.stepped)
            && !w.dropped
            && self.probe.is_none()
            && demand.is_some_and(|d| !d.served && !d.backlog)
            && self.base.is_some_and(|base| {
                queueing(self.limit, base, average, error.hypot(self.base_error))
            })
        {
            // The latency a served window held, with no calls piling up: the downstream's
            // own, before the algorithm reads this window's rejections against an older one.
            self.rebase_at(average, error);
        }
        let base = self.base.unwrap_or(average);
        let noise = error.hypot(self.base_error);
        let before = self.limit;
        let limit = self.algorithm.update_within(
            average,
            NOISE_DEVIATIONS * noise,
            w.max_in_flight.min(before),
            w.dropped,
        );
        let last = std::mem::replace(&mut self.last, demand.map(|d| d.pace));
        self.drain = match (last, demand) {
            (Some(last), Some(d)) => d.pace.completed.max(last.completed),
            (_, d) => d.map_or(0.0, |d| d.pace.completed),
        };
        if let Some(probe) = self.probe.take()
            && !demand.is_some_and(|d| d.pace.completed >= probe.target)
        {
            // Completions did not follow the raise: a downstream that lost capacity (its
            // queue looks the same for one window), not one that got slower.
            self.base = probe.base;
            self.base_error = probe.base_error;
            self.tally.set_fastest(probe.fastest);
            if let Some(base) = probe.base {
                self.algorithm.rebase(base);
            }
            self.threshold = (probe.limit / 2).max(1);
            self.limit = self.algorithm.set(probe.limit);
            return Some(self.limit);
        }
        let slowed = match (last, demand) {
            (Some(last), Some(d)) => last.slowed(&d.pace).then(|| {
                // Little's law at the offered load, which our own rejections and a breaker
                // further out may hide this window: the larger of the two windows' arrivals.
                floor_for(d.pace.offered.max(last.offered) * d.pace.mean.as_secs_f64())
            }),
            _ => None,
        };
        let old_base = self.base;
        let old_base_error = self.base_error;
        let old_fastest = self.tally.fastest();
        if slowed.is_some() {
            // The downstream's latency without a queue is this window's now.
            self.base = Some(average);
            self.base_error = error;
            self.algorithm.rebase(average);
            let recent = self.tally.recent().min();
            self.tally.set_fastest(recent.or(old_fastest));
        }
        // At its maximum, turning calls away while Little's law at the offered load asks for
        // more, the limit cannot tell a slower downstream from one that lost capacity but by
        // a cut (there is no raise to probe with): it holds the maximum, as a fixed limit
        // would, unless a call dropped.
        let at_max = !w.dropped
            && before >= self.max
            && demand.is_some_and(|d| d.limited && d.floor >= self.max);
        // A mean that shows a queue while the fastest recent answers show none is a tail: its
        // calls still in flight when the window closes are late answers, not a backlog of
        // overload, so slow start goes on and no threshold is set (see "A tail is no queue").
        let rose = queueing(before, base, average, noise);
        let tail = rose && demand.is_some_and(|d| self.only_a_tail(now, d.pace.completed, before));
        let queued = slowed.is_none() && !at_max && rose && !tail;
        self.stepped = tail
            && demand.is_some_and(|d| d.limited)
            && last
                .is_some_and(|last| average.as_secs_f64() > LATENCY_RISE * last.mean.as_secs_f64());
        let lift = match (slowed, demand) {
            (Some(need), _) => need,
            (None, Some(d)) if d.served || at_max => d.floor,
            (None, Some(d)) if (d.limited || tail) && !queued && self.algorithm.slow_starts() => {
                (2 * before).min(d.floor).min(self.threshold)
            }
            _ => 0,
        };
        if w.overload
            || slowed.is_none()
                && demand.is_some_and(|d| !d.served && (queued || !d.limited && !tail))
        {
            self.threshold = (before / 2).max(1);
        }
        self.limit = if lift > limit {
            self.algorithm.set(lift)
        } else {
            limit
        };
        if let (Some(_), Some(d)) = (slowed, demand)
            && self.limit > before
        {
            // Raising the limit raises a slower downstream's completions in proportion:
            // keep the raise if they rise by half of it (at most by a quarter).
            let raise = self.limit as f64 / before.max(1) as f64;
            self.probe = Some(Probe {
                limit: before,
                base: old_base,
                base_error: old_base_error,
                fastest: old_fastest,
                target: d.pace.completed * (1.0 + (raise - 1.0) / 2.0).min(PROBE_GAIN),
            });
        }
        if slowed.is_some() {
            self.rebased = None;
        } else if flat
            && rose
            && !w.dropped
            && self.probe.is_none()
            && demand.is_some_and(|d| d.served)
        {
            // Served at a latency that held since the last window: the downstream's own
            // latency now, not a queue (see "A slower downstream at a held latency").
            self.rebase_at(average, error);
        }
        // A cut's check waits a round trip, which may outlast the next window: a window that
        // held the limit at or under the cut keeps it pending.
        let pending = self
            .cut
            .filter(|cut| slowed.is_none() && self.limit <= cut.to);
        self.cut = (slowed.is_none() && 2 * self.limit <= before)
            .then(|| self.tally.recent().min())
            .flatten()
            .map(|fastest| Cut {
                at: now,
                to: self.limit,
                fastest,
            })
            .or(pending);
        Some(self.limit)
    }

    pub(crate) fn set(&mut self, limit: usize) {
        self.limit = self.algorithm.set(limit);
    }

    /// Takes `mean` (with its standard error) as the latency without a queue and the fastest
    /// recent success as the fastest seen, keeping what they replaced from the first such
    /// rebase (see "A slower downstream at a held latency").
    fn rebase_at(&mut self, mean: Duration, error: f64) {
        self.rebased.get_or_insert(Rebased {
            base: self.base,
            base_error: self.base_error,
            fastest: self.tally.fastest(),
        });
        self.base = Some(mean);
        self.base_error = error;
        self.algorithm.rebase(mean);
        let recent = self.tally.recent().min();
        self.tally.set_fastest(recent.or(self.tally.fastest()));
    }

    /// Whether a window whose mean shows a queue owes it to a tail (a share of calls answering
    /// late) rather than a queue: a queue delays every call behind it, the fastest too, so the
    /// fastest recent successes would show it, by Little's law over the queue alone (`completed`
    /// a second times their wait over the fastest seen) at most `f(limit)` calls. See "A tail
    /// is no queue" in the module docs.
    fn only_a_tail(&self, now: Instant, completed: f64, limit: usize) -> bool {
        let (Some(recent), Some(fastest)) =
            (self.tally.recent().fastest(now), self.tally.fastest())
        else {
            return false;
        };
        completed * recent.saturating_sub(fastest).as_secs_f64() <= log10_root(limit as f64)
    }
}

/// Whether a window's `mean` latency shows a queue in front of the downstream: more than
/// `f(limit) = max(1, ⌊log10 limit⌋)` calls by Vegas's estimate `limit × (1 − base / mean)`,
/// the most its slow start lets wait, unless the mean's rise is within `NOISE_DEVIATIONS`
/// times `noise`, the standard error (seconds) of its difference from `base`.
fn queueing(limit: usize, base: Duration, mean: Duration, noise: f64) -> bool {
    let limit = limit as f64;
    let mean = beyond_noise(mean, base, NOISE_DEVIATIONS * noise);
    let queue = limit * (1.0 - base.as_secs_f64() / mean.as_secs_f64().max(1e-9));
    queue > log10_root(limit)
}

/// The mean latency of the calls a window of `length` let in from none in flight, from the
/// `mean` and `variance` (seconds²) of those that finished in it: `mean + variance / (length −
/// mean)`, where they finish well within it (see "The first window's censored tail").
fn uncensored(mean: Duration, variance: f64, length: Duration) -> Duration {
    let (m, t) = (mean.as_secs_f64(), length.as_secs_f64());
    if m + CENSORED_SPAN * variance.sqrt() >= t {
        return mean;
    }
    Duration::from_secs_f64(m + variance / (t - m))
}

/// Vegas's estimate of the calls queued among `calls` in flight, whose fastest recent success
/// took `recent` against `fastest` without a queue: `calls × (1 − fastest / recent)`.
fn vegas_queue(calls: usize, fastest: Duration, recent: Duration) -> f64 {
    calls as f64 * (1.0 - fastest.as_secs_f64() / recent.as_secs_f64())
}

/// `mean`, or `base` if `mean` rose over it by no more than `allowance` (seconds): a rise
/// within a window mean's noise is none, and one beyond it is read in full.
fn beyond_noise(mean: Duration, base: Duration, allowance: f64) -> Duration {
    if mean.as_secs_f64() - base.as_secs_f64() <= allowance {
        base.min(mean)
    } else {
        mean
    }
}

/// One adaptive algorithm's state.
#[derive(Debug)]
enum Algorithm {
    Aimd(aimd::Aimd),
    Vegas(vegas::Vegas),
    Gradient2(gradient2::Gradient2),
}

impl Algorithm {
    fn new(config: &AdaptiveLimit) -> Self {
        match config {
            AdaptiveLimit::Aimd(c) => Self::Aimd(aimd::Aimd::new(c)),
            AdaptiveLimit::Vegas(c) => Self::Vegas(vegas::Vegas::new(c)),
            AdaptiveLimit::Gradient2(c) => Self::Gradient2(gradient2::Gradient2::new(c)),
        }
    }

    /// Learns from one finished call and returns the limit now.
    ///
    /// `in_flight` is the number of calls in flight when this one started, itself included.
    /// The tests' reference models call it; the bulkhead gives a window's noise too.
    #[cfg(test)]
    fn update(&mut self, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        self.update_within(rtt, 0.0, in_flight, dropped)
    }

    /// As [`update`](Self::update), with `noise` (seconds) of `rtt` allowed as the noise of a
    /// window's mean: Vegas reads no queue in it.
    fn update_within(
        &mut self,
        rtt: Duration,
        noise: f64,
        in_flight: usize,
        dropped: bool,
    ) -> usize {
        if let Self::Vegas(v) = self {
            v.allow_noise(noise);
        }
        match self {
            Self::Aimd(a) => a.update(rtt, in_flight, dropped),
            Self::Vegas(v) => v.update(rtt, in_flight, dropped),
            Self::Gradient2(g) => g.update(rtt, in_flight),
        }
    }

    /// Whether slow start may double the limit. Not Gradient2's: its long-term average latency
    /// would take the queue of one doubling past the knee as the new normal and hold there.
    fn slow_starts(&self) -> bool {
        !matches!(self, Self::Gradient2(_))
    }

    /// Overrides the current estimate (from a handle, or the floor); the algorithm goes on
    /// from there. Returns the limit now, within the bounds.
    fn set(&mut self, limit: usize) -> usize {
        match self {
            Self::Aimd(a) => a.set(limit),
            Self::Vegas(v) => v.set(limit),
            Self::Gradient2(g) => g.set(limit),
        }
    }

    /// Takes `rtt` as the downstream's latency without a queue, where the algorithm keeps one.
    fn rebase(&mut self, rtt: Duration) {
        if let Self::Vegas(v) = self {
            v.rebase(rtt);
        }
    }
}

/// `max(1, floor(log10(x)))`, Netflix's `Log10RootFunction` with a baseline of 0.
fn log10_root(x: f64) -> f64 {
    if x < 1.0 {
        1.0
    } else {
        x.log10().floor().max(1.0)
    }
}

/// Clamps an estimate into `[min, max]` and truncates it to a whole limit, as Netflix's
/// `(int)` casts do.
fn whole(estimate: f64, min: usize, max: usize) -> usize {
    (estimate as usize).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Windowed {
        /// Adds a success to the recent ones alone, not to the window.
        fn succeeded(&self, now: Instant, rtt: Duration) {
            let at = self.tally.time(now);
            self.tally.succeeded(at, seawall_core::time::nanos(rtt));
        }
    }

    pub(super) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_window_moves_the_limit_once_with_its_summary() {
        let config = AdaptiveLimit::Aimd(AimdConfig::new().initial(20).max(100));
        let mut w = Windowed::new(&config, ms(100));
        let start = Instant::now();
        // The first sample opens the first window.
        assert_eq!(
            w.sample(start, ms(5), 20, false, false, Load::default),
            None
        );
        for i in 0..20 {
            assert_eq!(
                w.sample(start + ms(i), ms(5), 20, true, true, Load::default),
                None
            );
        }
        // Twenty drops in the window: one backoff, not twenty.
        assert_eq!(
            w.sample(start + ms(101), ms(5), 20, false, false, Load::default),
            Some(18)
        );
    }

    #[test]
    fn small_windows_and_tiny_latencies_are_skipped() {
        let config = AdaptiveLimit::Aimd(AimdConfig::new().initial(20).max(100));
        let mut w = Windowed::new(&config, ms(100));
        let start = Instant::now();
        assert_eq!(
            w.sample(start, ms(5), 20, false, false, Load::default),
            None
        );
        for i in 0..5 {
            assert_eq!(
                w.sample(start + ms(i), ms(5), 20, true, true, Load::default),
                None
            );
        }
        assert_eq!(
            w.sample(start + ms(101), ms(5), 20, true, true, Load::default),
            None,
            "six samples"
        );
        for i in 0..30 {
            w.sample(
                start + ms(102 + i),
                Duration::from_micros(50),
                20,
                true,
                true,
                Load::default,
            );
        }
        assert_eq!(
            w.sample(
                start + ms(300),
                Duration::from_micros(50),
                20,
                true,
                true,
                Load::default
            ),
            None
        );
    }

    /// Feeds one window of `n` calls at `rate` a second, each taking `rtt`, with `load` read
    /// when it closes; returns the limit it closes with.
    pub(super) fn window(
        w: &mut Windowed,
        now: &mut Instant,
        n: u64,
        rtt: Duration,
        dropped: bool,
        load: Load,
    ) -> Option<usize> {
        let length = w.length;
        let step = length / n as u32 + Duration::from_nanos(1);
        let mut limit = None;
        for _ in 0..n {
            *now += step;
            if let Some(l) = w.sample(*now, rtt, load.in_flight, dropped, dropped, || load) {
                limit = Some(l);
            }
        }
        limit
    }

    /// A windowed algorithm whose first window is open, with `in_flight` calls in flight.
    pub(super) fn opened(config: &AdaptiveLimit, in_flight: usize) -> (Windowed, Instant) {
        let mut w = Windowed::new(config, ms(100));
        let start = Instant::now();
        let load = Load {
            in_flight,
            ..Load::default()
        };
        assert_eq!(
            w.sample(start, ms(5), in_flight, false, false, || load),
            None
        );
        (w, start)
    }

    #[test]
    fn calls_that_hang_do_not_read_as_a_queue() {
        // Slow-drip's onset at 10 % hanging: 24 in flight against a limit of 24, 4 of them
        // held, the fastest recent success 13 ms against 9 ms. Vegas's estimate at the 20
        // younger calls reads 20 × (1 − 9/13) = 6.2 queued, over its cut at 6, but some of
        // them hang too; 1000 completions a second waiting 4 ms more are a queue of 4.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(24).max(1000));
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        let now = Instant::now();
        w.base = Some(Duration::from_micros(10_500));
        w.last = Some(Pace {
            completed: 1000.0,
            offered: 1000.0,
            mean: Duration::from_micros(10_500),
            error: 0.0,
        });
        w.tally.set_fastest(Some(ms(9)));
        for i in 0..RECENT_SUCCESSES as u64 {
            w.succeeded(now, ms(13 + i % 5));
        }
        assert_eq!(w.full(now, 24, 4, 1000), Some(28));
        // A queue that holds the calls at work is still one: 1000 completions a second
        // waiting 9 ms more are 9 queued.
        let mut w2 = Windowed::new(&config, Duration::from_secs(1));
        w2.base = w.base;
        w2.last = w.last;
        w2.tally.set_fastest(w.tally.fastest());
        for _ in 0..RECENT_SUCCESSES {
            w2.succeeded(now, ms(18));
        }
        assert_eq!(w2.full(now, 24, 4, 1000), None);
    }

    #[test]
    fn a_limit_at_its_maximum_holds_while_little_s_law_asks_for_more() {
        // 4000 calls a second against a maximum of 100, three in four turned away; the
        // latency triples at the pinned limit. Vegas reads 100 × (1 − 20/60) = 67 queued and
        // cuts to 39, but Little's law at the offered load asks for 4000 × 60 ms = 240 calls:
        // the maximum holds, as a fixed limit would. A drop still cuts.
        for (dropped, held) in [(false, true), (true, false)] {
            let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(100).max(100));
            let (mut w, mut now) = opened(&config, 100);
            let load = Load {
                in_flight: 100,
                rejected: 300,
                ..Load::default()
            };
            assert_eq!(
                window(&mut w, &mut now, 100, ms(20), false, load),
                Some(100)
            );
            let limit = window(&mut w, &mut now, 100, ms(60), dropped, load).unwrap();
            assert_eq!(limit == 100, held, "dropped: {dropped}, limit {limit}");
        }
    }

    #[test]
    fn a_slower_downstream_without_overload_lifts_the_limit_to_the_floor() {
        // 1000 calls a second, latency rising from 20 ms to 70 ms: Vegas alone reads the rise
        // as a queue and cuts; the floor keeps 1.25 x 70 + 3 x sqrt(70) = 113 calls.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(40).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        let mut limit = 0;
        for step in 0..=10 {
            let rtt = ms(20 + 5 * step);
            let in_flight = (rtt.as_millis()) as usize;
            let load = Load {
                in_flight,
                ..Load::default()
            };
            limit = window(&mut w, &mut now, 100, rtt, false, load).unwrap();
            let need = in_flight;
            assert!(limit >= need, "{rtt:?}: {limit} < {need}");
        }
        assert!(limit >= 113, "{limit}");
    }

    #[test]
    fn overload_turns_the_floor_off() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(200).max(1000));
        let healthy = Load {
            in_flight: 10,
            ..Load::default()
        };
        // Drops.
        let (mut w, mut now) = opened(&config, 10);
        window(&mut w, &mut now, 100, ms(10), false, healthy);
        let before = window(&mut w, &mut now, 100, ms(10), false, healthy).unwrap();
        let after = window(&mut w, &mut now, 100, ms(40), true, healthy).unwrap();
        assert!(after < before, "a drop: {before} -> {after}");
        // Calls piling up in flight: 100 finished, 140 more in flight than before.
        let (mut w, mut now) = opened(&config, 10);
        window(&mut w, &mut now, 100, ms(10), false, healthy);
        let piling = Load {
            in_flight: 150,
            ..Load::default()
        };
        let limit = window(&mut w, &mut now, 100, ms(400), false, piling).unwrap();
        assert!(limit < 200, "a backlog: {limit}");
        // Calls this bulkhead turned away.
        let busy = Load {
            in_flight: 150,
            ..Load::default()
        };
        let (mut w, mut now) = opened(&config, 150);
        window(&mut w, &mut now, 100, ms(10), false, busy);
        let turned_away = Load {
            in_flight: 150,
            rejected: 50,
            ..Load::default()
        };
        let limit = window(&mut w, &mut now, 100, ms(400), false, turned_away).unwrap();
        assert!(limit < 200, "rejections: {limit}");
    }

    /// A window in which the limit turned away nine calls in ten of a demand for 400 calls in
    /// flight (20 000 calls a second at `rtt`).
    fn limited(in_flight: usize) -> Load {
        Load {
            in_flight,
            rejected: 1800,
            ..Load::default()
        }
    }

    #[test]
    fn slow_start_doubles_while_the_limit_turns_calls_away_and_latency_is_flat() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        let limits: Vec<_> = (0..6)
            .map(|_| window(&mut w, &mut now, 200, ms(20), false, limited(20)).unwrap())
            .collect();
        // Doubling, up to what the offered load needs: λW = 20 000/s x 20 ms = 400, with
        // the floor's headroom 1.25 x 400 + 3 x sqrt(400) = 560.
        assert_eq!(limits, [40, 80, 160, 320, 560, 560]);
    }

    /// Every tenth call of `n` takes `late`, the others `rtt`, as [`window`] feeds them.
    fn tail_window(
        w: &mut Windowed,
        now: &mut Instant,
        n: u64,
        [rtt, late]: [Duration; 2],
        load: Load,
    ) -> Option<usize> {
        let step = w.length / n as u32 + Duration::from_nanos(1);
        let mut limit = None;
        for i in 0..n {
            *now += step;
            let rtt = if i % 10 == 9 { late } else { rtt };
            if let Some(l) = w.sample(*now, rtt, load.in_flight, false, false, || load) {
                limit = Some(l);
            }
        }
        limit
    }

    /// A Vegas limit at 5000 calls a second of 10 ms after its first window: the floor asks
    /// 1.25 x 50 + 3 x sqrt(50) = 84.
    fn at_5000_a_second(config: &AdaptiveLimit) -> (Windowed, Instant) {
        let mut w = Windowed::new(config, Duration::from_secs(1));
        let mut now = Instant::now();
        let healthy = Load {
            in_flight: 50,
            ..Load::default()
        };
        w.sample(now, ms(10), 50, false, false, || healthy);
        assert_eq!(
            window(&mut w, &mut now, 5000, ms(10), false, healthy),
            Some(84)
        );
        (w, now)
    }

    #[test]
    fn a_tail_that_leaves_the_fastest_answers_as_fast_is_no_queue() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(10_000));
        let (mut w, mut now) = at_5000_a_second(&config);
        // One call in ten 100 ms late: the mean doubles (20 ms), which Vegas reads as
        // 84 x (1 - 10/20) = 42 queued, while the limit turns 900 of 5950 arrivals away. The
        // fastest recent successes still take 10 ms: no queue, so slow start doubles the
        // limit, under the floor of 5950/s x 20 ms (182).
        let turned_away = Load {
            in_flight: 100,
            rejected: 900,
            ..Load::default()
        };
        assert_eq!(
            tail_window(&mut w, &mut now, 5000, [ms(10), ms(110)], turned_away),
            Some(168)
        );
        // A queue that delays every call by 10 ms, the fastest too, is still cut.
        let (mut w, mut now) = at_5000_a_second(&config);
        let limit = window(&mut w, &mut now, 5000, ms(20), false, turned_away).unwrap();
        assert!(limit < 84, "{limit}");
    }

    #[test]
    fn a_tail_s_calls_still_in_flight_are_no_backlog() {
        // 5000 calls a second of 10 ms (limit 84, as above), then one call in ten 110 ms late
        // and 400 more calls in flight when the window closes than when it opened: it admitted
        // 5400 calls and finished 5000, short of 95 %, the backlog of an overload but for its
        // fastest answers, as fast as before. Slow start goes on, to the floor of 5400/s x
        // 20 ms (167), and sets no threshold; read as overload, the limit fell to 45 and the
        // threshold to 42.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(10_000));
        let (mut w, mut now) = at_5000_a_second(&config);
        let piling = Load {
            in_flight: 450,
            ..Load::default()
        };
        assert_eq!(
            tail_window(&mut w, &mut now, 5000, [ms(10), ms(110)], piling),
            Some(167)
        );
        assert_eq!(w.threshold, usize::MAX);
    }

    /// A Vegas limit at 10 calls a second of 10 ms, then every call 2 s: windows of one
    /// second, each answering 10 calls with 20 in flight, until the recent successes are all
    /// slow. Returns it with the limit the last of those windows set.
    fn slower_at_10_a_second() -> (Windowed, Instant, usize) {
        let (mut w, mut now) = vegas_at_10ms(10);
        let mut limit = 0;
        for _ in 0..5 {
            limit = window(&mut w, &mut now, 10, ms(2000), false, at(20, 0)).unwrap();
        }
        (w, now, limit)
    }

    /// A Vegas limit (a guess of 20) over windows of one second, after three windows of
    /// `calls` answers at 10 ms with one call in flight.
    fn vegas_at_10ms(calls: u64) -> (Windowed, Instant) {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        let mut now = Instant::now();
        w.sample(now, ms(10), 1, false, false, || at(1, 0));
        for _ in 0..3 {
            window(&mut w, &mut now, calls, ms(10), false, at(1, 0));
        }
        (w, now)
    }

    /// What the bulkhead reports at a window's close: `in_flight` calls, `rejected` of its
    /// calls turned away.
    fn at(in_flight: usize, rejected: u64) -> Load {
        Load {
            in_flight,
            rejected,
            ..Load::default()
        }
    }

    #[test]
    fn a_count_s_noise_at_a_held_latency_is_no_backlog() {
        // 10 calls a second at 2 s: Little's law asks 20 in flight, the floor 1.25 x 20 +
        // 3 x sqrt(20) = 39. A window that closes with 21 in flight where the last closed with
        // 20 admitted 11 calls and answered 10, short of 95 %: read as a backlog, Vegas cut
        // the limit to 3 against the latency before the step. The latency held since the last
        // window, and the call left in flight is within the noise of two readings of the calls
        // at work (3 x sqrt(2 x 10 x 1) = 13.4 calls): the floor holds, at the 11 admitted
        // (1.25 x 22 + 3 x sqrt(22) = 42).
        let (mut w, mut now, limit) = slower_at_10_a_second();
        assert_eq!(limit, 39);
        let threshold = w.threshold;
        assert_eq!(
            window(&mut w, &mut now, 10, ms(2000), false, at(21, 0)),
            Some(42)
        );
        assert_eq!(w.threshold, threshold);
        // 20 calls piling up at the same latency are past the noise: a backlog.
        let (mut w, mut now, _) = slower_at_10_a_second();
        let limit = window(&mut w, &mut now, 10, ms(2000), false, at(40, 0)).unwrap();
        assert!(limit < 20, "{limit}");
    }

    /// A Vegas limit at 10 calls a second of 10 ms (the guess, 20, never binds), then every
    /// call 3 s: a window answers 13 calls at 10 ms, hears nothing for 3 s, and closes at the
    /// first slow answer with 20 in flight where 1 was (16 turned away at the full limit).
    fn stepped_to_3s() -> (Windowed, Instant) {
        let (mut w, mut now) = vegas_at_10ms(10);
        for _ in 0..13 {
            now += ms(50);
            w.sample(now, ms(10), 1, false, false, || at(1, 0));
        }
        now += ms(3000);
        w.sample(now, ms(3000), 20, false, false, || at(20, 16));
        (w, now)
    }

    #[test]
    fn calls_that_could_not_have_answered_yet_are_no_backlog() {
        // The step's window closes with 20 in flight where 1 was (`stepped_to_3s`): those
        // 19 calls came within the 3 s just shown, when Little's law puts 27 at work: none
        // could have answered. Read as a backlog, the window set slow start's threshold to
        // half the limit (10), and the next window at 3 s, its fastest recent answers still
        // at 10 ms (a tail), lifted the limit only to that threshold.
        let (mut w, mut now) = stepped_to_3s();
        assert_eq!(w.threshold, usize::MAX);
        let limit = window(&mut w, &mut now, 10, ms(3000), false, at(20, 10)).unwrap();
        assert!(limit >= 40, "{limit}");
        // 20 calls piling up at a latency that held are still a backlog.
        let (mut w, mut now, _) = slower_at_10_a_second();
        let limit = window(&mut w, &mut now, 10, ms(2000), false, at(40, 0)).unwrap();
        assert!(limit < 20, "{limit}");
    }

    #[test]
    fn a_latency_a_step_s_tail_window_showed_and_the_next_held_is_the_downstream_s_own() {
        // As above: 10 calls a second stepping from 10 ms to 3 s, the step's window, then a
        // window at 3 s turning 10 of 20 away whose fastest recent answers still took 10 ms (a
        // tail: slow start lifted the limit to 40). The next window holds 3 s, turns 10 of 20
        // away again, and its recent successes are all slow: against the 10 ms from before the
        // step Vegas read nearly the whole limit queued and cut it to 3. The latency the tail
        // window stepped up to and this one held is the downstream's own: the limit holds.
        let (mut w, mut now) = stepped_to_3s();
        let tail = window(&mut w, &mut now, 10, ms(3000), false, at(30, 10)).unwrap();
        assert!(tail >= 40, "{tail}");
        let limit = window(&mut w, &mut now, 10, ms(3000), false, at(30, 10)).unwrap();
        assert!(limit >= tail, "{tail} -> {limit}");
    }

    #[test]
    fn a_latency_served_and_held_is_the_downstream_s_own() {
        // 10 calls a second at 2 s, served at the floor (39) window after window: 2 s is the
        // latency without a queue now. A window at that latency in which Poisson peaks of the
        // calls in flight found the limit full (5 of 15 turned away) is no queue: the limit
        // holds. Against the 10 ms from before the step Vegas read 39 x (1 - 0.01 / 2) queued
        // and cut the limit to 3.
        let (mut w, mut now, limit) = slower_at_10_a_second();
        assert_eq!(limit, 39);
        let limit = window(&mut w, &mut now, 10, ms(2000), false, at(20, 5)).unwrap();
        assert!(limit >= 39, "{limit}");
    }

    #[test]
    fn rejections_at_the_latency_a_served_window_held_are_no_queue() {
        // 20 calls a second stepping from 10 ms to 2 s: the calls in flight fill up to 40
        // while nothing answers, then a window answers 20 at 2 s with 40 still in flight,
        // served, and the floor lifts the limit. The next window at the same 2 s turns 2 of
        // 22 calls away (Poisson peaks at the limit): against the 10 ms from before the step
        // Vegas read nearly the whole limit queued and cut it to the minimum; the latency the
        // served window held is the downstream's own, and the limit holds.
        let (mut w, mut now) = vegas_at_10ms(20);
        // The silence: too few answers to read, the calls in flight filling up.
        window(&mut w, &mut now, 5, ms(10), false, at(40, 0));
        let served = window(&mut w, &mut now, 20, ms(2000), false, at(40, 0)).unwrap();
        assert!(served >= 40, "{served}");
        let limit = window(&mut w, &mut now, 20, ms(2000), false, at(40, 2)).unwrap();
        assert!(limit >= served, "{served} -> {limit}");
    }

    #[test]
    fn slow_start_ends_at_the_first_sign_of_queueing_and_then_stops_at_half_that_limit() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        assert_eq!(
            window(&mut w, &mut now, 200, ms(20), false, limited(20)),
            Some(40)
        );
        // 40 x (1 - 20/21) = 1.9 calls queued, more than log10(40) rounds down to: Vegas alone.
        let limit = window(&mut w, &mut now, 200, ms(21), false, limited(20)).unwrap();
        assert!(limit < 80, "{limit}");
        // The limit falls (a handle, drops); at flat latency slow start doubles it again, up to
        // half the limit that queued.
        w.set(6);
        let limits: Vec<_> = (0..3)
            .map(|_| window(&mut w, &mut now, 200, ms(20), false, limited(20)).unwrap())
            .collect();
        assert_eq!(limits[..2], [12, 20]);
        assert!(limits[2] < 40, "{limits:?}");
    }

    /// Feeds one window of `n` calls that take `rtts` in turn, as [`window`] does.
    pub(super) fn spread_window(
        w: &mut Windowed,
        now: &mut Instant,
        n: u64,
        rtts: [Duration; 2],
        dropped: bool,
        load: Load,
    ) -> Option<usize> {
        let step = w.length / n as u32 + Duration::from_nanos(1);
        let mut limit = None;
        for i in 0..n {
            *now += step;
            let rtt = rtts[i as usize % 2];
            if let Some(l) = w.sample(*now, rtt, load.in_flight, dropped, dropped, || load) {
                limit = Some(l);
            }
        }
        limit
    }

    #[test]
    fn slow_start_reads_a_long_tail_s_noise_as_no_queue() {
        // Calls of 10 and 130 ms: a mean of 70 ms whose standard error over 200 calls is
        // 60 / sqrt(200) = 4.2 ms. A window at 73 ms reads at 40 calls as 40 x (1 - 70/73)
        // = 1.6 queued against f = 1, but the two means differ by 0.7 of the standard error
        // of their difference (6 ms), which a latency that did not change shows often.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        let lower = [ms(10), ms(130)];
        let higher = [ms(13), ms(133)];
        assert_eq!(
            spread_window(&mut w, &mut now, 200, lower, false, limited(20)),
            Some(40)
        );
        let limits: Vec<_> = (0..2)
            .map(|_| spread_window(&mut w, &mut now, 200, higher, false, limited(20)).unwrap())
            .collect();
        assert_eq!(limits, [80, 160]);
    }

    #[test]
    fn the_first_window_s_mean_has_its_censored_tail_added_back() {
        // A first 1 s window whose 2000 finished calls took 10 and 210 ms: a mean of 110 ms,
        // a deviation of 100 ms, a standard error of 2.2 ms; its long calls still in flight
        // put the calls' own mean at 110 + 0.01 / (1 - 0.11) = 121.2 ms. The next window's
        // 120 ms is then no rise, while against 110 ms it is 10 ms, past three standard
        // errors of the difference (9.5 ms), and reads 20 x (1 - 110 / 120) = 1.7 queued.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        let mut now = Instant::now();
        let load = limited(20);
        assert_eq!(w.sample(now, ms(5), 20, false, false, || load), None);
        let first = spread_window(&mut w, &mut now, 2000, [ms(10), ms(210)], false, load);
        assert_eq!(first, Some(40));
        let base = w.base.unwrap().as_secs_f64();
        assert!((base - 0.1212).abs() < 0.0005, "{base}");
        let second = spread_window(&mut w, &mut now, 2000, [ms(20), ms(220)], false, load);
        assert_eq!(second, Some(80));
    }

    #[test]
    fn a_first_window_whose_latencies_climb_keeps_its_mean() {
        // A queue building within the first window: 500 calls at 10 ms, then 500 at 100 ms.
        // Its latest successes are its slowest, and its mean (55 ms) stays the base, where its
        // censored tail would add (45 ms)^2 / (1 s - 55 ms) = 2.1 ms.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(100).max(1000));
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        let mut now = Instant::now();
        let load = Load {
            in_flight: 100,
            ..Load::default()
        };
        assert_eq!(w.sample(now, ms(5), 100, false, false, || load), None);
        for rtt in [ms(10), ms(100)] {
            for _ in 0..500 {
                now += ms(1) + Duration::from_nanos(1);
                w.sample(now, rtt, 100, false, false, || load);
            }
        }
        assert_eq!(w.base, Some(ms(55)));
    }

    #[test]
    fn the_first_window_s_calls_at_work_are_no_backlog() {
        // 1000 calls a second of 75 ms from 5 in flight: the first window leaves 75 at work,
        // so 1000 of its 1070 arrivals (93.5 %) finished, short of 95 %; Little's law at its
        // pace asks 1070 x 0.075 = 80. No backlog: the limit goes to the floor, no threshold.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        let mut now = Instant::now();
        let start = Load {
            in_flight: 5,
            ..Load::default()
        };
        assert_eq!(w.sample(now, ms(5), 5, false, false, || start), None);
        let load = Load {
            in_flight: 75,
            ..Load::default()
        };
        let limit = window(&mut w, &mut now, 1000, ms(75), false, load);
        assert_eq!(w.threshold, usize::MAX);
        assert_eq!(limit, Some(floor_for(1070.0 * 0.075)));
        // Calls that pile up past Little's law are still a backlog.
        let mut w = Windowed::new(&config, Duration::from_secs(1));
        assert_eq!(w.sample(now, ms(5), 5, false, false, || start), None);
        let piled = Load {
            in_flight: 200,
            ..Load::default()
        };
        window(&mut w, &mut now, 1000, ms(75), false, piled);
        assert_eq!(w.threshold, 10);
    }

    #[test]
    fn slow_start_still_ends_at_a_queue_far_outside_the_noise() {
        // 8 and 12 ms (standard error 0.14 ms over 200 calls), then 18 and 22 ms: the mean
        // doubles, 40 x (1 - 10/20) = 20 queued calls.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        assert_eq!(
            spread_window(&mut w, &mut now, 200, [ms(8), ms(12)], false, limited(20)),
            Some(40)
        );
        let limit =
            spread_window(&mut w, &mut now, 200, [ms(18), ms(22)], false, limited(20)).unwrap();
        assert!(limit < 80, "{limit}");
    }

    #[test]
    fn slow_start_waits_for_drops_and_backlogs_to_clear() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        let dropped = window(&mut w, &mut now, 200, ms(20), true, limited(20)).unwrap();
        assert!(dropped <= 20, "a drop: {dropped}");
        // The calls admitted pile up in flight: the downstream does not keep up.
        let piling = window(&mut w, &mut now, 200, ms(20), false, limited(200)).unwrap();
        assert!(piling < 2 * dropped, "a backlog: {dropped} -> {piling}");
    }

    #[test]
    fn failures_back_off_the_algorithm_down_to_the_floor_only() {
        // 1000 calls a second at 20 ms, 30 % failing: Little's law needs 20 calls, with the
        // floor's headroom 1.25 x 20 + 3 x sqrt(20) = 38.4.
        let config = AdaptiveLimit::Aimd(AimdConfig::new().initial(100).max(1000));
        let (mut w, mut now) = opened(&config, 20);
        let load = Load {
            in_flight: 20,
            ..Load::default()
        };
        let mut limit = 100;
        for i in 0..3000u32 {
            now += ms(1);
            let failed = i % 10 < 3;
            if let Some(l) = w.sample(now, ms(20), 20, failed, false, || load) {
                limit = l;
            }
        }
        assert_eq!(limit, 39);
        // The same failures, refused for overload: the floor stays out of the way.
        let (mut w, mut now) = opened(&config, 20);
        for i in 0..3000u32 {
            now += ms(1);
            let refused = i % 10 < 3;
            if let Some(l) = w.sample(now, ms(20), 20, refused, refused, || load) {
                limit = l;
            }
        }
        assert!(limit < 39, "{limit}");
    }

    #[test]
    fn cancelled_calls_count_in_the_floor_by_the_time_they_held_their_slots() {
        // 950 answers in 10 ms and 50 calls cancelled after 100 ms in one second: 14.5 calls
        // in flight on average, 1.25 x 14.5 + 3 x sqrt(14.5) = 29.5.
        let load = Load {
            in_flight: 10,
            cancelled: 50,
            cancelled_time: ms(5000),
            ..Load::default()
        };
        let d = demand((ms(1000), 10), 950, load, (ms(10), 0.0), false, false, None).unwrap();
        assert_eq!(d.floor, 30);
        assert!(d.served);
    }

    #[test]
    fn rejections_count_as_demand_in_the_floor() {
        // 100 finished and 4 turned away in 100 ms (under the 5 % tolerance): λ = 1040/s.
        let load = Load {
            in_flight: 10,
            rejected: 4,
            ..Load::default()
        };
        let d = demand((ms(100), 10), 100, load, (ms(50), 0.0), false, false, None).unwrap();
        // λW = 52: 1.25 x 52 + 3 x sqrt(52) = 86.6.
        assert_eq!(d.floor, 87);
        assert!(d.served && !d.limited);
    }

    /// A window of `calls` answers at `rtt` after one healthy window of 100 answers at 10 ms
    /// (1000 a second with 100 ms windows), with the limit at 23 and `rejected` calls turned
    /// away in the second; returns the limit before and after it.
    fn after_a_rise(calls: u64, rtt: Duration, in_flight: usize, rejected: u64) -> (usize, usize) {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(23).max(1000));
        let (mut w, mut now) = opened(&config, 10);
        let healthy = Load {
            in_flight: 10,
            ..Load::default()
        };
        let before = window(&mut w, &mut now, 100, ms(10), false, healthy).unwrap();
        let load = Load {
            in_flight,
            rejected,
            ..Load::default()
        };
        (
            before,
            window(&mut w, &mut now, calls, rtt, false, load).unwrap(),
        )
    }

    #[test]
    fn a_slower_downstream_at_a_pinned_limit_lifts_it_to_what_the_offered_load_needs() {
        // Latency 10 -> 200 ms at 1000 calls a second: 23 calls in flight complete 115 a
        // second (completions / 8.3 while latency x 20), the rest are turned away. Little's
        // law at the offered (12 answers + 13 more in flight + 75 turned away) / 0.1 s =
        // 1000 a second x 200 ms = 200, with the floor's headroom 1.25 x 200 + 3 x sqrt(200)
        // = 292.4.
        let (before, after) = after_a_rise(12, ms(200), 23, 75);
        assert!(before < 30, "{before}");
        assert_eq!(after, 293);
    }

    #[test]
    fn a_queue_behind_our_own_calls_is_still_cut() {
        // Latency x 2.5 while completions hold at 1000 a second: the downstream queues at its
        // capacity, Vegas cuts the queue as before.
        let (before, after) = after_a_rise(100, ms(25), 23, 50);
        assert!(after < before, "{before} -> {after}");
        // Completions falling by only 20 % (a capacity that degrades under the queue) is
        // still a queue: less than the square root of the rise.
        let (before, after) = after_a_rise(80, ms(25), 23, 50);
        assert!(after < before, "{before} -> {after}");
    }

    #[test]
    fn a_raise_whose_completions_do_not_follow_is_taken_back() {
        // Capacity halved at a pinned limit looks like a slower downstream for one window:
        // completions halve, latency doubles. The raise is a probe: completions that stay at
        // the capacity put the limit back, and Vegas cuts from there.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(23).max(1000));
        let (mut w, mut now) = opened(&config, 10);
        let pinned = Load {
            in_flight: 10,
            rejected: 50,
            ..Load::default()
        };
        let before = window(&mut w, &mut now, 100, ms(10), false, pinned).unwrap();
        let raised = window(&mut w, &mut now, 40, ms(25), false, pinned).unwrap();
        assert!(raised > before, "{before} -> {raised}");
        let back = window(&mut w, &mut now, 40, ms(60), false, pinned).unwrap();
        assert_eq!(back, before);
    }

    #[test]
    fn after_a_slowdown_flat_latency_is_no_queue() {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(23).max(1000));
        let (mut w, mut now) = opened(&config, 10);
        let healthy = Load {
            in_flight: 10,
            ..Load::default()
        };
        window(&mut w, &mut now, 100, ms(10), false, healthy);
        let slow = Load {
            in_flight: 23,
            rejected: 75,
            ..Load::default()
        };
        let lifted = window(&mut w, &mut now, 12, ms(200), false, slow).unwrap();
        // The limit now lets the load in: 100 answers a window at 200 ms, 200 in flight.
        let served = Load {
            in_flight: 200,
            ..Load::default()
        };
        let limit = window(&mut w, &mut now, 100, ms(200), false, served).unwrap();
        assert!(limit >= 200 && lifted >= 200, "{lifted} -> {limit}");
    }

    /// A windowed Vegas after one healthy window of 100 calls at 10 ms, with the limit it
    /// closed with.
    fn healthy() -> (Windowed, Instant, usize) {
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let mut w = Windowed::new(&config, ms(100));
        let mut now = Instant::now();
        let load = Load {
            in_flight: 10,
            ..Load::default()
        };
        assert_eq!(w.sample(now, ms(10), 10, false, false, || load), None);
        let limit = window(&mut w, &mut now, 100, ms(10), false, load).unwrap();
        (w, now, limit)
    }

    /// Calls finishing one a millisecond, each taking `rtt`.
    fn finish(w: &mut Windowed, now: &mut Instant, n: usize, rtt: Duration, in_flight: usize) {
        for _ in 0..n {
            *now += ms(1);
            w.sample(*now, rtt, in_flight, false, false, Load::default);
        }
    }

    #[test]
    fn a_full_limit_lets_calls_in_while_the_fastest_successes_show_no_queue() {
        let (mut w, now, limit) = healthy();
        // Calls hanging until a timeout hold slots; the others still finish at 10 ms.
        for i in 0..RAISE_BURST as usize {
            assert_eq!(w.full(now, limit + i, 0, 1000), Some(limit + i + 1));
        }
        assert_eq!(
            w.full(now, limit + 4, 0, 1000),
            None,
            "paced by the calls that finish"
        );
        assert_eq!(w.full(now, 1000, 0, 1000), None, "never past the maximum");
    }

    #[test]
    fn before_the_first_window_a_queue_within_the_calls_noise_lets_calls_in() {
        // 3000 calls a second of 40–60 ms: ~150 in flight, a Poisson count that peaks past
        // the downstream's 165 workers, whose fastest recent success then waits 7 ms: Vegas
        // reads 151 x (1 - 41/48) = 22 queued, past its cut (6f = 12) but within the
        // 3 x sqrt(151 - 22) = 34 calls by which the calls at work vary, as the floor allows.
        let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
        let mut w = Windowed::new(&config, ms(100));
        let mut now = Instant::now() + ms(41);
        for _ in 0..16 {
            w.succeeded(now, ms(41));
        }
        now += ms(10);
        for _ in 0..32 {
            w.succeeded(now, ms(48));
        }
        assert_eq!(w.full(now, 151, 0, 1000), Some(152));
        // A queue beyond that noise is still one: 151 x (1 - 41/70) = 63 against 3 x sqrt(88).
        for _ in 0..32 {
            w.succeeded(now, ms(70));
        }
        assert_eq!(w.full(now, 151, 0, 1000), None);
    }

    #[test]
    fn a_raise_lasts_until_the_next_call_finishes() {
        let (mut w, mut now, limit) = healthy();
        assert_eq!(w.full(now, limit, 0, 1000), Some(limit + 1));
        now += ms(1);
        let back = w.sample(now, ms(10), limit, false, false, Load::default);
        assert_eq!(back, Some(limit));
        now += ms(1);
        assert_eq!(
            w.sample(now, ms(10), limit, false, false, Load::default),
            None
        );
    }

    #[test]
    fn a_full_limit_turns_calls_away_once_every_recent_success_waited() {
        let (mut w, mut now, limit) = healthy();
        // Four calls queued in front of every call: 4 ms more each.
        finish(&mut w, &mut now, 32, ms(14), limit);
        assert_eq!(w.full(now, limit, 0, 1000), None);
    }

    /// Nothing finished for longer than four recent latencies: a downstream that got slower
    /// and has not answered yet, or a black hole. Neither shows a queue, so while calls past
    /// the held age and younger ones are in flight, calls come in up to the maximum, as
    /// against a fixed limit; a black hole is the attempt timeout's and the breaker's.
    #[test]
    fn successes_that_stopped_count_held_calls_against_the_maximum_only() {
        let (mut w, mut now, limit) = healthy();
        now += ms(41);
        assert_eq!(w.full(now, limit, 0, 1000), None, "nothing held");
        assert_eq!(w.full(now, limit + 30, 31, 1000), Some(limit + 31));
        assert_eq!(
            w.full(now, 2 * limit, limit, 1000),
            Some(2 * limit + 1),
            "the younger ones past the limit too"
        );
        assert_eq!(
            w.full(now, limit + 5, limit + 5, 1000),
            None,
            "held calls alone"
        );
        assert_eq!(w.full(now, 1000, 990, 1000), None, "never past the maximum");
    }

    #[test]
    fn a_failure_that_came_back_keeps_a_full_limit_while_no_success_is_recent() {
        let (mut w, mut now, limit) = healthy();
        now += ms(41);
        w.sample(now, ms(1), limit, true, false, Load::default);
        now += ms(1);
        assert_eq!(w.full(now, limit + 30, 31, 1000), None);
    }

    #[test]
    fn every_recent_success_slower_by_half_closes_the_window_early() {
        let (mut w, mut now, limit) = healthy();
        finish(&mut w, &mut now, 32, ms(20), limit);
        assert_eq!(w.full(now, limit, 0, 1000), None);
        now += ms(1);
        let closed = w.sample(now, ms(20), limit, false, false, Load::default);
        assert!(closed.is_some(), "the window closes 33 ms into its 100 ms");
    }

    #[test]
    fn successes_far_slower_than_a_queue_could_make_them_lift_the_limit_at_once() {
        let (mut w, mut now, limit) = healthy();
        // A step from 10 ms to 400 ms at 1000 calls a second: the calls in flight could queue
        // behind one another for `limit` ms at most, and the successes take 400.
        finish(&mut w, &mut now, 32, ms(400), limit);
        let lifted = w.full(now, limit, 0, 1000).unwrap();
        // Little's law: 1000 a second × 0.4 s = 400 in flight, with the floor's headroom.
        assert!(lifted >= 400, "{limit} -> {lifted}");
        assert!(w.probe.is_some(), "kept only if completions follow");
        // The window closes on the new latency alone, which is no queue.
        now += ms(100);
        let load = Load {
            in_flight: lifted,
            ..Load::default()
        };
        let kept = w.sample(now, ms(400), lifted, false, false, || load);
        finish(&mut w, &mut now, 20, ms(400), lifted);
        assert!(kept.is_none_or(|k| k >= lifted), "{lifted} -> {kept:?}");
        assert!(w.limit >= lifted, "{lifted} -> {}", w.limit);
    }

    #[test]
    fn successes_a_queue_behind_our_own_calls_explains_lift_nothing() {
        let (mut w, mut now, limit) = healthy();
        // Just under twice what `limit` calls queued at 1000 a second plus 10 ms could take.
        let rtt = ms(2 * (10 + limit as u64) - 1);
        finish(&mut w, &mut now, 32, rtt, limit);
        assert_eq!(w.full(now, limit, 0, 1000), None);
        assert!(w.probe.is_none());
    }

    /// A windowed Vegas whose last window cut its limit by half on a rise from 10 to 40 ms
    /// that did not lower completions; with that limit.
    fn cut() -> (Windowed, Instant, usize, usize) {
        let (mut w, mut now, before) = healthy();
        let load = Load {
            in_flight: before,
            rejected: 50,
            ..Load::default()
        };
        let after = window(&mut w, &mut now, 100, ms(40), false, load).unwrap();
        assert!(2 * after <= before, "{before} -> {after}");
        (w, now, before, after)
    }

    #[test]
    fn a_cut_that_did_not_lower_the_latency_lifts_the_limit_to_littles_law() {
        let (mut w, mut now, _, after) = cut();
        // A round trip at 40 ms later the calls let in since are just as slow.
        finish(&mut w, &mut now, 80, ms(40), after);
        let lifted = w.full(now, after, 0, 1000).unwrap();
        // 1500 calls a second offered (a third turned away) at 40 ms: 60 in flight.
        assert!(lifted >= 60, "{after} -> {lifted}");
    }

    #[test]
    fn a_cut_is_not_checked_before_a_round_trip_at_the_slowest_recent_latency() {
        let (mut w, mut now, _, after) = cut();
        // After a cut at 40 ms the successes take 35 to 60 ms: those of the next 80 ms were
        // let in before the cut, behind the backlog it is to shorten, and the check waits
        // for a round trip at 60 ms.
        for _ in 0..40 {
            finish(&mut w, &mut now, 1, ms(35), after);
            finish(&mut w, &mut now, 1, ms(60), after);
        }
        assert_eq!(w.full(now, after, 0, 1000), None);
    }

    #[test]
    fn a_cut_s_check_outlasts_a_window_that_held_the_limit() {
        // 10 calls a second stepping from 10 ms to 2 s, half turned away: Vegas cuts the
        // limit against 10 ms, and the cut is checked a round trip later, at 4 s. A window of
        // one second closes in between, still turning calls away at the cut's limit: the
        // check still comes, and the calls as slow as before lift the limit.
        let (mut w, mut now) = vegas_at_10ms(10);
        // The first slow answers, a tail against the fast ones before them.
        let before = window(&mut w, &mut now, 10, ms(2000), false, at(20, 0)).unwrap();
        let cut = window(&mut w, &mut now, 10, ms(2000), false, at(20, 10)).unwrap();
        assert!(2 * cut <= before, "{before} -> {cut}");
        let held = window(&mut w, &mut now, 10, ms(2000), false, at(20, 10)).unwrap();
        assert!(held <= cut, "{cut} -> {held}");
        now += Duration::from_secs(3);
        finish(&mut w, &mut now, 5, ms(2000), held);
        let lifted = w.full(now, held, 0, 1000);
        assert!(lifted.is_some_and(|l| l >= 20), "{held} -> {lifted:?}");
    }

    #[test]
    fn a_cut_that_lowered_the_latency_was_a_queue() {
        let (mut w, mut now, _, after) = cut();
        finish(&mut w, &mut now, 80, ms(14), after);
        assert_eq!(w.full(now, after, 0, 1000), None);
    }
}

#[cfg(test)]
mod properties {
    use super::tests::{ms, opened, spread_window, window};
    use super::*;
    use proptest::prelude::*;

    fn configs(max: usize) -> [AdaptiveLimit; 3] {
        [
            AdaptiveLimit::Aimd(AimdConfig::new().initial(10).max(max)),
            AdaptiveLimit::Vegas(VegasConfig::new().initial(10).max(max)),
            AdaptiveLimit::Gradient2(Gradient2Config::new().initial(20).max(max)),
        ]
    }

    /// How a window shows overload, if it does.
    #[derive(Debug, Clone, Copy)]
    enum Overload {
        Drops,
        Backlog,
        Rejections,
    }

    fn overload() -> impl Strategy<Value = Overload> {
        prop_oneof![
            Just(Overload::Drops),
            Just(Overload::Backlog),
            Just(Overload::Rejections)
        ]
    }

    fn sample() -> impl Strategy<Value = (Duration, usize, bool)> {
        (1..200u64, 0..300usize, prop::bool::weighted(0.1))
            .prop_map(|(ms, in_flight, dropped)| (Duration::from_millis(ms), in_flight, dropped))
    }

    fn bounds() -> impl Strategy<Value = (usize, usize, usize)> {
        (1..50usize, 0..100usize, 0..100usize)
            .prop_map(|(min, span, at)| (min, min + span, min + at.min(span)))
    }

    proptest! {
        /// Whatever the latency does, a window without overload leaves a limit of at least
        /// the calls Little's law puts in flight (within the maximum), and exactly what the
        /// model says: the algorithm's limit, lifted to the floor.
        #[test]
        fn the_floor_holds_under_any_latency_ramp_without_overload(
            calls in 10..400u64,
            latencies in prop::collection::vec(1..300u64, 1..30),
            max in 50..2000usize,
        ) {
            for config in &configs(max) {
                let mut model = Algorithm::new(config);
                let (mut w, mut now) = opened(config, 1);
                for &latency in &latencies {
                    let rtt = Duration::from_millis(latency);
                    let load = Load { in_flight: 1, ..Load::default() };
                    let step = Duration::from_millis(100) / calls as u32 + Duration::from_nanos(1);
                    let limit = window(&mut w, &mut now, calls, rtt, false, load).unwrap();
                    let need = rtt.as_secs_f64() / step.as_secs_f64();
                    prop_assert!(limit as f64 >= need.ceil().min(max as f64) - 1e-9,
                        "{config:?} at {rtt:?}: {limit} < {need}");
                    let floor = (1.25 * need + 3.0 * need.sqrt()).ceil() as usize;
                    let alone = model.update(rtt, 1, false);
                    let expected = if floor > alone { model.set(floor) } else { alone };
                    prop_assert_eq!(limit, expected, "{:?} at {:?}", config, rtt);
                }
            }
        }

        /// In a window that shows overload the floor stays out of the way: the limit is the
        /// algorithm's alone, and a drop lowers it.
        #[test]
        fn the_limit_falls_under_overload(
            calls in 20..400u64,
            latencies in prop::collection::vec(2..300u64, 1..30),
            kind in overload(),
        ) {
            for config in &configs(1000) {
                let mut model = Algorithm::new(config);
                let (mut w, mut now) = opened(config, 10);
                let mut in_flight = 10;
                // A first window at 1 ms, so that every later one shows a queue.
                let load = Load { in_flight, ..Load::default() };
                let first = window(&mut w, &mut now, calls, ms(1), true, load).unwrap();
                let mut before = model.update(ms(1), in_flight, true);
                // The opening success took 5 ms; the first window's calls dropped.
                let mut successes = vec![5u64];
                prop_assert_eq!(first, before);
                let mut previous: Option<u64> = None;
                for &latency in &latencies {
                    let rtt = Duration::from_millis(latency);
                    let (dropped, load) = match kind {
                        Overload::Drops => (true, Load { in_flight, ..Load::default() }),
                        Overload::Backlog => {
                            in_flight += calls as usize / 2;
                            (false, Load { in_flight, ..Load::default() })
                        }
                        Overload::Rejections => (false, Load {
                            in_flight,
                            rejected: calls / 2,
                            ..Load::default()
                        }),
                    };
                    let limit = window(&mut w, &mut now, calls, rtt, dropped, load).unwrap();
                    if !dropped {
                        successes.extend(std::iter::repeat_n(latency, calls as usize));
                    }
                    // Recent successes (the last full 16 and those filling the next) whose
                    // fastest waits over the fastest seen no more than `f` calls at the
                    // window's completions are a tail, not a queue: their rejections, and the
                    // late calls still in flight, are slow start's (its own property), not
                    // overload.
                    let recent = &successes[16 * (successes.len() / 16).max(1) - 16..];
                    let wait = recent.iter().min().unwrap() - successes.iter().min().unwrap();
                    if matches!(kind, Overload::Rejections | Overload::Backlog)
                        && calls as f64 * 10.0 * wait as f64 / 1000.0 <= log10_root(before as f64)
                    {
                        prop_assert!(limit >= model.update(rtt, in_flight, dropped));
                        break;
                    }
                    // At a latency that held since the last window (these windows' latencies
                    // have no spread), calls left in flight within the noise of two readings
                    // of the calls at work, `3 × √(2λ × min(T, W))` at the window's
                    // completions, count as answered (see "A count's noise is no backlog"):
                    // where that leaves no backlog past 5 %, the floor may lift the limit over
                    // the algorithm's.
                    let held = previous.is_some_and(|p| latency <= p);
                    previous = Some(latency);
                    let piled = (calls / 2) as f64;
                    let rate = calls as f64 * 10.0;
                    let noise = 3.0 * (2.0 * rate * (latency as f64 / 1000.0).min(0.1)).sqrt();
                    if matches!(kind, Overload::Backlog)
                        && held
                        && calls as f64 + piled.min(noise) >= 0.95 * (calls as f64 + piled)
                    {
                        prop_assert!(limit >= model.update(rtt, in_flight, dropped));
                        break;
                    }
                    prop_assert_eq!(limit, model.update(rtt, in_flight, dropped), "{:?}", config);
                    match config {
                        AdaptiveLimit::Aimd(_) if dropped && before > config.min() => {
                            prop_assert!(limit < before, "{config:?}: {before} -> {limit}");
                        }
                        AdaptiveLimit::Vegas(_) if dropped => {
                            prop_assert!(limit <= before, "{config:?}: {before} -> {limit}");
                        }
                        _ => {}
                    }
                    before = limit;
                }
            }
        }

        /// Windows in which the limit turns calls away, with or without a queue: the limit is
        /// the reference model's (the algorithm's, lifted to double the limit, at most to the
        /// offered load's floor and to half the limit of the last overloaded window, while
        /// the mean latency stays within `f(limit)` queued calls of the lowest seen, or rose
        /// by no more than three standard errors of the difference of the two means, or the
        /// fastest recent success waits no more than `f(limit)` calls over the fastest seen),
        /// and slow start never more than doubles it. Gradient2 has no slow start.
        #[test]
        fn slow_start_matches_its_reference_model(
            windows in prop::collection::vec(
                (10..60u64, 0..10u64, 0..4u64, prop::bool::weighted(0.1)),
                1..40,
            ),
            max in 50..3000usize,
        ) {
            const CALLS: u64 = 100;
            for config in &configs(max) {
                let slow_starts = !matches!(config, AdaptiveLimit::Gradient2(_));
                let mut model = Algorithm::new(config);
                let (mut w, mut now) = opened(config, 10);
                let mut limit = config.initial();
                let mut base = f64::INFINITY;
                let mut base_error = 0.0;
                let mut threshold = usize::MAX;
                // The opening success took 5 ms.
                let mut fastest = 5;
                // The last window's mean and its standard error, if it was not overloaded.
                let mut last: Option<(f64, f64)> = None;
                let mut last_served = false;
                let mut last_stepped = false;
                for &(latency, spread, share, dropped) in &windows {
                    let rtt = ms(latency);
                    // 0, 1, 2 or 3 calls turned away for each one admitted.
                    let rejected = CALLS * share;
                    let load = Load { in_flight: 10, rejected, ..Load::default() };
                    // Calls `spread` faster and slower in turn: the same mean.
                    let rtts = [ms(latency - spread), ms(latency + spread)];
                    let got = spread_window(&mut w, &mut now, CALLS, rtts, dropped, load).unwrap();

                    // The sample deviation of ±spread over n calls, over √n.
                    let error = spread as f64 / (CALLS as f64 - 1.0).sqrt();
                    // The first window (100 calls 1 ms and 1 ns apart) has its censored
                    // tail added back.
                    let variance = error * error * CALLS as f64;
                    let length = 100.0001;
                    let (mean, rtt) = if base.is_infinite()
                        && latency as f64 + 3.0 * variance.sqrt() < length
                    {
                        let mean = latency as f64 + variance / (length - latency as f64);
                        (mean, Duration::from_secs_f64(mean / 1000.0))
                    } else {
                        (latency as f64, rtt)
                    };
                    if mean < base {
                        base = mean;
                        base_error = error;
                    }
                    let f = (limit as f64).log10().floor().max(1.0);
                    let fastest_recent = latency - spread;
                    // Whether Vegas's estimate reads the window as a queue against the base.
                    let reads_queue = |base: f64, base_error: f64| {
                        let allowance = 3.0 * f64::hypot(error, base_error);
                        let lowered = if mean - base <= allowance { base } else { mean };
                        limit as f64 * (1.0 - base / lowered.max(1e-6)) > f
                    };
                    // A latency within three standard errors of the last window's mean.
                    let flat = last.is_some_and(|(m, e)| mean - m <= 3.0 * f64::hypot(error, e));
                    // A window turning calls away at the latency a served window held, or one
                    // that turned calls away at a tail's mean stepped up past 1.5 × the window
                    // before it, that Vegas reads as a queue: that latency is the one without a
                    // queue (and the fastest success the fastest seen) before the algorithm
                    // reads the window.
                    if flat
                        && (last_served || last_stepped)
                        && share > 0
                        && !dropped
                        && reads_queue(base, base_error)
                    {
                        base = mean;
                        base_error = error;
                        model.rebase(rtt);
                        fastest = fastest_recent;
                    }
                    let allowance = 3.0 * f64::hypot(error, base_error);
                    let lowered = if mean - base <= allowance { base } else { mean };
                    let alone = model.update_within(rtt, allowance / 1000.0, 10, dropped);
                    let step = 100.0 / CALLS as f64 + 1e-6;
                    let need = mean / step * (1 + share) as f64;
                    let floor = (1.25 * need + 3.0 * need.sqrt()).ceil() as usize;
                    // A queue delays the fastest recent success too (here the window's
                    // fastest, at 1000 completions a second); one that waits no more than
                    // `f(limit)` calls over the fastest seen shows a tail.
                    if !dropped {
                        fastest = fastest.min(fastest_recent);
                    }
                    let tail = !dropped && (fastest_recent - fastest) as f64 <= f;
                    let rose = limit as f64 * (1.0 - base / lowered.max(1e-6)) > f;
                    let queued = rose && !tail;
                    let lift = match (dropped, share) {
                        (true, _) => 0,
                        (false, 0) => floor,
                        (false, _) if !queued && slow_starts => {
                            (2 * limit).min(floor).min(threshold)
                        }
                        _ => 0,
                    };
                    if dropped || (share > 0 && queued) {
                        threshold = (limit / 2).max(1);
                    }
                    let expected = if lift > alone { model.set(lift) } else { alone };
                    prop_assert_eq!(got, expected, "{:?} at {:?}", config, rtt);
                    if share > 0 {
                        prop_assert!(got <= alone.max(2 * limit), "{limit} -> {got}");
                    }
                    // A window served (nothing turned away, nothing dropped) at a mean within
                    // three standard errors of the last window's, that Vegas reads as a queue:
                    // its mean is the latency without a queue from now on, and its fastest
                    // success the fastest seen.
                    if flat && rose && !dropped && share == 0 {
                        base = mean;
                        base_error = error;
                        model.rebase(rtt);
                        fastest = fastest_recent;
                    }
                    last_stepped = rose
                        && tail
                        && share > 0
                        && last.is_some_and(|(m, _)| mean > 1.5 * m);
                    last = (!dropped).then_some((mean, error));
                    last_served = !dropped && share == 0;
                    limit = got;
                }
            }
        }

        /// A window whose latency rose over the last one's: if its completions fell by more
        /// than the square root of the rise (the reference model's test), the limit is the
        /// algorithm's, lifted to Little's law at the larger offered load and the new latency;
        /// if they held, it never grows past slow start's doubling.
        #[test]
        fn a_slowdown_matches_its_reference_model(
            (n1, a) in (10..200u64, 1..100u64),
            (n2, b) in (10..200u64, 1..400u64),
            max in 50..3000usize,
        ) {
            for config in &configs(max) {
                let mut model = Algorithm::new(config);
                let (mut w, mut now) = opened(config, 10);
                let pace = |n: u64, rejected: u64, rtt: u64| {
                    let elapsed = (ms(100) / n as u32 + Duration::from_nanos(1)) * n as u32;
                    let secs = elapsed.as_secs_f64();
                    (n as f64 / secs, (n + rejected) as f64 / secs, rtt as f64 / 1000.0)
                };
                let floor = |need: f64| (1.25 * need + 3.0 * need.sqrt()).ceil() as usize;
                let healthy = Load { in_flight: 10, ..Load::default() };
                let first = window(&mut w, &mut now, n1, ms(a), false, healthy).unwrap();
                let (done1, offered1, w1) = pace(n1, 0, a);
                let alone = model.update(ms(a), 10, false);
                let lift = floor(offered1 * w1);
                let expected = if lift > alone { model.set(lift) } else { alone };
                prop_assert_eq!(first, expected);

                // Half the arrivals turned away.
                let turned = Load { in_flight: 10, rejected: n2, ..Load::default() };
                let got = window(&mut w, &mut now, n2, ms(b), false, turned).unwrap();
                let (done2, offered2, w2) = pace(n2, n2, b);
                let alone = model.update(ms(b), 10, false);
                let rise = w2 / w1;
                if rise > 1.5 && done2 * done2 * rise < done1 * done1 {
                    let lift = floor(offered1.max(offered2) * w2);
                    let expected = if lift > alone { model.set(lift) } else { alone };
                    prop_assert_eq!(got, expected, "{:?}: {} at {}ms -> {} at {}ms", config, n1, a, n2, b);
                } else if rise > 1.5 && done2 >= done1 {
                    prop_assert!(got <= alone.max(2 * first), "{config:?}: {first} -> {got}");
                }
            }
        }

        /// A call that finds the limit full, after a first window of 500 completions a second
        /// at 40 ms, is let in exactly when the reference model says. The queue is those
        /// completions a second times how much slower the fastest of the last 16 to 32
        /// successes is than the fastest seen; the calls at work are at most the floor of
        /// those completions times the slowest of them, and the calls in flight beyond are
        /// held. Held calls, with the rest under the limit and a queue of at most `6f`, raise
        /// the limit by their number; otherwise a credit (one per call finished since, at
        /// most four) and a queue of at most `f` let one call in over the limit. Either needs a
        /// success within four recent latencies and the limit under its maximum, and lasts
        /// until a call finishes. With no call finished at all (success or failure) within
        /// four recent latencies, a call comes in up to the maximum while calls past the held
        /// age and younger ones are in flight.
        #[test]
        fn calls_over_a_full_limit_match_their_reference_model(
            events in prop::collection::vec(
                (
                    0..3u64,
                    5..40u64,
                    prop::bool::weighted(0.2),
                    0..3usize,
                    10..60usize,
                    prop_oneof![9 => Just(0u64), 1 => 20..200u64],
                    0..20usize,
                ),
                1..300,
            ),
        ) {
            const MAX: usize = 50;
            const FIRST: u64 = 100;
            let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(MAX));
            // Windows of a minute: after the first, the windows' own limit stays where it is.
            let mut w = Windowed::new(&config, Duration::from_secs(60));
            let mut now = Instant::now();
            let load = Load { in_flight: 20, ..Load::default() };
            w.sample(now, ms(40), 20, false, false, || load);
            w.tally.add_finished(30_000 - FIRST);
            prop_assert!(window(&mut w, &mut now, FIRST, ms(40), false, load).is_some());
            let completed = w.last.expect("the first window closed").completed;
            let mut fastest = Some(40);
            let mut recent: Vec<u64> = vec![40; FIRST as usize + 1];
            let (mut latest, mut credit) = (Some(now), 4u32);
            let mut limit = w.limit;
            for &(step, rtt, dropped, fulls, in_flight, silence, aged) in &events {
                now += ms(step);
                let answered = now;
                let got = w.sample(now, ms(rtt), in_flight, dropped, false, Load::default);
                if got.is_some() {
                    limit = w.limit;
                }
                credit = (credit + 1).min(4);
                if !dropped {
                    fastest = Some(fastest.map_or(rtt, |f| f.min(rtt)));
                    recent.push(rtt);
                    latest = Some(now);
                }
                now += ms(silence);
                for extra in 0..fulls {
                    let in_flight = in_flight + extra;
                    // The last full half of 16 and the one filling.
                    let halves = recent.len() / 16;
                    let window = &recent[(16 * halves - 16)..];
                    let slowest = *window.iter().max().unwrap();
                    let fastest_recent = *window.iter().min().unwrap();
                    let fresh = Some(fastest_recent).filter(|&min| {
                        latest.is_some_and(|l| now.duration_since(l) <= ms(4 * min))
                    });
                    let at_work = floor_for(completed * slowest as f64 / 1000.0);
                    let aged = aged.min(in_flight);
                    let held = aged.max(in_flight.saturating_sub(at_work));
                    let silent = now.duration_since(answered) > ms(4 * fastest_recent);
                    let admit = match (fresh, fastest) {
                        (None, _) if silent && aged > 0 && in_flight > aged && in_flight < MAX => {
                            Some((in_flight + 1).max(limit))
                        }
                        (Some(r), Some(f)) if in_flight < MAX => {
                            let queue = completed * (r - f) as f64 / 1000.0;
                            let active = in_flight - held;
                            if held > 0
                                && active < limit
                                && queue <= 6.0 * log10_root(active as f64)
                            {
                                Some((limit + held).min(MAX))
                            } else if credit > 0 && queue <= log10_root(in_flight as f64) {
                                credit -= 1;
                                Some((in_flight + 1).max(limit))
                            } else {
                                None
                            }
                        }
                        _ => None,
                    };
                    let got = w.full(now, in_flight, aged, MAX);
                    if admit.is_some() {
                        prop_assert_eq!(got, admit);
                    } else if got.is_some() {
                        // Otherwise only a cut that did not lower the latency lifts it, as
                        // a probe.
                        prop_assert!(w.probe.is_some(), "let in over the model: {:?}", got);
                    }
                }
            }
        }

        /// Successes of a slower downstream after two healthy windows of `n1` and `n2` calls
        /// at 10 ms (the fastest seen, 5 ms, before them), each admitted with its own count of
        /// calls in flight: a call that finds the limit full lifts it for a slower downstream
        /// exactly when the reference model says.
        /// A call waits behind no more of our calls than were in flight when it was admitted,
        /// so the bound is the most of those counts among the open window's calls (the
        /// recent successes are all in it), not the calls in flight now, drained at the more
        /// completions a second of the two windows.
        #[test]
        fn a_slower_downstream_after_a_full_limit_matches_its_reference_model(
            (n1, n2) in (30..200u64, 30..200u64),
            rtt in 20..1000u64,
            admitted in prop::collection::vec(1..200usize, 32..64),
            in_flight in 0..400usize,
        ) {
            let config = AdaptiveLimit::Vegas(VegasConfig::new().initial(20).max(1000));
            let (mut w, mut now) = opened(&config, 10);
            let healthy = Load { in_flight: 10, ..Load::default() };
            window(&mut w, &mut now, n1, ms(10), false, healthy).unwrap();
            window(&mut w, &mut now, n2, ms(10), false, healthy).unwrap();
            let limit = w.limit;
            let pace = |n: u64| {
                let elapsed = (ms(100) / n as u32 + Duration::from_nanos(1)) * n as u32;
                n as f64 / elapsed.as_secs_f64()
            };
            for &n in &admitted {
                now += ms(1);
                prop_assert_eq!(w.sample(now, ms(rtt), n, false, false, Load::default), None);
            }
            let in_flight = limit + in_flight;
            let ahead = *admitted.iter().max().unwrap();
            let drain = pace(n1).max(pace(n2));
            let recent = rtt as f64 / 1000.0;
            let lift = floor_for(pace(n2) * recent).min(1000);
            let slower = recent > LATENCY_RISE * 0.010
                && recent > SLOWER_MARGIN * (0.005 + ahead as f64 / drain)
                && lift > limit;
            // Calls past what the last window's completions keep at work at this latency are
            // held (they hang), and lift the limit by their number while the calls at work show
            // no queue: that rule comes first.
            let last = w.last.unwrap();
            let at_work = floor_for(last.completed * recent);
            let held = in_flight.saturating_sub(at_work);
            let active = in_flight - held;
            let wait = ms(rtt).saturating_sub(w.tally.fastest().unwrap()).as_secs_f64();
            let held_lift = held > 0
                && active < limit
                && in_flight < 1000
                && last.completed * wait <= HELD_QUEUE * log10_root(active as f64);
            let got = w.full(now, in_flight, 0, 1000);
            if held_lift {
                prop_assert_eq!(got, Some((limit + held).min(1000)));
            } else if slower {
                prop_assert_eq!(got, Some(lift));
                prop_assert!(w.probe.is_some());
            } else {
                prop_assert_eq!(got, None, "{} ahead, {} in flight", ahead, in_flight);
            }
        }

        #[test]
        fn every_algorithm_stays_within_its_bounds(
            (min, max, initial) in bounds(),
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let configs = [
                AdaptiveLimit::Aimd(AimdConfig::new().min(min).max(max).initial(initial)),
                AdaptiveLimit::Vegas(VegasConfig::new().min(min).max(max).initial(initial)),
                AdaptiveLimit::Gradient2(Gradient2Config::new().min(min).max(max).initial(initial)),
            ];
            for config in &configs {
                let mut algorithm = Algorithm::new(config);
                for &(rtt, in_flight, dropped) in &samples {
                    let limit = algorithm.update(rtt, in_flight, dropped);
                    prop_assert!((min..=max).contains(&limit), "{config:?}: {limit}");
                }
            }
        }

        #[test]
        fn aimd_matches_its_definition(
            (min, max, initial) in bounds(),
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let config = AimdConfig::new().min(min).max(max).initial(initial);
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Aimd(config));
            let mut limit = initial;
            for &(rtt, in_flight, dropped) in &samples {
                if dropped || rtt > config.timeout {
                    limit = ((limit as f64 * 0.9) as usize).min(limit - 1).max(min);
                } else if in_flight * 2 >= limit {
                    limit = (limit + 1).min(max);
                }
                prop_assert_eq!(algorithm.update(rtt, in_flight, dropped), limit);
            }
        }

        #[test]
        fn a_drop_never_raises_a_vegas_limit(
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Vegas(VegasConfig::new().max(500)));
            let mut limit = 20;
            for &(rtt, in_flight, dropped) in &samples {
                let next = algorithm.update(rtt, in_flight, dropped);
                if dropped {
                    prop_assert!(next <= limit, "{limit} -> {next}");
                }
                limit = next;
            }
        }

        #[test]
        fn gradient2_grows_at_most_by_its_smoothed_queue_size(
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let config = Gradient2Config::new().min(1).max(1000);
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Gradient2(config));
            let mut limit = config.bounds.initial;
            for &(rtt, in_flight, dropped) in &samples {
                let next = algorithm.update(rtt, in_flight, dropped);
                let most = limit as f64 + config.smoothing * config.queue_size as f64 + 1.0;
                prop_assert!((next as f64) <= most, "{limit} -> {next}");
                limit = next;
            }
        }
    }
}
