-- Cycles through request paths read from a file (one per line), one path per request.
-- Writes a JSON summary to $WRK_JSON when the run ends. With $WRK_AUTH set (base64 of
-- user:password), every request carries it as basic credentials.
local paths, idx = {}, 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then paths[#paths + 1] = line end
  end
  idx = 0
  local auth = os.getenv("WRK_AUTH")
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = "Basic " .. auth
  end
end

function request()
  idx = idx % #paths + 1
  return wrk.format("GET", paths[idx])
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local f = assert(io.open(os.getenv("WRK_JSON"), "w"))
  f:write(string.format(
    '{"duration_s":%.3f,"requests":%d,"bytes":%d,"rps":%.1f,"bytes_per_s":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    secs, summary.requests, summary.bytes, summary.requests / secs, summary.bytes / secs,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  f:close()
end
