"""The stand-in LLM streams as a model does when told to (devtools/fake_llm.py `chunks`, `stamp`):
the bench's streamed figures (bench/stream.py) rest on it."""

import json
import re
import time
import urllib.request

import pytest

from devtools.fake_llm import FakeLLM


def post(fake: FakeLLM, stream: bool) -> tuple[float, bytes]:
    body = {"model": "m", "messages": [{"role": "user", "content": "where is my parcel"}], "stream": stream}
    request = urllib.request.Request(fake.url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.time()
    with urllib.request.urlopen(request, timeout=30) as response:
        return started, response.read()


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


def test_a_streamed_reply_comes_in_n_stamped_pieces_spread_over_the_delay(fake):
    fake.control("ok", delay=1.0, chunks=20, stamp=True)
    started, raw = post(fake, stream=True)
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content")
              for line in raw.decode().splitlines()
              if line.startswith("data: {") and json.loads(line[6:])["choices"]]
    stamped = [p for p in pieces if p]
    assert len(stamped) == 20
    sent = [float(re.match(r"<t=(\d+\.\d+)>", p).group(1)) for p in stamped]
    assert sent == sorted(sent)
    # The first piece after about a twentieth of the delay, the last after about all of it.
    assert 0.04 <= sent[0] - started < 0.5
    assert 0.8 <= sent[-1] - started < 3
    words = "".join(re.sub(r"<t=[\d.]+>", "", p) for p in stamped)
    assert words.startswith("Echo: where is my parcel Echo:")


def test_a_whole_reply_waits_the_delay_and_has_the_same_pieces(fake):
    fake.control("ok", delay=0.5, chunks=20, stamp=True)
    started, raw = post(fake, stream=False)
    assert time.time() - started >= 0.5
    reply = json.loads(raw)
    content = reply["choices"][0]["message"]["content"]
    assert "<t=" not in content
    assert reply["usage"]["completion_tokens"] == 20
    assert content.startswith("Echo: where is my parcel Echo:")
