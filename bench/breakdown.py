"""Where a worker's CPU goes, from a py-spy profile: `python -m bench.breakdown PROFILE [TURNS]`.

PROFILE is `py-spy record --format raw` output (collapsed stacks, as
`python -m bench.profile_turn` writes it). Each sample goes to the innermost frame
of its stack that belongs to a part below; the standard library (json, asyncio,
...) belongs to whoever called it, so `json.dumps` called to write an SSE event
counts as SSE encoding and called by the openai client as the client's. With
TURNS (the turns served while py-spy sampled), each part is also given in ms a turn.
"""

import sys
from collections import Counter

# (part, substrings of a frame's file path), the first that matches wins.
PARTS = [
    ("SSE encoding", ("conversations/payloads.py", "conversations/views.py", "bench/minimal.py:event")),
    ("the LLM client's parsing and requests", ("conversations/llm.py", "bench/minimal.py:streamed",
                                               "openai/", "httpx2/", "httpx/", "aiohttp/", "multidict/",
                                               "yarl/", "anyio/", "sniffio/", "pydantic")),
    ("database", ("psycopg", "conversations/store/postgres.py", "django/db/")),
    ("Redis", ("redis/", "conversations/shared_state.py")),
    ("the site's own code", ("conversations/", "chatsite/")),
    ("framework (Django, uvicorn, asgiref)", ("django/", "uvicorn", "asgiref/", "starlette/", "h11/",
                                               "httptools/")),
]
OTHER = "event loop and the rest (asyncio, logging, ...)"


def part_of(frame: str) -> str | None:
    where = frame.rsplit(" (", 1)[-1]
    name = frame.split(" (", 1)[0]
    for part, needles in PARTS:
        for needle in needles:
            path, _, function = needle.partition(":")
            if path in where and (not function or name == function):
                return part
    return None


def breakdown(lines) -> tuple[Counter, int]:
    parts: Counter = Counter()
    total = 0
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, count = line.rsplit(" ", 1)
        samples = int(count)
        total += samples
        found = next((part for frame in reversed(stack.split(";")) if (part := part_of(frame))), OTHER)
        parts[found] += samples
    return parts, total


def render(parts: Counter, total: int, turns: int | None, rate: int = 200) -> str:
    rows = ["| part | share of the samples |" + (" ms a turn |" if turns else ""),
            "| --- | ---: |" + (" ---: |" if turns else "")]
    for part, samples in parts.most_common():
        ms = f" {samples * 1000 / rate / turns:.2f} |" if turns else ""
        rows.append(f"| {part} | {100 * samples / total:.1f} % |{ms}")
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        parts, total = breakdown(f)
    print(render(parts, total, int(argv[1]) if len(argv) > 1 else None))


if __name__ == "__main__":
    main(sys.argv[1:])
