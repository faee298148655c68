-- REST GET /health. Usage: wrk -s health.lua http://127.0.0.1:PORT/health
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

function done(summary, latency, requests)
  report(summary, latency)
end
