-- MCP tools/call fetch_inbox for BlueLake, the same request every time.
-- Usage: wrk -s mcp_fetch_inbox.lua http://127.0.0.1:PORT/mcp -- <project_key>
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "mcp_common.lua")

function init(args)
  local arguments = string.format('{"project_key":"%s","agent_name":"BlueLake"}', args[1])
  wrk.body = tools_call(1, "fetch_inbox", arguments)
end
