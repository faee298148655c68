-- Shared by the MCP scenarios: stateless JSON-RPC POSTs to /mcp, and counting, across
-- wrk threads, which responses were acknowledged (HTTP 200 with "isError":false).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"

-- A tools/call request; arguments is a JSON object, already encoded.
function tools_call(id, name, arguments)
  return string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}', id, name, arguments)
end

function is_acked(status, body)
  return status == 200 and body:find('"isError":false', 1, true) ~= nil
end

-- Per-thread counters (globals, so done() can read them with thread:get).
acked, rejected = 0, 0

function response(status, headers, body)
  if is_acked(status, body) then acked = acked + 1 else rejected = rejected + 1 end
end

-- The main Lua state keeps the thread objects; done() runs there after all threads ended.
threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function done(summary, latency, requests)
  local total_acked, total_rejected = 0, 0
  for _, thread in ipairs(threads) do
    total_acked = total_acked + thread:get("acked")
    total_rejected = total_rejected + thread:get("rejected")
  end
  print(string.format("ACKED %d ERRORS %d", total_acked, total_rejected))
  report(summary, latency, { acked = total_acked, rejected = total_rejected })
end
