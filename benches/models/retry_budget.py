#!/usr/bin/env python3
"""A model of `seawall_retry::RetryBudget`'s ledger (`retry/src/budget.rs`, `settle` and
`withdraw_at`), one client at a time, to measure what share of its requests a client retries in
a fault under the budget's rule and under candidate rules, without the lab.

Modelled: slots of a tenth of `quiet_ttl`, requests (deposits) and wanted retries per slot, the
episode (`wanted >= ratio * requests` over `ttl`), the window credit may come from (`quiet_ttl`,
or since the episode began and `quiet_ttl` before it, at most `ttl`), the cap, the threshold
drawn for a whole retry and the draw for a part. Not modelled: the lab's latency (a fixed 15 ms
before a failure is seen), the total timeout, the breaker. Poisson arrivals; each attempt fails
with the fault's share; up to two retries after 0-100 / 0-200 ms. Defaults: ratio 0.09, ttl
10 s, quiet_ttl 1 s.

    benches/models/retry_budget.py brownout [RULE]   # r in a 20 s fault after 10 s healthy, by rate and share
    benches/models/retry_budget.py fleet [RULE]      # r in a 10 s outage after 20 s of background errors

r is retries granted over requests made in the fault (the lab's A during the fault less one).
RULE: `main` (the budget's), `since-first` (the episode judged from the first wanted retry in
`ttl`, not over all of `ttl`), `hysteresis=K` (since-first, and an episode once on lasts while
`wanted >= K * ratio * requests`).
"""
import heapq
import random
import sys
from collections import defaultdict

RATIO, TTL, QUIET, SLOT = 0.09, 100, 10, 0.1


class Budget:
    def __init__(self, rule, rng):
        self.dep, self.want = defaultdict(int), defaultdict(int)
        self.total = self.seen_total = 0
        self.credit, self.episode, self.threshold = 0.0, None, None
        self.rule, self.rng = rule, rng

    def sum(self, counts, a, b):
        return sum(counts.get(i, 0) for i in range(max(a, 0), b + 1))

    def deposit(self, t):
        self.dep[int(t / SLOT)] += 1
        self.total += 1

    def frequent(self, slot, ttl_from):
        wanted = self.sum(self.want, ttl_from, slot)
        if wanted == 0:
            return False
        if self.rule == "main":
            return wanted >= RATIO * self.sum(self.dep, ttl_from, slot)
        first = next(i for i in range(ttl_from, slot + 1) if self.want.get(i, 0) > 0)
        share = 1.0
        if self.rule.startswith("hysteresis=") and self.episode is not None:
            share = float(self.rule.split("=")[1])
        return wanted >= share * RATIO * self.sum(self.dep, first, slot)

    def settle(self, slot):
        ttl_from = max(0, slot + 1 - TTL)
        if not self.frequent(slot, ttl_from):
            self.episode = None
        elif self.episode is None:
            self.episode = slot
        length = QUIET if self.episode is None else min(TTL, slot - self.episode + QUIET)
        cap = RATIO * self.sum(self.dep, slot + 1 - length, slot)
        credit = min(self.credit + RATIO * (self.total - self.seen_total), cap)
        self.seen_total = self.total
        return credit, cap

    def withdraw(self, t):
        slot = int(t / SLOT)
        self.want[slot] += 1
        credit, cap = self.settle(slot)
        if cap >= 1 - 1e-9:
            if self.threshold is None:
                self.threshold = 1.0 - self.rng.random()
            if credit >= self.threshold - 1e-9:
                self.threshold, self.credit = None, credit - 1
                return True
            self.credit = credit
            return False
        if credit > 0:
            self.credit = 0.0
            return self.rng.random() < credit
        self.credit = credit
        return False


def run(rate, share_before, share_in, rule, seed, before, fault):
    rng = random.Random(seed)
    budget = Budget(rule, rng)
    events, t, end = [], 0.0, before + fault + 5
    while t < end:
        t += rng.expovariate(rate)
        heapq.heappush(events, (t, 1))
    requests = retries = 0
    while events:
        t, attempt = heapq.heappop(events)
        in_fault = before <= t < before + fault
        if attempt == 1:
            budget.deposit(t)
            requests += in_fault
        share = share_in if in_fault else (share_before if t < before else 0.0)
        if rng.random() >= share or attempt == 3:
            continue
        seen = t + 0.015
        if budget.withdraw(seen):
            retries += in_fault
            heapq.heappush(events, (seen + rng.uniform(0, 0.1 * attempt), attempt + 1))
    return requests, retries


def mean_r(rate, share_before, share_in, rule, before, fault):
    runs = max(20, int(600 / rate))
    made = granted = 0
    for seed in range(runs):
        r, g = run(rate, share_before, share_in, rule, seed, before, fault)
        made, granted = made + r, granted + g
    return granted / made


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "brownout"
    rule = sys.argv[2] if len(sys.argv) > 2 else "main"
    rates = [1, 3, 10, 33, 100]
    if mode == "brownout":
        shares = [0.1, 0.3]
        print(f"{rule}: r in a 20 s fault, by requests a second (columns: failed share {shares})")
        for rate in rates:
            row = [mean_r(rate, 0.0, s, rule, 10.0, 20.0) for s in shares]
            print(f"{rate:>5}/s " + " ".join(f"{x:.4f}" for x in row))
    else:
        shares = [0.0, 0.01, 0.03, 0.05, 0.1]
        print(f"{rule}: r in a 10 s outage after 20 s of background errors (columns: {shares})")
        for rate in rates:
            row = [mean_r(rate, s, 1.0, rule, 20.0, 10.0) for s in shares]
            print(f"{rate:>5}/s " + " ".join(f"{x:.4f}" for x in row))


if __name__ == "__main__":
    main()
