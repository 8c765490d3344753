#!/usr/bin/env python3
"""What any dispatcher can reach in scenarios 5 and 7 of the balance benchmark.

Queueing model of scenario 5: Poisson arrivals at LAMBDA req/s, N backends that each serve
one request at a time from a FIFO queue, exponential service times. Round robin, join the
shortest queue (JSQ: least_conn's full scan, ties at random), power of two choices (P2C), and
for scenario 7 (two gateways) two round robins and two JSQ dispatchers that each get a random
half of the arrivals and see only their own requests, dispatch the same arrivals and service times (common random numbers). For equal servers with
exponential service, JSQ is the optimal dispatcher that knows queue lengths (Winston 1977),
so its p99 is the floor that least_conn and adaptive can approach, not beat.

    python3 benches/balance/bound.py [--requests 400000] [--seed 1]

Prints, per service-time mean, the utilisation, the p99 and p99.9 of each policy, and round
robin's p99 divided by JSQ's, for one gateway and for two. Pure computation: no network, about
a minute per seed.
"""

import argparse
import random
from collections import deque

N = 5
LAMBDA = 400.0


def simulate(policy, mean_s, requests, seed):
    """Latencies (s) of `requests` arrivals dispatched by `policy` ('rr', 'jsq', 'p2c', 'rr2', 'jsq2')."""
    arrivals = random.Random(seed)  # the same arrivals and service times for every policy
    service = random.Random(seed + 1)
    choice = random.Random(seed + 2)
    busy_until = [0.0] * N  # when each server's queue empties
    queued = [deque() for _ in range(N)]  # (completion time, dispatcher) of requests still there
    t, rr, out = 0.0, [0, 0], []
    for _ in range(requests):
        t += arrivals.expovariate(LAMBDA)
        s = service.expovariate(1.0 / mean_s)
        for q in queued:
            while q and q[0][0] <= t:
                q.popleft()
        g = choice.random() < 0.5 if policy in ("rr2", "jsq2") else False
        if policy in ("rr", "rr2"):
            i = rr[g] % N
            rr[g] += 1
        elif policy == "jsq":
            low = min(len(q) for q in queued)
            i = choice.choice([k for k in range(N) if len(queued[k]) == low])
        elif policy == "jsq2":
            mine = [sum(1 for _, d in q if d == g) for q in queued]
            i = choice.choice([k for k in range(N) if mine[k] == min(mine)])
        else:
            a, b = choice.sample(range(N), 2)
            la, lb = len(queued[a]), len(queued[b])
            i = a if la < lb or (la == lb and choice.random() < 0.5) else b
        done = max(t, busy_until[i]) + s
        busy_until[i] = done
        queued[i].append((done, g))
        out.append(done - t)
    out.sort()
    return out


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400_000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(f"{N} FIFO servers, exponential service, Poisson arrivals at {LAMBDA:.0f}/s, "
          f"{a.requests} requests, seed {a.seed}")
    print("| service mean | load | RR p99 | JSQ p99 | P2C p99 | RR p99.9 | JSQ p99.9 | RR / JSQ p99 "
          "| 2 x RR p99 | 2 x JSQ p99 | 2 x RR / 2 x JSQ p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mean_ms in (8.0, 9.0, 10.0, 10.5, 11.0):
        res = {pol: simulate(pol, mean_ms / 1000, a.requests, a.seed) for pol in ("rr", "jsq", "p2c", "rr2", "jsq2")}
        ms = {pol: (quantile(v, 0.99) * 1000, quantile(v, 0.999) * 1000) for pol, v in res.items()}
        load = LAMBDA * mean_ms / 1000 / N
        print(f"| {mean_ms:.1f} ms | {load:.2f} | {ms['rr'][0]:.1f} | {ms['jsq'][0]:.1f} | "
              f"{ms['p2c'][0]:.1f} | {ms['rr'][1]:.1f} | {ms['jsq'][1]:.1f} | "
              f"{ms['rr'][0] / ms['jsq'][0]:.2f} | {ms['rr2'][0]:.1f} | {ms['jsq2'][0]:.1f} | "
              f"{ms['rr2'][0] / ms['jsq2'][0]:.2f} |")


if __name__ == "__main__":
    main()
