-- wrk script of bench/serving/run.py: POST prepared JSON bodies in turn and count failures.
--
--   wrk -t2 -c64 -d15s --latency -s bench/serving/post.lua http://127.0.0.1:3000/predict -- bodies.jsonl '"student_id"'
--
-- Arguments after `--`: a file with one JSON body per line (each thread loads them all and formats
-- every request once, up front) and an optional needle, a string every 200 response body must
-- contain. A response that is not HTTP 200, or lacks the needle, is a failure. done() prints one line,
-- "WRK_JSON {...}", with the request count, duration, socket errors, failures and latency percentiles
-- (microseconds) that run.py parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function init(args)
  local path = args[1]
  needle = args[2] or ""
  prepared = {}
  for line in io.lines(path) do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
    end
  end
  if #prepared == 0 then
    error("no request bodies in " .. path)
  end
  -- threads start at different bodies so concurrent requests carry different records
  turn = ((index or 1) - 1) * math.floor(#prepared / 7 + 1) % #prepared
  failures = 0
  first_failure = ""
end

function request()
  turn = turn % #prepared + 1
  return prepared[turn]
end

function response(status, headers, body)
  local problem = nil
  if status ~= 200 then
    problem = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 200)
  elseif needle ~= "" and not string.find(body or "", needle, 1, true) then
    problem = "HTTP 200 without " .. needle .. ": " .. string.sub(body or "", 1, 200)
  end
  if problem then
    failures = failures + 1
    if first_failure == "" then
      first_failure = problem
    end
  end
end

local function json_string(text)
  text = string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. text .. '"'
end

function done(summary, latency, requests)
  local failed, first = 0, ""
  for _, thread in ipairs(threads) do
    failed = failed + (thread:get("failures") or 0)
    local message = thread:get("first_failure") or ""
    if first == "" then
      first = message
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "failures": %d, "first_failure": %s, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, "p50": %d, "p90": %d, '
      .. '"p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes, failed, json_string(first),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)
  ))
end
