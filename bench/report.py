#!/usr/bin/env python3
"""Helpers for bench/compare.sh and bench/idle-conns.sh (python3, stdlib only).

  proc PID                         print "cpu_ticks rss_kb npids" summed over PID and all its
                                   descendants (nginx: master + worker), from /proc
  rss PID                          print VmRSS in kB of PID and its descendants
  status URL                       print the request counter of an nginx stub_status page
  row CSV key=val...               parse one wrk run (wrk=FILE holding the WRKRESULT line written
                                   by bench/wrk-report.lua) and append one row to CSV; prints
                                   a one-line summary, and a WARNING when the upstream hit count
                                   does not match the target's expectation
  report CSV META                  markdown report (medians over rounds) on stdout
"""
import csv
import os
import statistics
import sys
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# upstream requests per wrk response that each target must cause
EXPECT_HITS = {"direct": 1.0, "nginx": 1.0, "dinggate": 1.0, "dinggate-302": 0.0, "dinggate-auth": 0.0}
TARGET_ORDER = ["direct", "nginx", "dinggate", "dinggate-302", "dinggate-auth"]
FIELDS = ["round", "conns", "target", "requests", "duration_s", "rps", "p50_ms", "p99_ms",
          "errors", "non_2xx_3xx", "upstream_hits", "hits_per_response", "cpu_s",
          "cpu_us_per_req", "rss_load_kb", "raw"]


def tree(pid):
    """PID and all its descendants (scan of /proc, no psutil)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc(pid):
    ticks = rss = n = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
            rest = st[st.rindex(")") + 2:].split()
            # fields 14 and 15 of stat (utime, stime); rest[0] is field 3
            ticks += int(rest[11]) + int(rest[12])
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    return ticks, rss, n


def cmd_proc(pid):
    print("%d %d %d" % proc(pid))


def cmd_rss(pid):
    print(proc(pid)[1])


def cmd_status(url):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    print(text.splitlines()[2].split()[2])


def parse_wrk(path):
    for line in open(path, errors="replace"):
        if line.startswith("WRKRESULT "):
            return {k: float(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:])}
    return None


def cmd_row(csv_path, *kvs):
    a = dict(kv.split("=", 1) for kv in kvs)
    w = parse_wrk(a["wrk"])
    if w is None:
        print("WARNING: no WRKRESULT line in %s (wrk failed?)" % a["wrk"], file=sys.stderr)
        return
    req = w["requests"]
    dur = w["duration_us"] / 1e6
    hits = int(a["up1"]) - int(a["up0"]) - 1  # the second stub_status read counts itself
    cpu_s = (int(a["cpu1"]) - int(a["cpu0"])) / CLK_TCK
    row = {
        "round": a["round"], "conns": a["conns"], "target": a["target"],
        "requests": int(req), "duration_s": "%.3f" % dur,
        "rps": "%.1f" % (req / dur if dur else 0),
        "p50_ms": "%.3f" % (w["p50_us"] / 1000), "p99_ms": "%.3f" % (w["p99_us"] / 1000),
        "errors": int(w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]),
        "non_2xx_3xx": int(w["err_status"]),
        "upstream_hits": hits,
        "hits_per_response": "%.3f" % (hits / req if req else 0),
        "cpu_s": "%.2f" % cpu_s,
        "cpu_us_per_req": "%.2f" % (cpu_s * 1e6 / req if req else 0),
        "rss_load_kb": a.get("rss_mid", ""),
        "raw": a["wrk"],
    }
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        wr = csv.DictWriter(f, FIELDS)
        if new:
            wr.writeheader()
        wr.writerow(row)
    print("round %s c=%s %-13s %9s req/s  p50 %6s ms  p99 %7s ms  cpu %6s us/req  hits/resp %s  errors %s/%s" % (
        row["round"], row["conns"], row["target"], row["rps"], row["p50_ms"], row["p99_ms"],
        row["cpu_us_per_req"], row["hits_per_response"], row["errors"], row["non_2xx_3xx"]))
    for msg in check(row):
        print("WARNING: " + msg, file=sys.stderr)


def check(row):
    """Loud complaints about a run: wrong upstream hit count, errors, bad statuses."""
    out = []
    exp = EXPECT_HITS.get(row["target"])
    hpr = float(row["hits_per_response"])
    hits = int(row["upstream_hits"])
    if exp is not None:
        if exp == 0 and hits != 0:
            out.append("%s c=%s round %s: %d upstream hits, expected 0 (the request reached the upstream!)"
                       % (row["target"], row["conns"], row["round"], hits))
        elif exp > 0:
            # wrk counts only the responses it received: when the run ends, up to one request per
            # connection has reached the upstream without its response being counted. So the
            # upstream must see between `responses` and `responses + conns` requests.
            req, c = int(row["requests"]), int(row["conns"])
            if not (req <= hits <= req + c):
                out.append("%s c=%s round %s: upstream hits/response %.3f (%d hits for %d responses, "
                           "expected %d..%d)" % (row["target"], row["conns"], row["round"], hpr, hits,
                                                 req, req, req + c))
    if int(row["errors"]) or int(row["non_2xx_3xx"]):
        out.append("%s c=%s round %s: wrk saw %s socket errors and %s non-2xx/3xx responses"
                   % (row["target"], row["conns"], row["round"], row["errors"], row["non_2xx_3xx"]))
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def cmd_report(csv_path, meta_path):
    rows = list(csv.DictReader(open(csv_path)))
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(meta_path) if "=" in line)
    rounds = sorted({r["round"] for r in rows}, key=int)
    conns = sorted({int(r["conns"]) for r in rows})
    targets = [t for t in TARGET_ORDER if any(r["target"] == t for r in rows)]
    print("# dinggate benchmark: %s" % meta.get("DATE", ""))
    print()
    print("Medians over %d interleaved round(s) of %ss per run; wrk %s threads, keep-alive. "
          "The ratio to nginx is taken within each round, then the median."
          % (len(rounds), meta.get("DURATION", "?"), meta.get("THREADS", "?")))
    warnings = []
    for c in conns:
        print()
        print("## %d connections" % c)
        print()
        print("| target | req/s | vs nginx | p50 ms | p99 ms | CPU µs/req | upstream hits/resp | RSS under load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            rs = [r for r in rows if r["target"] == t and int(r["conns"]) == c]
            if not rs:
                continue
            ratios = []
            for rd in rounds:
                a = [float(r["rps"]) for r in rs if r["round"] == rd]
                b = [float(r["rps"]) for r in rows if r["target"] == "nginx" and int(r["conns"]) == c
                     and r["round"] == rd]
                if a and b and b[0] > 0:
                    ratios.append(a[0] / b[0])
            rss = [int(r["rss_load_kb"]) for r in rs if r["rss_load_kb"]]
            print("| %s | %s | %s | %.2f | %.2f | %.1f | %.2f | %s |" % (
                t, "{:,.0f}".format(med([float(r["rps"]) for r in rs])),
                "%.2f" % med(ratios) if ratios else "–",
                med([float(r["p50_ms"]) for r in rs]), med([float(r["p99_ms"]) for r in rs]),
                med([float(r["cpu_us_per_req"]) for r in rs]),
                med([float(r["hits_per_response"]) for r in rs]),
                "%.1f MB" % (med(rss) / 1024) if rss else "–"))
            for r in rs:
                warnings.extend(check(r))
    print()
    print("## Memory (VmRSS)")
    print()
    print("| server | idle (after login, before load) | after all rounds |")
    print("|---|---:|---:|")
    for name, key in (("dinggate", "DINGGATE"), ("nginx proxy (master + worker)", "NGINX")):
        idle, after = meta.get("RSS_IDLE_%s_KB" % key), meta.get("RSS_AFTER_%s_KB" % key)
        fmt = lambda v: "%.1f MB" % (int(v) / 1024) if v else "–"
        print("| %s | %s | %s |" % (name, fmt(idle), fmt(after)))
    print()
    print("## Machine and command")
    print()
    print("- CPU: %s, nproc %s; kernel %s" % (meta.get("CPU", "?"), meta.get("NPROC", "?"), meta.get("KERNEL", "?")))
    print("- pinning: %s" % meta.get("PINNING", "?"))
    print("- wrk %s, nginx %s, dinggate %s" % (meta.get("WRK", "?"), meta.get("NGINX", "?"), meta.get("BIN", "?")))
    print("- load average before/after: %s / %s" % (meta.get("LOAD_BEFORE", "?"), meta.get("LOAD_AFTER", "?")))
    print("- command: `%s`" % meta.get("COMMAND", "?"))
    print()
    print("Columns: req/s = wrk responses per second; vs nginx = req/s ÷ the plain nginx proxy's req/s "
          "in the same round; p50/p99 = wrk latency percentiles; CPU µs/req = the server process's "
          "utime+stime (/proc/PID/stat, nginx: master+worker; for `direct` the upstream nginx) "
          "during the run ÷ responses; upstream hits/resp = upstream stub_status requests during "
          "the run ÷ wrk responses (1.00 for proxied targets, 0 for 302 and forward-auth; a proxied "
          "target may exceed 1.00 by at most conns ÷ responses: requests in flight when wrk stops "
          "reach the upstream but are not counted by wrk); "
          "RSS under load = the server's VmRSS sampled mid-run.")
    if warnings:
        print()
        print("## WARNINGS")
        print()
        for w in warnings:
            print("- **WARNING** " + w)


if __name__ == "__main__":
    cmds = {"proc": cmd_proc, "rss": cmd_rss, "status": cmd_status, "row": cmd_row, "report": cmd_report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
