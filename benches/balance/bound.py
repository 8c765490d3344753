#!/usr/bin/env python3
"""What any dispatcher can reach in scenarios 5 and 7 of the balance benchmark.

Queueing model of scenario 5: Poisson arrivals at LAMBDA req/s, N backends that each serve
one request at a time from a FIFO queue, exponential service times. Round robin, join the
shortest queue (JSQ: least_conn's full scan, ties at random), power of two choices (P2C), and
for scenario 7 (two gateways) two round robins and two JSQ dispatchers that each get a random
half of the arrivals and see only their own requests, dispatch the same arrivals and service times (common random numbers). For equal servers with
exponential service, JSQ is the optimal dispatcher that knows queue lengths (Winston 1977),
so its p99 is the floor that least_conn and adaptive can approach, not beat, while they pick
a backend as each request arrives.

A gateway that holds the queue itself does better: with `max_connections: 1` (the backends'
concurrency) it sends a request only to a backend that is free, and the rest wait in the
upstream's FIFO queue. That is one M/M/N queue instead of N M/M/1 queues ('cq'; 'cq2' for two
gateways that each cap only their own requests, so a backend can still hold one request of
each).

    python3 benches/balance/bound.py [--requests 400000] [--seed 1]

Prints, per service-time mean, the utilisation, the p99 and p99.9 of each policy, and round
robin's p99 divided by JSQ's, for one gateway and for two. Pure computation: no network, about
a minute per seed.
"""

import argparse
import heapq
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


def simulate_held(mean_s, requests, seed, gateways):
    """Latencies (s) when each gateway holds its own FIFO queue and sends a request only to a
    backend with none of its own in flight (`max_connections: 1` per gateway, ties at random).
    Event-driven: backends serve their own FIFO queues one at a time."""
    arrivals = random.Random(seed)
    service = random.Random(seed + 1)
    choice = random.Random(seed + 2)
    events, seq, t = [], 0, 0.0
    for _ in range(requests):
        t += arrivals.expovariate(LAMBDA)
        g = choice.random() < 0.5 if gateways == 2 else False
        heapq.heappush(events, (t, seq, "arrive", (t, service.expovariate(1.0 / mean_s), g)))
        seq += 1
    own = {False: [0] * N, True: [0] * N}  # each gateway's in-flight request per backend
    waiting = {False: deque(), True: deque()}  # each gateway's queue
    at_server = [deque() for _ in range(N)]  # requests sent to a backend, in order
    out = []

    def start(now, i):
        nonlocal seq
        s = at_server[i][0][1]  # (arrival time, service time, gateway)
        heapq.heappush(events, (now + s, seq, "done", i))
        seq += 1

    def send(now, req):
        g = req[2]
        free = [k for k in range(N) if own[g][k] == 0]
        if not free:
            waiting[g].append(req)
            return
        i = choice.choice(free)
        own[g][i] = 1
        at_server[i].append(req)
        if len(at_server[i]) == 1:
            start(now, i)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "arrive":
            send(now, data)
            continue
        i = data
        arrived, _, g = at_server[i].popleft()
        out.append(now - arrived)
        own[g][i] = 0
        if at_server[i]:
            start(now, i)
        if waiting[g]:
            send(now, waiting[g].popleft())
    out.sort()
    return out


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--means", type=float, nargs="+", default=[8.0, 9.0, 10.0, 10.5, 11.0],
                   help="service-time means to simulate, ms")
    a = p.parse_args()
    print(f"{N} FIFO servers, exponential service, Poisson arrivals at {LAMBDA:.0f}/s, "
          f"{a.requests} requests, seed {a.seed}")
    print("| service mean | load | RR p99 | JSQ p99 | P2C p99 | RR p99.9 | JSQ p99.9 | RR / JSQ p99 "
          "| 2 x RR p99 | 2 x JSQ p99 | 2 x RR / 2 x JSQ p99 | held queue p99 | RR / held | "
          "2 x held p99 | 2 x RR / 2 x held |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mean_ms in a.means:
        res = {pol: simulate(pol, mean_ms / 1000, a.requests, a.seed) for pol in ("rr", "jsq", "p2c", "rr2", "jsq2")}
        res["cq"] = simulate_held(mean_ms / 1000, a.requests, a.seed, 1)
        res["cq2"] = simulate_held(mean_ms / 1000, a.requests, a.seed, 2)
        ms = {pol: (quantile(v, 0.99) * 1000, quantile(v, 0.999) * 1000) for pol, v in res.items()}
        load = LAMBDA * mean_ms / 1000 / N
        print(f"| {mean_ms:.1f} ms | {load:.2f} | {ms['rr'][0]:.1f} | {ms['jsq'][0]:.1f} | "
              f"{ms['p2c'][0]:.1f} | {ms['rr'][1]:.1f} | {ms['jsq'][1]:.1f} | "
              f"{ms['rr'][0] / ms['jsq'][0]:.2f} | {ms['rr2'][0]:.1f} | {ms['jsq2'][0]:.1f} | "
              f"{ms['rr2'][0] / ms['jsq2'][0]:.2f} | {ms['cq'][0]:.1f} | "
              f"{ms['rr'][0] / ms['cq'][0]:.2f} | {ms['cq2'][0]:.1f} | "
              f"{ms['rr2'][0] / ms['cq2'][0]:.2f} |")


if __name__ == "__main__":
    main()
