-- Shared by every scenario: print wrk's summary as one line that run.py parses.
-- Latencies from wrk are in microseconds.

function report(summary, latency, extra)
  local e = summary.errors
  local line = string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"socket_errors":%d,"timeouts":%d,"non_2xx":%d',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write, e.timeout, e.status)
  for key, value in pairs(extra or {}) do
    line = line .. string.format(',"%s":%d', key, value)
  end
  print(line .. "}")
end
