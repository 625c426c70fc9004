"""Reading the server-sent events of a streamed reply (`Accept: text/event-stream`)."""

import json


def parse_events(text: str) -> list[tuple[str, dict]]:
    """[(event name, parsed data), ...] of a whole SSE body, in order.

    The site sends one `event:` and one `data:` line (JSON) per event, events
    separated by a blank line.
    """
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events
