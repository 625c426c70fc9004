-- wrk script: POST /api/chat turns over existing sessions, one turn per session at a time.
--
-- wrk -s chat.lua URL -- SESSIONS_FILE THREADS [STOP_AFTER [FREE_FILE]]
--
-- Each wrk thread takes its own slice of the sessions file and keeps the ids
-- that are not in flight in a queue: a request takes the oldest free id, and a
-- response gives its sessionId back. So a session never has two turns at once
-- (the site would answer 409 turn_in_progress) and all of them are used in turn.
-- A 503 or 429 delays that connection's next request by its Retry-After.
-- STOP_AFTER > 0 stops each thread after that many responses. FREE_FILE gets
-- the sessions no turn was in flight on when the run ended: a turn cut off by
-- the end of a run leaves its question unanswered, and the site refuses new
-- turns on that session until the question counts as abandoned.
-- done() prints one line, "BENCH {json}", that bench/load.py reads.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

-- Each thread's own state (each wrk thread has its own Lua state), in globals
-- so that done() can read them with thread:get().
free, head, tail = {}, 1, 0
statuses = {}
lost, starved = 0, 0
free_file = ""
local responses, stop_after = 0, 0
local backoff = 0
local message = '"message":"What is your return policy?"'

function init(args)
  local nthreads = tonumber(args[2])
  stop_after = tonumber(args[3] or "0")
  free_file = args[4] or ""
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == index and #line > 0 then
      tail = tail + 1
      free[tail] = line
    end
    i = i + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- As a TLS-terminating load balancer would (the site runs with DJANGO_BEHIND_TLS_PROXY=1).
  wrk.headers["X-Forwarded-Proto"] = "https"
end

function request()
  local body
  if head <= tail then
    local session = free[head]
    free[head] = nil
    head = head + 1
    body = "{" .. message .. ',"sessionId":"' .. session .. '"}'
  else
    -- No free session left: a new conversation, counted, so a run that
    -- starves is seen (give it more sessions).
    starved = starved + 1
    body = "{" .. message .. "}"
  end
  return wrk.format(nil, nil, nil, body)
end

-- wrk calls delay() before a connection's next request, right after response()
-- on that connection: a 503 or 429 with Retry-After is honoured, as a client should.
function delay()
  local ms = backoff
  backoff = 0
  return ms
end

function response(status, headers, body)
  local key = tostring(status)
  if status == 503 or status == 429 then
    backoff = 1000 * (tonumber(headers["Retry-After"] or headers["retry-after"] or "") or 0)
  end
  statuses[key] = (statuses[key] or 0) + 1
  local session = string.match(body, '"sessionId": ?"([%x%-]+)"')
  if session then
    tail = tail + 1
    free[tail] = session
  end
  if string.find(body, '"newSession": ?true') then
    lost = lost + 1
  end
  responses = responses + 1
  if stop_after > 0 and responses >= stop_after then
    wrk.thread:stop()
  end
end

local function json_counts(counts)
  local parts = {}
  for key, value in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', key, value))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function write_free(path)
  local out = assert(io.open(path, "w"))
  for _, thread in ipairs(threads) do
    local queue = thread:get("free")
    for i = thread:get("head"), thread:get("tail") do
      if queue[i] then out:write(queue[i], "\n") end
    end
  end
  out:close()
end

function done(summary, latency, requests)
  -- done() runs in the main Lua state, which init() never saw: ask a thread.
  local path = threads[1]:get("free_file")
  if path ~= "" then
    write_free(path)
  end
  local total = {}
  local all_lost, all_starved = 0, 0
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get("statuses")) do
      total[key] = (total[key] or 0) + value
    end
    all_lost = all_lost + thread:get("lost")
    all_starved = all_starved + thread:get("starved")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"duration_us": %d, "requests": %d, "statuses": %s, "lost": %d, "starved": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.0f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.duration, summary.requests, json_counts(total), all_lost, all_starved,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
