-- MCP tools/call send_message from GreenCastle to BlueLake, a distinct subject and body
-- per request ("bench-send <thread>-<n>"). Prints "ACKED <n> ERRORS <m>"; with
-- BENCH_ACKED_FILE set, also writes the acknowledged subjects there, one per line, so
-- run.py can check each one is in the database.
-- Usage: wrk -s mcp_send_message.lua http://127.0.0.1:PORT/mcp -- <project_key>
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "mcp_common.lua")

local project_key, sent = nil, 0
local with_keys = os.getenv("BENCH_IDEMPOTENCY_KEYS") == "1"  -- bench/idempotency.py: a key per send
acked_subjects = {}

function init(args)
  project_key = args[1]
end

function request()
  sent = sent + 1
  local subject = string.format("bench-send %d-%d", thread_id, sent)
  local key = with_keys and string.format(',"idempotency_key":"%s %s"', subject, tostring(os.time())) or ""
  local arguments = string.format(
    '{"project_key":"%s","sender_name":"GreenCastle","to":["BlueLake"],"subject":"%s","body_md":"Body of %s."%s}',
    project_key, subject, subject, key)
  return wrk.format(nil, nil, nil, tools_call(sent, "send_message", arguments))
end

function response(status, headers, body)
  if is_acked(status, body) then
    acked = acked + 1
    -- The structured result carries the subject unescaped (the text copy escapes its quotes).
    acked_subjects[acked] = body:match('"subject":"(bench%-send [%d%-]+)"') or "(no subject in response)"
  else
    rejected = rejected + 1
  end
end

local count_done = done

function done(summary, latency, requests)
  count_done(summary, latency, requests)
  local path = os.getenv("BENCH_ACKED_FILE")
  if not path then return end
  local file = assert(io.open(path, "w"))
  for _, thread in ipairs(threads) do
    for _, subject in ipairs(thread:get("acked_subjects")) do file:write(subject, "\n") end
  end
  file:close()
end
