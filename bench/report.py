"""The results of a run as Markdown, written between two markers of docs/benchmarks.md.

Only the text between the markers is replaced, so the analysis around it stays.
"""

from pathlib import Path
from statistics import mean

BEGIN = "<!-- bench:begin (written by `python -m bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"


def _runs(runs, prefix):
    return [r for r in runs if _get(r, "label").startswith(prefix)]


def _get(run, name):
    return run[name] if isinstance(run, dict) else getattr(run, name)


def _tps(run):
    return _get(run, "turns_per_second") if isinstance(run, dict) else run.turns_per_second


def _errors(run):
    return _get(run, "errors") if isinstance(run, dict) else run.errors


def _ratio(a, b):
    return a / b if b else float("nan")


def _check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _cpu_ms_per_turn(run, name):
    turns = _get(run, "ok")
    if not turns:
        return float("nan")
    return _get(run, "cpu_seconds").get(name, float("nan")) * 1000 / turns


def render(results: dict) -> str:
    out = [
        f"Machine: {results['machine']}.",
        "",
        f"Command: `{results['command']}`; the site runs the Procfile's `{results['procfile']}` "
        "with its default `WEB_CONCURRENCY`, and so do the minimal turn (`bench.minimal:application`) "
        "and the bare view (`bench.anchor:application`).",
        "",
    ]

    if "figure1" in results:
        runs = results["figure1"]
        out += [
            f"### 1. Instant LLM, {results['args']['connections']} connections",
            "",
            *_contender_table(runs, held=None),
            "",
            *_summary(runs),
            "",
        ]
        site, minimal = _by_name(runs).get("site", []), _by_name(runs).get("minimal", [])
        if site and minimal:
            tps, cpu = _ratio_of(site, minimal, _tps), _ratio_of(site, minimal, _cpu_workers)
            out += [
                f"**site / minimal turn: {tps:.2f} in turns/s** (target at least 0.9: {_check(tps >= 0.9)}); "
                f"**{cpu:.2f} in worker CPU per turn** (target at most 1.15: {_check(cpu <= 1.15)}). "
                + _per_pair(site, minimal),
                "",
                _cpu_footer(site),
                "",
            ]

    if "figure2" in results:
        runs = results["figure2"]
        ideal = results["figure2_ideal"]
        out += [
            f"### 2. {results['args']['held']:,} concurrent conversations, LLM delay "
            f"{results['args']['delay']:g} s (ideal {ideal:.0f} turns/s)",
            "",
            *_contender_table(runs, held=results["args"]["held"]),
            "",
            *_summary(runs),
            "",
        ]
        site, minimal = _by_name(runs).get("site", []), _by_name(runs).get("minimal", [])
        if site and minimal:
            tps = _ratio_of(site, minimal, _tps)
            errors = sum(map(_errors, site))
            line = (f"**site / minimal turn: {tps:.2f} in completed turns/s** (target at least 0.9: "
                    f"{_check(tps >= 0.9)}); site errors {errors} (target 0: {_check(errors == 0)})")
            instant = _by_name(results.get("figure1", [])).get("site", [])
            if instant:
                growth = _ratio(mean(map(_cpu_workers, site)), mean(map(_cpu_workers, instant)))
                line += (f"; **site worker CPU per turn held / instant (figure 1): {growth:.2f}** "
                         f"(target at most 1.3: {_check(growth <= 1.3)})")
            out += [line + ". " + _per_pair(site, minimal), "", _cpu_footer(site), ""]
        out += [
            "p50 and p99 are of the turns that completed within the run; a turn still waiting when it "
            "ended is not in them. \"Mean s, all turns\" is the mean time a turn takes counting those too "
            "(Little's law: conversations held ÷ completed turns per second). Threads: the most a worker "
            "had, sampled every 0.5 s.",
            "",
        ]

    if "figure1" in results or "figure2" in results:
        out += _json_called_like_the_site(results)

    if "stream" in results:
        out += _streamed(results)

    if "crowd" in results:
        out += _crowd(results)

    if "figure3" in results:
        fig = results["figure3"]
        warm = fig["warm"]
        gets = warm["redis_per_turn"].get("get", 0)
        out += [
            "### 3. SQL statements and round trips per turn of a returning session",
            "",
            "Counted from outside the site: PostgreSQL through a proxy that reads the wire protocol, "
            "Redis by `INFO commandstats` on the bench's own redis-server; "
            f"{warm['turns']} sequential turns each, instant LLM.",
            "",
            "| session | SQL statements | BEGIN/COMMIT | pool health checks | PostgreSQL round trips "
            "| Redis commands |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, label in (("warm", "returning, cached in Redis"), ("cold", "returning, not in Redis yet")):
            f = fig[name]
            redis = ", ".join(f"{cmd.upper()} {n:.2g}" for cmd, n in sorted(f["redis_per_turn"].items())) or "none"
            out.append(f"| {label} | {f['sql_per_turn']:g} | {f['transaction_control_per_turn']:g} | "
                       f"{f.get('health_checks_per_turn', 0):g} | {f['round_trips_per_turn']:g} | {redis} |")
        out += [
            "",
            f"Target at most 3 SQL statements and 1 Redis GET: SQL {_check(warm['sql_per_turn'] <= 3)} "
            f"({warm['sql_per_turn']:g} statements), Redis "
            f"{_check(gets <= 1 and sum(warm['redis_per_turn'].values()) - gets < 0.5)} ({gets:g} GET and "
            f"{sum(warm['redis_per_turn'].values()) - gets:.2g} other commands). "
            "The statements of one returning turn, in order:",
            "",
            "```sql",
            *(_short_sql(s) for s in warm["statements_of_one_turn"]),
            "```",
            "",
        ]

    if "figure4" in results:
        runs = results["figure4"]["runs"]
        named = _by_name(runs)
        short, long_, minimal = named.get("1 message", []), named.get("1,000 messages", []), \
            named.get("minimal, 1 message", [])
        p50 = lambda rs: mean(_get(r, "latency_ms")["p50"] for r in rs)  # noqa: E731
        p50_ratio = _ratio(p50(long_), p50(short))
        out += [
            "### 4. One turn at a time: 1 message of history against 1,000, and the minimal turn",
            "",
            f"One connection, instant LLM, {results['figure4']['seconds']} s per run; "
            "each 1-message conversation is used once, the 1,000-message ones in turn.",
            "",
            "| run (in order) | mean ms | p50 ms | p99 ms | errors | worker CPU ms/turn |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *(f"| {_get(r, 'label')} | {_get(r, 'latency_ms')['mean']:.2f} | {_get(r, 'latency_ms')['p50']:.2f} | "
              f"{_get(r, 'latency_ms')['p99']:.2f} | {_errors(r)} | {_cpu_workers(r):.2f} |" for r in runs),
            "",
            f"**1,000 / 1 = {p50_ratio:.2f} at the median** (target at most 1.1: {_check(p50_ratio <= 1.1)}).",
        ]
        if minimal:
            ratio = _ratio(p50(short), p50(minimal))
            out.append(f"**site / minimal turn = {ratio:.2f} at the median** "
                       f"(target at most 2: {_check(ratio <= 2)}).")
        out.append("")

    if "figure2" in results:
        runs = results["figure2"]
        app, anchor = _by_name(runs).get("site", []), _by_name(runs).get("bare", [])
        bound = results["pool_bound"]
        limit = bound["workers"] * bound["pool_max_size"]
        pg = max(_get(r, "peaks").get("pg_connections", 0) for r in app)
        busy = max(_get(r, "peaks").get("pg_busy", 0) for r in app)
        out += [
            "### 5. Memory and PostgreSQL connections during figure 2",
            "",
            "| | peak RSS of a worker, MiB | PostgreSQL connections open (peak) | of them busy (peak) |",
            "| --- | ---: | ---: | ---: |",
            f"| app | {max(_get(r, 'peaks')['worker_rss_mib'] for r in app):.0f} | {pg:.0f} | {busy:.0f} |",
            f"| bare view | {max(_get(r, 'peaks')['worker_rss_mib'] for r in anchor):.0f} | - | - |",
            "",
            f"Bound: {bound['workers']} workers × `DATABASE_POOL_MAX_SIZE` {bound['pool_max_size']} = {limit} "
            f"connections for {results['args']['held']:,} waiting conversations "
            f"(target bounded by a setting: {_check(pg <= limit)}). Sampled every 0.5 s.",
            "",
        ]

    if "overload" in results:
        runs = results["overload"]["runs"]
        out += [
            "### Offered more than the machine serves",
            "",
            f"Conversations held at once, LLM delay {results['args']['delay']:g} s, "
            f"{results['args']['held_seconds']:g} s per run; a connection that gets 503 or 429 waits its "
            "Retry-After before its next turn. Latency is of every answer, refusals included.",
            "",
            "| run (in order) | held | completed turns/s | refused (503) per s | other errors | p50 ms | p99 ms | "
            "worker CPU ms/turn | threads in a worker (peak) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(f"| {_get(r, 'label')} | {_get(r, 'label').split()[-1]} | {_tps(r):.0f} | "
              f"{_get(r, 'statuses').get('503', 0) / _get(r, 'seconds'):.0f} | "
              f"{_errors(r) - _get(r, 'statuses').get('503', 0)} | {_get(r, 'latency_ms')['p50']:.0f} | "
              f"{_get(r, 'latency_ms')['p99']:.0f} | {_cpu_workers(r):.2f} | "
              f"{_get(r, 'peaks').get('worker_threads', 0):.0f} |" for r in runs),
            "",
        ]

    if "scale" in results:
        runs = results["scale"]["runs"]
        one = _runs(runs, "one")
        rounds = len(one)
        two = [sum(_tps(r) for r in _runs(runs, f"two #{i + 1}")) for i in range(rounds)]
        lost = sum(_get(r, "lost") for r in runs)
        errors = sum(_errors(r) for r in runs)
        ratio = _ratio(mean(two), mean(map(_tps, one)))
        out += [
            "### Two instances against one",
            "",
            f"Instant LLM, {results['args']['connections']} connections in all (split evenly over two instances, "
            "each with the Procfile's workers, on the one PostgreSQL and Redis). Each round sends each half of "
            "the sessions to the other instance than before, so every turn of the two-instance runs continues "
            "a conversation started on the other instance.",
            "",
            "| round | one instance turns/s | two instances turns/s |",
            "| --- | ---: | ---: |",
            *(f"| {i + 1} | {_tps(one[i]):.0f} | {two[i]:.0f} |" for i in range(rounds)),
            "",
            f"**two / one = {ratio:.2f}**; sessions not found on the other instance: {lost}; errors: {errors}.",
            "",
        ]
    return "\n".join(out)


def _name(run) -> str:
    return _get(run, "label").rsplit(" #", 1)[0]


def _by_name(runs) -> dict[str, list]:
    named: dict[str, list] = {}
    for run in runs:
        named.setdefault(_name(run), []).append(run)
    return named


def _cpu_workers(run) -> float:
    return _cpu_ms_per_turn(run, "workers")


def _ratio_of(a: list, b: list, measure) -> float:
    return _ratio(mean(map(measure, a)), mean(map(measure, b)))


def _contender_table(runs, held: int | None) -> list[str]:
    extra = " | mean s, all turns | threads in a worker" if held else ""
    rows = [
        f"| run (in order) | turns/s | p50 ms | p99 ms | errors | worker CPU ms/turn{extra} | machine busy cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if held else "") + " ---: |",
    ]
    for r in runs:
        cells = [_get(r, "label"), f"{_tps(r):.0f}", f"{_get(r, 'latency_ms')['p50']:.1f}",
                 f"{_get(r, 'latency_ms')['p99']:.1f}", str(_errors(r)), f"{_cpu_workers(r):.2f}"]
        if held:
            cells += [f"{_ratio(held, _tps(r)):.1f}", f"{_get(r, 'peaks').get('worker_threads', 0):.0f}"]
        cells.append(f"{_get(r, 'cpu_seconds')['machine']:.2f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _summary(runs) -> list[str]:
    """Each contender's mean turns/s and worker CPU per turn, and both as a ratio to the minimal turn."""
    named = _by_name(runs)
    minimal = named.get("minimal")
    rows = ["| | turns/s | worker CPU ms/turn | turns/s ÷ minimal turn's | CPU ÷ minimal turn's |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name, group in named.items():
        tps, cpu = mean(map(_tps, group)), mean(map(_cpu_workers, group))
        rows.append(f"| {name} | {tps:.0f} | {cpu:.2f} | "
                    f"{_ratio_of(group, minimal, _tps) if minimal else float('nan'):.2f} | "
                    f"{_ratio_of(group, minimal, _cpu_workers) if minimal else float('nan'):.2f} |")
    return rows


def _short_sql(sql: str) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= 200 else sql[:197] + "..."


def write(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{before}{BEGIN}\n{section}\n{END}{after}")


def _per_pair(app: list[dict], anchor: list[dict]) -> str:
    return "Per pair: " + ", ".join(f"{_ratio(_tps(a), _tps(b)):.2f}" for a, b in zip(app, anchor, strict=False)) + "."


def _cpu_footer(app: list[dict]) -> str:
    return "CPU per app turn, ms: " + ", ".join(
        f"{name} {mean(_cpu_ms_per_turn(r, name) for r in app):.2f}"
        for name in ("workers", "llm", "postgres", "redis", "wrk")) + "."


def _json_called_like_the_site(results: dict) -> list[str]:
    """The JSON turn against the minimal turn that calls the LLM client the way the site does."""
    out = []
    for key, name in (("figure1", "figure 1 (instant)"), ("figure2", "figure 2 (held)")):
        named = _by_name(results.get(key, []))
        site, minimal = named.get("site", []), named.get("minimal-site", [])
        if site and minimal:
            tps, cpu = _ratio_of(site, minimal, _tps), _ratio_of(site, minimal, _cpu_workers)
            out.append(f"- {name}: **site / minimal-site {tps:.2f} in turns/s** (target at least 1.1: "
                       f"{_check(tps >= 1.1)}), {cpu:.2f} in worker CPU per turn "
                       f"({mean(map(_cpu_workers, site)):.2f} against {mean(map(_cpu_workers, minimal)):.2f} ms). "
                       + _per_pair(site, minimal))
    if not out:
        return []
    return ["### The JSON turn against the minimal turn called like the site", "",
            "`minimal-site` is the minimal turn calling the openai client the way the site does (its "
            "lower-level `post`, on aiohttp), from the same runs as figures 1 and 2.", "", *out, ""]


def _stream_cell(run, part, quantile):
    return _get(run, "stream").get(part, {}).get(quantile, float("nan"))


def _streamed(results: dict) -> list[str]:
    fig, args = results["stream"], results["args"]
    out = [
        "### 6. The streamed turn against the minimal streamed turn",
        "",
        "`Accept: text/event-stream`, driven by `bench/stream.py` (aiohttp, one process); the stand-in LLM "
        "streams 20 pieces spread over its delay, each stamped with the time it sent it. \"TTFT added\": when "
        "the first piece reached the client less when the LLM sent it; \"stall\": per turn, the longest gap "
        "between two pieces as the client saw them less the gap the LLM made between them; \"the client's own lag\": "
        "how late a 10 ms timer fires in the driver's process, which adds to both whatever the server does. `minimal-site` is "
        "the minimal streamed turn (`bench/minimal.py`, the client called like the site's).",
        "",
    ]
    parts = (("instant", f"instant LLM, {args['connections']} streams"),
             ("one", f"one stream at a time, LLM {args['delay']:g} s"),
             ("held", f"{args['held']:,} streams held, LLM {args['delay']:g} s"))
    out += ["| run (in order) | turns/s | errors | worker CPU ms/turn | TTFT p50 ms | TTFT added p50 ms | "
            "TTFT added p99 ms | stall p99 ms | the client's own lag p99 ms | pieces a turn | machine busy cores |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, title in parts:
        for r in fig.get(key, []):
            out.append(f"| {title}: {_get(r, 'label')} | {_tps(r):.1f} | {_errors(r)} | {_cpu_workers(r):.2f} | "
                       f"{_stream_cell(r, 'ttft_ms', 'p50'):.1f} | {_stream_cell(r, 'ttft_added_ms', 'p50'):.2f} | "
                       f"{_stream_cell(r, 'ttft_added_ms', 'p99'):.2f} | {_stream_cell(r, 'stall_ms', 'p99'):.2f} | "
                       f"{_stream_cell(r, 'client_lag_ms', 'p99'):.1f} | "
                       f"{_get(r, 'stream').get('pieces_per_turn', 0):.1f} | "
                       f"{_get(r, 'cpu_seconds')['machine']:.2f} |")
    out.append("")
    named = {key: _by_name(fig.get(key, [])) for key, _ in parts}
    lines = []
    site, minimal = named["instant"].get("site", []), named["instant"].get("minimal-site", [])
    if site and minimal:
        tps, cpu = _ratio_of(site, minimal, _tps), _ratio_of(site, minimal, _cpu_workers)
        lines.append(f"- instant: **site / minimal-site {tps:.2f} in turns/s** (target at least 1.1: "
                     f"{_check(tps >= 1.1)}), {cpu:.2f} in worker CPU per turn ({mean(map(_cpu_workers, site)):.2f} "
                     f"against {mean(map(_cpu_workers, minimal)):.2f} ms). " + _per_pair(site, minimal))
    held_site, held_minimal = named["held"].get("site", []), named["held"].get("minimal-site", [])
    if held_site and held_minimal:
        tps = _ratio_of(held_site, held_minimal, _tps)
        errors = sum(map(_errors, held_site))
        line = (f"- held: **site / minimal-site {tps:.2f} in turns/s** (target at least 1.1: {_check(tps >= 1.1)}); "
                f"site errors {errors} (target 0: {_check(errors == 0)})")
        if site and minimal:
            growth = _ratio_of(held_site, site, _cpu_workers)
            reference = _ratio_of(held_minimal, minimal, _cpu_workers)
            line += (f"; worker CPU per turn held / instant: site **{growth:.2f}**, minimal-site {reference:.2f} "
                     f"(target: no more than the minimal's: {_check(growth <= reference)})")
        lines.append(line + ". " + _per_pair(held_site, held_minimal))
        p50 = mean(_stream_cell(r, "ttft_added_ms", "p50") for r in held_site)
        p99 = mean(_stream_cell(r, "ttft_added_ms", "p99") for r in held_site)
        stall = mean(_stream_cell(r, "stall_ms", "p99") for r in held_site)
        lines.append(f"- time to first token added at {args['held']:,} streams: **p50 {p50:.1f} ms** (target under 5: "
                     f"{_check(p50 < 5)}), **p99 {p99:.1f} ms** (target under 50: {_check(p99 < 50)}); "
                     f"the minimal streamed turn's p50 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p50') for r in held_minimal):.1f}, p99 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p99') for r in held_minimal):.1f} ms (means of the runs).")
        lines.append(f"- stall at {args['held']:,} streams: **p99 {stall:.1f} ms** (target under 50: "
                     f"{_check(stall < 50)}); the minimal streamed turn's "
                     f"{mean(_stream_cell(r, 'stall_ms', 'p99') for r in held_minimal):.1f} ms. The driver's own "
                     f"event loop was late by p99 {mean(_stream_cell(r, 'client_lag_ms', 'p99') for r in held_site):.1f} ms "
                     f"in the site's runs and {mean(_stream_cell(r, 'client_lag_ms', 'p99') for r in held_minimal):.1f} "
                     f"ms in the minimal's: that much of both figures is the client's, not the server's.")
    one_site, one_minimal = named["one"].get("site", []), named["one"].get("minimal-site", [])
    if one_site and one_minimal:
        lines.append("- time to first token added, one stream: site p50 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p50') for r in one_site):.2f}, p99 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p99') for r in one_site):.2f} ms; minimal-site p50 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p50') for r in one_minimal):.2f}, p99 "
                     f"{mean(_stream_cell(r, 'ttft_added_ms', 'p99') for r in one_minimal):.2f} ms.")
    return out + lines + [""]


def _crowd(results: dict) -> list[str]:
    fig, args = results["crowd"], results["args"]
    pages, streams = fig["pages"], fig["streams"]
    run = fig["streams_run"]
    per_page = (fig["rss_pages_kib"] - fig["rss_before_kib"]) / pages
    per_stream = (fig["rss_streams_peak_kib"] - fig["rss_pages_kib"]) / streams
    health = fig["health_streams"]
    driver = fig.get("pages_driver", {})
    rows = [
        f"### 7. {pages:,} pages waiting for a staff reply and {streams:,} streams, one machine",
        "",
        f"The site as deployed ({fig['workers']} workers), `CHAT_MAX_HELD`, `CHAT_MAX_HELD_PER_ADDRESS` and "
        "`CHAT_MAX_CONNECTIONS` off (their per-worker defaults are below these numbers); the pages "
        f"(`bench/crowd.py`, one process) each hold `GET /api/updates` and ask again when it answers "
        f"(`CHAT_UPDATES_WAIT={fig.get('wait', 25):g}`); then "
        f"{streams:,} streams (`bench/stream.py`) on a {args['delay']:g} s LLM for {args['held_seconds']:g} s "
        "beside them. `/healthz` asked every 0.1 s on a new connection throughout. Memory is the two workers' "
        "RSS together.",
        "",
        "| phase | /healthz p50 ms | p99 ms | max ms | probes (failed) | workers' RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label, kib in (("health_idle", "nothing held", fig["rss_before_kib"]),
                            ("health_pages", f"{pages:,} pages waiting", fig["rss_pages_kib"]),
                            ("health_streams", f"and {streams:,} streams", fig["rss_streams_peak_kib"])):
        h = fig[key]
        rows.append(f"| {label} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {h['max_ms']:.1f} | "
                    f"{h['probes']} ({h['failures']}) | {kib / 1024:.0f} |")
    rows += [
        "",
        f"**/healthz p99 with both: {health['p99_ms']:.0f} ms** (target within 100: {_check(health['p99_ms'] <= 100)}); "
        f"**memory per waiting page {per_page:.1f} KiB** (target under 20: {_check(per_page < 20)}); "
        f"memory per stream {per_stream:.1f} KiB (the peak during the streams' run over the pages' level). "
        f"Streams: {_tps(run):.0f} turns/s, {_errors(run)} errors, TTFT added p50 "
        f"{_stream_cell(run, 'ttft_added_ms', 'p50'):.1f} ms, p99 {_stream_cell(run, 'ttft_added_ms', 'p99'):.1f} ms, "
        f"stall p99 {_stream_cell(run, 'stall_ms', 'p99'):.1f} ms. The pages cost the workers "
        f"{fig['pages_cpu_cores'] * 100:.0f} % of a core while they waited; polls answered "
        f"{driver.get('answers', '?')}, pages failed {driver.get('failed', '?')} {driver.get('failure', '')}.",
        "",
    ]
    return rows
